//! GRU4Rec (Hidasi et al., ICLR'16; Tan et al.'s improved variant) as RecBole 1.2.1 builds it
//! (`gru4rec.py`): item embeddings → dropout → `num_layers` bias-free GRU layers → a dense
//! layer back to the embedding width → the state at each scored position · the item
//! embeddings ᵀ (tied) → cross-entropy over all ids.
//!
//! Initialisation as RecBole's: item embeddings Xavier-normal (the padding row too), the first
//! GRU layer's weights Xavier-uniform, later layers and the dense layer PyTorch's default
//! U(−1/√fan_in, 1/√fan_in). Parameter names are RecBole's `state_dict` keys; the tape's
//! weights are the transposes of PyTorch's.

use super::{config_error, max_item_list_length, Packed, SeqModel, SeqShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore};

pub(crate) const KEYS: &[&str] = &[
    "embedding_size",
    "hidden_size",
    "num_layers",
    "dropout_prob",
    "loss_type",
];

pub struct Gru4Rec {
    params: ParamStore,
    item_embedding: ParamId,
    /// per layer: (`weight_ih`, `weight_hh`)
    layers: Vec<(ParamId, ParamId)>,
    dense_w: ParamId,
    dense_b: ParamId,
    dropout: f32,
    max_len: usize,
}

impl Gru4Rec {
    pub fn new(cfg: &ModelConfig, shape: SeqShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let emb = cfg.positive_usize_or("embedding_size", 64).map_err(e)?;
        let hidden = cfg.positive_usize_or("hidden_size", 64).map_err(e)?;
        let layers = cfg.positive_usize_or("num_layers", 1).map_err(e)?;
        let dropout = cfg.non_negative_f64_or("dropout_prob", 0.3).map_err(e)? as f32;
        if dropout >= 1.0 {
            return Err(config_error(
                cfg,
                format!("dropout_prob must be below 1, got {dropout}"),
            ));
        }
        match cfg.str_or("loss_type", "CE").as_str() {
            "CE" => {}
            other => {
                return Err(config_error(
                    cfg,
                    format!(
                        "GRU4Rec: loss_type `{other}`: only CE (softmax over all items) is built"
                    ),
                ))
            }
        }
        let max_len = max_item_list_length(cfg)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let n = shape.n_items + 1;
        // torch's xavier on an [n × emb] embedding: fan_in = emb, fan_out = n
        let item_embedding = params.add(
            "item_embedding.weight",
            init::normal(&mut rng, n, emb, (2.0 / (n + emb) as f32).sqrt()),
            true,
            false,
        );
        let default_bound = 1.0 / (hidden as f32).sqrt();
        let layers = (0..layers)
            .map(|k| {
                let inp = if k == 0 { emb } else { hidden };
                let (w_ih, w_hh) = if k == 0 {
                    (
                        init::xavier_uniform(&mut rng, inp, 3 * hidden),
                        init::xavier_uniform(&mut rng, hidden, 3 * hidden),
                    )
                } else {
                    (
                        init::uniform(&mut rng, inp, 3 * hidden, default_bound),
                        init::uniform(&mut rng, hidden, 3 * hidden, default_bound),
                    )
                };
                (
                    params.add(format!("gru_layers.weight_ih_l{k}"), w_ih, true, true),
                    params.add(format!("gru_layers.weight_hh_l{k}"), w_hh, true, true),
                )
            })
            .collect();
        let dense_w = params.add(
            "dense.weight",
            init::uniform(&mut rng, hidden, emb, default_bound),
            true,
            true,
        );
        let dense_b = params.add(
            "dense.bias",
            init::uniform(&mut rng, 1, emb, default_bound),
            true,
            false,
        );
        Ok(Gru4Rec {
            params,
            item_embedding,
            layers,
            dense_w,
            dense_b,
            dropout,
            max_len,
        })
    }
}

impl SeqModel for Gru4Rec {
    fn name(&self) -> &'static str {
        "GRU4Rec"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn max_len(&self) -> usize {
        self.max_len
    }

    fn logits(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId {
        let table = g.param(self.item_embedding);
        let x = g.gather_rows(table, &packed.ids);
        let mut h = g.dropout(x, self.dropout, rng);
        for &(w_ih, w_hh) in &self.layers {
            let (a, b) = (g.param(w_ih), g.param(w_hh));
            h = g.gru(h, a, b, &packed.segments);
        }
        let h = g.gather_rows(h, &packed.scored_rows);
        let out = g.linear(h, self.dense_w, Some(self.dense_b));
        let table = g.param(self.item_embedding);
        g.matmul_nt(out, table)
    }
}
