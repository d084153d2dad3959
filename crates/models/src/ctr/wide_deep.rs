//! Wide & Deep (Cheng et al. 2016) as FuxiCTR builds it: a bias-free linear part over the
//! features' first-order weights (the wide part) plus an MLP over the field embeddings.

use super::{logit_mlp, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct WideDeep {
    mlp: MlpBlock,
}

impl WideDeep {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        Ok(WideDeep {
            mlp: logit_mlp(b, b.input_dim)?,
        })
    }
}

impl CtrNet for WideDeep {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let wide = g.sum_cols(emb[0]);
        let deep = self.mlp.forward(g, emb[1], rng);
        g.add(wide, deep)
    }

    /// The MLP's last hidden layer beside the wide logit.
    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let wide = g.sum_cols(emb[0]);
        let deep = self.mlp.hidden(g, emb[1], rng);
        Some(g.concat(&[deep, wide]))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
