//! DKVMN (Zhang et al., WWW'17) as pyKT 0.0.38 builds it (`dkvmn.py`): a concept's key `k`
//! attends over a static key memory (`w = softmax(k M_kᵀ)`); the interaction's value row `v`
//! (`c + C·r`) erases (`σ(E v)`) and adds (`tanh(A v)`) to a value memory along those weights;
//! the prediction at `t` reads the memory before `t`'s own write:
//! `σ(P · dropout(tanh(F [wᵀ M_{t−1}; k])))`.
//!
//! The memory runs as one fused op (`Graph::kv_memory`), which stores nothing per step. With
//! a concept set per interaction (collapsed form) `k` and `v` are the means of its concepts'
//! rows. Initialisation as pyKT's: both embeddings N(0, 1), `Mk` and `Mv0` kaiming-normal, the
//! linear layers PyTorch's U(±1/√fan_in). Parameter names are pyKT's `state_dict` keys; the
//! tape's linear weights are the transposes of PyTorch's.

use super::{config_error, probability, torch_linear, KtBatch, KtModel, KtShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::ModelConfig;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore};

pub(crate) const KEYS: &[&str] = &["dim_s", "size_m", "dropout"];

pub struct Dkvmn {
    params: ParamStore,
    k_emb: ParamId,
    v_emb: ParamId,
    /// `[slots × d]`
    mk: ParamId,
    /// `[slots × d]`
    mv0: ParamId,
    f: (ParamId, ParamId),
    p: (ParamId, ParamId),
    e: (ParamId, ParamId),
    a: (ParamId, ParamId),
    dropout: f32,
    num_concepts: usize,
}

impl Dkvmn {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let positive = |key, default| {
            cfg.positive_usize_or(key, default)
                .map_err(|e| config_error(cfg, e.to_string()))
        };
        let d = positive("dim_s", 200)?;
        let slots = positive("size_m", 50)?;
        let dropout = probability(cfg, "dropout", 0.2)?;
        let c = shape.num_concepts;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        // pyKT's order of creation: k_emb, Mk, Mv0, v_emb, f, p, e, a
        let k_emb = params.add(
            "k_emb_layer.weight",
            init::normal(&mut rng, c, d, 1.0),
            true,
            false,
        );
        // kaiming_normal_ on [slots × d]: fan_in d, gain √2
        let kaiming = (2.0 / d as f32).sqrt();
        let mk = params.add("Mk", init::normal(&mut rng, slots, d, kaiming), true, false);
        let mv0 = params.add(
            "Mv0",
            init::normal(&mut rng, slots, d, kaiming),
            true,
            false,
        );
        let v_emb = params.add(
            "v_emb_layer.weight",
            init::normal(&mut rng, 2 * c, d, 1.0),
            true,
            false,
        );
        let mut linear = |name: &str, fan_in: usize, fan_out: usize| {
            torch_linear(&mut params, &mut rng, name, fan_in, fan_out)
        };
        let f = linear("f_layer", 2 * d, d);
        let p = linear("p_layer", d, 1);
        let e = linear("e_layer", d, d);
        let a = linear("a_layer", d, d);
        Ok(Dkvmn {
            params,
            k_emb,
            v_emb,
            mk,
            mv0,
            f,
            p,
            e,
            a,
            dropout,
            num_concepts: c,
        })
    }
}

impl KtModel for Dkvmn {
    fn name(&self) -> &'static str {
        "DKVMN"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let all: Vec<u32> = (0..batch.tokens() as u32).collect();
        let k = batch.concept_rows(g, self.k_emb, &all, |_, c| c);
        let v = batch.interaction_rows(g, self.v_emb, self.num_concepts);
        let mk = g.param(self.mk);
        let w = g.matmul_nt(k, mk);
        let w = g.softmax_rows(w);
        let e = g.linear(v, self.e.0, Some(self.e.1));
        let e = g.sigmoid(e);
        let a = g.linear(v, self.a.0, Some(self.a.1));
        let a = g.tanh(a);
        let mv0 = g.param(self.mv0);
        let reads = g.kv_memory(w, e, a, mv0, &batch.segments);
        // only the predicted tokens go on through the head
        let reads = g.gather_rows(reads, &batch.scored);
        let k = g.gather_rows(k, &batch.scored);
        let x = g.concat(&[reads, k]);
        let f = g.linear(x, self.f.0, Some(self.f.1));
        let f = g.tanh(f);
        let f = g.dropout(f, self.dropout, rng);
        g.linear(f, self.p.0, Some(self.p.1))
    }
}
