//! AutoInt (Song et al. 2019) as FuxiCTR builds it: the field embeddings as a sequence of `F`
//! tokens through `attention_layers` multi-head self-attention layers (bias-free Q/K/V
//! projections to `attention_dim`, scores optionally scaled by √head, dropout `net_dropout` on
//! the attention probabilities, a residual projection, optional layer norm, then ReLU), the
//! flattened result into one linear logit; plus an MLP over the embeddings when
//! `dnn_hidden_units` is not empty (AutoInt+) and a bias-free linear part with `use_wide`.

use super::{config_error, optional_mlp, CtrBuild, CtrNet, EmbeddingUse, MlpKeys};
use crate::layers::{Linear, MlpBlock};
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{segments_from_lengths, AttentionOptions, Graph, NodeId, ParamId, Tensor};

/// The model-config keys AutoInt reads.
pub(crate) const KEYS: &[&str] = &[
    "dnn_hidden_units",
    "dnn_activations",
    "attention_layers",
    "num_heads",
    "attention_dim",
    "net_dropout",
    "batch_norm",
    "layer_norm",
    "use_scale",
    "use_wide",
    "use_residual",
];

struct SelfAttentionLayer {
    wq: ParamId,
    wk: ParamId,
    wv: ParamId,
    /// The residual's projection, when the input width is not `attention_dim`.
    w_res: Option<ParamId>,
    /// LayerNorm's (γ, β).
    norm: Option<(ParamId, ParamId)>,
}

pub struct AutoInt {
    layers: Vec<SelfAttentionLayer>,
    heads: usize,
    /// The width of a field token after the stack: `attention_dim`, or the embedding size
    /// with no layers.
    out_width: usize,
    use_residual: bool,
    options: AttentionOptions,
    fc: Linear,
    dnn: Option<MlpBlock>,
    use_wide: bool,
    fields: usize,
    dim: usize,
}

impl AutoInt {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let err = |e: recforge_data::DataError| config_error(b.cfg, e.to_string());
        let n_layers = b.cfg.usize_or("attention_layers", 2).map_err(err)?;
        let heads = b.cfg.positive_usize_or("num_heads", 1).map_err(err)?;
        let attention_dim = b.cfg.positive_usize_or("attention_dim", 8).map_err(err)?;
        if !attention_dim.is_multiple_of(heads) {
            return Err(config_error(
                b.cfg,
                format!("attention_dim={attention_dim} is not divisible by num_heads={heads}"),
            ));
        }
        let use_residual = b.cfg.bool_or("use_residual", true).map_err(err)?;
        let layer_norm = b.cfg.bool_or("layer_norm", false).map_err(err)?;
        let options = AttentionOptions {
            scaled: b.cfg.bool_or("use_scale", false).map_err(err)?,
            dropout: super::dropout_at(b.cfg, "net_dropout", 0)?,
            causal: false,
        };
        let use_wide = b.cfg.bool_or("use_wide", false).map_err(err)?;
        let keys = MlpKeys::shared("dnn_hidden_units", "dnn_activations");
        let dnn = optional_mlp(b, keys, "dnn", b.input_dim, &[64, 64, 64], Some(1))?;
        let mut layers = Vec::new();
        for l in 0..n_layers {
            let input = if l == 0 { b.dim } else { attention_dim };
            let mut proj = |name: &str| {
                Linear::new(
                    b.params,
                    &format!("self_attention.{l}.{name}"),
                    input,
                    attention_dim,
                    false,
                    b.rng,
                )
                .w
            };
            let (wq, wk, wv) = (proj("W_q"), proj("W_k"), proj("W_v"));
            let w_res = (use_residual && input != attention_dim).then(|| proj("W_res"));
            let norm = layer_norm.then(|| {
                let name = format!("self_attention.{l}.layer_norm");
                (
                    b.params.add(
                        format!("{name}.weight"),
                        Tensor::from_vec(1, attention_dim, vec![1.0; attention_dim]),
                        true,
                        false,
                    ),
                    b.params.add(
                        format!("{name}.bias"),
                        Tensor::zeros(1, attention_dim),
                        true,
                        false,
                    ),
                )
            });
            layers.push(SelfAttentionLayer {
                wq,
                wk,
                wv,
                w_res,
                norm,
            });
        }
        let out_width = if n_layers == 0 { b.dim } else { attention_dim };
        let fc = Linear::new(b.params, "fc", b.fields * out_width, 1, true, b.rng);
        Ok(AutoInt {
            layers,
            heads,
            out_width,
            use_residual,
            options,
            fc,
            dnn,
            use_wide,
            fields: b.fields,
            dim: b.dim,
        })
    }

    /// The attention stack's output, flattened to `[B × F·attention_dim]`.
    fn attend(&self, g: &mut Graph, x: NodeId, rng: &mut StdRng) -> NodeId {
        let batch = g.value(x).rows;
        let segs = segments_from_lengths(&vec![self.fields; batch]);
        let mut h = g.reshape(x, batch * self.fields, self.dim);
        for l in &self.layers {
            let q = g.linear(h, l.wq, None);
            let k = g.linear(h, l.wk, None);
            let v = g.linear(h, l.wv, None);
            let mut out = g.attention_with(q, k, v, self.heads, &segs, self.options, rng);
            if self.use_residual {
                let res = match l.w_res {
                    Some(w) => g.linear(h, w, None),
                    None => h,
                };
                out = g.add(out, res);
            }
            if let Some((gamma, beta)) = l.norm {
                out = g.layer_norm(out, gamma, beta, 1e-5);
            }
            h = g.relu(out);
        }
        g.reshape(h, batch, self.fields * self.out_width)
    }
}

impl CtrNet for AutoInt {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        if self.use_wide {
            vec![EmbeddingUse::Factors, EmbeddingUse::FirstOrder]
        } else {
            vec![EmbeddingUse::Factors]
        }
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let att = self.attend(g, emb[0], rng);
        let mut y = self.fc.forward(g, att);
        if let Some(dnn) = &self.dnn {
            let d = dnn.forward(g, emb[0], rng);
            y = g.add(y, d);
        }
        if self.use_wide {
            let w = g.sum_cols(emb[1]);
            y = g.add(y, w);
        }
        y
    }

    /// The flattened attention output beside the MLP's last hidden layer (and the wide logit).
    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let mut parts = vec![self.attend(g, emb[0], rng)];
        if let Some(dnn) = &self.dnn {
            parts.push(dnn.hidden(g, emb[0], rng));
        }
        if self.use_wide {
            parts.push(g.sum_cols(emb[1]));
        }
        Some(g.concat(&parts))
    }

    fn head_params(&self) -> Vec<ParamId> {
        let mut p = self.fc.params();
        if let Some(dnn) = &self.dnn {
            p.extend(dnn.output_params());
        }
        p
    }
}
