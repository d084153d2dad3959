//! A plain MLP over the concatenated field embeddings.

use super::{mlp_config, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_data::ModelConfig;
use recforge_nn::{Graph, NodeId, ParamId, ParamStore};

pub struct Dnn {
    mlp: MlpBlock,
}

impl Dnn {
    pub fn new(
        cfg: &ModelConfig,
        ps: &mut ParamStore,
        input_dim: usize,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let mlp_cfg = mlp_config(
            cfg,
            "hidden_units",
            "hidden_activations",
            &[64, 64, 64],
            Some(1),
        )?;
        Ok(Dnn {
            mlp: MlpBlock::new(ps, "dnn", input_dim, &mlp_cfg, rng),
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
