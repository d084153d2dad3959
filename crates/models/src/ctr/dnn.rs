//! A plain MLP over the concatenated field embeddings.

use super::{mlp_config, CtrNet};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_data::ModelConfig;
use recforge_nn::{Graph, NodeId, ParamStore};

pub struct Dnn {
    mlp: MlpBlock,
    dim: usize,
}

impl Dnn {
    pub fn new(
        cfg: &ModelConfig,
        ps: &mut ParamStore,
        fields: usize,
        dim: usize,
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
            mlp: MlpBlock::new(ps, "dnn", fields * dim, &mlp_cfg, rng),
            dim,
        })
    }
}

impl CtrNet for Dnn {
    fn embedding_dims(&self) -> Vec<usize> {
        vec![self.dim]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        self.mlp.forward(g, emb[0], rng)
    }
}
