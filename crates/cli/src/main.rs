//! The `recforge` command line: a thin layer over the data, models and train crates.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use recforge_data::config::load_experiment;
use recforge_data::features::OnBadRow;
use recforge_data::synthetic::{self, SyntheticSpec};
use recforge_data::{EncodedDataset, ExperimentConfig};
use recforge_train::score::{load_model, score_file};
use recforge_train::{EpochLog, RunDir, TrainConfig, TrainObserver, TrainReport, Trainer};
use std::io::Write;
use std::path::{Path, PathBuf};

mod alloc;
mod kt_cmd;
mod seq_cmd;
mod serve_cmd;
mod text_cmd;
mod topk_cmd;

#[derive(Parser)]
#[command(
    name = "recforge",
    version,
    about = "Recommender-systems engine: CTR models (LR, FM, DNN, DeepFM, DCNv2) trained from \
        FuxiCTR-style configs"
)]
struct Cli {
    /// Worker threads for the numeric kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic click log with a known ground truth, train DeepFM on it, and
    /// compare the test AUC with the Bayes-optimal AUC. No data needed.
    Quickstart(QuickstartArgs),
    /// Train the experiment `--expid` of the configs in `--config` (FuxiCTR's format).
    Train(TrainArgs),
    /// Self-supervised pretraining of the experiment's backbone on its training rows (MAP:
    /// masked feature prediction or replaced feature detection); finetune with
    /// `train --init-from`.
    Pretrain(PretrainArgs),
    /// Score a labelled file with a saved model and print AUC and logloss.
    Evaluate(EvaluateArgs),
    /// Score a file (CSV/TSV/libSVM/Parquet) with a saved model; writes one probability per row.
    Predict(PredictArgs),
    /// Data tools: generate synthetic logs, inspect an encoded dataset, make the fixed splits.
    #[command(subcommand)]
    Data(DataCommand),
    /// Serve a model over HTTP: /v1/predict, /v1/rank, /v1/models, health, metrics,
    /// OpenAPI at /openapi.json, and the MCP tools at /mcp.
    Serve(serve_cmd::ServeArgs),
    /// Serve a model's MCP tools (predict_ctr, rank_candidates, model_info) over stdio.
    Mcp(serve_cmd::McpArgs),
    /// Encode a text column into sentence vectors with the in-process text encoder
    /// (all-MiniLM-L6-v2 by default; fetch it with scripts/fetch-minilm.sh).
    Embed(text_cmd::EmbedArgs),
    /// Exact nearest-neighbour search of queries over stored vectors.
    Search(text_cmd::SearchArgs),
    /// Write a top-K model's item vectors (one row per item id) as a float32 `.npy`, e.g.
    /// L-DiffRec's `item_emb_file` from a LightGCN run.
    ItemVectors(topk_cmd::ItemVectorsArgs),
}

#[derive(Args)]
struct QuickstartArgs {
    /// Where the data, configs and model go.
    #[arg(long, default_value = "quickstart")]
    out: PathBuf,
    /// Rows to generate (80/10/10 train/valid/test).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Categorical fields of the generated log.
    #[arg(long, default_value_t = 8)]
    fields: usize,
    /// Ids per field.
    #[arg(long, default_value_t = 100)]
    vocab: usize,
    /// Training epochs (early stopping may end sooner).
    #[arg(long, default_value_t = 12)]
    epochs: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum BadRow {
    Error,
    Skip,
}

impl From<BadRow> for OnBadRow {
    fn from(b: BadRow) -> Self {
        match b {
            BadRow::Error => OnBadRow::Error,
            BadRow::Skip => OnBadRow::Skip,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Config directory with dataset_config.yaml and model_config.yaml (or folders of them).
    #[arg(long)]
    config: PathBuf,
    /// Experiment id in model_config.
    #[arg(long)]
    expid: String,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// What to do with a malformed row: stop with an error naming file, line and field, or
    /// skip it and report the count.
    #[arg(long, value_enum, default_value = "error")]
    on_bad_row: BadRow,
    /// Re-encode the data even if the cache matches the config.
    #[arg(long)]
    rebuild_cache: bool,
    /// Override a model-config value, e.g. `--set epochs=3` (YAML value syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Run directory (default: <model_root>/<dataset_id>/<expid>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Finetune from a `recforge pretrain` checkpoint: embeddings and encoder are loaded,
    /// the click head starts fresh.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Write the restored best checkpoint's metrics as `{"valid": {…}, "test": {…}}`.
    #[arg(long)]
    metrics_json: Option<PathBuf>,
}

#[derive(Args)]
struct PretrainArgs {
    /// Config directory with dataset_config.yaml and model_config.yaml.
    #[arg(long)]
    config: PathBuf,
    /// Experiment id in model_config (the backbone; `pt_*` keys set the pretraining).
    #[arg(long)]
    expid: String,
    /// MAP's objective: masked feature prediction or replaced feature detection.
    #[arg(long, value_parser = ["mfp", "rfd"])]
    method: String,
    /// Override a model-config value, e.g. `--set pt_epochs=5`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Where the pretrained checkpoint goes (default:
    /// <model_root>/<dataset_id>/<expid>_<method>/model.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "error")]
    on_bad_row: BadRow,
}

#[derive(Args)]
pub(crate) struct EvaluateArgs {
    /// A checkpoint (.safetensors) or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// A data file in the model family's format: labelled rows for CTR; held-out
    /// interactions (.npy pairs, RecBole .inter, or u.data) for top-K.
    #[arg(long)]
    data: PathBuf,
    /// Top-K: interactions never to rank besides the training history (e.g. the validation
    /// file when `--data` is the test file). Repeatable.
    #[arg(long)]
    exclude: Vec<PathBuf>,
    /// Write the metrics as `{"test": {…}}`.
    #[arg(long)]
    metrics_json: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "error")]
    on_bad_row: BadRow,
}

#[derive(Args)]
struct PredictArgs {
    /// A checkpoint (.safetensors) or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// Input rows (the label column may be absent).
    #[arg(long)]
    input: PathBuf,
    /// Output CSV with `line` (the input's line or Parquet row number) and `score` columns
    /// (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also copy this input column (e.g. a request id) into the output, before `score`.
    #[arg(long)]
    id_column: Option<String>,
    #[arg(long, value_enum, default_value = "error")]
    on_bad_row: BadRow,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a synthetic click log (CSV splits + configs + the Bayes-optimal AUC).
    Generate(GenerateArgs),
    /// Encode (or reuse) a dataset and print its fields, vocabularies and splits.
    Inspect {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        expid: String,
    },
    /// Write the project's fixed splits (Frappe, Criteo slice, MovieLens-100K and its behaviour
    /// variant for DIN) as CSVs.
    Split {
        /// The shared data folder (default: $RECFORGE_DATA or ../shared/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Number of fields (each with --vocab ids), unless --criteo-like.
    #[arg(long, default_value_t = 16)]
    fields: usize,
    #[arg(long, default_value_t = 1000)]
    vocab: usize,
    /// 39 fields as the throughput benchmark has them (13 × 100 ids + 26 falling from 300k),
    /// with this many embedding rows in all.
    #[arg(long)]
    criteo_like: Option<usize>,
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    #[arg(long, default_value_t = 2024)]
    seed: u64,
}

fn main() {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the thread count")?;
    }
    match cli.command {
        Command::Quickstart(a) => quickstart(a),
        Command::Train(a) => train(a),
        Command::Pretrain(a) => pretrain(a),
        Command::Evaluate(a) => evaluate(a),
        Command::Predict(a) => predict(a),
        Command::Data(d) => data(d),
        Command::Serve(a) => serve_cmd::serve(a),
        Command::Mcp(a) => serve_cmd::mcp(a),
        Command::Embed(a) => text_cmd::embed(a),
        Command::Search(a) => text_cmd::search(a),
        Command::ItemVectors(a) => topk_cmd::item_vectors(&a),
    }
}

/// Progress bar per epoch and an epoch table on standard error, one column per metric of
/// the objective (`train_…`) and of validation (`valid_…`).
struct Progress {
    bar: Option<ProgressBar>,
    started: std::time::Instant,
    /// (train metric names, validation metric names)
    columns: Option<(Vec<String>, Vec<String>)>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            started: std::time::Instant::now(),
            columns: None,
        }
    }

    /// A table whose validation columns are known before the first evaluation (epochs
    /// without one show `-`).
    fn with_columns(valid: Vec<String>) -> Self {
        Progress::with(Vec::new(), valid)
    }

    /// A table for training without validation (pretraining): the objective's own metrics.
    fn with_train_columns(train: Vec<String>) -> Self {
        Progress::with(train, Vec::new())
    }

    fn with(train: Vec<String>, valid: Vec<String>) -> Self {
        let mut p = Progress::new();
        let columns = (train, valid);
        p.print_header(&columns);
        p.columns = Some(columns);
        p
    }

    fn print_header(&self, (train, valid): &(Vec<String>, Vec<String>)) {
        let mut head = format!("{:>5} {:>10} {:>11}", "epoch", "lr", "train_loss");
        let named = train.iter().map(|n| format!("train_{n}"));
        for n in named.chain(valid.iter().map(|n| format!("valid_{n}"))) {
            head += &format!(" {n:>12}");
        }
        eprintln!("{head} {:>8} {:>10}", "seconds", "samples/s");
    }
}

impl TrainObserver for Progress {
    fn on_epoch_start(&mut self, epoch: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        self.bar = Some(bar);
        self.started = std::time::Instant::now();
    }

    fn on_batch(&mut self, done: usize, samples: usize, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            let rate = samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            b.set_message(format!("loss {loss:.4}  {rate:.0} samples/s"));
        }
    }

    fn on_epoch_end(&mut self, l: &EpochLog) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.columns.is_none() && !l.valid.is_empty() {
            let names = |m: &recforge_train::Metrics| m.0.iter().map(|(k, _)| k.clone()).collect();
            let columns = (names(&l.train), names(&l.valid));
            self.print_header(&columns);
            self.columns = Some(columns);
        }
        let mut line = format!(
            "{:>5} {:>10.2e} {:>11.6}",
            l.epoch, l.learning_rate, l.train_loss
        );
        if let Some((train, valid)) = &self.columns {
            let train = train.iter().map(|n| l.train.get(n));
            for v in train.chain(valid.iter().map(|n| l.valid.get(n))) {
                let v = v.map(|v| format!("{v:.6}"));
                line += &format!(" {:>12}", v.unwrap_or_else(|| "-".into()));
            }
        }
        eprintln!("{line} {:>8.1} {:>10.0}", l.seconds, l.samples_per_sec);
    }

    fn message(&mut self, msg: &str) {
        eprintln!("{msg}");
    }
}

fn apply_overrides(model: &mut recforge_data::ModelConfig, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--set `{o}`: expected KEY=VALUE"))?;
        let value: serde_json::Value =
            serde_norway_value(v).with_context(|| format!("--set `{o}`: cannot read the value"))?;
        model.values.insert(k.trim().to_string(), value);
    }
    Ok(())
}

fn serde_norway_value(v: &str) -> Result<serde_json::Value> {
    // a YAML scalar or flow collection, e.g. 3, 0.5, true, [400, 400], DeepFM
    Ok(serde_json::from_str(v)
        .or_else(|_| serde_json::from_str(&format!("\"{}\"", v.replace('"', "\\\""))))?)
}

/// Loads an experiment, applies `--set` overrides and checks the result before any work.
fn load_checked(config: &Path, expid: &str, overrides: &[String]) -> Result<ExperimentConfig> {
    let mut exp = load_experiment(config, expid)?;
    apply_overrides(&mut exp.model, overrides)?;
    for w in recforge_train::check_model_config(&exp.model)? {
        eprintln!("warning: {w}");
    }
    Ok(exp)
}

/// Trains an experiment of whichever family its dataset entry is.
fn train(a: TrainArgs) -> Result<()> {
    let (model, dataset_id) = recforge_data::config::load_model_config(&a.config, &a.expid)?;
    match recforge_data::config::load_dataset_entry(&a.config, &dataset_id)? {
        recforge_data::config::DatasetEntry::Topk { config, source, .. } => {
            topk_cmd::train(&a, model, &dataset_id, &config, &source)
        }
        recforge_data::config::DatasetEntry::Seq { config, source, .. } => {
            seq_cmd::train(&a, model, &dataset_id, &config, &source)
        }
        recforge_data::config::DatasetEntry::Kt { config, source, .. } => {
            kt_cmd::train(&a, model, &dataset_id, &config, &source)
        }
        recforge_data::config::DatasetEntry::Ctr(_) => train_ctr(a).map(|_| ()),
    }
}

/// Applies `--set` to a top-K or sequential model config and checks it with `check` (printing
/// its warnings) before any data is read.
pub(crate) fn prepare_model_config(
    a: &TrainArgs,
    cfg: &mut recforge_data::ModelConfig,
    check: fn(&recforge_data::ModelConfig) -> recforge_train::Result<Vec<String>>,
) -> Result<()> {
    apply_overrides(cfg, &a.overrides)?;
    for w in check(cfg)? {
        eprintln!("warning: {w}");
    }
    if a.init_from.is_some() {
        bail!("--init-from is for CTR models (MAP pretraining)");
    }
    Ok(())
}

/// Prints the restored best checkpoint's valid and test metrics (as the family describes
/// them) and where it is, and writes the loop's metrics to `metrics_json` when asked.
pub(crate) fn print_fit_report(
    report: &recforge_train::FitReport,
    valid: Option<String>,
    test: Option<String>,
    metrics_json: Option<&Path>,
) -> Result<()> {
    if let Some(v) = valid {
        println!("valid  {v}");
    }
    if let Some(t) = test {
        println!("test  {t}");
    }
    println!(
        "best epoch {}; model saved to {}",
        report.best_epoch,
        report.checkpoint.display()
    );
    if let Some(p) = metrics_json {
        write_metrics_json(p, &report.metrics_json())?;
    }
    Ok(())
}

/// Writes `{"valid": …, "test": …}` to `path` (atomically).
pub(crate) fn write_metrics_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    recforge_data::cache::write_atomic(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The run directory of an experiment: `--run-dir`, else `<model_root>/<dataset_id>/<expid>`.
pub(crate) fn run_dir_of(
    a: &TrainArgs,
    model: &recforge_data::ModelConfig,
    dataset_id: &str,
) -> PathBuf {
    a.run_dir.clone().unwrap_or_else(|| {
        PathBuf::from(model.str_or("model_root", "./checkpoints/"))
            .join(dataset_id)
            .join(&a.expid)
    })
}

fn train_ctr(a: TrainArgs) -> Result<TrainReport> {
    let exp = load_checked(&a.config, &a.expid, &a.overrides)?;
    let ds = EncodedDataset::prepare(&exp.dataset, a.on_bad_row.into(), a.rebuild_cache, &|m| {
        eprintln!("{m}")
    })?;
    if ds.skipped > 0 {
        eprintln!("skipped {} malformed rows (--on-bad-row skip)", ds.skipped);
    }
    eprintln!(
        "dataset {}: {} train / {} valid / {} test rows, {} fields",
        exp.dataset.dataset_id,
        ds.train.rows,
        ds.valid.as_ref().map_or(0, |s| s.rows),
        ds.test.as_ref().map_or(0, |s| s.rows),
        ds.feature_map.num_fields()
    );
    let mut ds = ds;
    let fraction = exp.model.positive_f64_or("label_fraction", 1.0)?;
    if fraction > 1.0 {
        bail!("label_fraction {fraction} should be in (0, 1]");
    }
    if fraction < 1.0 {
        // a low-label regime: the vocabularies stay those of the whole training split
        ds.train = ds.train.sample_fraction(fraction, 0);
        eprintln!(
            "training on {} labelled rows (label_fraction {fraction})",
            ds.train.rows
        );
    }
    let mut model =
        recforge_train::text_features::build_model(&exp.model, &mut ds, &|m| eprintln!("{m}"))?;
    if let Some(p) = &a.init_from {
        let ckpt = recforge_train::score::resolve_checkpoint(p);
        let head = model.net.head_params();
        let n =
            recforge_train::checkpoint::load_pretrained(&ckpt, &mut model, &ds.feature_map, &head)
                .with_context(|| format!("initialising from {}", ckpt.display()))?;
        eprintln!(
            "initialised {n} tensors from {} (click head fresh)",
            ckpt.display()
        );
    }
    let tcfg = TrainConfig::from_config(&exp.model)?;
    let run_dir = run_dir_of(&a, &exp.model, &exp.dataset.dataset_id);
    let run = RunDir::create(&run_dir)?;
    let resolved = serde_json::json!({
        "expid": exp.expid,
        "model": exp.model.values,
        "dataset": exp.dataset.raw,
    });
    run.write_json("config.json", &resolved)?;
    eprintln!(
        "model {} ({} parameters), run directory {}",
        model.name,
        model.num_parameters(),
        run_dir.display()
    );
    let mut trainer = Trainer::new(tcfg, &model);
    let report = trainer.fit(
        &mut model,
        &ds,
        &exp.model,
        &run,
        a.resume,
        &mut Progress::new(),
    )?;
    // CTR's report describes its own metrics (AUC, logloss)
    print_fit_report(
        &report.fit,
        report.valid.as_ref().map(|v| v.describe()),
        report.test.as_ref().map(|t| t.describe()),
        a.metrics_json.as_deref(),
    )?;
    Ok(report)
}

fn pretrain(a: PretrainArgs) -> Result<()> {
    use recforge_train::pretrain::{Method, PretrainConfig, PretrainData, Pretrainer};
    let exp = load_checked(&a.config, &a.expid, &a.overrides)?;
    let method = Method::parse(&a.method).context("--method is mfp or rfd")?;
    let mut ds = EncodedDataset::prepare(&exp.dataset, a.on_bad_row.into(), false, &|m| {
        eprintln!("{m}")
    })?;
    let mut model =
        recforge_train::text_features::build_model(&exp.model, &mut ds, &|m| eprintln!("{m}"))?;
    let pcfg = PretrainConfig::from_config(&exp.model, method)?;
    let tcfg = TrainConfig::from_config(&exp.model)?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(exp.model.str_or("model_root", "./checkpoints/"))
            .join(&exp.dataset.dataset_id)
            .join(format!("{}_{}", exp.expid, a.method))
            .join("model.safetensors")
    });
    let out = if out.extension().is_some_and(|e| e == "safetensors") {
        out
    } else {
        out.join("model.safetensors")
    };
    // the output directory is a run directory (locked: one pretraining at a time into it)
    let run = RunDir::create(out.parent().unwrap_or(Path::new(".")))?;
    let mut pt = Pretrainer::new(pcfg.clone(), tcfg, &mut model, &ds.feature_map, &ds.train)?;
    eprintln!(
        "{} pretraining of {} on {} rows: {} epochs, mask ratio {}, {} negatives, lr {} ({}), \
            weight decay {}",
        method.name(),
        model.name,
        ds.train.rows,
        pcfg.epochs,
        pcfg.mask_ratio,
        pcfg.negatives,
        pcfg.learning_rate,
        if pcfg.cosine { "cosine" } else { "constant" },
        pcfg.weight_decay
    );
    let data = PretrainData {
        train: &ds.train,
        feature_map: &ds.feature_map,
        config: &exp.model,
    };
    let progress = &mut Progress::with_train_columns(vec!["accuracy".into()]);
    let report = pt.fit(&mut model, data, &run, progress)?;
    println!("pretrained checkpoint: {}", report.checkpoint.display());
    Ok(())
}

/// The built-in demo. The planted logit is a factorisation machine's (first-order weights
/// plus pairwise factors), so DeepFM can learn it; with 8 fields × 100 ids, 800k training rows
/// and embedding regularisation 0.01 it comes within 0.01 of the Bayes-optimal AUC (seeds
/// 2024–2026: 0.004–0.005 below it), in about 20 s on 2 cores. LR on the same rows shows what
/// the pairwise terms are worth.
fn quickstart(a: QuickstartArgs) -> Result<()> {
    let spec = SyntheticSpec {
        rows: a.rows,
        vocab_sizes: vec![a.vocab; a.fields],
        ..Default::default()
    };
    eprintln!(
        "generating {} synthetic rows ({} fields × {} ids, Zipf {}) into {}",
        spec.rows,
        spec.vocab_sizes.len(),
        spec.vocab_sizes[0],
        spec.zipf_exponent,
        a.out.display()
    );
    let info = synthetic::generate(&spec, &a.out, &|_| {})?;
    let run = |expid: &str, overrides: &[&str]| {
        let mut overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        overrides.push(format!("epochs={}", a.epochs));
        train_ctr(TrainArgs {
            config: a.out.clone(),
            expid: expid.into(),
            resume: false,
            on_bad_row: BadRow::Error,
            rebuild_cache: false,
            overrides,
            run_dir: None,
            init_from: None,
            metrics_json: None,
        })
    };
    let deepfm = run(
        "DeepFM_synthetic",
        &["hidden_units=[64, 64]", "embedding_regularizer=0.01"],
    )?;
    eprintln!("\nthe same data with LR (first-order terms only):");
    let lr = run("LR_synthetic", &[])?;
    let test_auc = |r: &TrainReport| r.test.as_ref().and_then(|t| t.auc).unwrap_or(f64::NAN);
    let (auc, lr_auc) = (test_auc(&deepfm), test_auc(&lr));
    println!(
        "LR test AUC {lr_auc:.6}  (DeepFM {:+.4}: the pairwise terms LR cannot model)",
        auc - lr_auc
    );
    println!(
        "Bayes-optimal test AUC {:.6}  (DeepFM {:+.4}; it reaches {:.1}% of the way from 0.5)",
        info.bayes_auc_test,
        auc - info.bayes_auc_test,
        100.0 * (auc - 0.5) / (info.bayes_auc_test - 0.5)
    );
    Ok(())
}

fn evaluate(a: EvaluateArgs) -> Result<()> {
    let ckpt = recforge_train::score::resolve_checkpoint(&a.model);
    match recforge_train::checkpoint::checkpoint_format(&ckpt)?.as_str() {
        recforge_train::topk::TOPK_FORMAT => return topk_cmd::evaluate(&a, &ckpt),
        recforge_train::seq::SEQ_FORMAT => return seq_cmd::evaluate(&a, &ckpt),
        recforge_train::kt::KT_FORMAT => return kt_cmd::evaluate(&a, &ckpt),
        _ => {}
    }
    let lm = load_model(&a.model)?;
    let mut labels = Vec::new();
    let mut probs = Vec::new();
    let mut missing_label = false;
    let (rows, skipped) = score_file(&lm, &a.data, a.on_bad_row.into(), 8192, None, &mut |b| {
        probs.extend_from_slice(b.probs);
        match b.labels {
            Some(l) => labels.extend_from_slice(l),
            None => missing_label = true,
        }
        Ok(())
    })?;
    if missing_label {
        bail!(
            "{}: no label column `{}` to evaluate against",
            a.data.display(),
            lm.meta.feature_map.label
        );
    }
    let auc = recforge_metrics::auc(&labels, &probs);
    let ll = recforge_metrics::logloss(&labels, &probs);
    eprintln!("{}", rows_read(rows, skipped));
    println!(
        "{} rows  AUC {}  logloss {ll:.6}",
        rows,
        auc.map(|a| format!("{a:.6}"))
            .unwrap_or_else(|| "n/a".into())
    );
    if let Some(p) = &a.metrics_json {
        let mut m = serde_json::Map::new();
        if let Some(x) = auc {
            m.insert("auc".into(), x.into());
        }
        m.insert("logloss".into(), ll.into());
        write_metrics_json(p, &serde_json::json!({ "test": m }))?;
    }
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let lm = load_model(&a.model)?;
    // the output is written under a temporary name, renamed when complete, removed on error
    let tmp = a.output.as_deref().map(tmp_path);
    let mut guard = recforge_data::cache::TempGuard(tmp.clone());
    let mut out: Box<dyn Write> = match (&tmp, &a.output) {
        (Some(t), Some(p)) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(t).with_context(|| format!("creating {}", p.display()))?,
        )),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match &a.id_column {
        Some(c) => writeln!(out, "line,{},score", csv_cell(c))?,
        None => writeln!(out, "line,score")?,
    }
    let write_err = |e| recforge_train::TrainError::Io {
        path: a.output.clone().unwrap_or_else(|| "standard output".into()),
        source: e,
    };
    let (rows, skipped) = score_file(
        &lm,
        &a.input,
        a.on_bad_row.into(),
        8192,
        a.id_column.as_deref(),
        &mut |b| {
            for (i, (p, line)) in b.probs.iter().zip(b.lines).enumerate() {
                match b.ids {
                    Some(ids) => writeln!(out, "{line},{},{p}", csv_cell(&ids[i])),
                    None => writeln!(out, "{line},{p}"),
                }
                .map_err(write_err)?;
            }
            Ok(())
        },
    )?;
    out.flush()?;
    drop(out);
    if let (Some(t), Some(p)) = (&tmp, &a.output) {
        std::fs::rename(t, p).with_context(|| format!("writing {}", p.display()))?;
        guard.0 = None;
        eprintln!("wrote {rows} scores to {}", p.display());
    }
    eprintln!("{}", rows_read(rows, skipped));
    if skipped > 0 {
        eprintln!("(the skipped rows' line numbers are absent from the output)");
    }
    Ok(())
}

/// The account of a scored file: every row read was scored or skipped.
fn rows_read(scored: usize, skipped: u64) -> String {
    format!(
        "{} rows read: {scored} scored, {skipped} skipped",
        scored as u64 + skipped
    )
}

/// A CSV cell: quoted when it holds a comma, quote or line break.
fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Generate(g) => {
            let mut spec = match g.criteo_like {
                Some(total) => SyntheticSpec::criteo_like(g.rows, total),
                None => SyntheticSpec {
                    rows: g.rows,
                    vocab_sizes: vec![g.vocab; g.fields],
                    ..Default::default()
                },
            };
            spec.zipf_exponent = g.zipf;
            spec.seed = g.seed;
            let bar = ProgressBar::new(spec.rows as u64);
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} rows {per_sec}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let info = synthetic::generate(&spec, &g.out, &|n| bar.set_position(n as u64))?;
            bar.finish_and_clear();
            println!(
                "wrote {} / {} / {} rows to {} (click rate {:.3}); Bayes-optimal test AUC {:.6}, \
                    logloss {:.6}",
                info.train_rows,
                info.valid_rows,
                info.test_rows,
                g.out.display(),
                info.click_rate,
                info.bayes_auc_test,
                info.bayes_logloss_test
            );
        }
        DataCommand::Inspect { config, expid } => {
            let exp = load_experiment(&config, &expid)?;
            let ds = EncodedDataset::prepare(&exp.dataset, OnBadRow::Error, false, &|m| {
                eprintln!("{m}")
            })?;
            println!(
                "dataset {} (cache {})",
                exp.dataset.dataset_id,
                ds.dir.display()
            );
            println!(
                "rows: train {}  valid {}  test {}",
                ds.train.rows,
                ds.valid.as_ref().map_or(0, |s| s.rows),
                ds.test.as_ref().map_or(0, |s| s.rows)
            );
            let labels = ds.train.labels();
            println!(
                "train click rate {:.4}",
                labels.iter().map(|&l| l as f64).sum::<f64>() / labels.len().max(1) as f64
            );
            println!(
                "{:<16} {:<12} {:>10} {:>6}",
                "field", "type", "vocab", "width"
            );
            for (i, f) in ds.feature_map.fields.iter().enumerate() {
                let kind = match &f.spec.kind {
                    recforge_data::FieldKind::Categorical => "categorical".to_string(),
                    recforge_data::FieldKind::Numeric => "numeric".to_string(),
                    recforge_data::FieldKind::Sequence { max_len, .. } => {
                        format!("sequence({max_len})")
                    }
                };
                println!(
                    "{:<16} {:<12} {:>10} {:>6}",
                    f.spec.name,
                    kind,
                    ds.feature_map.vocab_of(i).size(),
                    f.width
                );
            }
        }
        DataCommand::Split { data_dir, out } => {
            let dir = data_dir.unwrap_or_else(recforge_data::shared_data_dir);
            for (name, f) in [
                (
                    "frappe",
                    recforge_data::splits::frappe as fn(&Path, &Path) -> _,
                ),
                ("criteo", recforge_data::splits::criteo),
                ("ml100k", recforge_data::splits::ml100k),
                ("ml100k_behaviour", recforge_data::splits::ml100k_behaviour),
            ] {
                let [tr, va, te] = f(&dir, &out)
                    .with_context(|| format!("making the {name} split from {}", dir.display()))?;
                println!(
                    "{name}: {tr} / {va} / {te} rows in {}",
                    out.join(name).display()
                );
            }
        }
    }
    Ok(())
}
