//! Wide & Deep (Cheng et al. 2016) as FuxiCTR builds it: a bias-free linear part over the
//! features' first-order weights (the wide part) plus an MLP over the field embeddings.

use super::{mlp_config, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct WideDeep {
    mlp: MlpBlock,
}

impl WideDeep {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let c = mlp_config(
            b.cfg,
            "hidden_units",
            "hidden_activations",
            &[64, 64, 64],
            Some(1),
        )?;
        Ok(WideDeep {
            mlp: MlpBlock::new(b.params, "dnn", b.input_dim, &c, b.rng),
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
