//! Top-K training and evaluation on interaction data: the family's [`TrainTask`] (epochs over
//! interactions with sampled negatives, or over users for autoencoders; a closed-form fit for
//! Pop and EASE), full-ranking evaluation, and its checkpoint (`recforge-topk-v1`).
//!
//! Config keys are RecBole's (`train_batch_size`, `eval_step`, `stopping_step`,
//! `valid_metric`, `topk`, `metrics`, …). RecBole stops once `stopping_step` evaluations in a
//! row fail to improve on the best and one more follows; here that is patience
//! `stopping_step + 1`, the same run.

use crate::checkpoint::{open_params_file, read_params, write_params_file, TensorFile};
use crate::fit::{EpochStats, FitConfig, Metrics, Monitor, Split, TrainObserver, TrainTask};
use crate::trainer::NonFiniteStep;
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use recforge_data::interactions::{Interactions, NegativeDistribution, NegativeSampler, UserItems};
use recforge_data::ModelConfig;
use recforge_metrics::{
    evaluate_full_ranking, expand, Metric, RankMetric, RankingReport, UserCase,
};
use recforge_models::topk::{self, history_rows, TopkBatch, TopkInput, TopkModel, TopkShape};
use recforge_nn::optim::grad_norm_sq;
use recforge_nn::{DenseOptimizer, Graph, OptimizerKind, ParamStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Model-config keys the top-K loop reads.
pub const TOPK_TRAIN_KEYS: &[&str] = &[
    "dataset_id",
    "model_root",
    "epochs",
    "train_batch_size",
    "learning_rate",
    "learner",
    "weight_decay",
    "eval_step",
    "stopping_step",
    "valid_metric",
    "valid_metric_bigger",
    "topk",
    "metrics",
    "eval_batch_size",
    "train_neg_sample_args",
    "clip_grad_norm",
];

/// RecBole settings that change nothing here: accepted with a warning.
pub const RECBOLE_IGNORED_KEYS: &[&str] = &[
    "gpu_id",
    "use_gpu",
    "reproducibility",
    "state",
    "show_progress",
    "save_dataset",
    "save_dataloaders",
    "checkpoint_dir",
    "log_wandb",
    "worker",
    "eval_args",
    "repeatable",
    "loss_decimal_place",
    "metric_decimal_place",
];

#[derive(Clone, Debug)]
pub struct TopkTrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub optimizer: OptimizerKind,
    pub eval_step: usize,
    pub stopping_step: usize,
    pub monitor: Monitor,
    pub metrics: Vec<RankMetric>,
    /// user × item score cells per block in full-ranking evaluation (RecBole's
    /// `eval_batch_size` for full sorts); [`TopkTrainConfig::block_users`] turns it into users
    pub eval_cells: usize,
    pub negatives: NegativeDistribution,
    /// Global gradient-norm limit (RecBole's `clip_grad_norm: {max_norm: …}`); none by default.
    pub clip_grad_norm: Option<f32>,
    pub seed: u64,
}

fn cfg_err(e: recforge_data::DataError) -> TrainError {
    TrainError::Config(e.to_string())
}

impl TopkTrainConfig {
    /// Reads RecBole's keys, with RecBole's defaults (Adam 1e-3, batch 2048, eval every epoch,
    /// stopping_step 10, metrics Recall/MRR/NDCG/Hit/Precision at topk 10, valid MRR@10).
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let names = match cfg.get("metrics") {
            None => ["Recall", "MRR", "NDCG", "Hit", "Precision"]
                .map(String::from)
                .to_vec(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        TrainError::Config(format!("metrics: `{v}` is not a metric name"))
                    })
                })
                .collect::<Result<_>>()?,
            Some(v) => {
                return Err(TrainError::Config(format!(
                    "metrics should be a list, got {v}"
                )))
            }
        };
        let topk = match cfg.get("topk") {
            Some(Value::Number(_)) => vec![cfg.positive_usize_or("topk", 10).map_err(cfg_err)?],
            _ => cfg.usize_list_or("topk", &[10]).map_err(cfg_err)?,
        };
        if topk.contains(&0) {
            return Err(TrainError::Config(format!(
                "topk {topk:?}: cut-offs must be positive"
            )));
        }
        let metrics: Vec<RankMetric> = expand(&names, &topk)
            .map_err(TrainError::Config)?
            .into_iter()
            .map(|m| match m {
                Metric::Rank(r) => Ok(r),
                other => Err(TrainError::Config(format!(
                    "metrics: `{}` is not a ranking metric (recall, ndcg, hit, mrr, precision)",
                    other.name()
                ))),
            })
            .collect::<Result<_>>()?;
        let valid_metric = cfg.str_or("valid_metric", "MRR@10");
        let monitored = match Metric::parse(&valid_metric) {
            Some(Metric::Rank(r)) if metrics.contains(&r) => r,
            Some(Metric::Rank(_)) => {
                return Err(TrainError::Config(format!(
                    "valid_metric `{valid_metric}` is not among the metrics computed ({})",
                    metrics
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            _ => {
                return Err(TrainError::Config(format!(
                    "valid_metric `{valid_metric}` is not a ranking metric such as recall@20"
                )))
            }
        };
        let optimizer_name = match cfg.get("learner") {
            Some(_) => cfg.str_or("learner", "adam"),
            None => "adam".into(),
        };
        let optimizer = OptimizerKind::parse(&optimizer_name).ok_or_else(|| {
            TrainError::Config(format!(
                "unknown learner `{optimizer_name}` (adam, adagrad, sgd)"
            ))
        })?;
        let negatives = match cfg.get("train_neg_sample_args") {
            None | Some(Value::Null) => NegativeDistribution::Uniform,
            Some(Value::Object(m)) => {
                for k in m.keys() {
                    if !matches!(
                        k.as_str(),
                        "distribution" | "sample_num" | "alpha" | "dynamic" | "candidate_num"
                    ) {
                        return Err(TrainError::Config(format!(
                            "train_neg_sample_args: unknown key `{k}`"
                        )));
                    }
                }
                if let Some(n) = m.get("sample_num") {
                    if n.as_u64() != Some(1) {
                        return Err(TrainError::Config(format!(
                            "train_neg_sample_args.sample_num {n}: one negative per positive is supported"
                        )));
                    }
                }
                match m
                    .get("distribution")
                    .and_then(Value::as_str)
                    .unwrap_or("uniform")
                {
                    "uniform" => NegativeDistribution::Uniform,
                    "popularity" => NegativeDistribution::Popularity,
                    other => {
                        return Err(TrainError::Config(format!(
                            "train_neg_sample_args.distribution `{other}` (uniform, popularity)"
                        )))
                    }
                }
            }
            Some(v) => {
                return Err(TrainError::Config(format!(
                    "train_neg_sample_args should be a mapping, got {v}"
                )))
            }
        };
        let clip_grad_norm = match cfg.get("clip_grad_norm") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match m.get("max_norm").and_then(Value::as_f64) {
                Some(x) if x.is_finite() && x > 0.0 => Some(x as f32),
                _ => {
                    return Err(TrainError::Config(
                        "clip_grad_norm: {max_norm: a positive number}".into(),
                    ))
                }
            },
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Some(x as f32),
                _ => {
                    return Err(TrainError::Config(format!(
                        "clip_grad_norm {v}: a positive number"
                    )))
                }
            },
        };
        let eval_cells = cfg
            .positive_usize_or("eval_batch_size", 256 * 4096)
            .map_err(cfg_err)?;
        Ok(TopkTrainConfig {
            epochs: cfg.positive_usize_or("epochs", 300).map_err(cfg_err)?,
            batch_size: cfg
                .positive_usize_or("train_batch_size", 2048)
                .map_err(cfg_err)?,
            learning_rate: cfg
                .positive_f32_or("learning_rate", 1e-3)
                .map_err(cfg_err)?,
            weight_decay: cfg
                .non_negative_f32_or("weight_decay", 0.0)
                .map_err(cfg_err)?,
            optimizer,
            eval_step: cfg.positive_usize_or("eval_step", 1).map_err(cfg_err)?,
            stopping_step: cfg.usize_or("stopping_step", 10).map_err(cfg_err)?,
            monitor: Monitor::single(
                &monitored.name(),
                cfg.bool_or("valid_metric_bigger", true).map_err(cfg_err)?,
            ),
            metrics,
            eval_cells,
            negatives,
            clip_grad_norm,
            seed: cfg.usize_or("seed", 2020).map_err(cfg_err)? as u64,
        })
    }

    /// Users per full-ranking block over `n_items` items: `eval_cells / n_items`, at least 1
    /// and at most 4096.
    pub fn block_users(&self, n_items: usize) -> usize {
        (self.eval_cells / n_items.max(1)).clamp(1, 4096)
    }

    /// The loop's settings for `model`: closed-form models fit once.
    pub fn fit_config(&self, input: TopkInput) -> FitConfig {
        let closed = input == TopkInput::ClosedForm;
        FitConfig {
            epochs: if closed { 1 } else { self.epochs },
            learning_rate: self.learning_rate,
            eval_step: if closed { 1 } else { self.eval_step },
            patience: self.stopping_step + 1,
            monitor: self.monitor.clone(),
            reduce_lr_on_plateau: false,
            min_delta: 0.0,
        }
    }
}

/// Checks a top-K model config before anything runs; returns warnings for RecBole keys that
/// are accepted but unused.
pub fn check_topk_config(cfg: &ModelConfig) -> Result<Vec<String>> {
    let name = cfg.str_or("model", "");
    let keys = topk::model_keys(&name).ok_or_else(|| {
        TrainError::Config(recforge_models::unknown_model(
            &name,
            recforge_models::Family::Topk,
        ))
    })?;
    let known: Vec<&str> = [topk::COMMON_KEYS, keys, TOPK_TRAIN_KEYS].concat();
    let warnings = cfg.check_keys(&known, RECBOLE_IGNORED_KEYS)?;
    TopkTrainConfig::from_config(cfg)?;
    Ok(warnings)
}

/// Full-ranking metrics of `model` for `relevant` held-out items, never ranking `excluded`.
/// Returns the means and the per-user values.
pub fn rank_users(
    model: &dyn TopkModel,
    history: &UserItems,
    relevant: &UserItems,
    excluded: &[Vec<u32>],
    n_items: usize,
    metrics: &[RankMetric],
    block_users: usize,
) -> (Metrics, RankingReport) {
    let cases: Vec<UserCase> = (0..relevant.rows())
        .map(|u| UserCase {
            user: u as u32,
            relevant: relevant.row(u as u32),
            excluded: &excluded[u],
        })
        .collect();
    let report = evaluate_full_ranking(&cases, n_items, metrics, block_users, &mut |users, out| {
        model.score_users(users, history, out)
    });
    (Metrics(report.means()), report)
}

/// What the evaluator masks for each split: training items at validation, training ∪
/// validation items at test.
pub fn exclusions(data: &Interactions, split: Split) -> Vec<Vec<u32>> {
    (0..data.n_users as u32)
        .map(|u| match split {
            Split::Valid => data.train.row(u).to_vec(),
            Split::Test => data.train.union_row(&data.valid, u),
        })
        .collect()
}

/// A top-K checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopkCheckpointMeta {
    pub format: String,
    pub model: String,
    pub model_config: ModelConfig,
    pub shape: TopkShape,
    /// Each user's training items: the input of history-based models, and what serving
    /// excludes by default.
    pub history: UserItems,
    /// Original user/item tokens (`.inter`/`u.data`); empty when ids are the tokens (`.npy`).
    #[serde(default)]
    pub user_tokens: Vec<String>,
    #[serde(default)]
    pub item_tokens: Vec<String>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, Value>,
    #[serde(default)]
    pub resume: Option<Value>,
}

pub const TOPK_FORMAT: &str = "recforge-topk-v1";

/// A loaded top-K model with its metadata.
pub struct LoadedTopk {
    pub meta: TopkCheckpointMeta,
    pub model: Box<dyn TopkModel>,
    pub path: std::path::PathBuf,
    /// the checkpoint's verified SHA-256
    pub sha256: String,
    user_index: IdIndex,
    item_index: IdIndex,
}

/// One optimizer step of `opt` on `params` from `grads`, with weight decay `wd` and the global
/// gradient norm clipped to `clip`; a non-finite gradient norm changes nothing.
pub(crate) fn dense_step(
    params: &mut ParamStore,
    opt: &mut DenseOptimizer,
    grads: &[Option<recforge_nn::Tensor>],
    lr: f32,
    wd: f32,
    clip: Option<f32>,
) -> std::result::Result<(), NonFiniteStep> {
    let norm_sq = grad_norm_sq(params, grads, wd);
    NonFiniteStep::check("gradient norm", norm_sq)?;
    let norm = norm_sq.sqrt() as f32;
    let scale = match clip {
        Some(max) if norm > max => max / (norm + 1e-6),
        _ => 1.0,
    };
    opt.step(params, grads, lr, scale, wd);
    Ok(())
}

/// The first NaN or infinite value of `params`.
pub(crate) fn check_finite(params: &ParamStore) -> std::result::Result<(), NonFiniteStep> {
    for (_, p) in params.iter() {
        if let Some(&x) = p.value.data.iter().find(|x| !x.is_finite()) {
            return Err(NonFiniteStep {
                what: "a weight",
                value: x as f64,
            });
        }
    }
    Ok(())
}

/// Opens a verified top-K checkpoint and parses its metadata.
fn open_topk(path: &Path) -> Result<(TensorFile, TopkCheckpointMeta)> {
    open_params_file(path, TOPK_FORMAT, "top-K")
}

/// Opens a verified top-K checkpoint and builds its model.
pub fn load_topk(path: &Path) -> Result<LoadedTopk> {
    let (file, meta) = open_topk(path)?;
    if meta.history.rows() != meta.shape.n_users
        || meta
            .history
            .items
            .iter()
            .any(|&i| i as usize >= meta.shape.n_items)
    {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: "the stored history does not fit the model's users and items".into(),
        });
    }
    let mut model = topk::build(&meta.model_config, meta.shape, &meta.history)?;
    let name = model.name();
    read_params(&file, model.params_mut(), name, None)?;
    model.prepare_scoring();
    Ok(LoadedTopk {
        user_index: IdIndex::new(&meta.user_tokens, meta.shape.n_users),
        item_index: IdIndex::new(&meta.item_tokens, meta.shape.n_items),
        meta,
        model,
        path: path.to_path_buf(),
        sha256: file.sha256.clone(),
    })
}

/// Top-K training as a [`TrainTask`].
pub struct TopkTask<'a> {
    pub model: Box<dyn TopkModel>,
    data: &'a Interactions,
    cfg: TopkTrainConfig,
    mcfg: &'a ModelConfig,
    opt: DenseOptimizer,
    step: u64,
    /// built once (its membership bitset is a pass over the training set); shared with each
    /// epoch while the step borrows the task mutably
    sampler: Arc<NegativeSampler<'a>>,
    exclusions: [Vec<Vec<u32>>; 2],
    /// the latest test evaluation's per-user values
    pub test_report: Option<RankingReport>,
}

impl<'a> TopkTask<'a> {
    pub fn new(
        mut model: Box<dyn TopkModel>,
        data: &'a Interactions,
        cfg: TopkTrainConfig,
        mcfg: &'a ModelConfig,
    ) -> Result<Self> {
        model.prepare_training(data)?;
        let sampler = Arc::new(NegativeSampler::new(data, cfg.negatives)?);
        let opt = DenseOptimizer::new(cfg.optimizer, model.params());
        Ok(TopkTask {
            model,
            data,
            opt,
            step: 0,
            sampler,
            exclusions: [
                exclusions(data, Split::Valid),
                exclusions(data, Split::Test),
            ],
            cfg,
            mcfg,
            test_report: None,
        })
    }

    /// One optimizer step; a non-finite loss or gradient changes nothing.
    fn step(
        &mut self,
        batch: &TopkBatch,
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<f64, NonFiniteStep> {
        let (loss, grads) = {
            let mut g = Graph::new(self.model.params(), true);
            let l = self.model.loss(&mut g, batch, self.step + 1, rng);
            let v = g.value(l).data[0] as f64;
            NonFiniteStep::check("loss", v)?;
            (v, g.backward(l).params)
        };
        dense_step(
            self.model.params_mut(),
            &mut self.opt,
            &grads,
            lr,
            self.cfg.weight_decay,
            self.cfg.clip_grad_norm,
        )?;
        self.step = self.opt.step;
        Ok(loss)
    }

    fn meta(
        &self,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> TopkCheckpointMeta {
        TopkCheckpointMeta {
            format: TOPK_FORMAT.into(),
            model: self.model.name().into(),
            model_config: self.model.checkpoint_config(self.mcfg),
            shape: TopkShape {
                n_users: self.data.n_users,
                n_items: self.data.n_items,
            },
            history: self.data.train.clone(),
            user_tokens: self.data.user_tokens.clone(),
            item_tokens: self.data.item_tokens.clone(),
            metrics: metrics.clone(),
            resume,
        }
    }
}

impl TrainTask for TopkTask<'_> {
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
        let data = self.data;
        if self.model.input() == TopkInput::ClosedForm {
            obs.on_epoch_start(epoch, 1);
            self.model.fit_closed_form(data)?;
            self.model.prepare_scoring();
            obs.on_batch(1, data.train_pairs.len(), 0.0);
            return Ok(EpochStats {
                loss: 0.0,
                samples: data.train_pairs.len(),
                metrics: Metrics::default(),
            });
        }
        // an epoch visits every training interaction (pairwise models, each with a fresh
        // negative) or every user with training items (autoencoders), in a shuffled order
        let sampler = match self.model.input() {
            TopkInput::Pairs => Some(Arc::clone(&self.sampler)),
            _ => None,
        };
        let mut order: Vec<u32> = match &sampler {
            Some(_) => (0..data.train_pairs.len() as u32).collect(),
            None => (0..data.n_users as u32)
                .filter(|&u| !data.train.row(u).is_empty())
                .collect(),
        };
        order.shuffle(&mut rng);
        let batches = order.chunks(self.cfg.batch_size);
        obs.on_epoch_start(epoch, batches.len());
        let (mut sum, mut seen) = (0.0, 0usize);
        for (k, chunk) in batches.enumerate() {
            let batch = match &sampler {
                Some(sampler) => {
                    let n = chunk.len();
                    let (mut users, mut pos, mut neg) = (
                        Vec::with_capacity(n),
                        Vec::with_capacity(n),
                        Vec::with_capacity(n),
                    );
                    for &ix in chunk {
                        let (u, i) = data.train_pairs[ix as usize];
                        users.push(u);
                        pos.push(i);
                        neg.push(sampler.sample(u, &mut rng));
                    }
                    TopkBatch::Pairs { users, pos, neg }
                }
                None => TopkBatch::Users {
                    users: chunk.to_vec(),
                    rows: history_rows(&data.train, chunk, data.n_items),
                },
            };
            let l = self
                .step(&batch, lr, &mut rng)
                .map_err(|e| e.at(epoch, self.step + 1))?;
            sum += l * chunk.len() as f64;
            seen += chunk.len();
            obs.on_batch(k + 1, seen, sum / seen as f64);
        }
        self.model.prepare_scoring();
        Ok(EpochStats {
            loss: sum / seen.max(1) as f64,
            samples: seen,
            metrics: Metrics::default(),
        })
    }

    fn evaluate(&mut self, split: Split) -> Result<Option<Metrics>> {
        let (relevant, k) = match split {
            Split::Valid => (&self.data.valid, 0),
            Split::Test => (&self.data.test, 1),
        };
        if relevant.nnz() == 0 {
            return Ok(None);
        }
        let (m, report) = rank_users(
            self.model.as_ref(),
            &self.data.train,
            relevant,
            &self.exclusions[k],
            self.data.n_items,
            &self.cfg.metrics,
            self.cfg.block_users(self.data.n_items),
        );
        if split == Split::Test {
            self.test_report = Some(report);
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
        write_params_file(
            path,
            TOPK_FORMAT,
            m.name(),
            &self.meta(metrics, resume),
            m.params(),
            opt,
        )
    }

    fn load(&mut self, path: &Path, with_optimizer: bool) -> Result<Option<Value>> {
        let (file, meta) = open_topk(path)?;
        if meta.model != self.model.name()
            || meta.shape.n_users != self.data.n_users
            || meta.shape.n_items != self.data.n_items
        {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: format!(
                    "a {} checkpoint for {} users × {} items, not this {} run",
                    meta.model,
                    meta.shape.n_users,
                    meta.shape.n_items,
                    self.model.name()
                ),
            });
        }
        let opt = with_optimizer.then_some(&mut self.opt);
        let name = self.model.name();
        read_params(&file, self.model.params_mut(), name, opt)?;
        self.model.prepare_scoring();
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

/// Maps tokens to a checkpoint's ids: through its token list, or as numbers when it has none
/// (`.npy` data). Built once, when the checkpoint is loaded.
pub struct IdIndex {
    tokens: std::collections::HashMap<String, u32>,
    count: usize,
}

impl IdIndex {
    fn new(tokens: &[String], count: usize) -> Self {
        IdIndex {
            tokens: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i as u32))
                .collect(),
            count,
        }
    }

    fn get(&self, tok: &str) -> Option<u32> {
        if self.tokens.is_empty() {
            tok.parse::<u32>()
                .ok()
                .filter(|&i| (i as usize) < self.count)
        } else {
            self.tokens.get(tok).copied()
        }
    }
}

impl LoadedTopk {
    /// The id of a user token (or number, for `.npy`-trained models).
    pub fn user_id(&self, tok: &str) -> Option<u32> {
        self.user_index.get(tok)
    }

    /// The id of an item token.
    pub fn item_id(&self, tok: &str) -> Option<u32> {
        self.item_index.get(tok)
    }

    /// The token of an item id, as the data spelled it.
    pub fn item_token(&self, id: u32) -> String {
        self.meta
            .item_tokens
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// Each item's number of training users (the cold-start ranking).
    pub fn popularity(&self) -> Vec<f32> {
        let mut c = vec![0f32; self.meta.shape.n_items];
        for &i in &self.meta.history.items {
            c[i as usize] += 1.0;
        }
        c
    }
}

/// Reads an interaction file's (user, item) pairs as ids of `loaded`; rows naming a user or
/// item the model does not know are errors (or counted skips).
fn read_ids(
    loaded: &LoadedTopk,
    path: &Path,
    on_bad: recforge_data::features::OnBadRow,
    skipped: &mut u64,
) -> Result<Vec<(u32, u32)>> {
    use recforge_data::interactions::{read_interaction_file, InteractionConfig};
    let cfg = InteractionConfig::for_file(path);
    let rows = read_interaction_file(path, &cfg, on_bad, skipped)?;
    let mut pairs = Vec::with_capacity(rows.len());
    for r in rows {
        let unknown = match (loaded.user_id(&r.user), loaded.item_id(&r.item)) {
            (Some(u), Some(i)) => {
                pairs.push((u, i));
                continue;
            }
            (None, _) => (
                cfg.user_field.as_str(),
                format!("unknown user `{}`", r.user),
            ),
            (_, None) => (
                cfg.item_field.as_str(),
                format!("unknown item `{}`", r.item),
            ),
        };
        if on_bad == recforge_data::features::OnBadRow::Skip {
            *skipped += 1;
            continue;
        }
        return Err(recforge_data::DataError::BadRow {
            path: path.to_path_buf(),
            line: r.line,
            field: unknown.0.to_string(),
            msg: unknown.1,
        }
        .into());
    }
    Ok(pairs)
}

/// Ranks all items for the users of the held-out file `path` with a saved model, masking its
/// training history and the interactions of `exclude` files (e.g. the validation split when
/// scoring the test split). Returns the means, the per-user values and the skipped rows.
pub fn evaluate_file(
    loaded: &LoadedTopk,
    path: &Path,
    exclude: &[std::path::PathBuf],
    on_bad: recforge_data::features::OnBadRow,
) -> Result<(Metrics, RankingReport, u64)> {
    let n_users = loaded.meta.shape.n_users;
    let mut skipped = 0;
    let held = read_ids(loaded, path, on_bad, &mut skipped)?;
    // the training history plus every excluded file, built into one CSR
    let history = &loaded.meta.history;
    let mut pairs: Vec<(u32, u32)> = (0..n_users as u32)
        .flat_map(|u| history.row(u).iter().map(move |&i| (u, i)))
        .collect();
    for e in exclude {
        pairs.extend(read_ids(loaded, e, on_bad, &mut skipped)?);
    }
    let masked = UserItems::from_pairs(n_users, &pairs);
    let relevant = UserItems::from_pairs(n_users, &held);
    let excluded: Vec<Vec<u32>> = (0..n_users as u32)
        .map(|u| masked.row(u).to_vec())
        .collect();
    let cfg = TopkTrainConfig::from_config(&loaded.meta.model_config)?;
    let (m, report) = rank_users(
        loaded.model.as_ref(),
        &loaded.meta.history,
        &relevant,
        &excluded,
        loaded.meta.shape.n_items,
        &cfg.metrics,
        cfg.block_users(loaded.meta.shape.n_items),
    );
    Ok((m, report, skipped))
}

/// Writes per-user metric values (`user,<metric>…`) for paired comparisons of two models.
pub fn write_per_user(path: &Path, report: &RankingReport, user_tokens: &[String]) -> Result<()> {
    let mut out = String::from("user");
    for m in &report.metrics {
        out += &format!(",{}", m.name());
    }
    out.push('\n');
    for (u, vals) in report.users.iter().zip(&report.values) {
        let tok = user_tokens
            .get(*u as usize)
            .cloned()
            .unwrap_or_else(|| u.to_string());
        out += &tok;
        for v in vals {
            out += &format!(",{v:.6}");
        }
        out.push('\n');
    }
    Ok(recforge_data::cache::write_atomic(path, out.as_bytes())?)
}
