//! xDeepFM (Lian et al. 2018): a bias-free linear part, the Compressed Interaction Network
//! and an optional MLP, logits summed. CIN layer `k` takes the outer products of the base
//! field embeddings `X⁰ [F × d]` and its input `Xᵏ⁻¹ [H × d]` along each embedding
//! dimension and compresses the `F·H` channels to `cin_hidden_units[k]` with a 1×1
//! convolution; each layer's output summed over the embedding dimension feeds one linear
//! output. Here the convolution is a linear layer over rows `(b, d)` of the transposed
//! embeddings, the same weights as FuxiCTR's `Conv1d` (channel `h·H + m` pairs base field `h`
//! with input row `m`).

use super::{config_error, optional_mlp, CtrBuild, CtrNet, EmbeddingUse, MlpKeys};
use crate::layers::{Linear, MlpBlock};
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

/// The model-config keys xDeepFM reads.
pub(crate) const KEYS: &[&str] = &[
    "dnn_hidden_units",
    "dnn_activations",
    "cin_hidden_units",
    "net_dropout",
    "batch_norm",
];

/// FuxiCTR's `CompressedInteractionNet`.
pub struct Cin {
    layers: Vec<Linear>,
    units: Vec<usize>,
    fc: Linear,
    fields: usize,
    dim: usize,
}

impl Cin {
    pub fn new(b: &mut CtrBuild, units: Vec<usize>) -> Self {
        let mut layers = Vec::new();
        let mut prev = b.fields;
        for (i, &u) in units.iter().enumerate() {
            let name = format!("cin.layer_{}", i + 1);
            layers.push(Linear::new(
                b.params,
                &name,
                b.fields * prev,
                u,
                true,
                b.rng,
            ));
            prev = u;
        }
        let fc = Linear::new(b.params, "cin.fc", units.iter().sum(), 1, true, b.rng);
        Cin {
            layers,
            units,
            fc,
            fields: b.fields,
            dim: b.dim,
        }
    }

    /// Each layer's output summed over the embedding dimension, side by side: `[B × Σ units]`.
    pub fn pooled(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let batch = g.value(x).rows;
        let (f, d) = (self.fields, self.dim);
        let t = g.transpose_blocks(x, f, d);
        let x0 = g.reshape(t, batch * d, f);
        let mut xi = x0;
        let mut pools = Vec::with_capacity(self.layers.len());
        for (layer, &u) in self.layers.iter().zip(&self.units) {
            let z = g.row_outer(x0, xi);
            xi = layer.forward(g, z);
            let per_row = g.reshape(xi, batch, d * u);
            pools.push(g.sum_blocks(per_row, u));
        }
        g.concat(&pools)
    }

    pub fn logit(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let p = self.pooled(g, x);
        self.fc.forward(g, p)
    }
}

pub struct XDeepFm {
    cin: Cin,
    dnn: Option<MlpBlock>,
}

impl XDeepFm {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let units = b
            .cfg
            .usize_list_or("cin_hidden_units", &[16, 16, 16])
            .map_err(|e| config_error(b.cfg, e.to_string()))?;
        if units.is_empty() || units.contains(&0) {
            return Err(config_error(
                b.cfg,
                format!(
                    "cin_hidden_units needs at least one layer of at least one unit, got {units:?}"
                ),
            ));
        }
        let keys = MlpKeys::shared("dnn_hidden_units", "dnn_activations");
        let dnn = optional_mlp(b, keys, "dnn", b.input_dim, &[64, 64, 64], Some(1))?;
        Ok(XDeepFm {
            cin: Cin::new(b, units),
            dnn,
        })
    }
}

impl CtrNet for XDeepFm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let lr = g.sum_cols(emb[0]);
        let cin = self.cin.logit(g, emb[1]);
        let y = g.add(lr, cin);
        match &self.dnn {
            Some(dnn) => {
                let d = dnn.forward(g, emb[1], rng);
                g.add(y, d)
            }
            None => y,
        }
    }

    /// The CIN's pooled layers beside the MLP's last hidden layer and the linear logit.
    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let mut parts = vec![self.cin.pooled(g, emb[1])];
        if let Some(dnn) = &self.dnn {
            parts.push(dnn.hidden(g, emb[1], rng));
        }
        parts.push(g.sum_cols(emb[0]));
        Some(g.concat(&parts))
    }

    fn head_params(&self) -> Vec<ParamId> {
        let mut p = self.cin.fc.params();
        if let Some(dnn) = &self.dnn {
            p.extend(dnn.output_params());
        }
        p
    }
}
