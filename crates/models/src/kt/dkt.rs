//! DKT (Piech et al., NeurIPS'15) as pyKT 0.0.38 builds it (`dkt.py`): the interaction
//! `(concept, response)` embedded as row `c + C·r` of one table → a one-layer LSTM → dropout
//! → `Linear(d → C)` → the logit of the next interaction's concept.
//!
//! The LSTM runs fused over each window (one GEMM for every token's input gates, one per
//! step for the recurrent part). With a concept set per interaction (collapsed form), the
//! input is the mean of its concepts' interaction rows and the logit the mean of its
//! concepts' output logits. Initialisation as PyTorch's: the embedding N(0, 1), the LSTM's
//! weights and both biases U(±1/√d), the output layer U(±1/√d). Parameter names are pyKT's
//! `state_dict` keys; the tape's LSTM weights are the transposes of PyTorch's.

use super::{config_error, probability, KtBatch, KtModel, KtShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore};

pub(crate) const KEYS: &[&str] = &["emb_size", "dropout"];

pub struct Dkt {
    params: ParamStore,
    interaction_emb: ParamId,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    /// `[C × d]`, PyTorch's layout, so a concept's row is gathered directly
    out_w: ParamId,
    /// `[C × 1]`
    out_b: ParamId,
    dropout: f32,
    num_concepts: usize,
}

impl Dkt {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let d = cfg
            .positive_usize_or("emb_size", 200)
            .map_err(|e| config_error(cfg, e.to_string()))?;
        let dropout = probability(cfg, "dropout", 0.1)?;
        let c = shape.num_concepts;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let mut add = |name: &str, t, regularize| params.add(name, t, true, regularize);
        let bound = 1.0 / (d as f32).sqrt();
        let interaction_emb = add(
            "interaction_emb.weight",
            init::normal(&mut rng, 2 * c, d, 1.0),
            false,
        );
        let w_ih = add(
            "lstm_layer.weight_ih_l0",
            init::uniform(&mut rng, d, 4 * d, bound),
            true,
        );
        let w_hh = add(
            "lstm_layer.weight_hh_l0",
            init::uniform(&mut rng, d, 4 * d, bound),
            true,
        );
        let b_ih = add(
            "lstm_layer.bias_ih_l0",
            init::uniform(&mut rng, 1, 4 * d, bound),
            false,
        );
        let b_hh = add(
            "lstm_layer.bias_hh_l0",
            init::uniform(&mut rng, 1, 4 * d, bound),
            false,
        );
        let out_w = add(
            "out_layer.weight",
            init::uniform(&mut rng, c, d, bound),
            true,
        );
        let out_b = add(
            "out_layer.bias",
            init::uniform(&mut rng, c, 1, bound),
            false,
        );
        Ok(Dkt {
            params,
            interaction_emb,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            out_w,
            out_b,
            dropout,
            num_concepts: c,
        })
    }
}

impl KtModel for Dkt {
    fn name(&self) -> &'static str {
        "DKT"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let x = batch.interaction_rows(g, self.interaction_emb, self.num_concepts);
        let gates = g.linear(x, self.w_ih, Some(self.b_ih));
        let b_hh = g.param(self.b_hh);
        let gates = g.add_bias(gates, b_hh);
        let w_hh = g.param(self.w_hh);
        let h = g.lstm(gates, w_hh, &batch.segments);
        let h = g.dropout(h, self.dropout, rng);
        let w = batch.concept_rows(g, self.out_w, &batch.scored, |_, c| c);
        let b = batch.concept_rows(g, self.out_b, &batch.scored, |_, c| c);
        let own: Vec<u32> = (0..batch.scored.len() as u32).collect();
        let dots = g.pair_dots(h, &batch.previous_of_scored(), w, &own);
        g.add(dots, b)
    }
}
