//! SASRec (Kang & McAuley, ICDM'18) as RecBole 1.2.1 builds it (`sasrec.py`): item + position
//! embeddings → LayerNorm → dropout → `n_layers` post-LN transformer blocks (causal multi-head
//! attention with dropout on its probabilities; a two-layer feed-forward) → the hidden state
//! at each scored position · the item embeddings ᵀ (tied) → cross-entropy over all ids.
//!
//! RecBole pads each history on the right and masks padded keys and later positions with
//! −10000 before the softmax; here histories are packed segments and attention is causal
//! within each, which gives the same probabilities without the padded rows. Every weight is
//! drawn from N(0, `initializer_range`) — the padding item's row too, as in RecBole — biases
//! are 0 and LayerNorms start at (1, 0). Parameter names are RecBole's `state_dict` keys.

use super::{config_error, max_item_list_length, Packed, SeqModel, SeqShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::transformer::AttentionOptions;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore, Tensor};

/// SASRec's encoder keys (RecBole's), with a model's own after them: DreamRec encodes its
/// histories with SASRec's blocks.
macro_rules! encoder_keys {
    ($($extra:literal),*) => {
        &[
            "n_layers",
            "n_heads",
            "hidden_size",
            "inner_size",
            "hidden_dropout_prob",
            "attn_dropout_prob",
            "hidden_act",
            "layer_norm_eps",
            "initializer_range",
            $($extra),*
        ]
    };
}
pub(crate) use encoder_keys;

pub(crate) const KEYS: &[&str] = encoder_keys!("loss_type");

/// A linear layer: `w` is `[in × out]`, `b` is `[1 × out]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dense {
    pub w: ParamId,
    pub b: ParamId,
}

#[derive(Clone, Copy, Debug)]
struct Norm {
    gamma: ParamId,
    beta: ParamId,
}

#[derive(Clone, Debug)]
struct Block {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: Norm,
}

/// The feed-forward activation (RecBole's `hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HiddenAct {
    Gelu,
    Other(Activation),
}

pub struct SasRec {
    params: ParamStore,
    item_embedding: ParamId,
    position_embedding: ParamId,
    emb_norm: Norm,
    blocks: Vec<Block>,
    heads: usize,
    hidden_dropout: f32,
    attn_dropout: f32,
    act: HiddenAct,
    eps: f32,
    max_len: usize,
}

impl SasRec {
    pub fn new(cfg: &ModelConfig, shape: SeqShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let layers = cfg.usize_or("n_layers", 2).map_err(e)?;
        let heads = cfg.positive_usize_or("n_heads", 2).map_err(e)?;
        let d = cfg.positive_usize_or("hidden_size", 64).map_err(e)?;
        let inner = cfg.positive_usize_or("inner_size", 256).map_err(e)?;
        if !d.is_multiple_of(heads) {
            return Err(config_error(
                cfg,
                format!("SASRec: hidden_size {d} is not a multiple of n_heads {heads}"),
            ));
        }
        let probability = |key: &str| -> Result<f32> {
            let p = cfg.non_negative_f64_or(key, 0.5).map_err(e)? as f32;
            if p >= 1.0 {
                return Err(config_error(cfg, format!("{key} must be below 1, got {p}")));
            }
            Ok(p)
        };
        let hidden_dropout = probability("hidden_dropout_prob")?;
        let attn_dropout = probability("attn_dropout_prob")?;
        let act = match cfg.str_or("hidden_act", "gelu").as_str() {
            "gelu" => HiddenAct::Gelu,
            "relu" => HiddenAct::Other(Activation::Relu),
            "tanh" => HiddenAct::Other(Activation::Tanh),
            "sigmoid" => HiddenAct::Other(Activation::Sigmoid),
            other => {
                return Err(config_error(
                    cfg,
                    format!("SASRec: hidden_act `{other}` (gelu, relu, tanh, sigmoid)"),
                ))
            }
        };
        match cfg.str_or("loss_type", "CE").as_str() {
            "CE" => {}
            other => {
                return Err(config_error(
                    cfg,
                    format!(
                        "SASRec: loss_type `{other}`: only CE (softmax over all items) is built"
                    ),
                ))
            }
        }
        let eps = cfg.positive_f32_or("layer_norm_eps", 1e-12).map_err(e)?;
        let std = cfg.positive_f32_or("initializer_range", 0.02).map_err(e)?;
        let max_len = max_item_list_length(cfg)?;

        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let mut table = |params: &mut ParamStore, name: &str, rows, cols, regularize| {
            params.add(
                name,
                init::normal(&mut rng, rows, cols, std),
                true,
                regularize,
            )
        };
        let item_embedding = table(
            &mut params,
            "item_embedding.weight",
            shape.n_items + 1,
            d,
            false,
        );
        let position_embedding = table(&mut params, "position_embedding.weight", max_len, d, false);
        let mut dense = |params: &mut ParamStore, name: &str, inp, out| Dense {
            // the tape's weights are [in × out]; RecBole's nn.Linear holds the transpose
            w: table(params, &format!("{name}.weight"), inp, out, true),
            b: params.add(format!("{name}.bias"), Tensor::zeros(1, out), true, false),
        };
        let norm = |params: &mut ParamStore, name: &str| Norm {
            gamma: params.add(
                format!("{name}.weight"),
                Tensor::from_vec(1, d, vec![1.0; d]),
                true,
                false,
            ),
            beta: params.add(format!("{name}.bias"), Tensor::zeros(1, d), true, false),
        };
        let emb_norm = norm(&mut params, "LayerNorm");
        let blocks = (0..layers)
            .map(|i| {
                let at = format!("trm_encoder.layer.{i}.multi_head_attention");
                let ff = format!("trm_encoder.layer.{i}.feed_forward");
                Block {
                    query: dense(&mut params, &format!("{at}.query"), d, d),
                    key: dense(&mut params, &format!("{at}.key"), d, d),
                    value: dense(&mut params, &format!("{at}.value"), d, d),
                    attn_out: dense(&mut params, &format!("{at}.dense"), d, d),
                    attn_norm: norm(&mut params, &format!("{at}.LayerNorm")),
                    ffn_in: dense(&mut params, &format!("{ff}.dense_1"), d, inner),
                    ffn_out: dense(&mut params, &format!("{ff}.dense_2"), inner, d),
                    ffn_norm: norm(&mut params, &format!("{ff}.LayerNorm")),
                }
            })
            .collect();
        Ok(SasRec {
            params,
            item_embedding,
            position_embedding,
            emb_norm,
            blocks,
            heads,
            hidden_dropout,
            attn_dropout,
            act,
            eps,
            max_len,
        })
    }

    /// The hidden states `[tokens × d]` of packed sequences.
    /// The width of the item table and of every hidden state.
    pub(crate) fn hidden_size(&self) -> usize {
        self.params.value(self.item_embedding).cols
    }

    /// The item table (`n_items + 1` rows, the padding id's included).
    pub(crate) fn item_table(&self) -> ParamId {
        self.item_embedding
    }

    /// The hidden state of every packed token (causal attention within each segment).
    pub(crate) fn encode(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId {
        let items = g.param(self.item_embedding);
        let items = g.gather_rows(items, &packed.ids);
        let positions = g.param(self.position_embedding);
        let positions = g.gather_rows(positions, &packed.positions);
        let x = g.add(items, positions);
        let x = g.layer_norm(x, self.emb_norm.gamma, self.emb_norm.beta, self.eps);
        let mut x = g.dropout(x, self.hidden_dropout, rng);
        let opts = AttentionOptions {
            scaled: true,
            dropout: self.attn_dropout,
            causal: true,
        };
        for b in &self.blocks {
            let q = g.linear(x, b.query.w, Some(b.query.b));
            let k = g.linear(x, b.key.w, Some(b.key.b));
            let v = g.linear(x, b.value.w, Some(b.value.b));
            let a = g.attention_with(q, k, v, self.heads, &packed.segments, opts, rng);
            let o = g.linear(a, b.attn_out.w, Some(b.attn_out.b));
            let o = g.dropout(o, self.hidden_dropout, rng);
            let h = g.add_layer_norm(o, x, b.attn_norm.gamma, b.attn_norm.beta, self.eps);
            let f = match self.act {
                HiddenAct::Gelu => {
                    let f = g.linear(h, b.ffn_in.w, Some(b.ffn_in.b));
                    g.gelu(f)
                }
                HiddenAct::Other(act) => g.dense(h, b.ffn_in.w, Some(b.ffn_in.b), act),
            };
            let o = g.linear(f, b.ffn_out.w, Some(b.ffn_out.b));
            let o = g.dropout(o, self.hidden_dropout, rng);
            x = g.add_layer_norm(o, h, b.ffn_norm.gamma, b.ffn_norm.beta, self.eps);
        }
        x
    }
}

impl SeqModel for SasRec {
    fn name(&self) -> &'static str {
        "SASRec"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn max_len(&self) -> usize {
        self.max_len
    }

    fn logits(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId {
        let h = self.encode(g, packed, rng);
        let h = g.gather_rows(h, &packed.scored_rows);
        let items = g.param(self.item_embedding);
        g.matmul_nt(h, items)
    }
}
