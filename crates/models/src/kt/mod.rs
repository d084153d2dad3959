//! Knowledge tracing (pyKT's family): a student's answers so far predict whether the next
//! answer is correct. Each file holds one model: its config (pyKT's key names) and its logits
//! on the tape. They share one contract, [`KtModel`]: a logit for every predicted interaction
//! of a [`KtBatch`] — positions 1.. of each window, each predicted from the window's earlier
//! interactions only — and a BCE loss on them.
//!
//! Ids are kept as the files write them (pyKT/AKT's files start at 1); tables have
//! `largest id + 1` rows, so row 0 exists and stays unused. An interaction may carry several
//! concepts (the "collapsed" form of multi-skill problems); models then average over the
//! concept set where pyKT would read one concept.

mod advkt;
mod akt;
mod dkt;
mod dkvmn;
mod sakt;

pub use advkt::{
    question_rows as advkt_question_rows, AdvKt, DiscOutput, Discriminator, Funcs, Rollout,
};
pub use akt::Akt;
pub use dkt::Dkt;
pub use dkvmn::Dkvmn;
pub use sakt::Sakt;

use crate::Result;
use rand::rngs::StdRng;
use recforge_data::kt::{KtSequence, KtWindow};
use recforge_data::ModelConfig;
use recforge_nn::transformer::Segment;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore};
use serde::{Deserialize, Serialize};

/// The contract every knowledge-tracing model keeps.
pub trait KtModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn params(&self) -> &ParamStore;
    fn params_mut(&mut self) -> &mut ParamStore;

    /// Logits `[scored × 1]` of a correct answer at each of `batch.scored` (dropout only when
    /// `g` is in training mode). The logit at row `t` may read the questions up to `t` and the
    /// responses before `t` of its window, nothing else.
    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId;

    /// Mean BCE of the scored interactions against their responses (pyKT's loss).
    fn loss(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let logits = self.logits(g, batch, rng);
        g.bce_with_logits(logits, &batch.labels)
    }

    /// The AdvKT generator behind this model, for the adversarial training loop.
    fn as_advkt(&self) -> Option<&AdvKt> {
        None
    }

    /// Probabilities of a correct answer at `batch.scored`, in evaluation mode.
    fn predict(&self, batch: &KtBatch) -> Vec<f32> {
        let mut g = Graph::inference(self.params());
        // evaluation draws no dropout masks
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let logits = self.logits(&mut g, batch, &mut rng);
        g.value(logits)
            .data
            .iter()
            .map(|&z| 1.0 / (1.0 + (-z).exp()))
            .collect()
    }
}

/// `nn.Linear(fan_in, fan_out)` under pyKT's parameter names (`{name}.weight`, `{name}.bias`),
/// both drawn from PyTorch's default U(±1/√fan_in), weight first; the weight decays.
pub(crate) fn torch_linear(
    ps: &mut ParamStore,
    rng: &mut StdRng,
    name: &str,
    fan_in: usize,
    fan_out: usize,
) -> (ParamId, ParamId) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = ps.add(
        format!("{name}.weight"),
        init::uniform(rng, fan_in, fan_out, bound),
        true,
        true,
    );
    let b = ps.add(
        format!("{name}.bias"),
        init::uniform(rng, 1, fan_out, bound),
        true,
        false,
    );
    (w, b)
}

/// Shape facts a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtShape {
    /// Concept table rows (largest concept id + 1).
    pub num_concepts: usize,
    /// Problem table rows (largest problem id + 1; 0 without problem ids).
    pub num_problems: usize,
    /// The longest window (pyKT's `seq_len`; SAKT's position table).
    pub max_seq_len: usize,
}

/// A knowledge-tracing model's constructor: config, shape, seed.
pub type KtBuilder = fn(&ModelConfig, KtShape, u64) -> Result<Box<dyn KtModel>>;

/// One model: its name as pyKT spells it, the config keys it reads besides
/// [`COMMON_KEYS`], and how to build it.
pub struct KtEntry {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub build: KtBuilder,
}

/// The knowledge-tracing model registry.
pub const REGISTRY: &[KtEntry] = &[
    KtEntry {
        name: "DKT",
        keys: dkt::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(Dkt::new(cfg, shape, seed)?)),
    },
    KtEntry {
        name: "SAKT",
        keys: sakt::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(Sakt::new(cfg, shape, seed)?)),
    },
    KtEntry {
        name: "AKT",
        keys: akt::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(Akt::new(cfg, shape, seed)?)),
    },
    KtEntry {
        name: "AdvKT",
        keys: advkt::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(AdvKt::new(cfg, shape, seed)?)),
    },
    KtEntry {
        name: "DKVMN",
        keys: dkvmn::KEYS,
        build: |cfg, shape, seed| Ok(Box::new(Dkvmn::new(cfg, shape, seed)?)),
    },
];

/// Model-config keys every knowledge-tracing model reads.
pub const COMMON_KEYS: &[&str] = &["model", "seed"];

pub fn entry(name: &str) -> Option<&'static KtEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The keys model `name` reads besides [`COMMON_KEYS`] (`None`: no such model).
pub fn model_keys(name: &str) -> Option<&'static [&'static str]> {
    entry(name).map(|e| e.keys)
}

/// Builds the model a config names, parameters drawn from its `seed` (pyKT's default 42).
pub fn build(cfg: &ModelConfig, shape: KtShape) -> Result<Box<dyn KtModel>> {
    let name = cfg.str_or("model", "");
    let seed = cfg
        .usize_or("seed", 42)
        .map_err(|e| config_error(cfg, e.to_string()))? as u64;
    match entry(&name) {
        Some(e) => (e.build)(cfg, shape, seed),
        None => Err(config_error(
            cfg,
            crate::unknown_model(&name, crate::Family::Kt),
        )),
    }
}

pub(crate) use crate::config_error;

/// A probability key (`dropout`): in `[0, 1)`.
pub(crate) fn probability(cfg: &ModelConfig, key: &str, default: f64) -> Result<f32> {
    let p = cfg
        .non_negative_f64_or(key, default)
        .map_err(|e| config_error(cfg, e.to_string()))? as f32;
    if p >= 1.0 {
        return Err(config_error(cfg, format!("{key} must be below 1, got {p}")));
    }
    Ok(p)
}

/// Windows packed one after another (no padding): every token's problem, concept set and
/// response, its position in its window, the windows as segments, and the predicted rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KtBatch {
    pub problems: Vec<u32>,
    /// Concept ids of token `t`: `concepts[concept_segs[t]]`.
    pub concepts: Vec<u32>,
    pub concept_segs: Vec<Segment>,
    pub responses: Vec<u8>,
    pub positions: Vec<u32>,
    /// One segment per window.
    pub segments: Vec<Segment>,
    /// The predicted tokens: every position but each window's first, in order.
    pub scored: Vec<u32>,
    /// The response at each scored token.
    pub labels: Vec<f32>,
    /// Every token has exactly one concept (the expanded and three-line forms).
    pub single_concept: bool,
}

impl KtBatch {
    /// The windows `windows` of `seqs`, packed.
    pub fn new(seqs: &[KtSequence], windows: &[KtWindow]) -> Self {
        Self::from_parts(windows.iter().map(|w| {
            (
                &seqs[w.student as usize],
                w.start as usize,
                w.len as usize,
                None,
            )
        }))
    }

    /// Interactions `start..start + len` of each sequence, packed; where `responses` is given
    /// it replaces the sequence's own (the multi-step evaluator's fed-back guesses).
    pub fn from_parts<'a>(
        parts: impl IntoIterator<Item = (&'a KtSequence, usize, usize, Option<&'a [u8]>)>,
    ) -> Self {
        let mut b = KtBatch {
            single_concept: true,
            ..Default::default()
        };
        for (seq, start, len, responses) in parts {
            let first = b.problems.len();
            b.segments.push(Segment { start: first, len });
            for j in 0..len {
                let t = start + j;
                let cs = seq.concepts_of(t);
                b.single_concept &= cs.len() == 1;
                b.concept_segs.push(Segment {
                    start: b.concepts.len(),
                    len: cs.len(),
                });
                b.concepts.extend_from_slice(cs);
                b.problems.push(seq.problems[t]);
                let r = responses.map_or(seq.responses[t], |r| r[j]);
                b.responses.push(r);
                b.positions.push(j as u32);
                if j > 0 {
                    b.scored.push((first + j) as u32);
                    b.labels.push(r as f32);
                }
            }
        }
        b
    }

    pub fn tokens(&self) -> usize {
        self.problems.len()
    }

    /// The token before each scored token (the state that predicts it).
    pub fn previous_of_scored(&self) -> Vec<u32> {
        self.scored.iter().map(|&t| t - 1).collect()
    }

    /// For each token, the next token of its window (the last token: itself).
    pub fn next_rows(&self) -> Vec<u32> {
        let mut out: Vec<u32> = (1..=self.tokens() as u32).collect();
        for s in &self.segments {
            if s.len > 0 {
                out[s.start + s.len - 1] = (s.start + s.len - 1) as u32;
            }
        }
        out
    }

    /// The concept ids of tokens `rows`, each mapped through `id`, with their segments.
    fn concept_lists(
        &self,
        rows: &[u32],
        mut id: impl FnMut(usize, u32) -> u32,
    ) -> (Vec<u32>, Vec<Segment>) {
        let (mut ids, mut segs) = (Vec::with_capacity(rows.len()), Vec::new());
        for &t in rows {
            let s = self.concept_segs[t as usize];
            segs.push(Segment {
                start: ids.len(),
                len: s.len,
            });
            ids.extend(
                self.concepts[s.start..s.start + s.len]
                    .iter()
                    .map(|&c| id(t as usize, c)),
            );
        }
        (ids, segs)
    }

    /// The rows of `table` for each of tokens `rows`, averaged over the token's concept set;
    /// `id(token, concept)` picks the row (the interaction tables' `c + C·r`).
    pub fn concept_rows(
        &self,
        g: &mut Graph,
        table: ParamId,
        rows: &[u32],
        id: impl FnMut(usize, u32) -> u32,
    ) -> NodeId {
        let (ids, segs) = self.concept_lists(rows, id);
        let t = g.param(table);
        let x = g.gather_rows(t, &ids);
        if self.single_concept {
            x
        } else {
            g.segment_mean(x, &segs)
        }
    }

    /// Every token's row of an interaction table `[2C × d]`: concept `c` answered `r` is row
    /// `c + C·r` (pyKT's `q + num_c * r`), averaged over the token's concepts.
    pub fn interaction_rows(&self, g: &mut Graph, table: ParamId, num_concepts: usize) -> NodeId {
        let rows: Vec<u32> = (0..self.tokens() as u32).collect();
        let c = num_concepts as u32;
        self.concept_rows(g, table, &rows, |t, id| id + c * self.responses[t] as u32)
    }
}

#[cfg(test)]
mod tests;
