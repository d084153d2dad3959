//! SAKT (Pandey & Karypis, EDM'19) as pyKT 0.0.38 builds it (`sakt.py`): keys and values are
//! the interactions so far (row `c + C·r` of an interaction table, plus a position
//! embedding), the query is the next question's concept embedding; `num_en` blocks of causal
//! multi-head attention (PyTorch's `MultiheadAttention`, dropout on its probabilities) →
//! dropout → LayerNorm(query + attention) → a ReLU feed-forward → dropout → LayerNorm; each
//! block's output is the next block's keys and values while the query stays the question;
//! dropout → `Linear(d → 1)`.
//!
//! Row `j` of a window (interactions `0..=j` as keys, question `j + 1` as query) predicts
//! interaction `j + 1`. The blocks are deep copies in pyKT, so every block starts from the
//! same weights here too. PyTorch's initialisation: embeddings N(0, 1), the attention's
//! packed input projection Xavier-uniform over its `[3d × d]` shape with zero biases, its
//! output projection and the other linear layers U(±1/√fan_in) (the output projection's bias
//! zero), LayerNorms (1, 0). Parameter names are pyKT's `state_dict` keys, the packed
//! `in_proj_weight` split into its query, key and value thirds.

use super::{config_error, probability, KtBatch, KtModel, KtShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::transformer::AttentionOptions;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore, Tensor};

pub(crate) const KEYS: &[&str] = &["emb_size", "num_attn_heads", "dropout", "num_en"];

/// PyTorch's LayerNorm epsilon.
const LN_EPS: f32 = 1e-5;

#[derive(Clone, Copy, Debug)]
struct Dense {
    w: ParamId,
    b: ParamId,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    query: Dense,
    key: Dense,
    value: Dense,
    out: Dense,
    attn_norm: (ParamId, ParamId),
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: (ParamId, ParamId),
}

pub struct Sakt {
    params: ParamStore,
    interaction_emb: ParamId,
    exercise_emb: ParamId,
    position_emb: ParamId,
    blocks: Vec<Block>,
    pred: Dense,
    heads: usize,
    dropout: f32,
    num_concepts: usize,
}

impl Sakt {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let d = cfg.positive_usize_or("emb_size", 256).map_err(e)?;
        let heads = cfg.positive_usize_or("num_attn_heads", 8).map_err(e)?;
        let blocks_n = cfg.positive_usize_or("num_en", 2).map_err(e)?;
        let dropout = probability(cfg, "dropout", 0.2)?;
        if !d.is_multiple_of(heads) {
            return Err(config_error(
                cfg,
                format!("SAKT: emb_size {d} is not a multiple of num_attn_heads {heads}"),
            ));
        }
        let c = shape.num_concepts;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let interaction_emb = params.add(
            "interaction_emb.weight",
            init::normal(&mut rng, 2 * c, d, 1.0),
            true,
            false,
        );
        let exercise_emb = params.add(
            "exercise_emb.weight",
            init::normal(&mut rng, c, d, 1.0),
            true,
            false,
        );
        let position_emb = params.add(
            "position_emb.weight",
            init::normal(&mut rng, shape.max_seq_len, d, 1.0),
            true,
            false,
        );
        // one block's initial weights, copied into every block (pyKT's deepcopy)
        let in_bound = (6.0 / (4 * d) as f32).sqrt();
        let bound = 1.0 / (d as f32).sqrt();
        let mut draw = |rows: usize, bound: f32| init::uniform(&mut rng, rows, d, bound);
        let proto = [
            ("attn.q_proj", draw(d, in_bound), Tensor::zeros(1, d)),
            ("attn.k_proj", draw(d, in_bound), Tensor::zeros(1, d)),
            ("attn.v_proj", draw(d, in_bound), Tensor::zeros(1, d)),
            ("attn.out_proj", draw(d, bound), Tensor::zeros(1, d)),
            ("FFN.FFN.0", draw(d, bound), draw(1, bound)),
            ("FFN.FFN.3", draw(d, bound), draw(1, bound)),
        ];
        let blocks = (0..blocks_n)
            .map(|i| {
                let mut dense = |k: usize| {
                    let (name, w, b) = &proto[k];
                    Dense {
                        w: params.add(format!("blocks.{i}.{name}.weight"), w.clone(), true, true),
                        b: params.add(format!("blocks.{i}.{name}.bias"), b.clone(), true, false),
                    }
                };
                let (query, key, value, out, ffn_in, ffn_out) =
                    (dense(0), dense(1), dense(2), dense(3), dense(4), dense(5));
                let mut norm = |name: &str| {
                    (
                        params.add(
                            format!("blocks.{i}.{name}.weight"),
                            Tensor::from_vec(1, d, vec![1.0; d]),
                            true,
                            false,
                        ),
                        params.add(
                            format!("blocks.{i}.{name}.bias"),
                            Tensor::zeros(1, d),
                            true,
                            false,
                        ),
                    )
                };
                Block {
                    query,
                    key,
                    value,
                    out,
                    attn_norm: norm("attn_layer_norm"),
                    ffn_in,
                    ffn_out,
                    ffn_norm: norm("FFN_layer_norm"),
                }
            })
            .collect();
        let pred = Dense {
            w: params.add(
                "pred.weight",
                init::uniform(&mut rng, d, 1, bound),
                true,
                true,
            ),
            b: params.add(
                "pred.bias",
                init::uniform(&mut rng, 1, 1, bound),
                true,
                false,
            ),
        };
        Ok(Sakt {
            params,
            interaction_emb,
            exercise_emb,
            position_emb,
            blocks,
            pred,
            heads,
            dropout,
            num_concepts: c,
        })
    }
}

impl KtModel for Sakt {
    fn name(&self) -> &'static str {
        "SAKT"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let x = batch.interaction_rows(g, self.interaction_emb, self.num_concepts);
        let pos = g.param(self.position_emb);
        let pos = g.gather_rows(pos, &batch.positions);
        let mut x = g.add(x, pos);
        let query = batch.concept_rows(g, self.exercise_emb, &batch.next_rows(), |_, c| c);
        let opts = AttentionOptions {
            scaled: true,
            dropout: self.dropout,
            causal: true,
        };
        for b in &self.blocks {
            let q = g.linear(query, b.query.w, Some(b.query.b));
            let k = g.linear(x, b.key.w, Some(b.key.b));
            let v = g.linear(x, b.value.w, Some(b.value.b));
            let a = g.attention_with(q, k, v, self.heads, &batch.segments, opts, rng);
            let a = g.linear(a, b.out.w, Some(b.out.b));
            let a = g.dropout(a, self.dropout, rng);
            let h = g.add_layer_norm(a, query, b.attn_norm.0, b.attn_norm.1, LN_EPS);
            let f = g.dense(h, b.ffn_in.w, Some(b.ffn_in.b), Activation::Relu);
            let f = g.dropout(f, self.dropout, rng);
            let f = g.linear(f, b.ffn_out.w, Some(b.ffn_out.b));
            let f = g.dropout(f, self.dropout, rng);
            x = g.add_layer_norm(f, h, b.ffn_norm.0, b.ffn_norm.1, LN_EPS);
        }
        let h = g.gather_rows(x, &batch.previous_of_scored());
        let h = g.dropout(h, self.dropout, rng);
        g.linear(h, self.pred.w, Some(self.pred.b))
    }
}
