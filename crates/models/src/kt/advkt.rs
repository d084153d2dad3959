//! AdvKT (adversarial multi-step training for knowledge tracing) as its official code builds it
//! (fulingyue/AdvKT, `models.py`; `../shared/design/education.md` §4): a generator that traces
//! knowledge with an attentive GRU, and the discriminator that scores how real a response
//! sequence looks. The training loop (rollouts, rewards, the critic's advantages, the two
//! optimizers, the augmentations) is in `recforge-train`'s `kt::advkt`.
//!
//! **Generator.** A question's vector is `v = funcs([mean concept embedding ; problem
//! embedding])` (`funcs`: the code's one-hidden-layer ReLU MLP); the recurrence is
//! [`Graph::attentive_gru`] over `v` and the actions; the logit of a correct answer at `t` is
//! `funcs([v_t ; h_t ; hw_t])`. Position 0 is predicted too (from the zero state). As a
//! [`KtModel`] it runs teacher-forced on the batch's responses — which is also how the
//! evaluators feed it their guesses — and [`AdvKt::rollout`] runs it free on its own sampled
//! or thresholded responses. A critic `funcs(state)` over the discriminator's (detached) states
//! gives the advantages' baseline.
//!
//! **Discriminator.** Three one-head attention blocks (question self-attention, self-attention
//! over per-(question, response) embeddings, and cross-attention with the response stream as
//! queries, the question stream as keys and `[question ; response]` as values), each followed
//! by a residual `funcs` and one shared LayerNorm; `D_t = σ(funcs([out_t ; question_t]))`,
//! and `[out_t ; question_t]` is the state the gradient penalty and the critic read. It is
//! bidirectional within a window. Padding never enters: windows are packed (the code's defect
//! (c), attention over padding, does not arise).
//!
//! Where the code and this file differ: the three defects of design §4 are fixed by default —
//! (a) the reward reads the actions (`response row 2q + a`; the code indexes row 0 with the
//! probabilities' `.long()`), (b) the concept mean divides by the number of concepts
//! (`code_concept_mean: true` divides by the padding slots, as the code does), (c) as above.
//! The attention projections start Xavier-uniform, not N(0, 1) (which saturates every softmax
//! at d = 64); the per-head output mix of one head (a scalar) is left out; the auxiliary
//! problem-id predictors (softmax over every problem at every position: ~14 GFLOP per batch on
//! assist2009) are left out; the discriminator's response predictor is kept.

use super::{config_error, probability, torch_linear, KtBatch, KtModel, KtShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use recforge_data::ModelConfig;
use recforge_nn::ops::attentive_gru::{run_segment, AttentiveGruWeights};
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore, Tensor};

pub(crate) const KEYS: &[&str] = &["dim", "dropout", "code_concept_mean", "max_concepts"];

/// The code's `funcs`: `n_layer` hidden `Linear(in, in)` + ReLU, dropout, `Linear(in, out)`,
/// PyTorch's default initialisation.
#[derive(Clone, Debug)]
pub struct Funcs {
    hidden: Vec<(ParamId, ParamId)>,
    out: (ParamId, ParamId),
    dropout: f32,
}

impl Funcs {
    pub fn new(
        ps: &mut ParamStore,
        rng: &mut StdRng,
        name: &str,
        n_layer: usize,
        width: usize,
        out: usize,
        dropout: f32,
    ) -> Self {
        let hidden = (0..n_layer)
            .map(|i| torch_linear(ps, rng, &format!("{name}.lins.{i}"), width, width))
            .collect();
        let out = torch_linear(ps, rng, &format!("{name}.out"), width, out);
        Funcs {
            hidden,
            out,
            dropout,
        }
    }

    pub fn forward(&self, g: &mut Graph, mut x: NodeId, rng: &mut StdRng) -> NodeId {
        for &(w, b) in &self.hidden {
            x = g.linear(x, w, Some(b));
            x = g.relu(x);
        }
        let x = g.dropout(x, self.dropout, rng);
        g.linear(x, self.out.0, Some(self.out.1))
    }

    /// The forward pass on one row, outside the tape (evaluation mode).
    pub fn eval(&self, ps: &ParamStore, x: &[f32]) -> Vec<f32> {
        let layer = |x: &[f32], (w, b): (ParamId, ParamId), relu: bool| {
            let (w, b) = (ps.value(w), ps.value(b));
            let mut y = b.data.clone();
            for (&xi, row) in x.iter().zip(w.data.chunks_exact(w.cols)) {
                for (o, &wv) in y.iter_mut().zip(row) {
                    *o += xi * wv;
                }
            }
            if relu {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            y
        };
        let mut x = x.to_vec();
        for &p in &self.hidden {
            x = layer(&x, p, true);
        }
        layer(&x, self.out, false)
    }

    /// The output layer's `(w, b)` and the one hidden layer's, for the gradient penalty.
    pub fn single_hidden(&self) -> Option<((ParamId, ParamId), (ParamId, ParamId))> {
        (self.hidden.len() == 1).then(|| (self.hidden[0], self.out))
    }
}

/// The question id of every token: its problem where the data has problem ids, else its
/// (first) concept.
pub fn question_ids(batch: &KtBatch, use_problems: bool) -> Vec<u32> {
    if use_problems {
        batch.problems.clone()
    } else {
        batch
            .concept_segs
            .iter()
            .map(|s| batch.concepts[s.start])
            .collect()
    }
}

/// Concept embeddings of every token averaged over its concept set, or (the code's defect)
/// summed and divided by the number of padding slots of a `max_concepts`-wide row.
fn concept_mean(
    g: &mut Graph,
    batch: &KtBatch,
    table: ParamId,
    code_mean: Option<usize>,
) -> NodeId {
    let rows: Vec<u32> = (0..batch.tokens() as u32).collect();
    let mean = batch.concept_rows(g, table, &rows, |_, c| c);
    match code_mean {
        None => mean,
        Some(width) => {
            let factors = batch
                .concept_segs
                .iter()
                .map(|s| s.len as f32 / (width.saturating_sub(s.len)).max(1) as f32)
                .collect();
            let f = g.input(Tensor::from_vec(batch.tokens(), 1, factors), false);
            g.scale_rows(mean, f)
        }
    }
}

/// How a rollout picks each action from the generator's own probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Bernoulli draws (training).
    Sample,
    /// `p > 0.5` (the code's evaluation).
    Threshold,
}

/// The generator (what the checkpoint keeps, and what serves) and its critic.
pub struct AdvKt {
    params: ParamStore,
    concept_emb: ParamId,
    question_emb: ParamId,
    v_map: Funcs,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    action: Funcs,
    critic: Funcs,
    dim: usize,
    use_problems: bool,
    code_mean: Option<usize>,
}

/// `dim`, `dropout` and the concept-mean flag, shared by the generator and discriminator.
#[derive(Clone, Copy, Debug)]
pub struct AdvKtConfig {
    pub dim: usize,
    pub dropout: f32,
    pub code_mean: Option<usize>,
}

impl AdvKtConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let dim = cfg
            .positive_usize_or("dim", 64)
            .map_err(|e| config_error(cfg, e.to_string()))?;
        let dropout = probability(cfg, "dropout", 0.0)?;
        let code = cfg
            .bool_or("code_concept_mean", false)
            .map_err(|e| config_error(cfg, e.to_string()))?;
        let width = cfg
            .positive_usize_or("max_concepts", 4)
            .map_err(|e| config_error(cfg, e.to_string()))?;
        Ok(AdvKtConfig {
            dim,
            dropout,
            code_mean: code.then_some(width),
        })
    }
}

/// Question-table rows: problems where the data has them, else concepts.
pub fn question_rows(shape: KtShape) -> usize {
    if shape.num_problems > 0 {
        shape.num_problems
    } else {
        shape.num_concepts
    }
}

impl AdvKt {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let c = AdvKtConfig::from_config(cfg)?;
        let d = c.dim;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ps = ParamStore::new();
        // the code's torch.randn tables, row 0 the padding
        let mut table = |ps: &mut ParamStore, name: &str, rows: usize| {
            let mut t = init::normal(&mut rng, rows, d, 1.0);
            t.data[..d].fill(0.0);
            ps.add(name, t, true, false)
        };
        let concept_emb = table(&mut ps, "concept_emb", shape.num_concepts);
        let question_emb = table(&mut ps, "prob_emb", question_rows(shape));
        let v_map = Funcs::new(&mut ps, &mut rng, "v_map", 1, 2 * d, d, c.dropout);
        let gru_in = 4 * d;
        let bound = 1.0 / (d as f32).sqrt();
        // mygru: six Linear layers (PyTorch's init), stored as two fused matrices
        let (w_ih, b_ih) = {
            let w = init::uniform(&mut rng, gru_in, 3 * d, 1.0 / (gru_in as f32).sqrt());
            let b = init::uniform(&mut rng, 1, 3 * d, 1.0 / (gru_in as f32).sqrt());
            (
                ps.add("gru_h.w_ih", w, true, true),
                ps.add("gru_h.b_ih", b, true, false),
            )
        };
        let (w_hh, b_hh) = {
            let w = init::uniform(&mut rng, d, 3 * d, bound);
            let b = init::uniform(&mut rng, 1, 3 * d, bound);
            (
                ps.add("gru_h.w_hh", w, true, true),
                ps.add("gru_h.b_hh", b, true, false),
            )
        };
        let action = Funcs::new(
            &mut ps,
            &mut rng,
            "action_predictor",
            1,
            3 * d,
            1,
            c.dropout,
        );
        let critic = Funcs::new(&mut ps, &mut rng, "value_est", 1, 3 * d, 1, c.dropout);
        Ok(AdvKt {
            params: ps,
            concept_emb,
            question_emb,
            v_map,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            action,
            critic,
            dim: d,
            use_problems: shape.num_problems > 0,
            code_mean: c.code_mean,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn uses_problems(&self) -> bool {
        self.use_problems
    }

    fn scale(&self) -> f32 {
        1.0 / ((2 * self.dim) as f32).sqrt()
    }

    /// Every token's question vector `v` (`[tokens × d]`).
    pub fn question_vectors(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let cm = concept_mean(g, batch, self.concept_emb, self.code_mean);
        let q = g.param(self.question_emb);
        let q = g.gather_rows(q, &question_ids(batch, self.use_problems));
        let x = g.concat(&[cm, q]);
        self.v_map.forward(g, x, rng)
    }

    /// Every token's logit (position 0 included), the generator acting on `actions`.
    pub fn logits_under(
        &self,
        g: &mut Graph,
        batch: &KtBatch,
        actions: &[u8],
        rng: &mut StdRng,
    ) -> NodeId {
        let v = self.question_vectors(g, batch, rng);
        let p = [self.w_ih, self.w_hh, self.b_ih, self.b_hh].map(|id| g.param(id));
        let states = g.attentive_gru(
            v,
            actions,
            p[0],
            p[1],
            p[2],
            p[3],
            &batch.segments,
            self.scale(),
        );
        let x = g.concat(&[v, states]);
        self.action.forward(g, x, rng)
    }

    /// The actions of a free-running pass over `batch`: each token's response drawn from (or
    /// thresholded on) the generator's own probability given its earlier actions. Window `i`
    /// draws from a generator seeded by `(seed, i)`, so a rollout does not depend on threads.
    pub fn rollout(&self, batch: &KtBatch, mode: Rollout, seed: u64) -> Vec<u8> {
        let mut g = Graph::inference(&self.params);
        let mut no_rng = StdRng::seed_from_u64(0);
        let v = self.question_vectors(&mut g, batch, &mut no_rng);
        let v = g.value(v);
        let ps = &self.params;
        let w = AttentiveGruWeights {
            w_ih: ps.value(self.w_ih),
            w_hh: ps.value(self.w_hh),
            b_ih: ps.value(self.b_ih),
            b_hh: ps.value(self.b_hh),
            scale: self.scale(),
        };
        let d = self.dim;
        let parts: Vec<Vec<u8>> = batch
            .segments
            .par_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let rows = &v.data[s.start * d..(s.start + s.len) * d];
                let mut x = vec![0.0f32; 3 * d];
                run_segment(rows, d, w, |t, h, hw| {
                    x[..d].copy_from_slice(&rows[t * d..(t + 1) * d]);
                    x[d..2 * d].copy_from_slice(h);
                    x[2 * d..].copy_from_slice(hw);
                    let z = self.action.eval(ps, &x)[0];
                    let p = 1.0 / (1.0 + (-z).exp());
                    match mode {
                        Rollout::Sample => u8::from(rng.gen::<f32>() < p),
                        Rollout::Threshold => u8::from(p > 0.5),
                    }
                })
                .actions
            })
            .collect();
        parts.concat()
    }

    /// The critic's value of each state row (`[n × 3d]` → `[n × 1]`).
    pub fn values(&self, g: &mut Graph, states: NodeId, rng: &mut StdRng) -> NodeId {
        self.critic.forward(g, states, rng)
    }
}

impl KtModel for AdvKt {
    fn name(&self) -> &'static str {
        "AdvKT"
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn logits(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> NodeId {
        let all = self.logits_under(g, batch, &batch.responses, rng);
        g.gather_rows(all, &batch.scored)
    }

    fn as_advkt(&self) -> Option<&AdvKt> {
        Some(self)
    }
}

/// One attention block's projections (no biases, as the code's parameter matrices).
struct Block {
    q: ParamId,
    k: ParamId,
    v: ParamId,
    ffn: Funcs,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ps: &mut ParamStore,
        rng: &mut StdRng,
        name: &str,
        q_in: usize,
        k_in: usize,
        v_in: usize,
        d: usize,
        dropout: f32,
    ) -> Self {
        let mut proj = |ps: &mut ParamStore, p: &str, fan_in: usize| {
            ps.add(
                format!("{name}_{p}"),
                init::xavier_uniform(rng, fan_in, d),
                true,
                true,
            )
        };
        let q = proj(ps, "q", q_in);
        let k = proj(ps, "k", k_in);
        let v = proj(ps, "v", v_in);
        let ffn = Funcs::new(ps, rng, &format!("{name}_ffn"), 1, d, d, dropout);
        Block { q, k, v, ffn }
    }
}

/// The discriminator's outputs on a batch.
pub struct DiscOutput {
    /// `[tokens × 1]` logits of "real"
    pub logits: NodeId,
    /// `[tokens × 3d]`: `[out ; question]`, what the head, the penalty and the critic read
    pub states: NodeId,
    /// the auxiliary response-prediction BCE
    pub response_loss: NodeId,
}

pub struct Discriminator {
    params: ParamStore,
    concept_emb: ParamId,
    question_emb: ParamId,
    response_emb: ParamId,
    ques: Block,
    resp: Block,
    fin: Block,
    norm: (ParamId, ParamId),
    predictor: Funcs,
    resp_predictor: Funcs,
    dim: usize,
    use_problems: bool,
    code_mean: Option<usize>,
    /// the question and concept ids the mask augmentation writes
    pub mask_question: u32,
    pub mask_concept: u32,
}

impl Discriminator {
    pub fn new(cfg: &ModelConfig, shape: KtShape, seed: u64) -> Result<Self> {
        let c = AdvKtConfig::from_config(cfg)?;
        let d = c.dim;
        let mut rng = StdRng::seed_from_u64(seed ^ 0xD15C);
        let mut ps = ParamStore::new();
        let nq = question_rows(shape);
        // one extra row each: the mask ids
        let mut table = |ps: &mut ParamStore, name: &str, rows: usize| {
            ps.add(name, init::normal(&mut rng, rows, d, 1.0), true, false)
        };
        let concept_emb = table(&mut ps, "concept_emb", shape.num_concepts + 1);
        let question_emb = table(&mut ps, "prob_emb", nq + 1);
        let response_emb = table(&mut ps, "response_emb", 2 * (nq + 1));
        let ques = Block::new(&mut ps, &mut rng, "ques", 2 * d, 2 * d, 2 * d, d, c.dropout);
        let resp = Block::new(&mut ps, &mut rng, "resp", d, d, d, d, c.dropout);
        let fin = Block::new(&mut ps, &mut rng, "final", d, d, 3 * d, d, c.dropout);
        let norm = (
            ps.add(
                "norm.weight",
                Tensor::from_vec(1, d, vec![1.0; d]),
                true,
                false,
            ),
            ps.add("norm.bias", Tensor::zeros(1, d), true, false),
        );
        let predictor = Funcs::new(&mut ps, &mut rng, "predictor", 1, 3 * d, 1, c.dropout);
        let resp_predictor =
            Funcs::new(&mut ps, &mut rng, "resp_predictor", 1, 2 * d, 1, c.dropout);
        Ok(Discriminator {
            params: ps,
            concept_emb,
            question_emb,
            response_emb,
            ques,
            resp,
            fin,
            norm,
            predictor,
            resp_predictor,
            dim: d,
            use_problems: shape.num_problems > 0,
            code_mean: c.code_mean,
            mask_question: nq as u32,
            mask_concept: shape.num_concepts as u32,
        })
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// The head `(W₁, b₁), (w₂, b₂)` the gradient penalty differentiates.
    pub fn head(&self) -> ((ParamId, ParamId), (ParamId, ParamId)) {
        self.predictor
            .single_hidden()
            .expect("the predictor has one hidden layer")
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        g: &mut Graph,
        b: &Block,
        q_in: NodeId,
        k_in: NodeId,
        v_in: NodeId,
        batch: &KtBatch,
        rng: &mut StdRng,
    ) -> NodeId {
        let (q, k, v) = (
            g.linear(q_in, b.q, None),
            g.linear(k_in, b.k, None),
            g.linear(v_in, b.v, None),
        );
        let a = g.attention(q, k, v, 1, &batch.segments);
        let f = b.ffn.forward(g, a, rng);
        g.add_layer_norm(f, a, self.norm.0, self.norm.1, 1e-5)
    }

    /// Scores every token of `batch`, its responses the actions to judge.
    pub fn score(&self, g: &mut Graph, batch: &KtBatch, rng: &mut StdRng) -> DiscOutput {
        let qids = question_ids(batch, self.use_problems);
        let cm = concept_mean(g, batch, self.concept_emb, self.code_mean);
        let qt = g.param(self.question_emb);
        let qe = g.gather_rows(qt, &qids);
        let ques = g.concat(&[cm, qe]);
        let rows: Vec<u32> = qids
            .iter()
            .zip(&batch.responses)
            .map(|(&q, &r)| 2 * q + r as u32)
            .collect();
        let rt = g.param(self.response_emb);
        let resp = g.gather_rows(rt, &rows);
        let qa = self.block(g, &self.ques, ques, ques, ques, batch, rng);
        let ra = self.block(g, &self.resp, resp, resp, resp, batch, rng);
        let ques_resp = g.concat(&[ques, resp]);
        let out = self.block(g, &self.fin, ra, qa, ques_resp, batch, rng);
        let states = g.concat(&[out, ques]);
        let logits = self.predictor.forward(g, states, rng);
        // the response predictor reads the response stream with each window's first row zeroed
        let keep: Vec<f32> = batch
            .positions
            .iter()
            .map(|&p| if p == 0 { 0.0 } else { 1.0 })
            .collect();
        let keep = g.input(Tensor::from_vec(batch.tokens(), 1, keep), false);
        let ra0 = g.scale_rows(ra, keep);
        let x = g.concat(&[qa, ra0]);
        let rl = self.resp_predictor.forward(g, x, rng);
        let labels: Vec<f32> = batch.responses.iter().map(|&r| r as f32).collect();
        let response_loss = g.bce_with_logits(rl, &labels);
        DiscOutput {
            logits,
            states,
            response_loss,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}
