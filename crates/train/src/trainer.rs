use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::fit::{EpochLog, EpochStats, FitConfig, FitReport, Metrics, Split, TrainTask};
pub use crate::fit::{Monitor, Silent, TrainObserver};
use crate::run::RunDir;
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use recforge_data::{Batch, BatchIter, EncodedDataset, EncodedSplit, FeatureMap, ModelConfig};
use recforge_models::Model;
use recforge_nn::embedding::UpdateMode;
use recforge_nn::graph::Grads;
use recforge_nn::optim::grad_norm_sq;
use recforge_nn::{
    DenseOptimizer, EmbeddingOptimizer, EmbeddingTable, Graph, NodeId, ParamGroup, ParamStore,
    RowGrads, StateUpdate,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// FuxiCTR's `monitor` (a metric name, or a mapping of metric to weight) and `monitor_mode`.
fn monitor_from_config(cfg: &ModelConfig) -> Result<Monitor> {
    let terms = match cfg.get("monitor") {
        None => vec![("AUC".to_string(), 1.0)],
        Some(Value::String(s)) => vec![(s.clone(), 1.0)],
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_f64() {
                Some(w) => Ok((k.clone(), w)),
                None => Err(TrainError::Config(format!(
                    "monitor: the weight of `{k}` should be a number, got {v}"
                ))),
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(TrainError::Config(format!(
                "monitor should be a metric name or a mapping of metric to weight, got {v}"
            )))
        }
    };
    for (name, _) in &terms {
        if !matches!(name.as_str(), "AUC" | "logloss" | "gAUC") {
            return Err(TrainError::Config(format!(
                "monitor: unknown metric `{name}` (AUC, logloss, gAUC)"
            )));
        }
    }
    let maximize = match cfg.str_or("monitor_mode", "max").as_str() {
        "max" => true,
        "min" => false,
        other => {
            return Err(TrainError::Config(format!(
                "monitor_mode `{other}` (max or min)"
            )))
        }
    };
    Ok(Monitor { terms, maximize })
}

/// How embedding tables are updated (recforge's `embedding_update` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingUpdate {
    /// Dense for tables of at most `dense_max_values` values (exactly PyTorch's dense
    /// semantics, at a cost bounded by that size), row-wise sparse above.
    Auto,
    Sparse,
    Dense,
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub patience: usize,
    pub monitor: Monitor,
    pub shuffle: bool,
    pub seed: u64,
    pub max_grad_norm: f32,
    pub reduce_lr_on_plateau: bool,
    pub embedding_update: EmbeddingUpdate,
    pub dense_max_values: usize,
    /// Shuffle blocks of this many consecutive rows (0: a full permutation). Default: 0 for
    /// splits whose cache fits in 2 GiB, 65,536 above, so out-of-core data is read in blocks.
    pub shuffle_block_rows: Option<usize>,
    /// Field whose id groups rows for gAUC (FuxiCTR's `group_id`).
    pub group_id: Option<String>,
    /// `param_groups`: per-scope learning rates and weight decay of dense parameters.
    pub param_groups: Vec<ParamGroup>,
}

/// Reads `param_groups: [{scope: bert, learning_rate: 5.0e-5, weight_decay: 0.01}, …]`: each
/// group's rate relative to `learning_rate` (so schedules and plateau cuts move them all).
pub fn param_groups_from_config(cfg: &ModelConfig, learning_rate: f32) -> Result<Vec<ParamGroup>> {
    let Some(v) = cfg.get("param_groups") else {
        return Ok(Vec::new());
    };
    let err = |i: usize, msg: String| TrainError::Config(format!("param_groups[{i}]: {msg}"));
    let Value::Array(items) = v else {
        return Err(TrainError::Config(format!(
            "param_groups should be a list of {{scope, learning_rate, weight_decay}}, got {v}"
        )));
    };
    let mut groups = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(err(i, format!("expected a map, got {item}")));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !["scope", "learning_rate", "weight_decay"].contains(&k.as_str()))
        {
            return Err(err(
                i,
                format!("unknown key `{k}` (scope, learning_rate, weight_decay)"),
            ));
        }
        let scope = match m.get("scope") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(err(
                    i,
                    "`scope` (a parameter-name prefix) is required".into(),
                ))
            }
        };
        let number = |key: &str, default: f64| -> Result<f64> {
            match m.get(key) {
                None => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0 && (*x as f32).is_finite())
                    .ok_or_else(|| {
                        err(i, format!("{key} should be a non-negative number, got {x}"))
                    }),
            }
        };
        let lr = number("learning_rate", learning_rate as f64)?;
        if lr == 0.0 {
            return Err(err(
                i,
                "learning_rate must be positive (freeze a scope instead)".into(),
            ));
        }
        groups.push(ParamGroup {
            scope,
            lr_scale: (lr / learning_rate as f64) as f32,
            weight_decay: number("weight_decay", 0.0)? as f32,
        });
    }
    Ok(groups)
}

impl TrainConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let e = |x: recforge_data::DataError| TrainError::Config(x.to_string());
        let update = match cfg.str_or("embedding_update", "auto").as_str() {
            "auto" => EmbeddingUpdate::Auto,
            "sparse" => EmbeddingUpdate::Sparse,
            "dense" => EmbeddingUpdate::Dense,
            other => {
                return Err(TrainError::Config(format!(
                    "embedding_update `{other}` (auto, sparse, dense)"
                )))
            }
        };
        let batch_size = cfg.positive_usize_or("batch_size", 4096).map_err(e)?;
        // CTR models train binary cross-entropy on click labels; say so rather than ignore it
        for (key, accepted) in [
            ("loss", &["binary_crossentropy", "bce"][..]),
            ("task", &["binary_classification"][..]),
        ] {
            if let Some(v) = cfg.get(key) {
                let name = v.as_str().unwrap_or_default();
                if !accepted.contains(&name) {
                    return Err(TrainError::Config(format!(
                        "{key} {v} is not supported by CTR models ({})",
                        accepted.join(", ")
                    )));
                }
            }
        }
        if let Some(v) = cfg.get("metrics") {
            let names: Vec<&str> = match v {
                Value::Array(a) => a.iter().map(|m| m.as_str().unwrap_or("?")).collect(),
                Value::String(s) => vec![s.as_str()],
                _ => vec!["?"],
            };
            if let Some(bad) = names
                .iter()
                .find(|m| !matches!(**m, "AUC" | "logloss" | "gAUC"))
            {
                return Err(TrainError::Config(format!(
                    "metrics: `{bad}` is not a CTR metric (AUC, logloss, gAUC)"
                )));
            }
        }
        let learning_rate = cfg.positive_f32_or("learning_rate", 1e-3).map_err(e)?;
        Ok(TrainConfig {
            epochs: cfg.positive_usize_or("epochs", 100).map_err(e)?,
            batch_size,
            learning_rate,
            patience: cfg.usize_or("early_stop_patience", 2).map_err(e)?,
            monitor: monitor_from_config(cfg)?,
            shuffle: cfg.bool_or("shuffle", true).map_err(e)?,
            seed: cfg.usize_or("seed", 2024).map_err(e)? as u64,
            max_grad_norm: cfg
                .non_negative_f32_or("max_gradient_norm", 10.0)
                .map_err(e)?,
            reduce_lr_on_plateau: cfg.bool_or("reduce_lr_on_plateau", true).map_err(e)?,
            embedding_update: update,
            dense_max_values: cfg
                .usize_or("dense_embedding_max_values", 1 << 18)
                .map_err(e)?,
            shuffle_block_rows: match cfg.get("shuffle_block_rows") {
                None => None,
                Some(_) => Some(cfg.usize_or("shuffle_block_rows", 0).map_err(e)?),
            },
            group_id: match cfg.get("group_id") {
                None => None,
                Some(Value::String(g)) => Some(g.clone()),
                Some(v) => {
                    return Err(TrainError::Config(format!(
                        "group_id should be a field name, got {v}"
                    )))
                }
            },
            param_groups: param_groups_from_config(cfg, learning_rate)?,
        })
    }

    /// Checks what needs the dataset: the `group_id` field exists.
    pub fn check_against(&self, fmap: &FeatureMap) -> Result<()> {
        if let Some(g) = &self.group_id {
            if fmap.field_index(g).is_none() {
                let names: Vec<&str> = fmap.fields.iter().map(|f| f.spec.name.as_str()).collect();
                return Err(TrainError::Config(format!(
                    "group_id `{g}` is not a field of the dataset ({})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Model-config keys the training loop reads.
pub const TRAIN_KEYS: &[&str] = &[
    "dataset_id",
    "model_root",
    "epochs",
    "batch_size",
    "learning_rate",
    "early_stop_patience",
    "monitor",
    "monitor_mode",
    "shuffle",
    "max_gradient_norm",
    "reduce_lr_on_plateau",
    "embedding_update",
    "dense_embedding_max_values",
    "shuffle_block_rows",
    "group_id",
    "param_groups",
    "loss",
    "task",
    "metrics",
    "label_fraction",
];

/// Keys of FuxiCTR's `Base` and run settings that change nothing recforge computes: accepted
/// with a warning, so FuxiCTR's own configs run as they are.
pub const FUXICTR_IGNORED_KEYS: &[&str] = &[
    "num_workers",
    "verbose",
    "pickle_feature_encoder",
    "save_best_only",
    "eval_steps",
    "debug_mode",
    "use_features",
    "feature_specs",
    "feature_config",
    "gpu",
];

/// Checks a model config before anything runs: a model recforge has, only keys something
/// reads (unknown keys are errors, with the nearest known key suggested), every value valid.
/// Returns warnings for FuxiCTR keys that are accepted but unused.
pub fn check_model_config(cfg: &ModelConfig) -> Result<Vec<String>> {
    let name = cfg.str_or("model", "");
    let model_keys = recforge_models::ctr::model_keys(&name).ok_or_else(|| {
        TrainError::Config(recforge_models::unknown_model(
            &name,
            recforge_models::Family::Ctr,
        ))
    })?;
    let known: Vec<&str> = [
        recforge_models::ctr::COMMON_KEYS,
        model_keys,
        TRAIN_KEYS,
        crate::pretrain::PRETRAIN_KEYS,
    ]
    .concat();
    let warnings = cfg.check_keys(&known, FUXICTR_IGNORED_KEYS)?;
    TrainConfig::from_config(cfg)?;
    crate::pretrain::PretrainConfig::from_config(cfg, crate::pretrain::Method::Mfp)?;
    Ok(warnings)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub rows: usize,
    pub auc: Option<f64>,
    pub logloss: f64,
    pub gauc: Option<f64>,
}

impl EvalMetrics {
    /// The metrics by their lower-case names (`auc`, `logloss`, `gauc`); AUCs of a split
    /// with one class are left out.
    pub fn to_metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        if let Some(a) = self.auc {
            m.push("auc", a);
        }
        m.push("logloss", self.logloss);
        if let Some(g) = self.gauc {
            m.push("gauc", g);
        }
        m
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "AUC {}  logloss {:.6}",
            self.auc
                .map(|a| format!("{a:.6}"))
                .unwrap_or_else(|| "n/a".into()),
            self.logloss
        );
        if let Some(g) = self.gauc {
            s += &format!("  gAUC {g:.6}");
        }
        s
    }
}

/// Scores a split in file order; returns the metrics and the probabilities.
pub fn evaluate(
    model: &Model,
    split: &EncodedSplit,
    fmap: &FeatureMap,
    batch_size: usize,
    group_id: Option<&str>,
) -> (EvalMetrics, Vec<f32>) {
    let mut probs = Vec::with_capacity(split.rows);
    let mut groups = Vec::new();
    let group_slot = group_id
        .and_then(|g| fmap.field_index(g))
        .map(|i| fmap.fields[i].offset);
    for b in BatchIter::sequential(split, batch_size.max(1024)) {
        probs.extend(model.predict(&b));
        if let Some(o) = group_slot {
            groups.extend((0..b.size).map(|r| b.row(r)[o]));
        }
    }
    let labels = split.labels();
    let m = EvalMetrics {
        rows: split.rows,
        auc: recforge_metrics::auc(&labels, &probs),
        logloss: recforge_metrics::logloss(&labels, &probs),
        gauc: group_slot.and_then(|_| recforge_metrics::gauc(&labels, &probs, &groups)),
    };
    (m, probs)
}

/// A training step whose loss or gradient is NaN or infinite: nothing was updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFiniteStep {
    pub what: &'static str,
    pub value: f64,
}

impl NonFiniteStep {
    pub fn check(what: &'static str, value: f64) -> std::result::Result<(), Self> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(NonFiniteStep { what, value })
        }
    }

    /// The error that stops a run, naming where it happened.
    pub fn at(self, epoch: usize, step: u64) -> TrainError {
        TrainError::NonFinite {
            epoch,
            step,
            what: format!("{} is {}", self.what, self.value),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub best_monitor: Option<f64>,
    pub valid: Option<EvalMetrics>,
    pub test: Option<EvalMetrics>,
    pub checkpoint: std::path::PathBuf,
    /// The loop's own report: metrics by name (`--metrics-json`).
    pub fit: FitReport,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub(crate) opt: DenseOptimizer,
    emb_opts: Vec<Vec<EmbeddingOptimizer>>,
    learning_rate: f32,
    step: u64,
}

impl Trainer {
    pub fn new(cfg: TrainConfig, model: &Model) -> Self {
        let kind = model.common.optimizer;
        let emb_opts = model
            .embeddings
            .iter()
            .map(|e| {
                e.tables
                    .iter()
                    .map(|t| {
                        let mode = match cfg.embedding_update {
                            EmbeddingUpdate::Sparse => UpdateMode::Sparse,
                            EmbeddingUpdate::Dense => UpdateMode::Dense,
                            EmbeddingUpdate::Auto if t.weight.len() <= cfg.dense_max_values => {
                                UpdateMode::Dense
                            }
                            EmbeddingUpdate::Auto => UpdateMode::Sparse,
                        };
                        EmbeddingOptimizer {
                            kind,
                            mode,
                            l2: model.common.embedding_regularizer,
                        }
                    })
                    .collect()
            })
            .collect();
        let mut opt = DenseOptimizer::new(kind, &model.params);
        // a group that holds no parameter is an error `fit` reports
        let _ = opt.set_groups(&model.params, cfg.param_groups.clone());
        Trainer {
            opt,
            learning_rate: cfg.learning_rate,
            cfg,
            emb_opts,
            step: 0,
        }
    }

    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// One optimizer step on one batch; returns the batch's mean loss. A non-finite loss or
    /// gradient changes nothing and is returned as an error.
    pub fn train_step(
        &mut self,
        model: &mut Model,
        batch: &Batch,
        rng: &mut StdRng,
    ) -> std::result::Result<f64, NonFiniteStep> {
        let fwd = model.forward(batch, true, rng);
        let mut graph = fwd.graph;
        let loss = graph.bce_with_logits(fwd.logits, &batch.labels);
        let mut pass = backward_pass(graph, loss)?;
        let emb_grads = model.embedding_grads(batch, &fwd.emb_nodes, &mut pass.grads);
        let lr = self.learning_rate;
        self.step_after(model, &pass, &emb_grads, &mut [], lr, 0.0)?;
        Ok(pass.loss)
    }

    /// The optimizer step after [`backward_pass`] (see [`Trainer::apply_step`]), then the
    /// batch-norm running statistics the forward pass recorded.
    pub(crate) fn step_after(
        &mut self,
        model: &mut Model,
        pass: &BackwardPass,
        emb_grads: &[Vec<RowGrads>],
        extra: &mut [(&mut EmbeddingTable, &RowGrads)],
        lr: f32,
        weight_decay: f32,
    ) -> std::result::Result<(), NonFiniteStep> {
        self.apply_step(
            model,
            &pass.grads.params,
            emb_grads,
            extra,
            lr,
            weight_decay,
        )?;
        apply_state_updates(&mut model.params, &pass.updates);
        Ok(())
    }

    /// One optimizer step from gradients of any loss: global-norm clipping over everything,
    /// dense and row-wise embedding updates, and `extra` tables outside the model (e.g. MAP's
    /// output embeddings, updated sparsely like the model's). `weight_decay` > 0 adds
    /// decoupled (AdamW-style) decay on regularized dense weights and on the rows touched.
    /// A non-finite gradient norm leaves every weight as it was and is returned as an error.
    pub fn apply_step(
        &mut self,
        model: &mut Model,
        dense: &[Option<recforge_nn::Tensor>],
        emb_grads: &[Vec<RowGrads>],
        extra: &mut [(&mut EmbeddingTable, &RowGrads)],
        lr: f32,
        weight_decay: f32,
    ) -> std::result::Result<(), NonFiniteStep> {
        let net_l2 = model.common.net_regularizer;
        let extra_opt = EmbeddingOptimizer {
            kind: model.common.optimizer,
            mode: UpdateMode::Sparse,
            l2: 0.0,
        };
        let mut norm_sq = grad_norm_sq(&model.params, dense, net_l2);
        for (e, (eg, opts)) in model
            .embeddings
            .iter()
            .zip(emb_grads.iter().zip(&self.emb_opts))
        {
            for ((t, g), o) in e.tables.iter().zip(eg).zip(opts) {
                norm_sq += t.grad_norm_sq(g, o);
            }
        }
        for (t, g) in extra.iter() {
            norm_sq += t.grad_norm_sq(g, &extra_opt);
        }
        NonFiniteStep::check("gradient norm", norm_sq)?;
        let norm = norm_sq.sqrt() as f32;
        let scale = if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
            self.cfg.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.opt.step(&mut model.params, dense, lr, scale, net_l2);
        let step = self.opt.step;
        let decay = 1.0 - lr * weight_decay;
        if weight_decay > 0.0 {
            let ids: Vec<_> = model
                .params
                .iter()
                .filter(|(id, p)| p.trainable && p.regularize && dense[id.0].is_some())
                .map(|(id, _)| id)
                .collect();
            for id in ids {
                model
                    .params
                    .value_mut(id)
                    .data
                    .iter_mut()
                    .for_each(|w| *w *= decay);
            }
        }
        // tables in parallel (each table's step is its own; a large one also splits its rows):
        // a CTR model has dozens of small tables, each too small to split
        let tables: Vec<_> = model
            .embeddings
            .iter_mut()
            .zip(emb_grads.iter().zip(&self.emb_opts))
            .flat_map(|(e, (eg, opts))| e.tables.iter_mut().zip(eg).zip(opts))
            .collect();
        tables.into_par_iter().for_each(|((t, g), o)| {
            t.apply(g, o, lr, scale, step);
            if weight_decay > 0.0 {
                t.decay_rows(g, decay);
            }
        });
        for (t, g) in extra.iter_mut() {
            t.apply(g, &extra_opt, lr, scale, step);
            if weight_decay > 0.0 {
                t.decay_rows(g, decay);
            }
        }
        self.step = step;
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.step = steps;
        self.opt.step = steps;
    }

    /// Trains with early stopping ([`fit`](crate::fit::fit): FuxiCTR's loop, evaluating every
    /// epoch), writes the run directory, restores the best checkpoint and scores the test
    /// split. With `resume`, continues from the run's `last` checkpoint.
    pub fn fit(
        &mut self,
        model: &mut Model,
        ds: &EncodedDataset,
        mcfg: &ModelConfig,
        run: &RunDir,
        resume: bool,
        obs: &mut dyn TrainObserver,
    ) -> Result<TrainReport> {
        self.cfg.check_against(&ds.feature_map)?;
        self.opt
            .set_groups(&model.params, self.cfg.param_groups.clone())
            .map_err(|e| TrainError::Config(format!("param_groups: {e}")))?;
        let fit_cfg = FitConfig {
            epochs: self.cfg.epochs,
            learning_rate: self.cfg.learning_rate,
            eval_step: 1,
            patience: self.cfg.patience,
            monitor: self.cfg.monitor.clone(),
            reduce_lr_on_plateau: self.cfg.reduce_lr_on_plateau,
            // FuxiCTR's checkpoint_and_earlystop: improvement must exceed 1e-6
            min_delta: 1e-6,
        };
        let mut task = CtrTask {
            trainer: self,
            model,
            ds,
            mcfg,
            valid: None,
            test: None,
        };
        let fit = crate::fit::fit(&mut task, &fit_cfg, run, resume, obs)?;
        Ok(TrainReport {
            epochs: fit.epochs.clone(),
            best_epoch: fit.best_epoch,
            best_monitor: fit.best_monitor,
            valid: task.valid.take(),
            test: task.test.take(),
            checkpoint: fit.checkpoint.clone(),
            fit,
        })
    }
}

/// CTR training as a [`TrainTask`]: epochs of shuffled row batches, AUC/logloss/gAUC.
struct CtrTask<'a> {
    trainer: &'a mut Trainer,
    model: &'a mut Model,
    ds: &'a EncodedDataset,
    mcfg: &'a ModelConfig,
    /// the latest evaluation of each split (the restored best model's, after `fit`)
    valid: Option<EvalMetrics>,
    test: Option<EvalMetrics>,
}

impl TrainTask for CtrTask<'_> {
    fn train_epoch(
        &mut self,
        epoch: usize,
        lr: f32,
        obs: &mut dyn TrainObserver,
    ) -> Result<EpochStats> {
        let cfg = &self.trainer.cfg;
        let train = &self.ds.train;
        let epoch_seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
        let block = cfg
            .shuffle_block_rows
            .unwrap_or(if train.rows * train.width * 4 > (2 << 30) {
                65_536
            } else {
                0
            });
        let batches = if cfg.shuffle {
            BatchIter::block_shuffled(train, cfg.batch_size, epoch_seed, block)
        } else {
            BatchIter::sequential(train, cfg.batch_size)
        };
        obs.on_epoch_start(epoch, batches.num_batches());
        let mut rng = StdRng::seed_from_u64(epoch_seed ^ 0x5eed);
        self.trainer.learning_rate = lr;
        let (mut loss_sum, mut samples) = (0.0, 0usize);
        for (i, b) in batches.enumerate() {
            let l = self
                .trainer
                .train_step(self.model, &b, &mut rng)
                .map_err(|e| e.at(epoch, self.trainer.step + 1))?;
            loss_sum += l * b.size as f64;
            samples += b.size;
            obs.on_batch(i + 1, samples, loss_sum / samples as f64);
        }
        Ok(EpochStats {
            loss: loss_sum / samples.max(1) as f64,
            samples,
            metrics: Metrics::default(),
        })
    }

    fn evaluate(&mut self, split: Split) -> Result<Option<Metrics>> {
        let data = match split {
            Split::Valid => self.ds.valid.as_ref(),
            Split::Test => self.ds.test.as_ref(),
        };
        let Some(data) = data else { return Ok(None) };
        let cfg = &self.trainer.cfg;
        let (m, _) = evaluate(
            self.model,
            data,
            &self.ds.feature_map,
            cfg.batch_size,
            cfg.group_id.as_deref(),
        );
        let metrics = m.to_metrics();
        match split {
            Split::Valid => self.valid = Some(m),
            Split::Test => self.test = Some(m),
        }
        Ok(Some(metrics))
    }

    fn save(
        &self,
        path: &std::path::Path,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> Result<()> {
        let opt = resume.is_some().then_some(&self.trainer.opt);
        save_checkpoint(
            path,
            self.model,
            self.mcfg,
            &self.ds.feature_map,
            metrics.clone(),
            opt,
            resume,
        )
    }

    fn load(&mut self, path: &std::path::Path, with_optimizer: bool) -> Result<Option<Value>> {
        let opt = with_optimizer.then_some(&mut self.trainer.opt);
        let meta = load_checkpoint(path, self.model, opt)?;
        Ok(meta.resume)
    }

    fn check_weights(&self) -> std::result::Result<(), NonFiniteStep> {
        non_finite_weight(self.model)
    }

    fn steps(&self) -> u64 {
        self.trainer.step
    }

    fn set_steps(&mut self, steps: u64) {
        self.trainer.set_steps(steps);
    }
}

/// The first weight of `model` that is NaN or infinite, as an error (checked before a save).
pub(crate) fn non_finite_weight(model: &Model) -> std::result::Result<(), NonFiniteStep> {
    let dense = model.params.iter().map(|(_, p)| &p.value.data[..]);
    let tables = model
        .embeddings
        .iter()
        .flat_map(|e| e.tables.iter().map(|t| &t.weight[..]));
    for w in dense.chain(tables) {
        if let Some(&x) = w.iter().find(|x| !x.is_finite()) {
            return Err(NonFiniteStep {
                what: "a weight",
                value: x as f64,
            });
        }
    }
    Ok(())
}

/// What the backward pass over a finished loss leaves for the optimizer step.
pub(crate) struct BackwardPass {
    pub loss: f64,
    pub grads: Grads,
    pub updates: Vec<StateUpdate>,
}

/// The step sequence every objective on a CTR model shares, up to the update: the loss must
/// be finite, then the backward pass; the graph is consumed, so the model can be updated next.
pub(crate) fn backward_pass(
    mut graph: Graph<'_>,
    loss: NodeId,
) -> std::result::Result<BackwardPass, NonFiniteStep> {
    let value = graph.value(loss).data[0] as f64;
    NonFiniteStep::check("loss", value)?;
    let grads = graph.backward(loss);
    let updates = std::mem::take(&mut graph.state_updates);
    Ok(BackwardPass {
        loss: value,
        grads,
        updates,
    })
}

fn apply_state_updates(params: &mut ParamStore, updates: &[recforge_nn::StateUpdate]) {
    for u in updates {
        let v = params.value_mut(u.param);
        v.data
            .iter_mut()
            .zip(&u.batch_value)
            .for_each(|(r, b)| *r = (1.0 - u.momentum) * *r + u.momentum * b);
    }
}
