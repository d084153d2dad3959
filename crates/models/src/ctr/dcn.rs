//! DCN (Wang et al. 2017), FuxiCTR's torch version: the cross network
//! `x_{l+1} = x_0 (x_l · w_l) + b_l + x_l` beside an optional MLP (`dnn_hidden_units: []`
//! leaves the cross network alone), concatenated into one linear output.

use super::{optional_mlp, CtrBuild, CtrNet, EmbeddingUse, MlpKeys};
use crate::layers::{Linear, MlpBlock};
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId, Tensor};

/// The model-config keys DCN reads.
pub(crate) const KEYS: &[&str] = &[
    "dnn_hidden_units",
    "dnn_activations",
    "num_cross_layers",
    "net_dropout",
    "batch_norm",
];

/// One cross layer: a weight vector `[D × 1]` and a bias `[1 × D]`.
#[derive(Clone, Debug)]
struct CrossLayer {
    w: ParamId,
    b: ParamId,
}

pub struct Dcn {
    cross: Vec<CrossLayer>,
    dnn: Option<MlpBlock>,
    out: Linear,
}

impl Dcn {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let layers = b
            .cfg
            .usize_or("num_cross_layers", 3)
            .map_err(|e| super::config_error(b.cfg, e.to_string()))?;
        let d = b.input_dim;
        let cross = (0..layers)
            .map(|i| CrossLayer {
                w: Linear::new(
                    b.params,
                    &format!("crossnet.{i}.weight"),
                    d,
                    1,
                    false,
                    b.rng,
                )
                .w,
                b: b.params.add(
                    format!("crossnet.{i}.bias"),
                    Tensor::zeros(1, d),
                    true,
                    false,
                ),
            })
            .collect();
        let keys = MlpKeys::shared("dnn_hidden_units", "dnn_activations");
        let dnn = optional_mlp(b, keys, "dnn", d, &[], None)?;
        let final_dim = d + dnn.as_ref().map_or(0, |m| m.output_dim);
        let out = Linear::new(b.params, "fc", final_dim, 1, true, b.rng);
        Ok(Dcn { cross, dnn, out })
    }

    /// The cross network's output beside the MLP's: what the output layer reads.
    fn representation(&self, g: &mut Graph, x0: NodeId, rng: &mut StdRng) -> NodeId {
        let mut x = x0;
        for l in &self.cross {
            let s = g.linear(x, l.w, None);
            let t = g.scale_rows(x0, s);
            let b = g.param(l.b);
            let t = g.add_bias(t, b);
            x = g.add(t, x);
        }
        match &self.dnn {
            Some(m) => {
                let h = m.forward(g, x0, rng);
                g.concat(&[x, h])
            }
            None => x,
        }
    }
}

impl CtrNet for Dcn {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let h = self.representation(g, emb[0], rng);
        self.out.forward(g, h)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        Some(self.representation(g, emb[0], rng))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.out.params()
    }
}
