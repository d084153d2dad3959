//! AdvKT's adversarial training step (fulingyue/AdvKT, `train_1.py`; design §4), run by
//! [`KtTask`](super::KtTask) when its model is the AdvKT generator. Per batch of real windows:
//!
//! - every `disc_every`-th batch, one discriminator step (Adam, `disc_learning_rate` 5e-3):
//!   positives are the real windows and their four augmentations (mask, replace, crop,
//!   permute), fakes the generator's free-running answers on synthetic question walks and the
//!   real windows with their responses flipped; the loss is
//!   `−mean(pos − fake) − mean(real − aug) − mean D(single (q, r), no history)`
//!   `+ response-prediction BCE + 10·(GP(real, generated) + GP(real, flipped))`
//!   — pairwise means of differences are differences of means;
//! - one generator step: BCE of the generator running **free on its own sampled responses**
//!   over the real windows (every position, the first too), plus the policy-gradient loss on
//!   new walks: reward `r_t = −log(1 − D_t + 1e-10)` from the discriminator judging the
//!   sampled responses, the critic's TD error `δ_t = r_t + 0.98·V(s_t) − V(s_{t−1})`
//!   (`V(s_{−1}) = V(0)`), advantages by GAE (`A_t = Σ_k 0.93^k δ_{t+k}`), and
//!   `Σ_t [−log π(a_t)·A_t + smoothL1(V(s_{t−1}), r_t + 0.98·V(s_t))] / tokens` (the code's
//!   `lamb · pair_ratio = 1e-4 · 1e4`).
//!
//! The code's tables (`next_question_set.pkl`, `cl4kt_*_candidate.pkl`) are not published; they
//! are built here from the training students: a walk's next question is drawn from the
//! questions that followed the current one in training (uniform where it was never followed),
//! and "replace" swaps a correct answer's question for one at least as easy (training
//! accuracy) and a wrong answer's for one at least as hard. The flipped fake flips every
//! response of the window and is scored like any window (the code scores each flipped response
//! against the true history one position at a time, `obtain_score_reverse`).

use crate::topk::dense_step;
use crate::trainer::NonFiniteStep;
use crate::{Result, TrainError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use recforge_data::kt::KtSequence;
use recforge_data::ModelConfig;
use recforge_models::kt::{self as ktm, AdvKt, Discriminator, KtBatch, KtShape, Rollout};
use recforge_nn::{DenseOptimizer, Graph, NodeId, OptimizerKind, Tensor};

/// The adversarial loop's config keys (beside the generator's).
pub const ADVKT_TRAIN_KEYS: &[&str] = &[
    "disc_learning_rate",
    "disc_every",
    "walk_ratio",
    "walk_min_len",
    "walk_max_len",
    "mask_prob",
    "replace_prob",
    "crop_ratio",
    "perm_ratio",
    "gp_weight",
    "gae_gamma",
    "td_gamma",
    "rl_weight",
    "short_questions",
];

#[derive(Clone, Debug)]
pub struct AdversarialConfig {
    pub disc_lr: f32,
    pub disc_every: u64,
    /// One walk per this many real interactions in the batch (the code's `len(y) / 40`).
    pub walk_ratio: usize,
    pub walk_len: (usize, usize),
    pub mask_prob: f64,
    pub replace_prob: f64,
    pub crop_ratio: f64,
    pub perm_ratio: f64,
    pub gp_weight: f32,
    pub gae_gamma: f32,
    pub td_gamma: f32,
    pub rl_weight: f32,
    /// Questions per step scored alone with each response (the code scores every problem).
    pub short_questions: usize,
}

fn err(e: recforge_data::DataError) -> TrainError {
    TrainError::Config(e.to_string())
}

impl AdversarialConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let prob = |k: &str, d: f64| -> Result<f64> {
            let v = cfg.non_negative_f64_or(k, d).map_err(err)?;
            if v > 1.0 {
                return Err(TrainError::Config(format!(
                    "{}: {k} must be in [0, 1], got {v}",
                    cfg.expid
                )));
            }
            Ok(v)
        };
        let walk_len = (
            cfg.positive_usize_or("walk_min_len", 150).map_err(err)?,
            cfg.positive_usize_or("walk_max_len", 200).map_err(err)?,
        );
        if walk_len.0 >= walk_len.1 {
            return Err(TrainError::Config(format!(
                "{}: walk_min_len ({}) must be below walk_max_len ({})",
                cfg.expid, walk_len.0, walk_len.1
            )));
        }
        Ok(AdversarialConfig {
            disc_lr: cfg
                .positive_f32_or("disc_learning_rate", 5e-3)
                .map_err(err)?,
            disc_every: cfg.positive_usize_or("disc_every", 2).map_err(err)? as u64,
            walk_ratio: cfg.positive_usize_or("walk_ratio", 40).map_err(err)?,
            walk_len,
            mask_prob: prob("mask_prob", 0.6)?,
            replace_prob: prob("replace_prob", 0.3)?,
            crop_ratio: prob("crop_ratio", 0.6)?,
            perm_ratio: prob("perm_ratio", 0.6)?,
            gp_weight: cfg.non_negative_f64_or("gp_weight", 10.0).map_err(err)? as f32,
            gae_gamma: prob("gae_gamma", 0.93)? as f32,
            td_gamma: prob("td_gamma", 0.98)? as f32,
            rl_weight: cfg.non_negative_f64_or("rl_weight", 1.0).map_err(err)? as f32,
            short_questions: cfg.usize_or("short_questions", 512).map_err(err)?,
        })
    }
}

/// GAE advantages of one trajectory: `A_t = Σ_k γ^k δ_{t+k}`.
pub fn gae(deltas: &[f32], gamma: f32) -> Vec<f32> {
    let mut out = vec![0.0; deltas.len()];
    let mut acc = 0.0f32;
    for (o, &d) in out.iter_mut().zip(deltas).rev() {
        acc = gamma * acc + d;
        *o = acc;
    }
    out
}

/// Per question (problem, or concept in data without problems): its concept set, its
/// training accuracy rank, and the questions that followed it.
pub struct QuestionTables {
    use_problems: bool,
    concepts: Vec<Vec<u32>>,
    /// seen questions, hardest (lowest training accuracy) first
    by_accuracy: Vec<u32>,
    rank: Vec<u32>,
    next: Vec<Vec<u32>>,
}

impl QuestionTables {
    pub fn new(train: &[KtSequence], rows: usize, use_problems: bool) -> Self {
        let mut concepts = vec![Vec::new(); rows];
        let mut next = vec![Vec::new(); rows];
        let (mut right, mut seen) = (vec![0u32; rows], vec![0u32; rows]);
        let q_of = |s: &KtSequence, t: usize| {
            if use_problems {
                s.problems[t]
            } else {
                s.concepts_of(t)[0]
            }
        };
        for s in train {
            for t in 0..s.len() {
                let q = q_of(s, t) as usize;
                if concepts[q].is_empty() {
                    concepts[q] = s.concepts_of(t).to_vec();
                }
                seen[q] += 1;
                right[q] += s.responses[t] as u32;
                if t + 1 < s.len() {
                    next[q].push(q_of(s, t + 1));
                }
            }
        }
        let mut by_accuracy: Vec<u32> =
            (0..rows as u32).filter(|&q| seen[q as usize] > 0).collect();
        let acc = |q: u32| right[q as usize] as f64 / seen[q as usize] as f64;
        by_accuracy.sort_by(|&a, &b| acc(a).total_cmp(&acc(b)).then(a.cmp(&b)));
        let mut rank = vec![u32::MAX; rows];
        for (i, &q) in by_accuracy.iter().enumerate() {
            rank[q as usize] = i as u32;
        }
        QuestionTables {
            use_problems,
            concepts,
            by_accuracy,
            rank,
            next,
        }
    }

    fn push(&self, s: &mut KtSequence, q: u32, r: u8) {
        let problem = if self.use_problems { q } else { 0 };
        s.push(problem, &self.concepts[q as usize], r);
    }

    fn question(&self, s: &KtSequence, t: usize) -> u32 {
        if self.use_problems {
            s.problems[t]
        } else {
            s.concepts_of(t)[0]
        }
    }

    /// A synthetic student's questions: a walk along observed transitions.
    pub fn walk(&self, len: usize, rng: &mut StdRng) -> KtSequence {
        let mut s = KtSequence::default();
        let mut q = *self
            .by_accuracy
            .choose(rng)
            .expect("training has questions");
        for _ in 0..len {
            self.push(&mut s, q, 0);
            q = match self.next[q as usize].choose(rng) {
                Some(&n) => n,
                None => *self
                    .by_accuracy
                    .choose(rng)
                    .expect("training has questions"),
            };
        }
        s
    }

    /// A question at least as easy (`easier`) or at least as hard as `q`.
    fn replacement(&self, q: u32, easier: bool, rng: &mut StdRng) -> u32 {
        let r = self.rank[q as usize];
        if r == u32::MAX {
            return q;
        }
        let pool = if easier {
            &self.by_accuracy[r as usize..]
        } else {
            &self.by_accuracy[..=r as usize]
        };
        *pool.choose(rng).unwrap_or(&q)
    }
}

/// The four augmentations of one window (design §4; CL4KT's).
pub struct Augment<'a> {
    pub tables: &'a QuestionTables,
    pub cfg: &'a AdversarialConfig,
    pub mask_question: u32,
    pub mask_concept: u32,
}

impl Augment<'_> {
    pub fn mask(&self, s: &KtSequence, rng: &mut StdRng) -> KtSequence {
        let mut out = KtSequence::default();
        for t in 0..s.len() {
            if rng.gen_bool(self.cfg.mask_prob) {
                let p = if self.tables.use_problems {
                    self.mask_question
                } else {
                    0
                };
                out.push(p, &[self.mask_concept], s.responses[t]);
            } else {
                out.push(s.problems[t], s.concepts_of(t), s.responses[t]);
            }
        }
        out
    }

    pub fn replace(&self, s: &KtSequence, rng: &mut StdRng) -> KtSequence {
        let mut out = KtSequence::default();
        for t in 0..s.len() {
            let r = s.responses[t];
            if rng.gen_bool(self.cfg.replace_prob) {
                let q = self
                    .tables
                    .replacement(self.tables.question(s, t), r == 1, rng);
                self.tables.push(&mut out, q, r);
            } else {
                out.push(s.problems[t], s.concepts_of(t), r);
            }
        }
        out
    }

    pub fn crop(&self, s: &KtSequence, rng: &mut StdRng) -> KtSequence {
        let len = s.len();
        let start = rng.gen_range(0..len.saturating_sub(1).max(1));
        let keep = ((len as f64 * self.cfg.crop_ratio) as usize).max(1);
        s.slice(start, keep.min(len - start))
    }

    pub fn permute(&self, s: &KtSequence, rng: &mut StdRng) -> KtSequence {
        let len = s.len();
        let start = rng.gen_range(0..len.saturating_sub(1).max(1));
        let end = (start + (len as f64 * self.cfg.perm_ratio) as usize).min(len.saturating_sub(1));
        let mut order: Vec<usize> = (0..len).collect();
        if end > start {
            order[start..end].shuffle(rng);
        }
        let mut out = KtSequence::default();
        for t in order {
            out.push(s.problems[t], s.concepts_of(t), s.responses[t]);
        }
        out
    }
}

/// The discriminator, its optimizer and the tables the loop draws from.
pub struct Adversary {
    pub disc: Discriminator,
    opt: DenseOptimizer,
    tables: QuestionTables,
    pub cfg: AdversarialConfig,
    max_len: usize,
}

fn whole(seqs: &[KtSequence], responses: Option<&[Vec<u8>]>) -> KtBatch {
    KtBatch::from_parts(
        seqs.iter()
            .enumerate()
            .map(|(i, s)| (s, 0, s.len(), responses.map(|r| r[i].as_slice()))),
    )
}

/// Splits per-token `values` by the batch's windows.
fn by_window<'a>(batch: &KtBatch, values: &'a [f32]) -> impl Iterator<Item = &'a [f32]> + 'a {
    let segs = batch.segments.clone();
    segs.into_iter()
        .map(move |s| &values[s.start..s.start + s.len])
}

impl Adversary {
    pub fn new(cfg: &ModelConfig, shape: KtShape, train: &[KtSequence], seed: u64) -> Result<Self> {
        let disc = Discriminator::new(cfg, shape, seed)?;
        let opt = DenseOptimizer::new(OptimizerKind::adam(), disc.params());
        let use_problems = shape.num_problems > 0;
        let rows = ktm::advkt_question_rows(shape);
        Ok(Adversary {
            tables: QuestionTables::new(train, rows, use_problems),
            disc,
            opt,
            cfg: AdversarialConfig::from_config(cfg)?,
            max_len: shape.max_seq_len,
        })
    }

    fn walks(&self, real_tokens: usize, rng: &mut StdRng) -> Vec<KtSequence> {
        let n = (real_tokens / self.cfg.walk_ratio).max(1);
        let (lo, hi) = self.cfg.walk_len;
        (0..n)
            .map(|_| {
                let len = rng.gen_range(lo..hi).min(self.max_len).max(2);
                self.tables.walk(len, rng)
            })
            .collect()
    }

    /// Walks answered by the generator's free-running samples.
    fn generated(&self, gen: &AdvKt, real_tokens: usize, rng: &mut StdRng) -> KtBatch {
        let walks = self.walks(real_tokens, rng);
        let batch = whole(&walks, None);
        let actions = gen.rollout(&batch, Rollout::Sample, rng.gen());
        let mut b = batch;
        b.responses = actions;
        b
    }

    /// One discriminator step on the real windows `real`; returns its loss.
    pub fn disc_step(
        &mut self,
        gen: &AdvKt,
        real: &[KtSequence],
        rng: &mut StdRng,
    ) -> std::result::Result<f64, NonFiniteStep> {
        let aug = Augment {
            tables: &self.tables,
            cfg: &self.cfg,
            mask_question: self.disc.mask_question,
            mask_concept: self.disc.mask_concept,
        };
        let real_batch = whole(real, None);
        let augmented: Vec<KtBatch> = (0..4)
            .map(|k| {
                let seqs: Vec<KtSequence> = real
                    .iter()
                    .map(|s| match k {
                        0 => aug.mask(s, rng),
                        1 => aug.replace(s, rng),
                        2 => aug.crop(s, rng),
                        _ => aug.permute(s, rng),
                    })
                    .collect();
                whole(&seqs, None)
            })
            .collect();
        let generated = self.generated(gen, real_batch.tokens(), rng);
        let mut flipped = real_batch.clone();
        flipped.responses.iter_mut().for_each(|r| *r = 1 - *r);
        let short = {
            let mut qs = self.tables.by_accuracy.clone();
            qs.shuffle(rng);
            qs.truncate(self.cfg.short_questions.max(1));
            let seqs: Vec<KtSequence> = qs
                .iter()
                .flat_map(|&q| {
                    [0u8, 1].map(|r| {
                        let mut s = KtSequence::default();
                        self.tables.push(&mut s, q, r);
                        s
                    })
                })
                .collect();
            whole(&seqs, None)
        };
        let (loss, grads) = {
            let d = &self.disc;
            let mut g = Graph::new(d.params(), true);
            let mut score = |g: &mut Graph, b: &KtBatch| {
                let o = d.score(g, b, rng);
                (g.sigmoid(o.logits), o.states, o.response_loss)
            };
            let (d_real, s_real, resp_loss) = score(&mut g, &real_batch);
            let d_aug: Vec<NodeId> = augmented.iter().map(|b| score(&mut g, b).0).collect();
            let (d_gen, s_gen, _) = score(&mut g, &generated);
            let (d_flip, s_flip, _) = score(&mut g, &flipped);
            let (d_short, _, _) = score(&mut g, &short);
            let mut pos_parts = vec![d_real];
            pos_parts.extend(&d_aug);
            let pos = g.concat_rows(&pos_parts);
            let fake = g.concat_rows(&[d_gen, d_flip]);
            let augs = g.concat_rows(&d_aug);
            let (mp, mf, mr, ma, ms) = (
                g.mean_all(pos),
                g.mean_all(fake),
                g.mean_all(d_real),
                g.mean_all(augs),
                g.mean_all(d_short),
            );
            let ((w1, b1), (w2, b2)) = d.head();
            let head = [w1, b1, w2, b2].map(|p| g.param(p));
            let mut gp = |g: &mut Graph, real: NodeId, fake: NodeId| {
                let n = g.value(real).rows.min(g.value(fake).rows);
                let (r, f) = (g.slice_rows(real, 0, n), g.slice_rows(fake, 0, n));
                // WGAN-GP's interpolates, one mixing weight per row
                let a: Vec<f32> = (0..n).map(|_| rng.gen::<f32>()).collect();
                let b: Vec<f32> = a.iter().map(|x| 1.0 - x).collect();
                let (a, b) = (
                    g.input(Tensor::from_vec(n, 1, a), false),
                    g.input(Tensor::from_vec(n, 1, b), false),
                );
                let (r, f) = (g.scale_rows(r, a), g.scale_rows(f, b));
                let x = g.add(r, f);
                g.gradient_penalty(x, head[0], head[1], head[2], head[3])
            };
            let gp1 = gp(&mut g, s_real, s_gen);
            let gp2 = gp(&mut g, s_real, s_flip);
            // −(pos − fake) − (real − aug) − short + resp + w·(gp1 + gp2)
            let gps = g.add(gp1, gp2);
            let gps = g.scale(gps, self.cfg.gp_weight);
            let neg_pos = g.scale(mp, -1.0);
            let neg_real = g.scale(mr, -1.0);
            let neg_short = g.scale(ms, -1.0);
            let mut loss = g.add(neg_pos, mf);
            for t in [neg_real, ma, neg_short, resp_loss, gps] {
                loss = g.add(loss, t);
            }
            let v = g.value(loss).data[0] as f64;
            NonFiniteStep::check("discriminator loss", v)?;
            (v, g.backward(loss).params)
        };
        let lr = self.cfg.disc_lr;
        dense_step(self.disc.params_mut(), &mut self.opt, &grads, lr, 0.0, None)?;
        Ok(loss)
    }

    /// The generator's loss on `real` (its windows): the free-running BCE plus the policy
    /// gradient on fresh walks; returns the loss node and the BCE's value.
    pub fn generator_loss(
        &self,
        g: &mut Graph,
        gen: &AdvKt,
        real: &KtBatch,
        rng: &mut StdRng,
    ) -> (NodeId, f64) {
        let acts = gen.rollout(real, Rollout::Sample, rng.gen());
        let z = gen.logits_under(g, real, &acts, rng);
        let labels: Vec<f32> = real.responses.iter().map(|&r| r as f32).collect();
        let bce = g.bce_with_logits(z, &labels);
        let bce_value = g.value(bce).data[0] as f64;
        if self.cfg.rl_weight == 0.0 {
            return (bce, bce_value);
        }
        let walks = self.generated(gen, real.tokens(), rng);
        let zw = gen.logits_under(g, &walks, &walks.responses, rng);
        // the discriminator's judgement of the sampled answers, and its states, fixed
        let (reward, states) = {
            let mut dg = Graph::inference(self.disc.params());
            let o = self.disc.score(&mut dg, &walks, rng);
            let r: Vec<f32> = dg
                .value(o.logits)
                .data
                .iter()
                .map(|&z| {
                    let d = 1.0 / (1.0 + (-z as f64).exp());
                    (-(1.0 - d + 1e-10).ln()) as f32
                })
                .collect();
            (r, dg.take_value(o.states))
        };
        let width = states.cols;
        let mut before = Tensor::zeros(states.rows, width);
        for s in &walks.segments {
            for t in 1..s.len {
                let (dst, src) = ((s.start + t) * width, (s.start + t - 1) * width);
                before.data[dst..dst + width].copy_from_slice(&states.data[src..src + width]);
            }
        }
        let after = g.input(states, false);
        let before = g.input(before, false);
        let v_after = gen.values(g, after, rng);
        let v_before = gen.values(g, before, rng);
        let (va, vb) = (
            g.value(v_after).data.clone(),
            g.value(v_before).data.clone(),
        );
        let target: Vec<f32> = reward
            .iter()
            .zip(&va)
            .map(|(r, v)| r + self.cfg.td_gamma * v)
            .collect();
        let delta: Vec<f32> = target.iter().zip(&vb).map(|(t, v)| t - v).collect();
        let advantages: Vec<f32> = by_window(&walks, &delta)
            .flat_map(|d| gae(d, self.cfg.gae_gamma))
            .collect();
        let n = walks.tokens() as f32;
        let actions: Vec<f32> = walks.responses.iter().map(|&a| a as f32).collect();
        let pg = g.weighted_bce_with_logits(zw, &actions, &advantages, n);
        let critic = g.smooth_l1(v_before, &target, n);
        let rl = g.add(pg, critic);
        let rl = g.scale(rl, self.cfg.rl_weight);
        (g.add(bce, rl), bce_value)
    }
}

#[cfg(test)]
#[path = "advkt_tests.rs"]
mod tests;
