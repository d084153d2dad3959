//! PNN (Qu et al. 2016), the inner-product variant FuxiCTR ships (IPNN): the flattened field
//! embeddings beside every pair's inner product, into an MLP.

use super::{config_error, logit_mlp, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::MlpBlock;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId, ParamId};

pub struct Pnn {
    mlp: MlpBlock,
    fields: usize,
    dim: usize,
}

impl Pnn {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let product = b.cfg.str_or("product_type", "inner");
        if product != "inner" {
            return Err(config_error(
                b.cfg,
                format!("product_type `{product}`: only `inner` is implemented (as in FuxiCTR)"),
            ));
        }
        let pairs = b.fields * b.fields.saturating_sub(1) / 2;
        Ok(Pnn {
            mlp: logit_mlp(b, b.fields * b.dim + pairs)?,
            fields: b.fields,
            dim: b.dim,
        })
    }

    fn input(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let ip = g.pair_inner_products(x, self.fields, self.dim);
        g.concat(&[x, ip])
    }
}

impl CtrNet for Pnn {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let x = self.input(g, emb[0]);
        self.mlp.forward(g, x, rng)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let x = self.input(g, emb[0]);
        Some(self.mlp.hidden(g, x, rng))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.mlp.output_params()
    }
}
