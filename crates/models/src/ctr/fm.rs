//! Factorization machine (Rendle 2010): logistic regression plus
//! `Σ_{i<j} ⟨v_i, v_j⟩`, computed in O(fields·dim).

use super::{CtrNet, EmbeddingUse, Lr};
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamStore};

pub struct Fm {
    lr: Lr,
    fields: usize,
    dim: usize,
}

impl Fm {
    pub fn new(ps: &mut ParamStore, fields: usize, dim: usize) -> Self {
        Fm {
            lr: Lr::new(ps),
            fields,
            dim,
        }
    }

    /// The FM logit from first-order weights `[B × F]` and factors `[B × F·d]`.
    pub(crate) fn logit(&self, g: &mut Graph, weights: NodeId, factors: NodeId) -> NodeId {
        let first = Lr::logit(self.lr.bias_param(), g, weights);
        let second = g.fm_interaction(factors, self.fields, self.dim);
        g.add(first, second)
    }
}

impl CtrNet for Fm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], _rng: &mut StdRng) -> NodeId {
        self.logit(g, emb[0], emb[1])
    }
}
