//! AKT (Ghosh, Heffernan & Lan, KDD'20) as pyKT 0.0.38 builds it (`akt.py`, `emb_type`
//! "qid", `separate_qa` off). Question `x_t = c_{c_t} + μ_{q_t}·d_{c_t}` and interaction
//! `y_t = c_{c_t} + g_{r_t} + μ_{q_t}·(f_{r_t} + d_{c_t})`, with a scalar difficulty `μ` per
//! problem (the Rasch term, only where the data has problem ids; it starts at zero and costs
//! `l2 · Σ μ²` over the batch's interactions). `n_blocks` encoder blocks run over `y` (keys
//! `j ≤ i`); the knowledge retriever alternates `2·n_blocks` blocks: self-attention over the
//! questions (`j ≤ i`, no feed-forward), then questions attending to the encoded interactions
//! with the strict mask (`j < i`: the current response stays hidden, and position 0 sees
//! only its question). Every attention is the monotonic one ([`Graph::decay_attention`]);
//! with `kq_same` the query uses the key projection. Each block: attention → output
//! projection → dropout → LayerNorm(query + ·) and, where it has one, Linear(d → d_ff) → ReLU
//! → dropout → Linear(d_ff → d) → dropout → LayerNorm(· + ·). The head reads
//! `[retrieved x_t ; x_t]` → 512 → ReLU → dropout → 256 → ReLU → dropout → 1: row `t`
//! predicts interaction `t` itself.
//!
//! Initialisation as PyTorch's: embeddings N(0, 1) (μ zero), key/value/query projections
//! Xavier-uniform with zero biases, the output projection U(±1/√d) with a zero bias, the other
//! linear layers U(±1/√fan_in), the decay parameters `gammas` Xavier-uniform over their
//! `(heads, 1, 1)` shape, LayerNorms (1, 0). Parameter names are pyKT's `state_dict` keys;
//! the rows pyKT allocates but never reads (`q_embed_diff`'s extra row, `qa_embed_diff` past
//! row 1) and the feed-forward layers of the retriever's first blocks (which pyKT builds but
//! skips) are left out.

use super::{config_error, probability, torch_linear, KtBatch, KtModel, KtShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::{
    init, Activation, DecayAttentionOptions, Graph, NodeId, ParamId, ParamStore, Tensor,
};

pub(crate) const KEYS: &[&str] = &[
    "d_model",
    "d_ff",
    "num_attn_heads",
    "n_blocks",
    "dropout",
    "kq_same",
    "final_fc_dim",
    "l2",
];

/// PyTorch's LayerNorm epsilon.
const LN_EPS: f32 = 1e-5;
/// The width of the head's second layer (fixed in pyKT).
const HEAD_HIDDEN: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Dense {
    w: ParamId,
    b: ParamId,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    /// Its own query projection (`kq_same` off); otherwise queries use `key`.
    query: Option<Dense>,
    key: Dense,
    value: Dense,
    out: Dense,
    gammas: ParamId,
    norm1: (ParamId, ParamId),
    /// The feed-forward part (`linear1`, `linear2`, `layer_norm2`), where the block applies it.
    ffn: Option<(Dense, Dense, (ParamId, ParamId))>,
}

/// The Rasch term's tables.
#[derive(Clone, Copy, Debug)]
struct Rasch {
    difficulty: ParamId,
    question_diff: ParamId,
    response_diff: ParamId,
}

pub struct Akt {
    params: ParamStore,
    q_embed: ParamId,
    qa_embed: ParamId,
    rasch: Option<Rasch>,
    encoder: Vec<Block>,
    retriever: Vec<Block>,
    head: [Dense; 3],
    heads: usize,
    dropout: f32,
    l2: f32,
}

/// Draws PyTorch-initialised parameters in order.
struct Init<'a> {
    params: &'a mut ParamStore,
    rng: StdRng,
}

impl Init<'_> {
    fn add(&mut self, name: String, t: Tensor, decay: bool) -> ParamId {
        self.params.add(name, t, true, decay)
    }

    /// `nn.Linear(i, o)` with PyTorch's default U(±1/√i) weight and bias.
    fn linear(&mut self, name: &str, i: usize, o: usize) -> Dense {
        let (w, b) = torch_linear(self.params, &mut self.rng, name, i, o);
        Dense { w, b }
    }

    /// A linear layer with weight `w` and a zero bias.
    fn with_zero_bias(&mut self, name: &str, w: Tensor) -> Dense {
        let o = w.cols;
        Dense {
            w: self.add(format!("{name}.weight"), w, true),
            b: self.add(format!("{name}.bias"), Tensor::zeros(1, o), false),
        }
    }

    fn norm(&mut self, name: &str, d: usize) -> (ParamId, ParamId) {
        (
            self.add(
                format!("{name}.weight"),
                Tensor::from_vec(1, d, vec![1.0; d]),
                false,
            ),
            self.add(format!("{name}.bias"), Tensor::zeros(1, d), false),
        )
    }

    fn block(
        &mut self,
        name: &str,
        d: usize,
        d_ff: usize,
        heads: usize,
        kq_same: bool,
        ffn: bool,
    ) -> Block {
        let attn = format!("{name}.masked_attn_head");
        // nn.Linear's own draws come first, then _reset_parameters redraws k/v/q (Xavier)
        let xavier = |s: &mut Self| init::xavier_uniform(&mut s.rng, d, d);
        let value = xavier(self);
        let key = xavier(self);
        let query = (!kq_same).then(|| xavier(self));
        let out_w = init::uniform(&mut self.rng, d, d, 1.0 / (d as f32).sqrt());
        let gammas = init::uniform(&mut self.rng, heads, 1, (6.0 / (1 + heads) as f32).sqrt());
        Block {
            value: self.with_zero_bias(&format!("{attn}.v_linear"), value),
            key: self.with_zero_bias(&format!("{attn}.k_linear"), key),
            query: query.map(|w| self.with_zero_bias(&format!("{attn}.q_linear"), w)),
            out: self.with_zero_bias(&format!("{attn}.out_proj"), out_w),
            gammas: self.add(format!("{attn}.gammas"), gammas, false),
            norm1: self.norm(&format!("{name}.layer_norm1"), d),
            ffn: ffn.then(|| {
                (
                    self.linear(&format!("{name}.linear1"), d, d_ff),
                    self.linear(&format!("{name}.linear2"), d_ff, d),
                    self.norm(&format!("{name}.layer_norm2"), d),
                )
            }),
        }
    }
}

impl Akt {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let d = cfg.positive_usize_or("d_model", 256).map_err(e)?;
        let d_ff = cfg.positive_usize_or("d_ff", 512).map_err(e)?;
        let heads = cfg.positive_usize_or("num_attn_heads", 8).map_err(e)?;
        let n_blocks = cfg.positive_usize_or("n_blocks", 4).map_err(e)?;
        let fc = cfg.positive_usize_or("final_fc_dim", 512).map_err(e)?;
        let kq_same = match cfg.usize_or("kq_same", 1).map_err(e)? {
            0 => false,
            1 => true,
            v => {
                return Err(config_error(
                    cfg,
                    format!("kq_same must be 0 or 1, got {v}"),
                ))
            }
        };
        let l2 = cfg.non_negative_f64_or("l2", 1e-5).map_err(e)? as f32;
        let dropout = probability(cfg, "dropout", 0.2)?;
        if !d.is_multiple_of(heads) {
            return Err(config_error(
                cfg,
                format!("AKT: d_model {d} is not a multiple of num_attn_heads {heads}"),
            ));
        }
        let c = shape.num_concepts;
        let mut params = ParamStore::new();
        let mut p = Init {
            params: &mut params,
            rng: StdRng::seed_from_u64(seed),
        };
        let rasch = (shape.num_problems > 0).then(|| {
            let difficulty = p.add(
                "difficult_param.weight".into(),
                Tensor::zeros(shape.num_problems, 1),
                false,
            );
            let question_diff = init::normal(&mut p.rng, c, d, 1.0);
            let response_diff = init::normal(&mut p.rng, 2, d, 1.0);
            Rasch {
                difficulty,
                question_diff: p.add("q_embed_diff.weight".into(), question_diff, false),
                response_diff: p.add("qa_embed_diff.weight".into(), response_diff, false),
            }
        });
        let q_embed = init::normal(&mut p.rng, c, d, 1.0);
        let q_embed = p.add("q_embed.weight".into(), q_embed, false);
        let qa_embed = init::normal(&mut p.rng, 2, d, 1.0);
        let qa_embed = p.add("qa_embed.weight".into(), qa_embed, false);
        let encoder = (0..n_blocks)
            .map(|i| {
                p.block(
                    &format!("model.blocks_1.{i}"),
                    d,
                    d_ff,
                    heads,
                    kq_same,
                    true,
                )
            })
            .collect();
        // the retriever's even blocks (question self-attention) apply no feed-forward
        let retriever = (0..2 * n_blocks)
            .map(|i| {
                p.block(
                    &format!("model.blocks_2.{i}"),
                    d,
                    d_ff,
                    heads,
                    kq_same,
                    i % 2 == 1,
                )
            })
            .collect();
        let head = [
            p.linear("out.0", 2 * d, fc),
            p.linear("out.3", fc, HEAD_HIDDEN),
            p.linear("out.6", HEAD_HIDDEN, 1),
        ];
        Ok(Akt {
            params,
            q_embed,
            qa_embed,
            rasch,
            encoder,
            retriever,
            head,
            heads,
            dropout,
            l2,
        })
    }

    /// One block: query attends to key/value under the (strict) mask, then the residual
    /// LayerNorms.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        g: &mut Graph,
        b: &Block,
        query: NodeId,
        key: NodeId,
        values: NodeId,
        strict: bool,
        batch: &KtBatch,
        rng: &mut StdRng,
    ) -> NodeId {
        let k = g.linear(key, b.key.w, Some(b.key.b));
        let q = match (b.query, query == key) {
            (None, true) => k,
            (None, false) => g.linear(query, b.key.w, Some(b.key.b)),
            (Some(qp), _) => g.linear(query, qp.w, Some(qp.b)),
        };
        let v = g.linear(values, b.value.w, Some(b.value.b));
        let gammas = g.param(b.gammas);
        let opts = DecayAttentionOptions {
            dropout: self.dropout,
            strict,
        };
        let a = g.decay_attention(q, k, v, gammas, self.heads, &batch.segments, opts, rng);
        let a = g.linear(a, b.out.w, Some(b.out.b));
        let a = g.dropout(a, self.dropout, rng);
        let h = g.add_layer_norm(a, query, b.norm1.0, b.norm1.1, LN_EPS);
        match b.ffn {
            None => h,
            Some((l1, l2, norm2)) => {
                let f = g.dense(h, l1.w, Some(l1.b), Activation::Relu);
                let f = g.dropout(f, self.dropout, rng);
                let f = g.linear(f, l2.w, Some(l2.b));
                let f = g.dropout(f, self.dropout, rng);
                g.add_layer_norm(f, h, norm2.0, norm2.1, LN_EPS)
            }
        }
    }

    /// The logits at `batch.scored` and the Rasch regulariser `l2 · Σ μ²` (with problem ids).
    fn forward(
        &self,
        g: &mut Graph,
        batch: &KtBatch,
        rng: &mut StdRng,
    ) -> (NodeId, Option<NodeId>) {
        let all: Vec<u32> = (0..batch.tokens() as u32).collect();
        let responses: Vec<u32> = batch.responses.iter().map(|&r| r as u32).collect();
        let concept = batch.concept_rows(g, self.q_embed, &all, |_, c| c);
        let qa = g.param(self.qa_embed);
        let response = g.gather_rows(qa, &responses);
        let (x, y, reg) = match self.rasch {
            None => (concept, g.add(concept, response), None),
            Some(r) => {
                let mu = g.param(r.difficulty);
                let mu = g.gather_rows(mu, &batch.problems);
                let dq = batch.concept_rows(g, r.question_diff, &all, |_, c| c);
                let fr = g.param(r.response_diff);
                let fr = g.gather_rows(fr, &responses);
                let shift = g.scale_rows(dq, mu);
                let x = g.add(concept, shift);
                let y = g.add(x, response);
                let shift = g.scale_rows(fr, mu);
                let y = g.add(y, shift);
                let sq = g.mul(mu, mu);
                let sum = g.sum_all(sq);
                (x, y, Some(g.scale(sum, self.l2)))
            }
        };
        let mut enc = y;
        for b in &self.encoder {
            enc = self.block(g, b, enc, enc, enc, false, batch, rng);
        }
        let mut h = x;
        for (i, b) in self.retriever.iter().enumerate() {
            h = if i % 2 == 0 {
                self.block(g, b, h, h, h, false, batch, rng)
            } else {
                self.block(g, b, h, h, enc, true, batch, rng)
            };
        }
        let h = g.gather_rows(h, &batch.scored);
        let xs = g.gather_rows(x, &batch.scored);
        let mut z = g.concat(&[h, xs]);
        for (i, l) in self.head.iter().enumerate() {
            if i + 1 < self.head.len() {
                z = g.dense(z, l.w, Some(l.b), Activation::Relu);
                z = g.dropout(z, self.dropout, rng);
            } else {
                z = g.linear(z, l.w, Some(l.b));
            }
        }
        (z, reg)
    }
}

impl KtModel for Akt {
    fn name(&self) -> &'static str {
        "AKT"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        self.forward(g, batch, rng).0
    }

    /// pyKT's loss: the mean BCE plus the Rasch regulariser.
    fn loss(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let (logits, reg) = self.forward(g, batch, rng);
        let bce = g.bce_with_logits(logits, &batch.labels);
        match reg {
            Some(r) => g.add(bce, r),
            None => bce,
        }
    }
}
