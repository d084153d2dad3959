//! FiBiNET (Huang et al. 2019) as FuxiCTR 2.3 builds it: a squeeze-excitation network
//! reweights the fields (`A = act(W₂ ReLU(W₁ z))`, `z` each field embedding's mean), two
//! bilinear interactions (separate weights) pair the original and the reweighted embeddings
//! (`(e_i W) ⊙ e_j` for `i < j`, with `W` shared by all fields, one per field, or one per pair
//! by `bilinear_type`), and an MLP over both, beside a bias-free linear part.

use super::{config_error, mlp_config, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::ops::fields::field_pairs;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore};

/// The model-config keys FiBiNET reads.
pub(crate) const KEYS: &[&str] = &[
    "hidden_units",
    "hidden_activations",
    "excitation_activation",
    "reduction_ratio",
    "bilinear_type",
    "net_dropout",
    "batch_norm",
];

/// FuxiCTR's `SqueezeExcitation`.
pub struct SqueezeExcitation {
    w1: ParamId,
    w2: ParamId,
    sigmoid: bool,
    dim: usize,
}

impl SqueezeExcitation {
    pub fn new(
        ps: &mut ParamStore,
        fields: usize,
        dim: usize,
        reduction_ratio: usize,
        sigmoid: bool,
        rng: &mut StdRng,
    ) -> Self {
        let reduced = (fields / reduction_ratio).max(1);
        let lin = |ps: &mut ParamStore, name: &str, i: usize, o: usize, rng: &mut StdRng| {
            crate::layers::Linear::new(ps, name, i, o, false, rng).w
        };
        SqueezeExcitation {
            w1: lin(ps, "senet.excitation.0", fields, reduced, rng),
            w2: lin(ps, "senet.excitation.2", reduced, fields, rng),
            sigmoid,
            dim,
        }
    }

    /// The reweighted embeddings `[B × F·d]`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let sums = g.group_sums(x, self.dim);
        let z = g.scale(sums, 1.0 / self.dim as f32);
        let a = g.dense(z, self.w1, None, Activation::Relu);
        let act = if self.sigmoid {
            Activation::Sigmoid
        } else {
            Activation::Relu
        };
        let a = g.dense(a, self.w2, None, act);
        let a = g.expand_groups(a, self.dim);
        g.mul(x, a)
    }
}

/// Which bilinear weights a [`BilinearInteraction`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BilinearType {
    FieldAll,
    FieldEach,
    FieldInteraction,
}

/// FuxiCTR's `BilinearInteractionV2`: `(e_i W) ⊙ e_j` for every pair `i < j`, `[B × P·d]`.
pub struct BilinearInteraction {
    kind: BilinearType,
    weights: Vec<ParamId>,
    fields: usize,
    dim: usize,
}

impl BilinearInteraction {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        kind: BilinearType,
        fields: usize,
        dim: usize,
        rng: &mut StdRng,
    ) -> Self {
        let pairs = fields * fields.saturating_sub(1) / 2;
        // torch's xavier_normal_ on [n, d, d]: fan_in d·d, fan_out n·d (n = 1 for a matrix: d, d)
        let (n, std) = match kind {
            BilinearType::FieldAll => (1, (2.0 / (2 * dim) as f32).sqrt()),
            BilinearType::FieldEach => (fields, (2.0 / (dim * dim + fields * dim) as f32).sqrt()),
            BilinearType::FieldInteraction => {
                (pairs, (2.0 / (dim * dim + pairs * dim) as f32).sqrt())
            }
        };
        let weights = (0..n)
            .map(|k| {
                ps.add(
                    format!("{name}.bilinear_W.{k}"),
                    init::normal(rng, dim, dim, std),
                    true,
                    true,
                )
            })
            .collect();
        BilinearInteraction {
            kind,
            weights,
            fields,
            dim,
        }
    }

    pub fn forward(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let (f, d) = (self.fields, self.dim);
        let batch = g.value(x).rows;
        match self.kind {
            BilinearType::FieldAll => {
                let rows = g.reshape(x, batch * f, d);
                let h = g.linear(rows, self.weights[0], None);
                let h = g.reshape(h, batch, f * d);
                g.pair_products(h, x, f, d)
            }
            BilinearType::FieldEach => {
                let hidden: Vec<NodeId> = (0..f)
                    .map(|i| {
                        let e = g.slice_cols(x, i * d, d);
                        g.linear(e, self.weights[i], None)
                    })
                    .collect();
                let h = g.concat(&hidden);
                g.pair_products(h, x, f, d)
            }
            BilinearType::FieldInteraction => {
                let parts: Vec<NodeId> = field_pairs(f)
                    .into_iter()
                    .zip(&self.weights)
                    .map(|((i, j), &w)| {
                        let ei = g.slice_cols(x, i * d, d);
                        let ej = g.slice_cols(x, j * d, d);
                        let h = g.linear(ei, w, None);
                        g.mul(h, ej)
                    })
                    .collect();
                g.concat(&parts)
            }
        }
    }
}

pub struct FiBiNet {
    senet: SqueezeExcitation,
    bilinear_p: BilinearInteraction,
    bilinear_q: BilinearInteraction,
    mlp: MlpBlock,
}

impl FiBiNet {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let err = |e: recforge_data::DataError| config_error(b.cfg, e.to_string());
        let ratio = b.cfg.positive_usize_or("reduction_ratio", 3).map_err(err)?;
        let sigmoid = match b
            .cfg
            .str_or("excitation_activation", "ReLU")
            .to_ascii_lowercase()
            .as_str()
        {
            "relu" => false,
            "sigmoid" => true,
            other => {
                return Err(config_error(
                    b.cfg,
                    format!("excitation_activation `{other}` (ReLU, Sigmoid)"),
                ))
            }
        };
        let kind = match b.cfg.str_or("bilinear_type", "field_interaction").as_str() {
            "field_all" => BilinearType::FieldAll,
            "field_each" => BilinearType::FieldEach,
            "field_interaction" => BilinearType::FieldInteraction,
            other => {
                return Err(config_error(
                    b.cfg,
                    format!("bilinear_type `{other}` (field_all, field_each, field_interaction)"),
                ))
            }
        };
        let (f, d) = (b.fields, b.dim);
        let senet = SqueezeExcitation::new(b.params, f, d, ratio, sigmoid, b.rng);
        let bilinear_p = BilinearInteraction::new(b.params, "bilinear1", kind, f, d, b.rng);
        let bilinear_q = BilinearInteraction::new(b.params, "bilinear2", kind, f, d, b.rng);
        let c = mlp_config(b.cfg, "hidden_units", "hidden_activations", &[], Some(1))?;
        let input = f * f.saturating_sub(1) * d;
        Ok(FiBiNet {
            senet,
            bilinear_p,
            bilinear_q,
            mlp: MlpBlock::new(b.params, "dnn", input, &c, b.rng),
        })
    }

    fn interactions(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let reweighted = self.senet.forward(g, x);
        let p = self.bilinear_p.forward(g, x);
        let q = self.bilinear_q.forward(g, reweighted);
        g.concat(&[p, q])
    }
}

impl CtrNet for FiBiNet {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let lr = g.sum_cols(emb[0]);
        let h = self.interactions(g, emb[1]);
        let deep = self.mlp.forward(g, h, rng);
        g.add(lr, deep)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let lr = g.sum_cols(emb[0]);
        let h = self.interactions(g, emb[1]);
        let deep = self.mlp.hidden(g, h, rng);
        Some(g.concat(&[deep, lr]))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
