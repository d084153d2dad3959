//! Self-supervised pretraining of any CTR backbone with an encoder: MAP (Lin et al., KDD'23).
//!
//! - **MFP** (masked feature prediction): per instance a fixed share of the categorical fields
//!   is masked (their embeddings replaced by a learnable per-field `[MASK]` embedding); the
//!   backbone's encoder reads the corrupted instance, a linear layer projects its output to
//!   one `proj_size` vector per field, and each masked field's original id is predicted
//!   against the field's whole vocabulary with noise-contrastive estimation: the target and
//!   `K` negatives drawn from the field's unigram distribution, scored by dot products with
//!   output embeddings (+ bias), each logit corrected by `−log(K·q(id))`, binary
//!   cross-entropy on target-vs-noise. Only the rows named by targets and negatives are
//!   touched.
//! - **RFD** (replaced feature detection): per instance each categorical field is replaced,
//!   with probability `mask_ratio`, by a value drawn from the field's unigram distribution;
//!   an MLP head on the encoder output predicts, per field, whether it was replaced.
//!
//! The backbone only provides [`recforge_models::CtrNet::encode`]; nothing here knows a model.

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::fit::{
    EpochStats, FitConfig, FitReport, Metrics, Monitor, Split, TrainObserver, TrainTask,
};
use crate::run::RunDir;
use crate::trainer::{backward_pass, non_finite_weight, NonFiniteStep, TrainConfig, Trainer};
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, WeightedAliasIndex};
use recforge_data::{Batch, BatchIter, EncodedSplit, FeatureMap, FieldKind, ModelConfig};
use recforge_models::layers::Linear;
use recforge_models::Model;
use recforge_nn::graph::Grads;
use recforge_nn::{init, EmbeddingTable, Graph, NodeId, ParamId, RowGrads, Tensor};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Mfp,
    Rfd,
}

impl Method {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mfp" => Some(Method::Mfp),
            "rfd" => Some(Method::Rfd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Mfp => "MFP",
            Method::Rfd => "RFD",
        }
    }
}

/// Model-config keys pretraining reads.
pub const PRETRAIN_KEYS: &[&str] = &[
    "pt_epochs",
    "pt_learning_rate",
    "pt_lr_schedule",
    "pt_weight_decay",
    "pt_mask_ratio",
    "pt_neg_num",
    "pt_proj_size",
];

/// Pretraining hyper-parameters, read from the model config (`pt_*` keys, MAP's defaults).
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    pub method: Method,
    /// `pt_epochs` (default 10).
    pub epochs: usize,
    pub batch_size: usize,
    /// `pt_learning_rate` (default 1e-3), decayed by `pt_lr_schedule` (`cosine` | `constant`).
    pub learning_rate: f32,
    pub cosine: bool,
    /// `pt_weight_decay` (default 0.05): decoupled, on weights and touched embedding rows.
    pub weight_decay: f32,
    /// `pt_mask_ratio` (default 0.3): share of categorical fields masked (MFP) or replaced (RFD).
    pub mask_ratio: f32,
    /// `pt_neg_num` (default 25): NCE negatives per masked field.
    pub negatives: usize,
    /// `pt_proj_size` (default 32): per-field projection width of the heads.
    pub proj_size: usize,
    pub seed: u64,
}

impl PretrainConfig {
    pub fn from_config(cfg: &ModelConfig, method: Method) -> Result<Self> {
        let e = |x: recforge_data::DataError| TrainError::Config(x.to_string());
        let c = PretrainConfig {
            method,
            epochs: cfg.usize_or("pt_epochs", 10).map_err(e)?,
            batch_size: cfg.usize_or("batch_size", 4096).map_err(e)?.max(1),
            learning_rate: cfg.positive_f32_or("pt_learning_rate", 1e-3).map_err(e)?,
            cosine: match cfg.str_or("pt_lr_schedule", "cosine").as_str() {
                "cosine" => true,
                "constant" => false,
                other => {
                    return Err(TrainError::Config(format!(
                        "pt_lr_schedule `{other}` (cosine, constant)"
                    )))
                }
            },
            weight_decay: cfg
                .non_negative_f32_or("pt_weight_decay", 0.05)
                .map_err(e)?,
            mask_ratio: cfg.f64_or("pt_mask_ratio", 0.3).map_err(e)? as f32,
            negatives: cfg.usize_or("pt_neg_num", 25).map_err(e)?,
            proj_size: cfg.usize_or("pt_proj_size", 32).map_err(e)?,
            seed: cfg.usize_or("seed", 2024).map_err(e)? as u64,
        };
        if !(0.0..=1.0).contains(&c.mask_ratio) || c.negatives == 0 || c.proj_size == 0 {
            return Err(TrainError::Config(
                "pt_mask_ratio must be in [0, 1]; pt_neg_num and pt_proj_size positive".into(),
            ));
        }
        Ok(c)
    }

    /// Learning rate at `step` of `total` (cosine decay to 0, or constant).
    pub fn lr_at(&self, step: usize, total: usize) -> f32 {
        if !self.cosine || total == 0 {
            return self.learning_rate;
        }
        let t = (step as f64 / total as f64).min(1.0);
        (self.learning_rate as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
    }
}

/// A field's noise distribution: its unigram counts on the training split, add-one smoothed
/// so that every id (OOV included) has a probability.
struct Unigram {
    alias: WeightedAliasIndex<f64>,
    log_q: Vec<f32>,
}

impl Unigram {
    fn new(counts: &[u64]) -> Self {
        let weights: Vec<f64> = counts.iter().map(|&c| c as f64 + 1.0).collect();
        let total: f64 = weights.iter().sum();
        let log_q = weights.iter().map(|w| (w / total).ln() as f32).collect();
        Unigram {
            alias: WeightedAliasIndex::new(weights).expect("positive weights"),
            log_q,
        }
    }

    fn sample(&self, rng: &mut StdRng) -> u32 {
        self.alias.sample(rng) as u32
    }
}

enum Head {
    Mfp {
        proj: Linear,
        /// Per categorical field: output embeddings `[vocab × proj]` and biases `[vocab × 1]`.
        out: Vec<EmbeddingTable>,
        bias: Vec<EmbeddingTable>,
    },
    Rfd {
        hidden: Linear,
        out: Linear,
    },
}

/// One epoch's pretraining log (the checkpoint's `pretrain_epochs`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PretrainEpoch {
    pub epoch: usize,
    pub loss: f64,
    /// MFP: share of masked fields whose target outscores all its negatives; RFD: share of
    /// fields classified right (replaced or not).
    pub accuracy: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

pub struct Pretrainer {
    pub cfg: PretrainConfig,
    /// Indices (in the feature map) of the categorical fields, which are masked/replaced.
    fields: Vec<usize>,
    /// Slot of each of those fields in an encoded row.
    slots: Vec<usize>,
    noise: Vec<Unigram>,
    /// Per embedding matrix of the model: its learnable `[MASK]` row `[1 × width]`.
    mask_emb: Vec<ParamId>,
    head: Head,
    trainer: Trainer,
}

fn counts_per_field(fmap: &FeatureMap, fields: &[usize], train: &EncodedSplit) -> Vec<Vec<u64>> {
    let mut counts: Vec<Vec<u64>> = fields
        .iter()
        .map(|&f| vec![0u64; fmap.vocab_of(f).size()])
        .collect();
    for r in 0..train.rows {
        let row = &train.row(r)[1..];
        for (c, &f) in counts.iter_mut().zip(fields) {
            let id = row[fmap.fields[f].offset] as usize;
            if let Some(n) = c.get_mut(id) {
                *n += 1;
            }
        }
    }
    counts
}

impl Pretrainer {
    /// Adds the pretraining parameters (`pretrain.*`) to `model` and prepares the noise
    /// distributions from `train`.
    pub fn new(
        cfg: PretrainConfig,
        train_cfg: TrainConfig,
        model: &mut Model,
        fmap: &FeatureMap,
        train: &EncodedSplit,
    ) -> Result<Self> {
        let fields: Vec<usize> = fmap
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.spec.kind, FieldKind::Categorical))
            .map(|(i, _)| i)
            .collect();
        if fields.is_empty() {
            return Err(TrainError::Config(
                "MAP pretraining needs categorical fields to mask".into(),
            ));
        }
        // the representation width, from a one-row dry run
        let probe = Batch {
            size: 1,
            width: fmap.width,
            labels: vec![0.0],
            slots: vec![0; fmap.width],
        };
        let rep_dim = {
            let mut g = Graph::new(&model.params, false);
            let emb: Vec<NodeId> = model
                .embeddings
                .iter()
                .map(|e| g.input(e.forward(&probe), false))
                .collect();
            let mut rng = StdRng::seed_from_u64(0);
            let rep = model.net.encode(&mut g, &emb, &mut rng).ok_or_else(|| {
                TrainError::Config(format!(
                    "{} has no encoder to pretrain (MAP needs a deep model, not LR, FM, FwFM or AFM)",
                    model.name
                ))
            })?;
            g.value(rep).cols
        };
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x9e37);
        let ps = &mut model.params;
        let mask_emb = model
            .embeddings
            .iter()
            .enumerate()
            .map(|(k, e)| {
                ps.add(
                    format!("pretrain.mask{k}"),
                    init::normal(&mut rng, 1, e.width(), 1e-2),
                    true,
                    false,
                )
            })
            .collect();
        let nf = fields.len();
        let p = cfg.proj_size;
        let head = match cfg.method {
            Method::Mfp => {
                let proj = Linear::new(ps, "pretrain.mfp.proj", rep_dim, nf * p, true, &mut rng);
                let kind = model.common.optimizer;
                let out = fields
                    .iter()
                    .map(|&f| EmbeddingTable::new(fmap.vocab_of(f).size(), p, 1e-2, kind, &mut rng))
                    .collect();
                let bias = fields
                    .iter()
                    .map(|&f| EmbeddingTable::new(fmap.vocab_of(f).size(), 1, 0.0, kind, &mut rng))
                    .collect();
                Head::Mfp { proj, out, bias }
            }
            Method::Rfd => Head::Rfd {
                hidden: Linear::new(ps, "pretrain.rfd.hidden", rep_dim, nf * p, true, &mut rng),
                out: Linear::new(ps, "pretrain.rfd.out", nf * p, nf, true, &mut rng),
            },
        };
        let noise = counts_per_field(fmap, &fields, train)
            .iter()
            .map(|c| Unigram::new(c))
            .collect();
        let slots = fields.iter().map(|&f| fmap.fields[f].offset).collect();
        let trainer = Trainer::new(train_cfg, model);
        Ok(Pretrainer {
            cfg,
            fields,
            slots,
            noise,
            mask_emb,
            head,
            trainer,
        })
    }

    fn masked_count(&self) -> usize {
        ((self.cfg.mask_ratio * self.fields.len() as f32).round() as usize)
            .clamp(1, self.fields.len())
    }

    /// One step of the configured objective; returns (loss, correct, predictions counted).
    pub fn step(
        &mut self,
        model: &mut Model,
        batch: &Batch,
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<(f64, usize, usize), NonFiniteStep> {
        match self.cfg.method {
            Method::Mfp => self.step_mfp(model, batch, lr, rng),
            Method::Rfd => self.step_rfd(model, batch, lr, rng),
        }
    }

    /// Builds the MFP loss on `batch` with `masked[b]` (indices into `self.fields`) masked;
    /// returns the graph, the loss node, the raw embedding nodes, and what the NCE rows were.
    #[allow(clippy::type_complexity)]
    pub fn mfp_loss<'a>(
        &self,
        model: &'a Model,
        batch: &Batch,
        masked: &[Vec<usize>],
        negatives: &[u32],
        rng: &mut StdRng,
    ) -> (Graph<'a>, NodeId, Vec<NodeId>, NceRows) {
        let Head::Mfp { proj, out, bias } = &self.head else {
            unreachable!("mfp_loss on an RFD pretrainer")
        };
        let mut g = Graph::new(&model.params, true);
        let (emb_nodes, corrupted) = self.masked_embeddings(&mut g, model, batch, masked);
        let rep = model
            .net
            .encode(&mut g, &corrupted, rng)
            .expect("checked in new");
        let p = self.cfg.proj_size;
        let h_all = proj.forward(&mut g, rep);
        let k = self.cfg.negatives;
        let mut at = Vec::new();
        let mut rows = NceRows {
            field: Vec::new(),
            ids: Vec::new(),
            scores: None,
            out_node: None,
            bias_node: None,
            distinct: Vec::new(),
        };
        for (b, fs) in masked.iter().enumerate() {
            for &j in fs {
                at.push((b as u32, (j * p) as u32));
                rows.field.push(j);
                rows.ids.push(batch.slots[b * batch.width + self.slots[j]]);
                let m = rows.field.len() - 1;
                rows.ids.extend_from_slice(&negatives[m * k..(m + 1) * k]);
            }
        }
        let m = rows.field.len();
        let h = g.gather_segments(h_all, at, p);
        // the distinct (field, id) rows the batch names, and each candidate's index into them
        let mut distinct: Vec<(usize, u32)> = Vec::new();
        let mut slot_of: std::collections::HashMap<
            u64,
            u32,
            std::hash::BuildHasherDefault<recforge_nn::embedding::IdHasher>,
        > = Default::default();
        let mut idx = Vec::with_capacity(m * (k + 1));
        let mut adjust = Vec::with_capacity(m * (k + 1));
        let ln_k = (k as f32).ln();
        for (i, &j) in rows.field.iter().enumerate() {
            for &id in &rows.ids[i * (k + 1)..(i + 1) * (k + 1)] {
                let r = *slot_of
                    .entry(((j as u64) << 32) | id as u64)
                    .or_insert_with(|| {
                        distinct.push((j, id));
                        (distinct.len() - 1) as u32
                    });
                idx.push(r);
                adjust.push(-(ln_k + self.noise[j].log_q[id as usize]));
            }
        }
        let mut o = Vec::with_capacity(distinct.len() * p);
        let mut bvals = Vec::with_capacity(distinct.len());
        for &(j, id) in &distinct {
            o.extend_from_slice(out[j].row(id));
            bvals.push(bias[j].row(id)[0]);
        }
        let r = distinct.len();
        let o = g.input(Tensor::from_vec(r, p, o), true);
        let bn = g.input(Tensor::from_vec(r, 1, bvals), true);
        let ones = g.input(Tensor::from_vec(m, 1, vec![1.0; m]), false);
        let adj = g.input(Tensor::from_vec(m, k + 1, adjust), false);
        let s = g.row_dots_indexed(h, o, idx.clone());
        let b = g.row_dots_indexed(ones, bn, idx);
        let raw = g.add(s, b);
        let s = g.add(raw, adj);
        rows.distinct = distinct;
        let labels: Vec<f32> = (0..m * (k + 1))
            .map(|i| if i % (k + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let loss = g.bce_with_logits(s, &labels);
        rows.scores = Some(raw);
        rows.out_node = Some(o);
        rows.bias_node = Some(bn);
        (g, loss, emb_nodes, rows)
    }

    /// Embeds `batch` and replaces the masked fields' columns by the `[MASK]` rows.
    /// Returns (raw nodes, corrupted nodes).
    fn masked_embeddings(
        &self,
        g: &mut Graph,
        model: &Model,
        batch: &Batch,
        masked: &[Vec<usize>],
    ) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut raw = Vec::new();
        let mut corrupted = Vec::new();
        for (e, &mask) in model.embeddings.iter().zip(&self.mask_emb) {
            let width = e.width();
            let mut drop = vec![0.0f32; batch.size * width];
            for (b, fs) in masked.iter().enumerate() {
                for &j in fs {
                    let cols = e.columns(self.fields[j]);
                    let span = b * width + cols.start..b * width + cols.end;
                    drop[span].fill(1.0);
                }
            }
            let x = g.input(e.forward(batch), true);
            let mask_row = g.param(mask);
            raw.push(x);
            corrupted.push(g.blend_row(x, mask_row, drop));
        }
        (raw, corrupted)
    }

    /// Which categorical fields (indices into the pretrainer's field list) each row masks.
    pub fn draw_masks(&self, rows: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
        let n = self.masked_count();
        (0..rows)
            .map(|_| rand::seq::index::sample(rng, self.fields.len(), n).into_vec())
            .collect()
    }

    /// `K` negatives per masked field, drawn from that field's unigram distribution.
    pub fn draw_negatives(&self, masked: &[Vec<usize>], rng: &mut StdRng) -> Vec<u32> {
        let k = self.cfg.negatives;
        masked
            .iter()
            .flatten()
            .flat_map(|&j| {
                (0..k)
                    .map(|_| self.noise[j].sample(rng))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn step_mfp(
        &mut self,
        model: &mut Model,
        batch: &Batch,
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<(f64, usize, usize), NonFiniteStep> {
        let masked = self.draw_masks(batch.size, rng);
        let negatives = self.draw_negatives(&masked, rng);
        let (g, loss, emb_nodes, rows) = self.mfp_loss(model, batch, &masked, &negatives, rng);
        let k1 = self.cfg.negatives + 1;
        let scores = &g.value(rows.scores.expect("set")).data;
        // a negative that happens to be the target's own id does not count against it
        let correct = scores
            .chunks_exact(k1)
            .zip(rows.ids.chunks_exact(k1))
            .filter(|(s, ids)| {
                s[1..]
                    .iter()
                    .zip(&ids[1..])
                    .all(|(&x, &id)| id == ids[0] || s[0] > x)
            })
            .count();
        let m = rows.field.len();
        let mut pass = backward_pass(g, loss)?;
        let emb_grads = model.embedding_grads(batch, &emb_nodes, &mut pass.grads);
        let (out_grads, bias_grads) = self.nce_row_grads(&rows, &mut pass.grads);
        let Head::Mfp { out, bias, .. } = &mut self.head else {
            unreachable!()
        };
        let mut extra: Vec<(&mut EmbeddingTable, &RowGrads)> = out
            .iter_mut()
            .zip(&out_grads)
            .chain(bias.iter_mut().zip(&bias_grads))
            .collect();
        let wd = self.cfg.weight_decay;
        self.trainer
            .step_after(model, &pass, &emb_grads, &mut extra, lr, wd)?;
        Ok((pass.loss, correct, m))
    }

    /// Scatters the gradients of the gathered output rows and biases back to table rows.
    pub fn nce_row_grads(
        &self,
        rows: &NceRows,
        grads: &mut Grads,
    ) -> (Vec<RowGrads>, Vec<RowGrads>) {
        let p = self.cfg.proj_size;
        let Head::Mfp { out, .. } = &self.head else {
            unreachable!()
        };
        let row_grads = |dim: usize, rows: usize| {
            if rows <= recforge_models::embedding::DIRECT_INDEX_MAX_ROWS {
                RowGrads::direct(dim, rows)
            } else {
                RowGrads::new(dim)
            }
        };
        let mut out_g: Vec<RowGrads> = out.iter().map(|t| row_grads(p, t.rows)).collect();
        let mut bias_g: Vec<RowGrads> = out.iter().map(|t| row_grads(1, t.rows)).collect();
        let go = rows.out_node.and_then(|n| grads.take(n));
        let gb = rows.bias_node.and_then(|n| grads.take(n));
        for (r, &(j, id)) in rows.distinct.iter().enumerate() {
            if let Some(go) = &go {
                out_g[j].add(id, &go.data[r * p..(r + 1) * p], 1.0);
            }
            if let Some(gb) = &gb {
                bias_g[j].add(id, &gb.data[r..r + 1], 1.0);
            }
        }
        (out_g, bias_g)
    }

    /// MFP's output embeddings and biases, one table each per categorical field.
    pub fn nce_tables_mut(&mut self) -> Option<(&mut [EmbeddingTable], &mut [EmbeddingTable])> {
        match &mut self.head {
            Head::Mfp { out, bias, .. } => Some((out, bias)),
            Head::Rfd { .. } => None,
        }
    }

    /// The categorical fields (feature-map indices) MAP masks or replaces.
    pub fn fields(&self) -> &[usize] {
        &self.fields
    }

    /// MFP's prediction for field `j` (index into [`Pretrainer::fields`]) of every row with
    /// that field masked: the id with the highest score over the field's whole vocabulary.
    pub fn predict_masked(&self, model: &Model, batch: &Batch, j: usize) -> Vec<u32> {
        let Head::Mfp { proj, out, bias } = &self.head else {
            panic!("predict_masked needs an MFP pretrainer")
        };
        let masked = vec![vec![j]; batch.size];
        let mut g = Graph::new(&model.params, false);
        let (_, corrupted) = self.masked_embeddings(&mut g, model, batch, &masked);
        let mut rng = StdRng::seed_from_u64(0);
        let rep = model
            .net
            .encode(&mut g, &corrupted, &mut rng)
            .expect("encoder");
        let h = proj.forward(&mut g, rep);
        let p = self.cfg.proj_size;
        let hv = g.value(h);
        (0..batch.size)
            .map(|b| {
                let hb = &hv.row(b)[j * p..(j + 1) * p];
                (0..out[j].rows as u32)
                    .map(|id| {
                        let s: f32 = hb.iter().zip(out[j].row(id)).map(|(a, c)| a * c).sum();
                        (id, s + bias[j].row(id)[0])
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(id, _)| id)
            })
            .collect()
    }

    /// Replaces fields with unigram draws; returns the corrupted batch and the per-field
    /// labels (1 = the value differs from the original).
    pub fn replace_fields(&self, batch: &Batch, rng: &mut StdRng) -> (Batch, Vec<f32>) {
        let mut corrupted = batch.clone();
        let nf = self.fields.len();
        let mut labels = vec![0.0f32; batch.size * nf];
        for b in 0..batch.size {
            for j in 0..nf {
                if rng.gen::<f32>() < self.cfg.mask_ratio {
                    let slot = b * batch.width + self.slots[j];
                    let new = self.noise[j].sample(rng);
                    if new != corrupted.slots[slot] {
                        corrupted.slots[slot] = new;
                        labels[b * nf + j] = 1.0;
                    }
                }
            }
        }
        (corrupted, labels)
    }

    /// The RFD loss on an already corrupted batch.
    pub fn rfd_loss<'a>(
        &self,
        model: &'a Model,
        corrupted: &Batch,
        labels: &[f32],
        rng: &mut StdRng,
    ) -> (Graph<'a>, NodeId, NodeId, Vec<NodeId>) {
        let Head::Rfd { hidden, out } = &self.head else {
            unreachable!("rfd_loss on an MFP pretrainer")
        };
        let mut g = Graph::new(&model.params, true);
        let emb: Vec<NodeId> = model
            .embeddings
            .iter()
            .map(|e| g.input(e.forward(corrupted), true))
            .collect();
        let rep = model.net.encode(&mut g, &emb, rng).expect("checked in new");
        let h = g.dense(rep, hidden.w, hidden.b, recforge_nn::Activation::Relu);
        let logits = out.forward(&mut g, h);
        let loss = g.bce_with_logits(logits, labels);
        (g, loss, logits, emb)
    }

    fn step_rfd(
        &mut self,
        model: &mut Model,
        batch: &Batch,
        lr: f32,
        rng: &mut StdRng,
    ) -> std::result::Result<(f64, usize, usize), NonFiniteStep> {
        let (corrupted, labels) = self.replace_fields(batch, rng);
        let (g, loss, logits, emb) = self.rfd_loss(model, &corrupted, &labels, rng);
        let correct = g
            .value(logits)
            .data
            .iter()
            .zip(&labels)
            .filter(|(z, y)| (**z > 0.0) == (**y > 0.5))
            .count();
        let mut pass = backward_pass(g, loss)?;
        let emb_grads = model.embedding_grads(&corrupted, &emb, &mut pass.grads);
        let wd = self.cfg.weight_decay;
        self.trainer
            .step_after(model, &pass, &emb_grads, &mut [], lr, wd)?;
        Ok((pass.loss, correct, labels.len()))
    }

    /// Pretrains for `cfg.epochs` over `train` through the shared loop ([`crate::fit::fit`]).
    /// The run directory gets `metrics.csv`/`metrics.json` (loss and accuracy of each epoch)
    /// and the plot; its `model.safetensors` is the pretrained checkpoint: embeddings and
    /// encoder (the `pretrain.*` heads ride along and are ignored when finetuning), with the
    /// epochs' logs as its metrics. There is no validation: every epoch is the newest best.
    pub fn fit(
        &mut self,
        model: &mut Model,
        data: PretrainData<'_>,
        run: &RunDir,
        obs: &mut dyn TrainObserver,
    ) -> Result<FitReport> {
        let fit_cfg = FitConfig {
            epochs: self.cfg.epochs,
            learning_rate: self.cfg.learning_rate,
            eval_step: 1,
            patience: usize::MAX,
            monitor: Monitor::single("loss", false),
            reduce_lr_on_plateau: false,
            min_delta: 0.0,
        };
        let total = data.train.rows.div_ceil(self.cfg.batch_size) * self.cfg.epochs;
        let mut task = PretrainTask {
            pt: self,
            model,
            data,
            total,
            logs: Vec::new(),
        };
        crate::fit::fit(&mut task, &fit_cfg, run, false, obs)
    }
}

/// What pretraining reads: the training split, and what its checkpoint records.
#[derive(Clone, Copy)]
pub struct PretrainData<'a> {
    pub train: &'a EncodedSplit,
    pub feature_map: &'a FeatureMap,
    pub config: &'a ModelConfig,
}

/// MAP pretraining as a [`TrainTask`]: epochs of shuffled batches of the configured
/// objective, the learning rate following its schedule per step.
struct PretrainTask<'a> {
    pt: &'a mut Pretrainer,
    model: &'a mut Model,
    data: PretrainData<'a>,
    /// steps of the whole run, for the cosine schedule
    total: usize,
    logs: Vec<PretrainEpoch>,
}

impl TrainTask for PretrainTask<'_> {
    /// `_lr` is the loop's constant rate (no plateau cuts without validation); the step's
    /// rate comes from `pt_lr_schedule`.
    fn train_epoch(
        &mut self,
        epoch: usize,
        _lr: f32,
        obs: &mut dyn TrainObserver,
    ) -> Result<EpochStats> {
        let cfg = &self.pt.cfg;
        let seed = cfg.seed.wrapping_mul(7_000_003).wrapping_add(epoch as u64);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9a7);
        let batches = BatchIter::shuffled(self.data.train, cfg.batch_size, seed);
        obs.on_epoch_start(epoch, batches.num_batches());
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut counted, mut rows) = (0.0, 0usize, 0usize, 0usize);
        for (i, batch) in batches.enumerate() {
            let step = self.pt.trainer.steps();
            let lr = self.pt.cfg.lr_at(step as usize, self.total);
            let (loss, c, n) = self
                .pt
                .step(self.model, &batch, lr, &mut rng)
                .map_err(|e| e.at(epoch, step + 1))?;
            loss_sum += loss * batch.size as f64;
            correct += c;
            counted += n;
            rows += batch.size;
            obs.on_batch(i + 1, rows, loss_sum / rows as f64);
        }
        let seconds = start.elapsed().as_secs_f64();
        let log = PretrainEpoch {
            epoch,
            loss: loss_sum / rows.max(1) as f64,
            accuracy: correct as f64 / counted.max(1) as f64,
            seconds,
            samples_per_sec: rows as f64 / seconds.max(1e-9),
        };
        let mut metrics = Metrics::default();
        metrics.push("accuracy", log.accuracy);
        let stats = EpochStats {
            loss: log.loss,
            samples: rows,
            metrics,
        };
        self.logs.push(log);
        Ok(stats)
    }

    fn evaluate(&mut self, _split: Split) -> Result<Option<Metrics>> {
        Ok(None)
    }

    fn save(
        &self,
        path: &Path,
        metrics: &serde_json::Map<String, Value>,
        resume: Option<Value>,
    ) -> Result<()> {
        let mut metrics = metrics.clone();
        metrics.insert("pretrain_method".into(), self.pt.cfg.method.name().into());
        metrics.insert(
            "pretrain_epochs".into(),
            serde_json::to_value(&self.logs).unwrap_or_default(),
        );
        let opt = resume.is_some().then_some(&self.pt.trainer.opt);
        save_checkpoint(
            path,
            self.model,
            self.data.config,
            self.data.feature_map,
            metrics,
            opt,
            resume,
        )
    }

    fn load(&mut self, path: &Path, with_optimizer: bool) -> Result<Option<Value>> {
        if with_optimizer {
            // MFP's output tables live outside the model's checkpoint
            return Err(TrainError::Config(
                "MAP pretraining does not resume; start it again".into(),
            ));
        }
        load_checkpoint(path, self.model, None)?;
        Ok(None)
    }

    fn check_weights(&self) -> std::result::Result<(), NonFiniteStep> {
        non_finite_weight(self.model)
    }

    fn steps(&self) -> u64 {
        self.pt.trainer.steps()
    }

    fn set_steps(&mut self, steps: u64) {
        self.pt.trainer.set_steps(steps);
    }
}

/// What an MFP step scored: per masked field its field (index into the pretrainer's list)
/// and its `K + 1` ids (target first), and the graph nodes holding them (`scores`: the
/// model's scores before the noise correction, which rank the candidates).
pub struct NceRows {
    pub field: Vec<usize>,
    pub ids: Vec<u32>,
    pub scores: Option<NodeId>,
    pub out_node: Option<NodeId>,
    pub bias_node: Option<NodeId>,
    /// The distinct (field, id) rows gathered into `out_node`/`bias_node`, in their order.
    pub distinct: Vec<(usize, u32)>,
}
