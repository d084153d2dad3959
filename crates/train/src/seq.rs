//! Sequential training and evaluation on users' item sequences: the family's [`TrainTask`]
//! (epochs over causal windows of each training history), RecBole's full-ranking evaluation
//! for sequential models (every item ranked, nothing masked but the padding item; Hit, NDCG
//! and MRR at K of the one held-out item), and its checkpoint (`recforge-seq-v1`).
//!
//! Config keys are RecBole's, as for top-K, plus recforge's `train_mode`:
//! - `all_positions` (the default): each window of a history is scored at every position at
//!   once — with causal attention the same (context, next item) pairs as RecBole's prefix
//!   instances, at a fraction of the cost;
//! - `prefix`: RecBole's instances, one per prefix, scored at its end (for parity).
//!
//! In both modes `train_batch_size` counts scored targets, so a batch holds the same number
//! of (context, next item) pairs as a RecBole batch of prefix instances, and an epoch takes
//! about as many optimizer steps.

use crate::checkpoint::{open_params_file, read_params, write_params_file, TensorFile};
use crate::fit::{EpochStats, FitConfig, Metrics, Split, TrainObserver, TrainTask};
use crate::topk::{check_finite, dense_step, TopkTrainConfig};
use crate::trainer::NonFiniteStep;
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use recforge_data::features::OnBadRow;
use recforge_data::sequences::{LeaveOneOut, UserSequences, Window};
use recforge_data::DataError;
use recforge_data::ModelConfig;
use recforge_metrics::{evaluate_full_ranking, RankingReport, UserCase};
use recforge_models::seq::{self, SeqModel, SeqShape};
use recforge_nn::{DenseOptimizer, Graph};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Model-config keys the sequential loop reads besides the top-K loop's.
pub const SEQ_TRAIN_KEYS: &[&str] = &["train_mode"];

/// How training histories become batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    AllPositions,
    Prefix,
}

#[derive(Clone, Debug)]
pub struct SeqTrainConfig {
    /// The loop settings top-K and sequential models share (RecBole's keys).
    pub base: TopkTrainConfig,
    pub mode: TrainMode,
    pub max_len: usize,
}

impl SeqTrainConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        if let Some(v) = cfg.get("train_neg_sample_args") {
            if !v.is_null() {
                return Err(TrainError::Config(format!(
                    "train_neg_sample_args {v}: sequential models train with cross-entropy over \
                     all items (set it to ~ or leave it out)"
                )));
            }
        }
        let mode = match cfg.str_or("train_mode", "all_positions").as_str() {
            "all_positions" => TrainMode::AllPositions,
            "prefix" => TrainMode::Prefix,
            other => {
                return Err(TrainError::Config(format!(
                    "train_mode `{other}` (all_positions, prefix)"
                )))
            }
        };
        Ok(SeqTrainConfig {
            base: TopkTrainConfig::from_config(cfg)?,
            mode,
            max_len: seq::max_item_list_length(cfg)?,
        })
    }

    /// The loop's settings (a trained model: `Users` stands for "not closed-form" here).
    pub fn fit_config(&self) -> FitConfig {
        self.base
            .fit_config(recforge_models::topk::TopkInput::Users)
    }
}

/// Checks a sequential model config before anything runs; returns warnings for RecBole keys
/// that are accepted but unused.
pub fn check_seq_config(cfg: &ModelConfig) -> Result<Vec<String>> {
    let name = cfg.str_or("model", "");
    let keys = seq::model_keys(&name).ok_or_else(|| {
        TrainError::Config(recforge_models::unknown_model(
            &name,
            recforge_models::Family::Seq,
        ))
    })?;
    let known: Vec<&str> = [
        seq::COMMON_KEYS,
        keys,
        crate::topk::TOPK_TRAIN_KEYS,
        SEQ_TRAIN_KEYS,
    ]
    .concat();
    let warnings = cfg.check_keys(&known, crate::topk::RECBOLE_IGNORED_KEYS)?;
    SeqTrainConfig::from_config(cfg)?;
    Ok(warnings)
}

/// Consecutive runs of `order` whose scored targets add up to at most `batch` (a window with
/// more targets than that is a batch of its own).
fn batches_by_targets(order: &[u32], windows: &[Window], batch: usize) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let (mut cur, mut count) = (Vec::new(), 0);
    for &w in order {
        let n = windows[w as usize].input.len() - windows[w as usize].scored;
        if !cur.is_empty() && count + n > batch {
            out.push(std::mem::take(&mut cur));
            count = 0;
        }
        cur.push(w);
        count += n;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Full-ranking metrics of `model` for one held-out item per history (`targets[k]` after
/// `histories[k]`), nothing excluded but the padding item 0.
pub fn rank_next_items(
    model: &dyn SeqModel,
    histories: &[&[u32]],
    targets: &[u32],
    n_items: usize,
    metrics: &[recforge_metrics::RankMetric],
    block_users: usize,
) -> (Metrics, RankingReport) {
    let relevant: Vec<[u32; 1]> = targets.iter().map(|&t| [t]).collect();
    let cases: Vec<UserCase> = relevant
        .iter()
        .enumerate()
        .map(|(k, r)| UserCase {
            user: k as u32,
            relevant: r,
            excluded: &[0],
        })
        .collect();
    let report = evaluate_full_ranking(
        &cases,
        n_items + 1,
        metrics,
        block_users,
        &mut |users, out| {
            let seqs: Vec<&[u32]> = users.iter().map(|&k| histories[k as usize]).collect();
            model.score_sequences(&seqs, out)
        },
    );
    (Metrics(report.means()), report)
}

/// A sequential checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeqCheckpointMeta {
    pub format: String,
    pub model: String,
    pub model_config: ModelConfig,
    pub shape: SeqShape,
    /// Item tokens by id (`item_tokens[0]` is the padding item's, empty).
    pub item_tokens: Vec<String>,
    pub user_tokens: Vec<String>,
    /// Every user's whole sequence (ids), what serving continues from.
    pub sequences: Vec<Vec<u32>>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, Value>,
    #[serde(default)]
    pub resume: Option<Value>,
}

pub const SEQ_FORMAT: &str = "recforge-seq-v1";

/// A loaded sequential model with its metadata.
pub struct LoadedSeq {
    pub meta: SeqCheckpointMeta,
    pub model: Box<dyn SeqModel>,
    pub path: std::path::PathBuf,
    /// the checkpoint's verified SHA-256
    pub sha256: String,
    users: HashMap<String, u32>,
    /// item token → id (≥ 1; the padding item has no token)
    items: HashMap<String, u32>,
}

impl LoadedSeq {
    /// The index of a user token in [`SeqCheckpointMeta::sequences`].
    pub fn user_id(&self, tok: &str) -> Option<u32> {
        self.users.get(tok).copied()
    }

    /// The id of an item token.
    pub fn item_id(&self, tok: &str) -> Option<u32> {
        self.items.get(tok).copied()
    }

    pub fn item_token(&self, id: u32) -> String {
        self.meta.item_tokens[id as usize].clone()
    }

    /// Scores of every id (padding included) after `history` (ids, oldest first).
    pub fn score_history(&self, history: &[u32]) -> Vec<f32> {
        let mut out = vec![0.0; self.meta.shape.n_items + 1];
        self.model.score_sequences(&[history], &mut out);
        out
    }
}

fn open_seq(path: &Path) -> Result<(TensorFile, SeqCheckpointMeta)> {
    open_params_file(path, SEQ_FORMAT, "sequential")
}

/// Opens a verified sequential checkpoint and builds its model.
pub fn load_seq(path: &Path) -> Result<LoadedSeq> {
    let (file, meta) = open_seq(path)?;
    let n = meta.shape.n_items;
    if meta.item_tokens.len() != n + 1
        || meta
            .sequences
            .iter()
            .flatten()
            .any(|&i| i == 0 || i as usize > n)
        || meta.sequences.len() != meta.user_tokens.len()
    {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: "the stored sequences do not fit the model's items".into(),
        });
    }
    let mut model = seq::build(&meta.model_config, meta.shape)?;
    let name = model.name();
    read_params(&file, model.params_mut(), name, None)?;
    let users = meta
        .user_tokens
        .iter()
        .enumerate()
        .map(|(u, t)| (t.clone(), u as u32))
        .collect();
    let items = meta
        .item_tokens
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    Ok(LoadedSeq {
        meta,
        model,
        path: path.to_path_buf(),
        sha256: file.sha256.clone(),
        users,
        items,
    })
}

/// Ranks the next item of every sequence in `path` (a `user item item …` file) with a saved
/// model: each line's last item is the target and the items before it the history. Items the
/// model does not know are errors naming the line (or, under [`OnBadRow::Skip`], the line is
/// skipped and counted); lines with fewer than two items have nothing to rank and are counted
/// too. Returns the means, the per-user values, the users ranked and the lines skipped.
pub fn evaluate_file(
    loaded: &LoadedSeq,
    path: &Path,
    on_bad: OnBadRow,
) -> Result<(Metrics, RankingReport, Vec<String>, u64)> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let (mut users, mut sequences, mut skipped) = (Vec::new(), Vec::new(), 0u64);
    for (i, line) in text.lines().enumerate() {
        let mut tokens = line.split_whitespace();
        let Some(user) = tokens.next() else {
            skipped += 1;
            continue;
        };
        let items: std::result::Result<Vec<u32>, String> = tokens
            .map(|t| loaded.item_id(t).ok_or_else(|| t.to_string()))
            .collect();
        match items {
            Ok(items) if items.len() >= 2 => {
                users.push(user.to_string());
                sequences.push(items);
            }
            Ok(_) => skipped += 1,
            Err(_) if on_bad == OnBadRow::Skip => skipped += 1,
            Err(item) => {
                return Err(DataError::BadRow {
                    path: path.to_path_buf(),
                    line: i as u64 + 1,
                    field: "items".into(),
                    msg: format!("item `{item}` is not one the model was trained with"),
                }
                .into())
            }
        }
    }
    let max_len = loaded.model.max_len();
    let histories: Vec<&[u32]> = sequences
        .iter()
        .map(|s| &s[(s.len() - 1).saturating_sub(max_len)..s.len() - 1])
        .collect();
    let targets: Vec<u32> = sequences.iter().map(|s| s[s.len() - 1]).collect();
    let cfg = SeqTrainConfig::from_config(&loaded.meta.model_config)?;
    let (m, report) = rank_next_items(
        loaded.model.as_ref(),
        &histories,
        &targets,
        loaded.meta.shape.n_items,
        &cfg.base.metrics,
        cfg.base.block_users(loaded.meta.shape.n_items + 1),
    );
    Ok((m, report, users, skipped))
}

/// Sequential training as a [`TrainTask`].
pub struct SeqTask<'a> {
    pub model: Box<dyn SeqModel>,
    data: &'a UserSequences,
    split: LeaveOneOut<'a>,
    windows: Vec<Window<'a>>,
    /// Validation and test: each kept user's input history and held-out item.
    eval: [(Vec<&'a [u32]>, Vec<u32>); 2],
    cfg: SeqTrainConfig,
    mcfg: &'a ModelConfig,
    opt: DenseOptimizer,
    step: u64,
    /// the latest test evaluation's per-user values (users indexed as in [`SeqTask::users`])
    pub test_report: Option<RankingReport>,
}

impl<'a> SeqTask<'a> {
    pub fn new(
        model: Box<dyn SeqModel>,
        data: &'a UserSequences,
        cfg: SeqTrainConfig,
        mcfg: &'a ModelConfig,
    ) -> Result<Self> {
        let split = data.leave_one_out();
        if split.users.is_empty() {
            return Err(TrainError::Config(
                "no user has the three items leave-one-out needs (history, valid, test)".into(),
            ));
        }
        let max_len = model.max_len();
        let windows = match cfg.mode {
            TrainMode::AllPositions => split.windows(max_len),
            TrainMode::Prefix => split.prefix_windows(max_len),
        };
        let eval = [Split::Valid, Split::Test].map(|s| {
            split
                .users
                .iter()
                .map(|&u| match s {
                    Split::Valid => split.valid(u, max_len),
                    Split::Test => split.test(u, max_len),
                })
                .unzip()
        });
        let opt = DenseOptimizer::new(cfg.base.optimizer, model.params());
        Ok(SeqTask {
            model,
            data,
            split,
            windows,
            eval,
            cfg,
            mcfg,
            opt,
            step: 0,
            test_report: None,
        })
    }

    /// The tokens of the users evaluated, in the order of the ranking reports.
    pub fn users(&self) -> Vec<String> {
        self.split
            .users
            .iter()
            .map(|&u| self.data.users[u].clone())
            .collect()
    }

    /// Users left out of the split for having fewer than three items.
    pub fn short_users(&self) -> usize {
        self.split.short_users
    }

    /// Training windows and the (context, next item) pairs they score.
    pub fn training_size(&self) -> (usize, usize) {
        let targets = self.windows.iter().map(|w| w.input.len() - w.scored).sum();
        (self.windows.len(), targets)
    }

    fn step(
        &mut self,
        batch: &[Window],
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<f64, NonFiniteStep> {
        let (loss, grads) = {
            let mut g = Graph::new(self.model.params(), true);
            let l = self.model.loss(&mut g, batch, rng);
            let v = g.value(l).data[0] as f64;
            NonFiniteStep::check("loss", v)?;
            (v, g.backward(l).params)
        };
        dense_step(
            self.model.params_mut(),
            &mut self.opt,
            &grads,
            lr,
            self.cfg.base.weight_decay,
            self.cfg.base.clip_grad_norm,
        )?;
        self.step = self.opt.step;
        Ok(loss)
    }

    fn meta(
        &self,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> SeqCheckpointMeta {
        SeqCheckpointMeta {
            format: SEQ_FORMAT.into(),
            model: self.model.name().into(),
            model_config: self.mcfg.clone(),
            shape: SeqShape {
                n_items: self.data.num_items(),
            },
            item_tokens: self.data.items.clone(),
            user_tokens: self.data.users.clone(),
            sequences: self.data.sequences.clone(),
            metrics: metrics.clone(),
            resume,
        }
    }
}

impl TrainTask for SeqTask<'_> {
    fn train_epoch(
        &mut self,
        epoch: usize,
        lr: f32,
        obs: &mut dyn TrainObserver,
    ) -> Result<EpochStats> {
        let seed = self
            .cfg
            .base
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as u64);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..self.windows.len() as u32).collect();
        order.shuffle(&mut rng);
        let batches = batches_by_targets(&order, &self.windows, self.cfg.base.batch_size);
        obs.on_epoch_start(epoch, batches.len());
        let (mut sum, mut seen) = (0.0, 0usize);
        for (k, ids) in batches.iter().enumerate() {
            let batch: Vec<Window> = ids
                .iter()
                .map(|&w| self.windows[w as usize].clone())
                .collect();
            let targets: usize = batch.iter().map(|w| w.input.len() - w.scored).sum();
            let l = self
                .step(&batch, lr, &mut rng)
                .map_err(|e| e.at(epoch, self.step + 1))?;
            sum += l * targets as f64;
            seen += targets;
            obs.on_batch(k + 1, seen, sum / seen as f64);
        }
        Ok(EpochStats {
            loss: sum / seen.max(1) as f64,
            samples: seen,
            metrics: Metrics::default(),
        })
    }

    fn evaluate(&mut self, split: Split) -> Result<Option<Metrics>> {
        let (histories, targets) = match split {
            Split::Valid => &self.eval[0],
            Split::Test => &self.eval[1],
        };
        let (m, report) = rank_next_items(
            self.model.as_ref(),
            histories,
            targets,
            self.data.num_items(),
            &self.cfg.base.metrics,
            self.cfg.base.block_users(self.data.num_items() + 1),
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
            SEQ_FORMAT,
            m.name(),
            &self.meta(metrics, resume),
            m.params(),
            opt,
        )
    }

    fn load(&mut self, path: &Path, with_optimizer: bool) -> Result<Option<Value>> {
        let (file, meta) = open_seq(path)?;
        if meta.model != self.model.name() || meta.shape.n_items != self.data.num_items() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: format!(
                    "a {} checkpoint for {} items, not this {} run",
                    meta.model,
                    meta.shape.n_items,
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

#[cfg(test)]
mod tests {
    use super::*;
    use recforge_metrics::RankMetric;
    use recforge_models::seq::Packed;
    use recforge_nn::{NodeId, ParamStore, Tensor};

    /// Scores every history alike over 5 items: the padding item highest, then items by
    /// descending id.
    struct FixedScores(ParamStore);

    impl SeqModel for FixedScores {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn params(&self) -> &ParamStore {
            &self.0
        }
        fn params_mut(&mut self) -> &mut ParamStore {
            &mut self.0
        }
        fn max_len(&self) -> usize {
            50
        }
        fn logits(&self, g: &mut Graph, packed: &Packed, _: &mut StdRng) -> NodeId {
            let row: Vec<f32> = std::iter::once(1e9)
                .chain((1..6).map(|i| i as f32))
                .collect();
            let rows = packed.scored_rows.len();
            g.input(Tensor::from_vec(rows, 6, row.repeat(rows)), false)
        }
    }

    #[test]
    fn next_items_are_ranked_over_every_item_but_padding() {
        // 5 items ranked 5, 4, 3, 2, 1: targets 5 (rank 1), 3 (rank 3), 1 (rank 5)
        let m = FixedScores(ParamStore::new());
        let h: [&[u32]; 3] = [&[1], &[2, 4], &[5]];
        let metrics: Vec<RankMetric> = ["hit@1", "hit@3", "mrr@5", "ndcg@3"]
            .iter()
            .map(|n| match recforge_metrics::Metric::parse(n) {
                Some(recforge_metrics::Metric::Rank(r)) => r,
                _ => unreachable!(),
            })
            .collect();
        let (means, report) = rank_next_items(&m, &h, &[5, 3, 1], 5, &metrics, 2);
        assert_eq!(report.users, [0, 1, 2]);
        let get = |k: &str| means.get(k).unwrap();
        assert!((get("hit@1") - 1.0 / 3.0).abs() < 1e-9);
        assert!((get("hit@3") - 2.0 / 3.0).abs() < 1e-9);
        assert!((get("mrr@5") - (1.0 + 1.0 / 3.0 + 0.2) / 3.0).abs() < 1e-9);
        let ndcg = (1.0 + 1.0 / 4f64.log2()) / 3.0;
        assert!((get("ndcg@3") - ndcg).abs() < 1e-9);
    }

    #[test]
    fn batches_hold_at_most_the_batch_size_in_targets() {
        let items: Vec<u32> = (1..=20).collect();
        let w = |len: usize, scored: usize| Window {
            input: &items[..len],
            targets: &items[1..=len],
            scored,
        };
        // targets per window: 3, 1, 4, 1, 5
        let windows = [w(3, 0), w(4, 3), w(4, 0), w(2, 1), w(5, 0)];
        let order = [0, 1, 2, 3, 4];
        assert_eq!(
            batches_by_targets(&order, &windows, 4),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(
            batches_by_targets(&order, &windows, 9),
            vec![vec![0, 1, 2, 3], vec![4]]
        );
    }
}
