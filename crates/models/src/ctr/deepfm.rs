//! DeepFM (Guo et al. 2017): an FM and an MLP over the same field embeddings, logits summed.
//! As in FuxiCTR, the FM's first-order weights are a separate dimension-1 table.

use super::{logit_mlp, CtrBuild, CtrNet, EmbeddingUse, Fm};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct DeepFm {
    fm: Fm,
    mlp: MlpBlock,
}

impl DeepFm {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let fm = Fm::new(b.params, b.fields, b.dim);
        Ok(DeepFm {
            fm,
            mlp: logit_mlp(b, b.fields * b.dim)?,
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
