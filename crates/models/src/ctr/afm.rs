//! AFM (Xiao et al. 2017): logistic regression plus an attention-weighted sum of the field
//! pairs' element-wise products, `p · Σ_{i<j} a_ij (e_i ⊙ e_j)`, the weights `a` a softmax
//! over pairs of `h · ReLU(W (e_i ⊙ e_j) + b)`. `attention_dropout: [p1, p2]` drops the
//! weights and the pooled vector; `use_attention: false` sums the products unweighted.

use super::{dropout_at, CtrBuild, CtrNet, EmbeddingUse, Lr};
use crate::layers::Linear;
use crate::Result;
use rand::rngs::StdRng;
use recforge_nn::{Activation, Graph, NodeId};

/// The model-config keys AFM reads.
pub(crate) const KEYS: &[&str] = &["attention_dim", "attention_dropout", "use_attention"];

struct Attention {
    hidden: Linear,
    score: Linear,
    project: Linear,
    dropout: [f32; 2],
}

pub struct Afm {
    lr: Lr,
    attention: Option<Attention>,
    fields: usize,
    dim: usize,
}

impl Afm {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let err = |e: recforge_data::DataError| super::config_error(b.cfg, e.to_string());
        let use_attention = b.cfg.bool_or("use_attention", true).map_err(err)?;
        let attention_dim = b.cfg.positive_usize_or("attention_dim", 10).map_err(err)?;
        let dropout = [
            dropout_at(b.cfg, "attention_dropout", 0)?,
            dropout_at(b.cfg, "attention_dropout", 1)?,
        ];
        let lr = Lr::new(b.params);
        let attention = use_attention.then(|| Attention {
            hidden: Linear::new(b.params, "attention.0", b.dim, attention_dim, true, b.rng),
            score: Linear::new(b.params, "attention.2", attention_dim, 1, false, b.rng),
            project: Linear::new(b.params, "weight_p", b.dim, 1, false, b.rng),
            dropout,
        });
        Ok(Afm {
            lr,
            attention,
            fields: b.fields,
            dim: b.dim,
        })
    }
}

impl CtrNet for Afm {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::FirstOrder, EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let lr = Lr::logit(self.lr.bias_param(), g, emb[0]);
        let (x, d) = (emb[1], self.dim);
        let products = g.pair_products(x, x, self.fields, d);
        let afm = match &self.attention {
            None => g.sum_cols(products),
            Some(a) => {
                let batch = g.value(x).rows;
                let pairs = self.fields * self.fields.saturating_sub(1) / 2;
                let per_pair = g.reshape(products, batch * pairs, d);
                let h = g.dense(per_pair, a.hidden.w, a.hidden.b, Activation::Relu);
                let s = a.score.forward(g, h);
                let s = g.reshape(s, batch, pairs);
                let w = g.softmax_rows(s);
                let w = g.dropout(w, a.dropout[0], rng);
                let w = g.expand_groups(w, d);
                let weighted = g.mul(w, products);
                let pooled = g.sum_blocks(weighted, d);
                let pooled = g.dropout(pooled, a.dropout[1], rng);
                a.project.forward(g, pooled)
            }
        };
        g.add(lr, afm)
    }
}
