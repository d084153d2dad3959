//! The one training loop every model family runs through (burn's learner split): a family
//! supplies a [`TrainTask`] — one epoch of steps, evaluation of a split into named metrics,
//! saving and loading its checkpoint — and [`fit`] owns the rest: evaluation every
//! `eval_step` epochs, early stopping on any named metric (or a weighted sum), the learning
//! rate cut on a plateau, the best checkpoint saved and restored before testing, the `last`
//! checkpoint with the loop's state for `--resume`, and the run directory's logs and plot.

use crate::run::RunDir;
use crate::trainer::NonFiniteStep;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Metric values by name, in the configured order (names lower-case: `auc`, `recall@20`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, name: impl Into<String>, value: f64) {
        self.0.push((name.into(), value));
    }

    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect()
    }

    /// `name value  name value …` for logs.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k} {v:.6}"))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Metrics;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of metric names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Metrics, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(Metrics(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One epoch's line in `metrics.csv`/`metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub learning_rate: f32,
    pub train_loss: f64,
    /// Metrics of the training objective itself (e.g. MAP's masked-feature accuracy).
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub train: Metrics,
    /// Validation metrics, when the epoch was evaluated.
    #[serde(default)]
    pub valid: Metrics,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

/// The quantity early stopping watches: one metric, or FuxiCTR's weighted sum
/// (`monitor: {AUC: 1, logloss: -1}`); names match metrics case-insensitively.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Monitor {
    pub terms: Vec<(String, f64)>,
    pub maximize: bool,
}

impl Monitor {
    pub fn single(name: &str, maximize: bool) -> Self {
        Monitor {
            terms: vec![(name.to_string(), 1.0)],
            maximize,
        }
    }

    /// The monitored value; `None` when a term's metric is missing (e.g. AUC of one class).
    pub fn value(&self, m: &Metrics) -> Option<f64> {
        self.terms
            .iter()
            .map(|(k, w)| m.get(k).map(|v| w * v))
            .sum()
    }

    /// Checks that every term names one of `available`.
    pub fn check(&self, available: &[String]) -> Result<()> {
        for (k, _) in &self.terms {
            if !available.iter().any(|a| a.eq_ignore_ascii_case(k)) {
                return Err(TrainError::Config(format!(
                    "the monitored metric `{k}` is not computed (metrics: {})",
                    available.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        self.terms
            .iter()
            .map(|(k, w)| {
                if *w == 1.0 {
                    k.clone()
                } else {
                    format!("{w}·{k}")
                }
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// Receives progress from [`fit`] (the CLI draws a progress bar with it).
pub trait TrainObserver {
    fn on_epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn on_batch(&mut self, _done: usize, _samples: usize, _loss: f64) {}
    fn on_epoch_end(&mut self, _log: &EpochLog) {}
    fn message(&mut self, _msg: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

/// Which split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Valid,
    Test,
}

/// One epoch's training: mean loss over `samples` instances, and any metrics the objective
/// computes on the way.
#[derive(Clone, Debug, Default)]
pub struct EpochStats {
    pub loss: f64,
    pub samples: usize,
    pub metrics: Metrics,
}

/// What a model family supplies to [`fit`].
pub trait TrainTask {
    /// Runs one epoch of optimizer steps at learning rate `lr`. A non-finite loss or gradient
    /// is returned as [`TrainError::NonFinite`], naming `epoch` and the step.
    fn train_epoch(
        &mut self,
        epoch: usize,
        lr: f32,
        obs: &mut dyn TrainObserver,
    ) -> Result<EpochStats>;

    /// The metrics of the current model on `split` (`None`: the dataset has no such split).
    fn evaluate(&mut self, split: Split) -> Result<Option<Metrics>>;

    /// Writes a checkpoint to `path`: with `resume` (the loop's state), also the optimizer's,
    /// so that [`TrainTask::load`] with `with_optimizer` continues exactly.
    fn save(
        &self,
        path: &Path,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> Result<()>;

    /// Loads a checkpoint written by `save`; returns its loop state, if it has one.
    fn load(&mut self, path: &Path, with_optimizer: bool) -> Result<Option<Value>>;

    /// The first NaN or infinite weight, checked before every save.
    fn check_weights(&self) -> std::result::Result<(), NonFiniteStep>;

    /// Optimizer steps taken so far (restored on resume).
    fn steps(&self) -> u64;
    fn set_steps(&mut self, steps: u64);
}

/// The loop's settings.
#[derive(Clone, Debug)]
pub struct FitConfig {
    pub epochs: usize,
    pub learning_rate: f32,
    /// Evaluate every this many epochs (FuxiCTR: 1; RecBole's `eval_step`).
    pub eval_step: usize,
    /// Stop after this many evaluations without improvement (FuxiCTR's
    /// `early_stop_patience`; RecBole's `stopping_step` + 1).
    pub patience: usize,
    pub monitor: Monitor,
    /// Divide the learning rate by 10 (to at least 1e-6) after an evaluation without
    /// improvement (FuxiCTR's `reduce_lr_on_plateau`).
    pub reduce_lr_on_plateau: bool,
    /// An improvement must exceed this (FuxiCTR: 1e-6; RecBole: any increase, 0).
    pub min_delta: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FitState {
    epochs_done: usize,
    learning_rate: f32,
    best: Option<f64>,
    best_epoch: usize,
    stopping_steps: usize,
    step: u64,
    logs: Vec<EpochLog>,
    stopped: bool,
}

/// What [`fit`] returns: the epochs, the best one, and the restored best model's metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub best_monitor: Option<f64>,
    pub valid: Option<Metrics>,
    pub test: Option<Metrics>,
    pub checkpoint: PathBuf,
}

impl FitReport {
    /// `{"valid": {…}, "test": {…}}`, as `--metrics-json` writes it.
    pub fn metrics_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(v) = &self.valid {
            m.insert("valid".into(), Value::Object(v.to_json()));
        }
        if let Some(t) = &self.test {
            m.insert("test".into(), Value::Object(t.to_json()));
        }
        Value::Object(m)
    }
}

/// Trains `task` with early stopping, writes the run directory, restores the best checkpoint
/// and scores valid and test with it. With `resume`, continues from the run's `last`
/// checkpoint.
pub fn fit(
    task: &mut dyn TrainTask,
    cfg: &FitConfig,
    run: &RunDir,
    resume: bool,
    obs: &mut dyn TrainObserver,
) -> Result<FitReport> {
    let mut st = FitState {
        epochs_done: 0,
        learning_rate: cfg.learning_rate,
        best: None,
        best_epoch: 0,
        stopping_steps: 0,
        step: 0,
        logs: Vec::new(),
        stopped: false,
    };
    if resume && run.last_checkpoint().exists() {
        let state = task.load(&run.last_checkpoint(), true)?;
        let state = state.ok_or_else(|| TrainError::Checkpoint {
            path: run.last_checkpoint(),
            msg: "no trainer state to resume from".into(),
        })?;
        st = serde_json::from_value(state).map_err(|e| TrainError::Checkpoint {
            path: run.last_checkpoint(),
            msg: format!("trainer state: {e}"),
        })?;
        task.set_steps(st.step);
        obs.message(&format!(
            "resuming after epoch {} (lr {:e})",
            st.epochs_done, st.learning_rate
        ));
    }
    let eval_step = cfg.eval_step.max(1);
    while !st.stopped && st.epochs_done < cfg.epochs {
        let epoch = st.epochs_done + 1;
        let t0 = Instant::now();
        let stats = task.train_epoch(epoch, st.learning_rate, obs)?;
        let seconds = t0.elapsed().as_secs_f64();
        let valid = if epoch.is_multiple_of(eval_step) {
            task.evaluate(Split::Valid)?
        } else {
            None
        };
        if let Some(v) = &valid {
            if let Some((k, x)) = v.0.iter().find(|(_, x)| !x.is_finite()) {
                return Err(TrainError::NonFinite {
                    epoch,
                    step: task.steps(),
                    what: format!("validation {k} is {x}"),
                });
            }
        }
        // finite losses and gradients can still overflow a weight in the update
        task.check_weights()
            .map_err(|e| e.at(epoch, task.steps()))?;
        let log = EpochLog {
            epoch,
            learning_rate: st.learning_rate,
            train_loss: stats.loss,
            train: stats.metrics,
            valid: valid.clone().unwrap_or_default(),
            seconds,
            samples_per_sec: stats.samples as f64 / seconds.max(1e-9),
        };
        st.logs.push(log.clone());
        st.epochs_done = epoch;
        st.step = task.steps();
        let evaluated = epoch.is_multiple_of(eval_step);
        if evaluated {
            let monitored = valid.as_ref().and_then(|v| cfg.monitor.value(v));
            let improved = match (valid.is_some(), monitored, st.best) {
                // no validation split: every evaluation epoch is the newest best
                (false, _, _) => true,
                (true, Some(_), None) => true,
                (true, None, None) => st.best_epoch == 0,
                (true, None, Some(_)) => false,
                (true, Some(m), Some(b)) => {
                    if cfg.monitor.maximize {
                        m > b + cfg.min_delta
                    } else {
                        m < b - cfg.min_delta
                    }
                }
            };
            if improved {
                st.best = monitored.or(st.best);
                st.best_epoch = epoch;
                st.stopping_steps = 0;
                let mut metrics = serde_json::Map::new();
                if let Some(v) = &valid {
                    metrics.insert("valid".into(), Value::Object(v.to_json()));
                }
                task.save(&run.best_checkpoint(), &metrics, None)?;
            } else {
                st.stopping_steps += 1;
                if cfg.reduce_lr_on_plateau {
                    st.learning_rate = (st.learning_rate * 0.1).max(1e-6);
                }
            }
            if st.stopping_steps >= cfg.patience.max(1) {
                st.stopped = true;
            }
        }
        obs.on_epoch_end(&log);
        run.write_epochs(&st.logs)?;
        let state = serde_json::to_value(&st).map_err(|e| TrainError::Config(e.to_string()))?;
        task.save(&run.last_checkpoint(), &Default::default(), Some(state))?;
    }
    if st.best_epoch == 0 {
        return Err(TrainError::Config(format!(
            "no epoch was evaluated ({} epochs, eval_step {eval_step})",
            cfg.epochs
        )));
    }
    obs.message(&format!(
        "restoring the best checkpoint (epoch {})",
        st.best_epoch
    ));
    task.load(&run.best_checkpoint(), false)?;
    let valid = task.evaluate(Split::Valid)?;
    let test = task.evaluate(Split::Test)?;
    let report = FitReport {
        epochs: st.logs.clone(),
        best_epoch: st.best_epoch,
        best_monitor: st.best,
        valid,
        test,
        checkpoint: run.best_checkpoint(),
    };
    // the best checkpoint's metadata also records its test metrics
    let metrics = match report.metrics_json() {
        Value::Object(m) => m,
        _ => unreachable!("metrics_json is an object"),
    };
    task.save(&run.best_checkpoint(), &metrics, None)?;
    run.write_json("report.json", &report)?;
    Ok(report)
}
