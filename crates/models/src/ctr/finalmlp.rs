//! FinalMLP (Mao et al. 2023): two MLP streams over the field embeddings, each behind a
//! feature-selection gate (`2·sigmoid(MLP(context))` over the flattened embeddings, the
//! context the embeddings of `fs1_context` / `fs2_context` or a learned vector when empty), fused
//! by multi-head bilinear aggregation `w_xᵀx + w_yᵀy + Σ_h x_hᵀ W_h y_h`.

use super::{config_error, mlp_config_keyed, CtrBuild, CtrNet, EmbeddingUse, MlpKeys};
use crate::layers::{HiddenActivation, Linear, MlpBlock, MlpConfig};
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, Tensor};

/// The model-config keys FinalMLP reads.
pub(crate) const KEYS: &[&str] = &[
    "mlp1_hidden_units",
    "mlp1_hidden_activations",
    "mlp1_dropout",
    "mlp1_batch_norm",
    "mlp2_hidden_units",
    "mlp2_hidden_activations",
    "mlp2_dropout",
    "mlp2_batch_norm",
    "use_fs",
    "fs_hidden_units",
    "fs1_context",
    "fs2_context",
    "num_heads",
];

/// One feature-selection gate: its context (field indices, or a learned vector) and its MLP.
struct Gate {
    context: GateContext,
    mlp: MlpBlock,
}

enum GateContext {
    /// Index of the model's embedding holding these context fields.
    Fields(usize),
    /// FuxiCTR's `fs*_ctx_bias`, `[1 × d]`, repeated for every row.
    Bias(ParamId),
}

pub struct FinalMlp {
    mlp1: MlpBlock,
    mlp2: MlpBlock,
    gates: Option<[Gate; 2]>,
    contexts: Vec<Vec<usize>>,
    w_x: Linear,
    w_y: Linear,
    /// `W_h [hx × hy]` per head.
    w_xy: Vec<ParamId>,
    heads: usize,
}

/// Field indices of the names in `key` (a list of field names).
fn context_fields(b: &CtrBuild, key: &str) -> Result<Vec<usize>> {
    let names: Vec<String> = match b.cfg.get(key) {
        None => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    config_error(b.cfg, format!("`{key}` lists field names, got {v}"))
                })
            })
            .collect::<Result<_>>()?,
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(v) => {
            return Err(config_error(
                b.cfg,
                format!("`{key}` lists field names, got {v}"),
            ))
        }
    };
    let mut idx: Vec<usize> = names
        .iter()
        .map(|n| {
            b.fmap
                .fields
                .iter()
                .position(|f| &f.spec.name == n)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        b.fmap.fields.iter().map(|f| f.spec.name.as_str()).collect();
                    config_error(
                        b.cfg,
                        format!("`{key}`: no field `{n}` (fields: {})", known.join(", ")),
                    )
                })
        })
        .collect::<Result<_>>()?;
    // the context embedding lays its fields out in the feature map's order, as FuxiCTR's does
    idx.sort_unstable();
    idx.dedup();
    Ok(idx)
}

impl FinalMlp {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let err = |e: recforge_data::DataError| config_error(b.cfg, e.to_string());
        let feature_dim = b.input_dim;
        let keys = |i: usize| match i {
            1 => MlpKeys {
                units: "mlp1_hidden_units",
                activations: "mlp1_hidden_activations",
                dropout: "mlp1_dropout",
                batch_norm: "mlp1_batch_norm",
            },
            _ => MlpKeys {
                units: "mlp2_hidden_units",
                activations: "mlp2_hidden_activations",
                dropout: "mlp2_dropout",
                batch_norm: "mlp2_batch_norm",
            },
        };
        let c1 = mlp_config_keyed(b.cfg, keys(1), &[64, 64, 64], None)?;
        let c2 = mlp_config_keyed(b.cfg, keys(2), &[64, 64, 64], None)?;
        if c1.hidden.is_empty() || c2.hidden.is_empty() {
            return Err(config_error(
                b.cfg,
                "mlp1_hidden_units and mlp2_hidden_units need at least one layer",
            ));
        }
        let heads = b.cfg.positive_usize_or("num_heads", 1).map_err(err)?;
        let (x_dim, y_dim) = (
            *c1.hidden.last().unwrap_or(&1),
            *c2.hidden.last().unwrap_or(&1),
        );
        if !x_dim.is_multiple_of(heads) || !y_dim.is_multiple_of(heads) {
            return Err(config_error(
                b.cfg,
                format!("the MLPs' last widths ({x_dim}, {y_dim}) must be divisible by num_heads={heads}"),
            ));
        }
        let mlp1 = MlpBlock::new(b.params, "mlp1", feature_dim, &c1, b.rng);
        let mlp2 = MlpBlock::new(b.params, "mlp2", feature_dim, &c2, b.rng);
        let use_fs = b.cfg.bool_or("use_fs", true).map_err(err)?;
        let mut contexts = Vec::new();
        let gates = if use_fs {
            let fs_hidden = b.cfg.usize_list_or("fs_hidden_units", &[64]).map_err(err)?;
            let mut gate = |b: &mut CtrBuild, k: usize| -> Result<Gate> {
                let fields = context_fields(b, &format!("fs{k}_context"))?;
                let (context, input) = if fields.is_empty() {
                    let bias = b.params.add(
                        format!("fs_module.fs{k}_ctx_bias"),
                        Tensor::zeros(1, b.dim),
                        true,
                        false,
                    );
                    (GateContext::Bias(bias), b.dim)
                } else {
                    let width = fields
                        .iter()
                        .map(|&i| b.fmap.fields[i].spec.embedding_dim.unwrap_or(b.dim))
                        .sum();
                    contexts.push(fields);
                    (GateContext::Fields(contexts.len()), width)
                };
                let cfg = MlpConfig {
                    activations: vec![HiddenActivation::Plain(Activation::Relu); fs_hidden.len()],
                    hidden: fs_hidden.clone(),
                    dropout: 0.0,
                    batch_norm: false,
                    output_dim: Some(feature_dim),
                };
                let mlp = MlpBlock::new(
                    b.params,
                    &format!("fs_module.fs{k}_gate"),
                    input,
                    &cfg,
                    b.rng,
                );
                Ok(Gate { context, mlp })
            };
            let g1 = gate(b, 1)?;
            let g2 = gate(b, 2)?;
            Some([g1, g2])
        } else {
            None
        };
        let w_x = Linear::new(b.params, "fusion_module.w_x", x_dim, 1, true, b.rng);
        let w_y = Linear::new(b.params, "fusion_module.w_y", y_dim, 1, true, b.rng);
        let (hx, hy) = (x_dim / heads, y_dim / heads);
        // xavier_normal_ on FuxiCTR's [heads·hx·hy, 1] parameter
        let std = (2.0 / (heads * hx * hy + 1) as f32).sqrt();
        let w_xy = (0..heads)
            .map(|h| {
                b.params.add(
                    format!("fusion_module.w_xy.{h}"),
                    init::normal(b.rng, hx, hy, std),
                    true,
                    true,
                )
            })
            .collect();
        Ok(FinalMlp {
            mlp1,
            mlp2,
            gates,
            contexts,
            w_x,
            w_y,
            w_xy,
            heads,
        })
    }

    /// The two streams' outputs `(x, y)`.
    fn streams(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> (NodeId, NodeId) {
        let flat = emb[0];
        let (f1, f2) = match &self.gates {
            None => (flat, flat),
            Some(gates) => {
                let batch = g.value(flat).rows;
                let mut gated = gates.iter().map(|gate| {
                    let input = match gate.context {
                        GateContext::Fields(k) => emb[k],
                        GateContext::Bias(bias) => {
                            let ones = g.input(Tensor::from_vec(batch, 1, vec![1.0; batch]), false);
                            g.linear(ones, bias, None)
                        }
                    };
                    let logits = gate.mlp.forward(g, input, rng);
                    let gt = g.sigmoid(logits);
                    let gt = g.scale(gt, 2.0);
                    g.mul(flat, gt)
                });
                let a = gated.next().expect("two gates");
                let b = gated.next().expect("two gates");
                (a, b)
            }
        };
        (self.mlp1.forward(g, f1, rng), self.mlp2.forward(g, f2, rng))
    }

    fn fuse(&self, g: &mut Graph, x: NodeId, y: NodeId) -> NodeId {
        let wx = self.w_x.forward(g, x);
        let wy = self.w_y.forward(g, y);
        let mut out = g.add(wx, wy);
        let (hx, hy) = (g.value(x).cols / self.heads, g.value(y).cols / self.heads);
        for (h, &w) in self.w_xy.iter().enumerate() {
            let xh = g.slice_cols(x, h * hx, hx);
            let yh = g.slice_cols(y, h * hy, hy);
            let t = g.linear(xh, w, None);
            let p = g.mul(t, yh);
            let s = g.sum_cols(p);
            out = g.add(out, s);
        }
        out
    }
}

impl CtrNet for FinalMlp {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        std::iter::once(EmbeddingUse::Factors)
            .chain(self.contexts.iter().cloned().map(EmbeddingUse::Subset))
            .collect()
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let (x, y) = self.streams(g, emb, rng);
        self.fuse(g, x, y)
    }

    /// Both streams side by side (the fusion layer is the head).
    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let (x, y) = self.streams(g, emb, rng);
        Some(g.concat(&[x, y]))
    }

    fn head_params(&self) -> Vec<ParamId> {
        let mut p = self.w_x.params();
        p.extend(self.w_y.params());
        p.extend(&self.w_xy);
        p
    }
}
