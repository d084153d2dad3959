//! NFM (He & Chua 2017): a bias-free linear part plus an MLP over the bi-interaction pooling
//! `½ ((Σ_f e_f)² − Σ_f e_f²)` of the field embeddings (a `[B × d]` vector).

use super::{logit_mlp, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct Nfm {
    mlp: MlpBlock,
    dim: usize,
}

/// The bi-interaction pooling of `[B × F·d]` field embeddings: `[B × d]`.
pub(crate) fn bi_interaction(g: &mut Graph, x: NodeId, dim: usize) -> NodeId {
    let sum = g.sum_blocks(x, dim);
    let square_of_sum = g.mul(sum, sum);
    let sq = g.mul(x, x);
    let sum_of_squares = g.sum_blocks(sq, dim);
    let neg = g.scale(sum_of_squares, -1.0);
    let diff = g.add(square_of_sum, neg);
    g.scale(diff, 0.5)
}

impl Nfm {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        Ok(Nfm {
            mlp: logit_mlp(b, b.dim)?,
            dim: b.dim,
        })
    }
}

impl CtrNet for Nfm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let linear = g.sum_cols(emb[0]);
        let bi = bi_interaction(g, emb[1], self.dim);
        let deep = self.mlp.forward(g, bi, rng);
        g.add(linear, deep)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let linear = g.sum_cols(emb[0]);
        let bi = bi_interaction(g, emb[1], self.dim);
        let deep = self.mlp.hidden(g, bi, rng);
        Some(g.concat(&[deep, linear]))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
