//! FwFM (Pan et al. 2018): every field pair's inner product weighted by a learned per-pair
//! weight (a linear layer over the `F(F−1)/2` products, whose bias is the model's), plus a
//! linear part chosen by `linear_type`: `LW` (one weight per feature value), `FeLV` (a
//! second embedding per feature value, dotted with the field embedding) or `FiLV` (one vector
//! per field, a bias-free linear layer over the flattened embeddings).

use super::{config_error, CtrBuild, CtrNet, EmbeddingUse};
use crate::layers::Linear;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Graph, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinearType {
    Lw,
    FeLv,
    FiLv,
}

pub struct FwFm {
    interaction_weight: Linear,
    linear_type: LinearType,
    /// FiLV's per-field vectors.
    field_vectors: Option<Linear>,
    fields: usize,
    dim: usize,
}

impl FwFm {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let linear_type = match b.cfg.str_or("linear_type", "FiLV").as_str() {
            "LW" => LinearType::Lw,
            "FeLV" => LinearType::FeLv,
            "FiLV" => LinearType::FiLv,
            other => {
                return Err(config_error(
                    b.cfg,
                    format!("linear_type `{other}` (LW, FeLV, FiLV)"),
                ))
            }
        };
        let pairs = b.fields * b.fields.saturating_sub(1) / 2;
        let interaction_weight = Linear::new(b.params, "interaction_weight", pairs, 1, true, b.rng);
        let field_vectors = (linear_type == LinearType::FiLv)
            .then(|| Linear::new(b.params, "linear_weight", b.input_dim, 1, false, b.rng));
        Ok(FwFm {
            interaction_weight,
            linear_type,
            field_vectors,
            fields: b.fields,
            dim: b.dim,
        })
    }
}

impl CtrNet for FwFm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        match self.linear_type {
            LinearType::Lw => vec![EmbeddingUse::Factors, EmbeddingUse::FirstOrder],
            LinearType::FeLv => vec![EmbeddingUse::Factors, EmbeddingUse::Factors],
            LinearType::FiLv => vec![EmbeddingUse::Factors],
        }
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], _rng: &mut StdRng) -> NodeId {
        let x = emb[0];
        let ip = g.pair_inner_products(x, self.fields, self.dim);
        let poly2 = self.interaction_weight.forward(g, ip);
        let linear = match (self.linear_type, &self.field_vectors) {
            (LinearType::Lw, _) => g.sum_cols(emb[1]),
            (LinearType::FeLv, _) => {
                let p = g.mul(x, emb[1]);
                g.sum_cols(p)
            }
            (LinearType::FiLv, Some(v)) => v.forward(g, x),
            (LinearType::FiLv, None) => unreachable!("FiLV builds its field vectors"),
        };
        g.add(poly2, linear)
    }
}
