//! Knowledge-tracing training and evaluation: the family's [`TrainTask`] (epochs over the
//! shuffled ≤ `max_seq_len` windows of the training students, BCE on every position but each
//! window's first), pyKT's next-step evaluation (AUC and ACC at p ≥ 0.5 over every predicted
//! interaction), the multi-step evaluator of the anchor protocol ([`multi_step`]), and the
//! checkpoint (`recforge-kt-v1`).
//!
//! Config keys are pyKT's (`batch_size`, `learning_rate`, `num_epochs`, `optimizer`), with
//! its stopping rule: evaluate every epoch, stop after `early_stop_patience` (10) epochs whose
//! validation AUC does not beat the best by more than `min_delta` (1e-3).

pub mod advkt;
mod freerun;

pub use freerun::{free_run, FreeRunConfig, FreeRunResult};

use crate::checkpoint::{open_params_file, read_params, write_params_file, TensorFile};
use crate::fit::{EpochStats, FitConfig, Metrics, Monitor, Split, TrainObserver, TrainTask};
use crate::topk::{check_finite, dense_step};
use crate::trainer::NonFiniteStep;
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use recforge_data::features::OnBadRow;
use recforge_data::kt::{read_kt_file, windows, KtData, KtDatasetConfig, KtSequence, KtWindow};
use recforge_data::ModelConfig;
use recforge_models::kt::{self, KtBatch, KtModel, KtShape};
use recforge_nn::{DenseOptimizer, Graph, OptimizerKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Model-config keys the knowledge-tracing loop reads.
pub const KT_TRAIN_KEYS: &[&str] = &[
    "dataset_id",
    "model_root",
    "batch_size",
    "learning_rate",
    "num_epochs",
    "optimizer",
    "early_stop_patience",
    "min_delta",
    "eval_batch_size",
    "multistep_windows",
    "multistep_horizon",
    "freerun_windows",
    "monitor",
];

/// What a knowledge-tracing run may select its epoch on (validation, higher is better).
pub const KT_MONITORS: &[&str] = &["auc", "multistep_auc", "freerun_auc"];

#[derive(Clone, Debug)]
pub struct KtTrainConfig {
    pub epochs: usize,
    /// Windows per optimizer step (pyKT: 64).
    pub batch_size: usize,
    pub learning_rate: f32,
    pub optimizer: OptimizerKind,
    pub patience: usize,
    pub min_delta: f64,
    /// Windows per forward pass in evaluation.
    pub eval_batch_size: usize,
    pub multistep: MultiStepConfig,
    pub freerun: FreeRunConfig,
    /// The validation metric that picks the epoch ([`KT_MONITORS`]; pyKT's: `auc`).
    pub monitor: String,
    pub seed: u64,
}

fn cfg_err(e: recforge_data::DataError) -> TrainError {
    TrainError::Config(e.to_string())
}

impl KtTrainConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let name = cfg.str_or("optimizer", "adam");
        let optimizer = OptimizerKind::parse(&name).ok_or_else(|| {
            TrainError::Config(format!("unknown optimizer `{name}` (adam, adagrad, sgd)"))
        })?;
        let monitor = cfg.str_or("monitor", "auc");
        if !KT_MONITORS.contains(&monitor.as_str()) {
            return Err(TrainError::Config(format!(
                "monitor `{monitor}`: a knowledge-tracing run monitors one of {}",
                KT_MONITORS.join(", ")
            )));
        }
        Ok(KtTrainConfig {
            monitor,
            epochs: cfg.positive_usize_or("num_epochs", 200).map_err(cfg_err)?,
            batch_size: cfg.positive_usize_or("batch_size", 64).map_err(cfg_err)?,
            learning_rate: cfg
                .positive_f32_or("learning_rate", 1e-3)
                .map_err(cfg_err)?,
            optimizer,
            patience: cfg
                .positive_usize_or("early_stop_patience", 10)
                .map_err(cfg_err)?,
            min_delta: cfg
                .non_negative_f64_or("min_delta", 1e-3)
                .map_err(cfg_err)?,
            eval_batch_size: cfg
                .positive_usize_or("eval_batch_size", 256)
                .map_err(cfg_err)?,
            multistep: MultiStepConfig {
                windows: cfg
                    .positive_usize_or("multistep_windows", 1000)
                    .map_err(cfg_err)?,
                horizon: cfg
                    .positive_usize_or("multistep_horizon", 10)
                    .map_err(cfg_err)?,
            },
            freerun: FreeRunConfig {
                windows: cfg.usize_or("freerun_windows", 200).map_err(cfg_err)?,
            },
            seed: cfg.usize_or("seed", 42).map_err(cfg_err)? as u64,
        })
    }

    pub fn fit_config(&self) -> FitConfig {
        FitConfig {
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            eval_step: 1,
            patience: self.patience,
            monitor: Monitor::single(&self.monitor, true),
            reduce_lr_on_plateau: false,
            min_delta: self.min_delta,
        }
    }
}

/// Checks a knowledge-tracing model config before anything runs.
pub fn check_kt_config(cfg: &ModelConfig) -> Result<Vec<String>> {
    let name = cfg.str_or("model", "");
    let keys = kt::model_keys(&name).ok_or_else(|| {
        TrainError::Config(recforge_models::unknown_model(
            &name,
            recforge_models::Family::Kt,
        ))
    })?;
    let adversarial: &[&str] = if name == "AdvKT" {
        advkt::ADVKT_TRAIN_KEYS
    } else {
        &[]
    };
    let known: Vec<&str> = [kt::COMMON_KEYS, keys, KT_TRAIN_KEYS, adversarial].concat();
    let warnings = cfg.check_keys(&known, &[])?;
    KtTrainConfig::from_config(cfg)?;
    if name == "AdvKT" {
        advkt::AdversarialConfig::from_config(cfg)?;
    }
    Ok(warnings)
}

/// Next-step probabilities of every predicted interaction of `windows`, with their responses.
pub fn predict_windows(
    model: &dyn KtModel,
    seqs: &[KtSequence],
    windows: &[KtWindow],
    block: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mut labels, mut probs) = (Vec::new(), Vec::new());
    for chunk in windows.chunks(block.max(1)) {
        let batch = KtBatch::new(seqs, chunk);
        probs.extend(model.predict(&batch));
        labels.extend_from_slice(&batch.labels);
    }
    (labels, probs)
}

/// Accuracy at the threshold 0.5 (pyKT's `p ≥ 0.5` is a correct answer).
fn accuracy(labels: &[f32], probs: &[f32]) -> f64 {
    let right = labels
        .iter()
        .zip(probs)
        .filter(|(&y, &p)| (p >= 0.5) == (y >= 0.5))
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// `auc` (when both classes occur) and `acc` of next-step predictions.
pub fn next_step_metrics(labels: &[f32], probs: &[f32]) -> Metrics {
    let mut m = Metrics::default();
    if let Some(a) = recforge_metrics::auc(labels, probs) {
        m.push("auc", a);
    }
    m.push("acc", accuracy(labels, probs));
    m
}

/// The anchor protocol's multi-step evaluation: for each of the first `windows` windows of
/// length ≥ 4, the first `h = L / 2` interactions are given with their responses, and the
/// next `min(horizon, L − h)` are predicted one after another, each step seeing the true
/// questions but the model's own thresholded guesses (p ≥ 0.5 → 1) for the responses it
/// predicted before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiStepConfig {
    pub windows: usize,
    pub horizon: usize,
}

/// The predictions [`multi_step`] made, step by step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MultiStepResult {
    /// `labels[k]`, `probs[k]`: the true responses and the free-running predictions at step
    /// `k + 1` of every window that reaches it.
    pub labels: Vec<Vec<f32>>,
    pub probs: Vec<Vec<f32>>,
    /// The ordinary teacher-forced predictions at the same positions.
    pub teacher_forced: Vec<Vec<f32>>,
    pub windows: usize,
}

impl MultiStepResult {
    /// `multistep_auc`, `multistep_acc` (pooled over every step), `multistep_auc@k` for each
    /// step, `multistep_teacher_forced_auc` (the same positions, true responses given).
    /// AUCs of one class only are left out.
    pub fn metrics(&self) -> Metrics {
        let flat = |v: &[Vec<f32>]| v.concat();
        let (labels, probs, forced) = (
            flat(&self.labels),
            flat(&self.probs),
            flat(&self.teacher_forced),
        );
        let mut m = Metrics::default();
        if let Some(a) = recforge_metrics::auc(&labels, &probs) {
            m.push("multistep_auc", a);
        }
        m.push("multistep_acc", accuracy(&labels, &probs));
        for (k, (l, p)) in self.labels.iter().zip(&self.probs).enumerate() {
            if let Some(a) = recforge_metrics::auc(l, p) {
                m.push(format!("multistep_auc@{}", k + 1), a);
            }
        }
        if let Some(a) = recforge_metrics::auc(&labels, &forced) {
            m.push("multistep_teacher_forced_auc", a);
        }
        m
    }
}

/// Runs the multi-step protocol of [`MultiStepConfig`] on `windows` of `seqs`, `block`
/// windows per forward pass.
pub fn multi_step(
    model: &dyn KtModel,
    seqs: &[KtSequence],
    windows: &[KtWindow],
    cfg: MultiStepConfig,
    block: usize,
) -> MultiStepResult {
    struct Case<'a> {
        seq: &'a KtSequence,
        start: usize,
        given: usize,
        steps: usize,
        /// the given responses, then the guesses so far
        responses: Vec<u8>,
    }
    let mut cases: Vec<Case> = windows
        .iter()
        .filter(|w| w.len >= 4)
        .take(cfg.windows)
        .map(|w| {
            let (len, start) = (w.len as usize, w.start as usize);
            let seq = &seqs[w.student as usize];
            let given = len / 2;
            Case {
                seq,
                start,
                given,
                steps: cfg.horizon.min(len - given),
                responses: seq.responses[start..start + given].to_vec(),
            }
        })
        .collect();
    let mut out = MultiStepResult {
        windows: cases.len(),
        ..Default::default()
    };
    let block = block.max(1);
    for k in 0..cfg.horizon {
        let (mut labels, mut probs) = (Vec::new(), Vec::new());
        let active: Vec<usize> = (0..cases.len()).filter(|&c| cases[c].steps > k).collect();
        if active.is_empty() {
            break;
        }
        for chunk in active.chunks(block) {
            // the response at the predicted position is never read (the models are causal)
            for &c in chunk {
                cases[c].responses.push(0);
            }
            let batch = KtBatch::from_parts(chunk.iter().map(|&c| {
                let case = &cases[c];
                let len = case.given + k + 1;
                (case.seq, case.start, len, Some(&case.responses[..]))
            }));
            let p = model.predict(&batch);
            // each window's last scored row is the one predicted at this step
            let mut end = 0;
            for (&c, seg) in chunk.iter().zip(&batch.segments) {
                end += seg.len - 1;
                let case = &mut cases[c];
                let prob = p[end - 1];
                labels.push(case.seq.responses[case.start + case.given + k] as f32);
                probs.push(prob);
                *case.responses.last_mut().expect("pushed above") = u8::from(prob >= 0.5);
            }
        }
        out.labels.push(labels);
        out.probs.push(probs);
    }
    // teacher-forced: each window cut after its last step, its true responses given
    let mut forced = vec![Vec::new(); out.labels.len()];
    for chunk in cases.chunks(block) {
        let batch = KtBatch::from_parts(
            chunk
                .iter()
                .map(|c| (c.seq, c.start, c.given + c.steps, None)),
        );
        let p = model.predict(&batch);
        let mut first = 0;
        for (c, seg) in chunk.iter().zip(&batch.segments) {
            // scored row j − 1 of the window predicts position j
            for (k, f) in forced.iter_mut().enumerate().take(c.steps) {
                f.push(p[first + c.given + k - 1]);
            }
            first += seg.len - 1;
        }
    }
    out.teacher_forced = forced;
    out
}

/// A knowledge-tracing checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KtCheckpointMeta {
    pub format: String,
    pub model: String,
    pub model_config: ModelConfig,
    pub shape: KtShape,
    /// The dataset entry it was trained on: how `recforge evaluate` reads a file.
    pub dataset: KtDatasetConfig,
    #[serde(default)]
    pub metrics: serde_json::Map<String, Value>,
    #[serde(default)]
    pub resume: Option<Value>,
}

pub const KT_FORMAT: &str = "recforge-kt-v1";

/// A loaded knowledge-tracing model with its metadata.
pub struct LoadedKt {
    pub meta: KtCheckpointMeta,
    pub model: Box<dyn KtModel>,
    pub path: std::path::PathBuf,
    /// the checkpoint's verified SHA-256
    pub sha256: String,
}

fn open_kt(path: &Path) -> Result<(TensorFile, KtCheckpointMeta)> {
    open_params_file(path, KT_FORMAT, "knowledge-tracing")
}

/// Opens a verified knowledge-tracing checkpoint and builds its model.
pub fn load_kt(path: &Path) -> Result<LoadedKt> {
    let (file, meta) = open_kt(path)?;
    let mut model = kt::build(&meta.model_config, meta.shape)?;
    let name = model.name();
    read_params(&file, model.params_mut(), name, None)?;
    Ok(LoadedKt {
        meta,
        model,
        path: path.to_path_buf(),
        sha256: file.sha256.clone(),
    })
}

/// Knowledge-tracing training as a [`TrainTask`].
pub struct KtTask<'a> {
    pub model: Box<dyn KtModel>,
    data: &'a KtData,
    dataset: &'a KtDatasetConfig,
    shape: KtShape,
    train: Vec<KtWindow>,
    valid: Vec<KtWindow>,
    test: Vec<KtWindow>,
    cfg: KtTrainConfig,
    mcfg: &'a ModelConfig,
    opt: DenseOptimizer,
    step: u64,
    /// the latest test evaluation's multi-step predictions
    pub test_multistep: Option<MultiStepResult>,
    /// AdvKT's discriminator and adversarial loop, when the model is its generator
    adversary: Option<advkt::Adversary>,
}

impl<'a> KtTask<'a> {
    pub fn new(
        model: Box<dyn KtModel>,
        data: &'a KtData,
        dataset: &'a KtDatasetConfig,
        shape: KtShape,
        cfg: KtTrainConfig,
        mcfg: &'a ModelConfig,
    ) -> Result<Self> {
        let train = windows(&data.train, shape.max_seq_len);
        if train.is_empty() {
            return Err(TrainError::Config(
                "no training student has the two interactions a prediction needs".into(),
            ));
        }
        let opt = DenseOptimizer::new(cfg.optimizer, model.params());
        let adversary = match model.as_advkt() {
            Some(_) => Some(advkt::Adversary::new(mcfg, shape, &data.train, cfg.seed)?),
            None => None,
        };
        Ok(KtTask {
            adversary,
            model,
            data,
            dataset,
            shape,
            valid: windows(&data.valid, shape.max_seq_len),
            test: windows(&data.test, shape.max_seq_len),
            train,
            cfg,
            mcfg,
            opt,
            step: 0,
            test_multistep: None,
        })
    }

    /// Training windows and the interactions they predict.
    pub fn training_size(&self) -> (usize, usize) {
        let predicted = self.train.iter().map(|w| w.len as usize - 1).sum();
        (self.train.len(), predicted)
    }

    fn step(
        &mut self,
        windows: &[KtWindow],
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<f64, NonFiniteStep> {
        let batch = KtBatch::new(&self.data.train, windows);
        let (loss, grads) = match (self.model.as_advkt(), self.adversary.as_mut()) {
            (Some(gen), Some(adv)) => {
                if self.step.is_multiple_of(adv.cfg.disc_every) {
                    let real: Vec<KtSequence> = windows
                        .iter()
                        .map(|w| {
                            self.data.train[w.student as usize]
                                .slice(w.start as usize, w.len as usize)
                        })
                        .collect();
                    adv.disc_step(gen, &real, rng)?;
                }
                let mut g = Graph::new(gen.params(), true);
                let (l, bce) = adv.generator_loss(&mut g, gen, &batch, rng);
                NonFiniteStep::check("loss", g.value(l).data[0] as f64)?;
                (bce, g.backward(l).params)
            }
            _ => {
                let mut g = Graph::new(self.model.params(), true);
                let l = self.model.loss(&mut g, &batch, rng);
                let v = g.value(l).data[0] as f64;
                NonFiniteStep::check("loss", v)?;
                (v, g.backward(l).params)
            }
        };
        dense_step(
            self.model.params_mut(),
            &mut self.opt,
            &grads,
            lr,
            0.0,
            None,
        )?;
        self.step = self.opt.step;
        Ok(loss)
    }
}

impl TrainTask for KtTask<'_> {
    fn train_epoch(
        &mut self,
        epoch: usize,
        lr: f32,
        obs: &mut dyn TrainObserver,
    ) -> Result<EpochStats> {
        let seed = self
            .cfg
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as u64);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order = self.train.clone();
        order.shuffle(&mut rng);
        let batches: Vec<&[KtWindow]> = order.chunks(self.cfg.batch_size).collect();
        obs.on_epoch_start(epoch, batches.len());
        let (mut sum, mut seen) = (0.0, 0usize);
        for (k, chunk) in batches.iter().enumerate() {
            let l = self
                .step(chunk, lr, &mut rng)
                .map_err(|e| e.at(epoch, self.step + 1))?;
            let scored: usize = chunk.iter().map(|w| w.len as usize - 1).sum();
            sum += l * scored as f64;
            seen += scored;
            obs.on_batch(k + 1, seen, sum / seen.max(1) as f64);
        }
        Ok(EpochStats {
            loss: sum / seen.max(1) as f64,
            samples: seen,
            metrics: Metrics::default(),
        })
    }

    fn evaluate(&mut self, split: Split) -> Result<Option<Metrics>> {
        let (seqs, windows) = match split {
            Split::Valid => (&self.data.valid, &self.valid),
            Split::Test => (&self.data.test, &self.test),
        };
        if windows.is_empty() {
            return Ok(None);
        }
        // the test split gets every protocol; validation the one the monitor reads
        let test = split == Split::Test;
        let (m, ms) = evaluate_windows(
            self.model.as_ref(),
            seqs,
            windows,
            &self.cfg,
            test || self.cfg.monitor == "multistep_auc",
            test || self.cfg.monitor == "freerun_auc",
        );
        if test {
            self.test_multistep = ms;
        }
        Ok(Some(m))
    }

    fn save(
        &self,
        path: &Path,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> Result<()> {
        let opt = resume.is_some().then_some(&self.opt);
        let m = self.model.as_ref();
        let meta = KtCheckpointMeta {
            format: KT_FORMAT.into(),
            model: m.name().into(),
            model_config: self.mcfg.clone(),
            shape: self.shape,
            dataset: self.dataset.clone(),
            metrics: metrics.clone(),
            resume,
        };
        write_params_file(path, KT_FORMAT, m.name(), &meta, m.params(), opt)
    }

    fn load(&mut self, path: &Path, with_optimizer: bool) -> Result<Option<Value>> {
        let (file, meta) = open_kt(path)?;
        if meta.model != self.model.name() || meta.shape != self.shape {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: format!(
                    "a {} checkpoint for {:?}, not this {} run",
                    meta.model,
                    meta.shape,
                    self.model.name()
                ),
            });
        }
        let opt = with_optimizer.then_some(&mut self.opt);
        let name = self.model.name();
        read_params(&file, self.model.params_mut(), name, opt)?;
        Ok(meta.resume)
    }

    fn check_weights(&self) -> std::result::Result<(), NonFiniteStep> {
        check_finite(self.model.params())
    }

    fn steps(&self) -> u64 {
        self.step
    }

    fn set_steps(&mut self, steps: u64) {
        self.step = steps;
        self.opt.step = steps;
    }
}

/// Next-step metrics of `windows`, and the multi-step and free-running ones where asked (with
/// the multi-step predictions).
fn evaluate_windows(
    model: &dyn KtModel,
    seqs: &[KtSequence],
    windows: &[KtWindow],
    cfg: &KtTrainConfig,
    multistep: bool,
    freerun: bool,
) -> (Metrics, Option<MultiStepResult>) {
    let block = cfg.eval_batch_size;
    let (labels, probs) = predict_windows(model, seqs, windows, block);
    let mut m = next_step_metrics(&labels, &probs);
    let ms = multistep.then(|| multi_step(model, seqs, windows, cfg.multistep, block));
    if let Some(ms) = &ms {
        m.0.extend(ms.metrics().0);
    }
    if freerun {
        m.0.extend(
            free_run(model, seqs, windows, cfg.freerun, block)
                .metrics()
                .0,
        );
    }
    (m, ms)
}

/// Next-step, multi-step and free-running metrics of a loaded model on one file in the format it was
/// trained on, with the records read and the records skipped under `on_bad`.
pub fn evaluate_file(
    loaded: &LoadedKt,
    path: &Path,
    on_bad: OnBadRow,
) -> Result<(Metrics, usize, u64)> {
    let mut skipped = 0;
    let cfg = &loaded.meta.dataset;
    let mut seqs = read_kt_file(path, cfg, on_bad, &mut skipped)?;
    if cfg.form == recforge_data::kt::KtForm::Collapsed {
        seqs = seqs.iter().map(KtSequence::collapsed).collect();
    }
    let shape = loaded.meta.shape;
    for (i, s) in seqs.iter().enumerate() {
        let over_concept = s
            .concepts
            .iter()
            .find(|&&c| c as usize >= shape.num_concepts);
        let over_problem = s
            .problems
            .iter()
            .find(|&&q| q as usize >= shape.num_problems.max(1));
        if let Some(c) = over_concept {
            return Err(TrainError::Config(format!(
                "{}: student {} ({}) has concept {c}, beyond the model's {} concepts",
                path.display(),
                i + 1,
                s.student,
                shape.num_concepts
            )));
        }
        if shape.num_problems > 0 {
            if let Some(q) = over_problem {
                return Err(TrainError::Config(format!(
                    "{}: student {} ({}) has problem {q}, beyond the model's {} problems",
                    path.display(),
                    i + 1,
                    s.student,
                    shape.num_problems
                )));
            }
        }
    }
    let wins = windows(&seqs, shape.max_seq_len);
    if wins.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no student has the two interactions a prediction needs",
            path.display()
        )));
    }
    let cfg = KtTrainConfig::from_config(&loaded.meta.model_config)?;
    let (m, _) = evaluate_windows(loaded.model.as_ref(), &seqs, &wins, &cfg, true, true);
    Ok((m, seqs.len(), skipped))
}

#[cfg(test)]
mod tests;
