//! A plain MLP over the concatenated field embeddings.

use super::{logit_mlp, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct Dnn {
    mlp: MlpBlock,
}

impl Dnn {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        Ok(Dnn {
            mlp: logit_mlp(b, b.input_dim)?,
        })
    }
}

impl CtrNet for Dnn {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        self.mlp.forward(g, emb[0], rng)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        Some(self.mlp.hidden(g, emb[0], rng))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
