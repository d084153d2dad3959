//! DeepFM (Guo et al. 2017): an FM and an MLP over the same field embeddings, logits summed.
//! As in FuxiCTR, the FM's first-order weights are a separate dimension-1 table.

use super::{mlp_config, CtrNet, EmbeddingUse, Fm};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_data::ModelConfig;
use recforge_nn::{Graph, NodeId, ParamId, ParamStore};

pub struct DeepFm {
    fm: Fm,
    mlp: MlpBlock,
}

impl DeepFm {
    pub fn new(
        cfg: &ModelConfig,
        ps: &mut ParamStore,
        fields: usize,
        dim: usize,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let fm = Fm::new(ps, fields, dim);
        let mlp_cfg = mlp_config(
            cfg,
            "hidden_units",
            "hidden_activations",
            &[64, 64, 64],
            Some(1),
        )?;
        Ok(DeepFm {
            fm,
            mlp: MlpBlock::new(ps, "dnn", fields * dim, &mlp_cfg, rng),
        })
    }
}

impl CtrNet for DeepFm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let fm = self.fm.logit(g, emb[0], emb[1]);
        let deep = self.mlp.forward(g, emb[1], rng);
        g.add(fm, deep)
    }

    /// As MAP takes it: the MLP's last hidden layer beside the wide (LR + FM) logit.
    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let fm = self.fm.logit(g, emb[0], emb[1]);
        let deep = self.mlp.hidden(g, emb[1], rng);
        Some(g.concat(&[deep, fm]))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
