//! Sequential recommenders (RecBole's "sequential" family): a user's items in order predict
//! the next one. Each file holds one model: its config (RecBole's key names) and its loss and
//! scores on the tape. They share one contract, [`SeqModel`]: a cross-entropy loss over the
//! scored positions of a batch of causal [`Window`]s, and scores of every item after each of
//! a block of sequences (the full-ranking evaluator's input, and serving's).
//!
//! Item ids start at 1; id 0 is RecBole's padding item. Tables keep its row, so scores and
//! logits have `n_items + 1` columns, the padding item's included (RecBole's softmax runs
//! over it too; the evaluator never ranks it).

mod dreamrec;
mod gru4rec;
mod sasrec;

pub use dreamrec::{dreamrec_betas, step_embedding, DreamRec};
pub use gru4rec::Gru4Rec;
pub use sasrec::SasRec;

use crate::Result;
use rand::rngs::StdRng;
use recforge_data::sequences::Window;
use recforge_data::ModelConfig;
use recforge_nn::transformer::Segment;
use recforge_nn::{Graph, NodeId, ParamStore};

/// The contract every sequential model keeps.
pub trait SeqModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn params(&self) -> &ParamStore;
    fn params_mut(&mut self) -> &mut ParamStore;
    /// The longest history the model reads (RecBole's `MAX_ITEM_LIST_LENGTH`).
    fn max_len(&self) -> usize;

    /// Logits over every id (`n_items + 1` columns) at the scored rows of `packed` (dropout
    /// only when `g` is in training mode).
    fn logits(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId;

    /// Mean cross-entropy, over all `n_items + 1` ids, of each window's scored positions
    /// against their targets.
    fn loss(&self, g: &mut Graph, windows: &[Window], rng: &mut StdRng) -> NodeId {
        let packed = Packed::windows(windows);
        let logits = self.logits(g, &packed, rng);
        g.softmax_cross_entropy(logits, &packed.targets)
    }

    /// Scores of every id (`n_items + 1` per row, padding included) after each sequence, into
    /// `out` (`seqs.len() × (n_items + 1)`). Sequences longer than [`SeqModel::max_len`] are
    /// cut to their last items; an empty one is an error of the caller.
    fn score_sequences(&self, seqs: &[&[u32]], out: &mut [f32]) {
        let packed = Packed::histories(seqs, self.max_len());
        let mut g = Graph::inference(self.params());
        // evaluation draws no dropout masks
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let logits = self.logits(&mut g, &packed, &mut rng);
        out.copy_from_slice(&g.value(logits).data);
    }
}

/// Shape facts a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqShape {
    /// Items, padding excluded (ids `1..=n_items`).
    pub n_items: usize,
}

/// A sequential model's constructor: config, shape, seed.
pub type SeqBuilder = fn(&ModelConfig, SeqShape, u64) -> Result<Box<dyn SeqModel>>;

/// One sequential model: its name as RecBole spells it, the config keys it reads besides
/// [`COMMON_KEYS`], and how to build it.
pub struct SeqEntry {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub build: SeqBuilder,
}

/// The sequential model registry.
pub const REGISTRY: &[SeqEntry] = &[
    SeqEntry {
        name: "SASRec",
        keys: sasrec::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(SasRec::new(cfg, shape, seed)?)),
    },
    SeqEntry {
        name: "DreamRec",
        keys: dreamrec::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(DreamRec::new(cfg, shape, seed)?)),
    },
    SeqEntry {
        name: "GRU4Rec",
        keys: gru4rec::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(Gru4Rec::new(cfg, shape, seed)?)),
    },
];

/// Model-config keys every sequential model reads.
pub const COMMON_KEYS: &[&str] = &["model", "seed", "MAX_ITEM_LIST_LENGTH"];

pub fn entry(name: &str) -> Option<&'static SeqEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The keys model `name` reads besides [`COMMON_KEYS`] (`None`: no such model).
pub fn model_keys(name: &str) -> Option<&'static [&'static str]> {
    entry(name).map(|e| e.keys)
}

/// Builds the model a config names, parameters drawn from its `seed` (RecBole's default 2020).
pub fn build(cfg: &ModelConfig, shape: SeqShape) -> Result<Box<dyn SeqModel>> {
    let name = cfg.str_or("model", "");
    let seed = cfg
        .usize_or("seed", 2020)
        .map_err(|e| config_error(cfg, e.to_string()))? as u64;
    match entry(&name) {
        Some(e) => (e.build)(cfg, shape, seed),
        None => Err(config_error(
            cfg,
            crate::unknown_model(&name, crate::Family::Seq),
        )),
    }
}

/// `MAX_ITEM_LIST_LENGTH`, RecBole's default 50.
pub fn max_item_list_length(cfg: &ModelConfig) -> Result<usize> {
    cfg.positive_usize_or("MAX_ITEM_LIST_LENGTH", 50)
        .map_err(|e| config_error(cfg, e.to_string()))
}

pub(crate) use crate::config_error;

/// Sequences packed one after another (no padding): the ids, each token's position in its
/// sequence, the segments attention runs within, and the rows whose outputs are scored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Packed {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub segments: Vec<Segment>,
    /// Packed rows that are scored, in order.
    pub scored_rows: Vec<u32>,
    /// The target of each scored row (empty when packing for scoring).
    pub targets: Vec<u32>,
}

impl Packed {
    /// Windows for training: every position from `scored` on is scored against its target.
    pub fn windows(windows: &[Window]) -> Self {
        let mut p = Packed::default();
        for w in windows {
            let start = p.ids.len();
            p.push(w.input);
            for j in w.scored..w.input.len() {
                p.scored_rows.push((start + j) as u32);
                p.targets.push(w.targets[j]);
            }
        }
        p
    }

    /// Histories for scoring, each cut to its last `max_len` items and scored at its end.
    pub fn histories(seqs: &[&[u32]], max_len: usize) -> Self {
        let mut p = Packed::default();
        for s in seqs {
            let s = &s[s.len().saturating_sub(max_len)..];
            assert!(!s.is_empty(), "scoring an empty history");
            p.push(s);
            p.scored_rows.push(p.ids.len() as u32 - 1);
        }
        p
    }

    fn push(&mut self, seq: &[u32]) {
        self.segments.push(Segment {
            start: self.ids.len(),
            len: seq.len(),
        });
        self.ids.extend_from_slice(seq);
        self.positions.extend(0..seq.len() as u32);
    }
}

#[cfg(test)]
mod tests;
