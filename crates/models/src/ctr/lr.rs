//! Logistic regression: one learned weight per feature value plus a bias.

use super::{CtrNet, EmbeddingUse};
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId, ParamStore, Tensor};

pub struct Lr {
    bias: ParamId,
}

impl Lr {
    pub fn new(ps: &mut ParamStore) -> Self {
        Lr {
            bias: ps.add("lr.bias", Tensor::zeros(1, 1), true, false),
        }
    }

    /// `Σ_f w_f + b` from a `[batch × fields]` matrix of first-order weights.
    pub(crate) fn logit(bias: ParamId, g: &mut Graph, weights: NodeId) -> NodeId {
        let s = g.sum_cols(weights);
        let b = g.param(bias);
        g.add_bias(s, b)
    }

    pub(crate) fn bias_param(&self) -> ParamId {
        self.bias
    }
}

impl CtrNet for Lr {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], _rng: &mut StdRng) -> NodeId {
        Self::logit(self.bias, g, emb[0])
    }
}
