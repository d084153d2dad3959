use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::run::{EpochLog, RunDir};
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::{Batch, BatchIter, EncodedDataset, EncodedSplit, FeatureMap, ModelConfig};
use recforge_models::Model;
use recforge_nn::embedding::UpdateMode;
use recforge_nn::optim::grad_norm_sq;
use recforge_nn::{DenseOptimizer, EmbeddingOptimizer, EmbeddingTable, ParamStore, RowGrads};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Instant;

/// The validation quantity early stopping watches: one metric, or FuxiCTR's weighted sum
/// (`monitor: {AUC: 1, logloss: -1}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Monitor {
    pub terms: Vec<(String, f64)>,
    pub maximize: bool,
}

impl Monitor {
    fn from_config(cfg: &ModelConfig) -> Result<Self> {
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

    pub fn value(&self, m: &EvalMetrics) -> f64 {
        self.terms
            .iter()
            .map(|(k, w)| {
                w * match k.as_str() {
                    "AUC" => m.auc.unwrap_or(0.5),
                    "gAUC" => m.gauc.unwrap_or(0.5),
                    _ => m.logloss,
                }
            })
            .sum()
    }
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
            monitor: Monitor::from_config(cfg)?,
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
        TrainError::Config(format!(
            "unknown model `{name}` (known: {})",
            recforge_models::ctr::MODEL_NAMES.join(", ")
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
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("rows".into(), json!(self.rows));
        m.insert("AUC".into(), json!(self.auc));
        m.insert("logloss".into(), json!(self.logloss));
        if self.gauc.is_some() {
            m.insert("gAUC".into(), json!(self.gauc));
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

/// Receives progress from [`Trainer::fit`] (the CLI draws a progress bar with it).
pub trait TrainObserver {
    fn on_epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn on_batch(&mut self, _done: usize, _samples: usize, _loss: f64) {}
    fn on_epoch_end(&mut self, _log: &EpochLog) {}
    fn message(&mut self, _msg: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainState {
    epochs_done: usize,
    learning_rate: f32,
    best: Option<f64>,
    best_epoch: usize,
    stopping_steps: usize,
    step: u64,
    logs: Vec<EpochLog>,
    stopped: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub best_monitor: Option<f64>,
    pub valid: Option<EvalMetrics>,
    pub test: Option<EvalMetrics>,
    pub checkpoint: std::path::PathBuf,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    opt: DenseOptimizer,
    emb_opts: Vec<Vec<EmbeddingOptimizer>>,
    state: TrainState,
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
        let state = TrainState {
            epochs_done: 0,
            learning_rate: cfg.learning_rate,
            best: None,
            best_epoch: 0,
            stopping_steps: 0,
            step: 0,
            logs: Vec::new(),
            stopped: false,
        };
        Trainer {
            opt: DenseOptimizer::new(kind, &model.params),
            cfg,
            emb_opts,
            state,
        }
    }

    pub fn learning_rate(&self) -> f32 {
        self.state.learning_rate
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
        let loss_value = graph.value(loss).data[0] as f64;
        NonFiniteStep::check("loss", loss_value)?;
        let mut grads = graph.backward(loss);
        let updates = std::mem::take(&mut graph.state_updates);
        let emb_grads = model.embedding_grads(batch, &fwd.emb_nodes, &mut grads);
        drop(graph);

        let lr = self.state.learning_rate;
        self.apply_step(model, &grads.params, &emb_grads, &mut [], lr, 0.0)?;
        apply_state_updates(&mut model.params, &updates);
        Ok(loss_value)
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
        for (e, (eg, opts)) in model
            .embeddings
            .iter_mut()
            .zip(emb_grads.iter().zip(&self.emb_opts))
        {
            for ((t, g), o) in e.tables.iter_mut().zip(eg).zip(opts) {
                t.apply(g, o, lr, scale, step);
                if weight_decay > 0.0 {
                    t.decay_rows(g, decay);
                }
            }
        }
        for (t, g) in extra.iter_mut() {
            t.apply(g, &extra_opt, lr, scale, step);
            if weight_decay > 0.0 {
                t.decay_rows(g, decay);
            }
        }
        self.state.step = step;
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// Trains with early stopping, writes the run directory, restores the best checkpoint and
    /// scores the test split. With `resume`, continues from the run's `last` checkpoint.
    pub fn fit(
        &mut self,
        model: &mut Model,
        ds: &EncodedDataset,
        mcfg: &ModelConfig,
        run: &RunDir,
        resume: bool,
        obs: &mut dyn TrainObserver,
    ) -> Result<TrainReport> {
        let fmap = &ds.feature_map;
        self.cfg.check_against(fmap)?;
        if resume && run.last_checkpoint().exists() {
            let meta = load_checkpoint(&run.last_checkpoint(), model, Some(&mut self.opt))?;
            let st = meta.resume.ok_or_else(|| TrainError::Checkpoint {
                path: run.last_checkpoint(),
                msg: "no trainer state to resume from".into(),
            })?;
            self.state = serde_json::from_value(st).map_err(|e| TrainError::Checkpoint {
                path: run.last_checkpoint(),
                msg: e.to_string(),
            })?;
            self.opt.step = self.state.step;
            obs.message(&format!(
                "resuming after epoch {} (lr {:e})",
                self.state.epochs_done, self.state.learning_rate
            ));
        }
        let cfg = self.cfg.clone();
        while !self.state.stopped && self.state.epochs_done < cfg.epochs {
            let epoch = self.state.epochs_done + 1;
            let epoch_seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
            let block = cfg.shuffle_block_rows.unwrap_or(
                if ds.train.rows * ds.train.width * 4 > (2 << 30) {
                    65_536
                } else {
                    0
                },
            );
            let batches = if cfg.shuffle {
                BatchIter::block_shuffled(&ds.train, cfg.batch_size, epoch_seed, block)
            } else {
                BatchIter::sequential(&ds.train, cfg.batch_size)
            };
            obs.on_epoch_start(epoch, batches.num_batches());
            let mut rng = StdRng::seed_from_u64(epoch_seed ^ 0x5eed);
            let t0 = Instant::now();
            let (mut loss_sum, mut samples) = (0.0, 0usize);
            for (i, b) in batches.enumerate() {
                let l = self
                    .train_step(model, &b, &mut rng)
                    .map_err(|e| e.at(epoch, self.state.step + 1))?;
                loss_sum += l * b.size as f64;
                samples += b.size;
                obs.on_batch(i + 1, samples, loss_sum / samples as f64);
            }
            let seconds = t0.elapsed().as_secs_f64();
            let valid = ds
                .valid
                .as_ref()
                .map(|v| evaluate(model, v, fmap, cfg.batch_size, cfg.group_id.as_deref()).0);
            if let Some(v) = &valid {
                NonFiniteStep::check("validation logloss", v.logloss)
                    .map_err(|e| e.at(epoch, self.state.step))?;
            }
            // finite losses and gradients can still overflow a weight in the update
            non_finite_weight(model).map_err(|e| e.at(epoch, self.state.step))?;
            let log = EpochLog {
                epoch,
                learning_rate: self.state.learning_rate,
                train_loss: loss_sum / samples.max(1) as f64,
                valid_auc: valid.as_ref().and_then(|v| v.auc),
                valid_logloss: valid.as_ref().map(|v| v.logloss),
                seconds,
                samples_per_sec: samples as f64 / seconds.max(1e-9),
            };
            self.state.logs.push(log.clone());
            self.state.epochs_done = epoch;
            // FuxiCTR's checkpoint_and_earlystop: improvement must exceed 1e-6
            let monitored = valid.as_ref().map(|v| cfg.monitor.value(v));
            let improved = match (monitored, self.state.best) {
                (None, _) => true,
                (Some(_), None) => true,
                (Some(m), Some(b)) => {
                    if cfg.monitor.maximize {
                        m > b + 1e-6
                    } else {
                        m < b - 1e-6
                    }
                }
            };
            if improved {
                self.state.best = monitored.or(self.state.best);
                self.state.best_epoch = epoch;
                self.state.stopping_steps = 0;
                let metrics = valid.as_ref().map(|v| v.to_json()).unwrap_or_default();
                save_best(run, model, mcfg, fmap, metrics)?;
            } else {
                self.state.stopping_steps += 1;
                if cfg.reduce_lr_on_plateau {
                    self.state.learning_rate = (self.state.learning_rate * 0.1).max(1e-6);
                }
            }
            if self.state.stopping_steps >= cfg.patience.max(1) {
                self.state.stopped = true;
            }
            obs.on_epoch_end(&log);
            run.write_epochs(&self.state.logs)?;
            let state =
                serde_json::to_value(&self.state).map_err(|e| TrainError::Config(e.to_string()))?;
            save_checkpoint(
                &run.last_checkpoint(),
                model,
                mcfg,
                fmap,
                Default::default(),
                Some(&self.opt),
                Some(state),
            )?;
        }
        if self.state.best_epoch == 0 {
            return Err(TrainError::Config(
                "no epoch was trained (epochs = 0?)".into(),
            ));
        }
        obs.message(&format!(
            "restoring the best checkpoint (epoch {})",
            self.state.best_epoch
        ));
        load_checkpoint(&run.best_checkpoint(), model, None)?;
        let valid = ds
            .valid
            .as_ref()
            .map(|v| evaluate(model, v, fmap, cfg.batch_size, cfg.group_id.as_deref()).0);
        let test = ds
            .test
            .as_ref()
            .map(|t| evaluate(model, t, fmap, cfg.batch_size, cfg.group_id.as_deref()).0);
        let mut metrics = serde_json::Map::new();
        if let Some(v) = &valid {
            metrics.insert("valid".into(), Value::Object(v.to_json()));
        }
        if let Some(t) = &test {
            metrics.insert("test".into(), Value::Object(t.to_json()));
        }
        // the best checkpoint's sidecar also records its test metrics
        save_best(run, model, mcfg, fmap, metrics)?;
        let report = TrainReport {
            epochs: self.state.logs.clone(),
            best_epoch: self.state.best_epoch,
            best_monitor: self.state.best,
            valid,
            test,
            checkpoint: run.best_checkpoint(),
        };
        run.write_json("report.json", &report)?;
        Ok(report)
    }
}

/// The first weight of `model` that is NaN or infinite, as an error (checked before a save).
fn non_finite_weight(model: &Model) -> std::result::Result<(), NonFiniteStep> {
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

/// The best model so far: weights only (no optimizer state), with its metrics in the sidecar.
fn save_best(
    run: &RunDir,
    model: &Model,
    mcfg: &ModelConfig,
    fmap: &FeatureMap,
    metrics: serde_json::Map<String, Value>,
) -> Result<()> {
    save_checkpoint(
        &run.best_checkpoint(),
        model,
        mcfg,
        fmap,
        metrics,
        None,
        None,
    )
}

pub(crate) fn apply_state_updates(params: &mut ParamStore, updates: &[recforge_nn::StateUpdate]) {
    for u in updates {
        let v = params.value_mut(u.param);
        v.data
            .iter_mut()
            .zip(&u.batch_value)
            .for_each(|(r, b)| *r = (1.0 - u.momentum) * *r + u.momentum * b);
    }
}
