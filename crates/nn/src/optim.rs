//! Optimizers as element-wise update rules, shared by dense parameters and embedding rows, so a
//! row-wise sparse update is exactly the dense rule applied to fewer rows.

use crate::kernels::simd_fn;
use crate::params::ParamStore;
use crate::tensor::Tensor;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// PyTorch's Adam (bias-corrected, eps outside the square root).
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    /// PyTorch's Adagrad with zero initial accumulator.
    Adagrad {
        eps: f32,
    },
    Sgd,
}

impl OptimizerKind {
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    pub fn adagrad() -> Self {
        OptimizerKind::Adagrad { eps: 1e-10 }
    }

    /// Parses FuxiCTR's `optimizer` names.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "adam" => Some(Self::adam()),
            "adagrad" => Some(Self::adagrad()),
            "sgd" => Some(Self::Sgd),
            _ => None,
        }
    }

    /// How many state slots per value (moments) the rule keeps.
    pub fn state_slots(&self) -> usize {
        match self {
            OptimizerKind::Adam { .. } => 2,
            OptimizerKind::Adagrad { .. } => 1,
            OptimizerKind::Sgd => 0,
        }
    }

    /// Updates `w` in place from gradient `g` (already scaled), with state slices `s1`, `s2`
    /// (empty when unused); `step` counts from 1.
    #[inline]
    pub fn update(
        &self,
        w: &mut [f32],
        g: &[f32],
        s1: &mut [f32],
        s2: &mut [f32],
        lr: f32,
        step: u64,
    ) {
        update_rule(*self, w, g, s1, s2, lr, step, &|g, _| g)
    }
}

simd_fn! {
    /// One pass of `kind`'s rule over equal-length slices, with the gradient entry `grad(g, w)`
    /// formed on the fly (the dense step's `(g + l2·w)·scale`, so no gradient copy is
    /// written), vectorized at the CPU's width.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_rule(
        kind: OptimizerKind,
        w: &mut [f32],
        g: &[f32],
        s1: &mut [f32],
        s2: &mut [f32],
        lr: f32,
        step: u64,
        grad: &impl Fn(f32, f32) -> f32,
    ) {
        apply_rule(kind, RuleScalars::new(kind, lr, step), w, g, s1, s2, grad)
    }
}

/// What a step of the rule shares across all values: the learning rate and, for Adam, the
/// bias corrections of step `step`.
#[derive(Clone, Copy)]
pub(crate) struct RuleScalars {
    lr: f32,
    /// Adam's `lr / (1 − β₁ᵗ)`.
    step_size: f32,
    /// Adam's `√(1 − β₂ᵗ)`.
    bc2_sqrt: f32,
}

impl RuleScalars {
    pub(crate) fn new(kind: OptimizerKind, lr: f32, step: u64) -> Self {
        match kind {
            OptimizerKind::Adam { beta1, beta2, .. } => RuleScalars {
                lr,
                step_size: lr / (1.0 - beta1.powi(step as i32)),
                bc2_sqrt: (1.0 - beta2.powi(step as i32)).sqrt(),
            },
            _ => RuleScalars {
                lr,
                step_size: lr,
                bc2_sqrt: 1.0,
            },
        }
    }
}

/// The body of [`update_rule`], inlined into callers that loop over many short slices (the
/// sparse step's rows), so that each row costs neither a dispatch nor the bias corrections.
#[inline(always)]
pub(crate) fn apply_rule(
    kind: OptimizerKind,
    c: RuleScalars,
    w: &mut [f32],
    g: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
    grad: &impl Fn(f32, f32) -> f32,
) {
    let g = &g[..w.len()];
    match kind {
        OptimizerKind::Adam { beta1, beta2, eps } => {
            let (s1, s2) = (&mut s1[..w.len()], &mut s2[..w.len()]);
            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(s1).zip(s2) {
                let gi = grad(g, *w);
                *m = beta1 * *m + (1.0 - beta1) * gi;
                *v = beta2 * *v + (1.0 - beta2) * gi * gi;
                *w -= c.step_size * *m / (v.sqrt() / c.bc2_sqrt + eps);
            }
        }
        OptimizerKind::Adagrad { eps } => {
            let s1 = &mut s1[..w.len()];
            for ((w, &g), acc) in w.iter_mut().zip(g).zip(s1) {
                let gi = grad(g, *w);
                *acc += gi * gi;
                *w -= c.lr * gi / (acc.sqrt() + eps);
            }
        }
        OptimizerKind::Sgd => {
            for (w, &g) in w.iter_mut().zip(g) {
                *w -= c.lr * grad(g, *w);
            }
        }
    }
}

/// Settings for the parameters in one scope (torch's parameter groups): they train at
/// `lr_scale` times the rate of the step (so schedules and plateau cuts move every group
/// together), with decoupled (AdamW-style) `weight_decay` applied after the update.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    /// The scope: parameters named `scope` or `scope.…` ([`ParamStore::in_scope`]).
    pub scope: String,
    pub lr_scale: f32,
    pub weight_decay: f32,
}

/// Optimizer state for the dense parameters of a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct DenseOptimizer {
    pub kind: OptimizerKind,
    pub step: u64,
    /// Per parameter: first and second state slots (empty when the rule keeps none).
    pub state: Vec<(Vec<f32>, Vec<f32>)>,
    groups: Vec<ParamGroup>,
    /// Per parameter: the first group whose scope holds it.
    group_of: Vec<Option<usize>>,
}

impl DenseOptimizer {
    pub fn new(kind: OptimizerKind, store: &ParamStore) -> Self {
        let slots = kind.state_slots();
        let state: Vec<(Vec<f32>, Vec<f32>)> = store
            .iter()
            .map(|(_, p)| {
                let n = p.value.len();
                (
                    vec![0.0; if slots >= 1 { n } else { 0 }],
                    vec![0.0; if slots >= 2 { n } else { 0 }],
                )
            })
            .collect();
        DenseOptimizer {
            kind,
            step: 0,
            group_of: vec![None; state.len()],
            state,
            groups: Vec::new(),
        }
    }

    /// Assigns each parameter of `store` to the first of `groups` whose scope holds it (the
    /// rest train at the step's rate without decay). A group that holds no parameter is an
    /// error naming its scope.
    pub fn set_groups(
        &mut self,
        store: &ParamStore,
        groups: Vec<ParamGroup>,
    ) -> Result<(), String> {
        let mut group_of = vec![None; store.len()];
        for (k, grp) in groups.iter().enumerate() {
            let mut any = false;
            for id in store.in_scope(&grp.scope) {
                any = true;
                group_of[id.0].get_or_insert(k);
            }
            if !any {
                return Err(format!("no parameter is in scope `{}`", grp.scope));
            }
        }
        self.groups = groups;
        self.group_of = group_of;
        Ok(())
    }

    /// The learning rate and decoupled weight decay of parameter `i` at step rate `lr`.
    fn settings(&self, i: usize, lr: f32) -> (f32, f32) {
        match self.group_of.get(i).copied().flatten() {
            Some(k) => (lr * self.groups[k].lr_scale, self.groups[k].weight_decay),
            None => (lr, 0.0),
        }
    }

    /// Applies one step with gradients `grads` (indexed like the store) plus `l2 · w` on
    /// parameters marked `regularize`, the sum scaled by `scale` (gradient clipping).
    pub fn step(
        &mut self,
        store: &mut ParamStore,
        grads: &[Option<Tensor>],
        lr: f32,
        scale: f32,
        l2: f32,
    ) {
        self.step += 1;
        let ids: Vec<_> = store
            .iter()
            .filter(|(_, p)| p.trainable)
            .map(|(id, p)| (id, p.regularize))
            .collect();
        for (id, regularize) in ids {
            let Some(g) = &grads[id.0] else { continue };
            let (lr, decay) = self.settings(id.0, lr);
            let w = store.value_mut(id);
            let l2 = if regularize { l2 } else { 0.0 };
            let g = &g.data;
            let grad = move |g: f32, w: f32| (g + l2 * w) * scale;
            let (s1, s2) = &mut self.state[id.0];
            let kind = self.kind;
            let step = self.step;
            const CHUNK: usize = 16384;
            if w.data.len() > CHUNK {
                let s1c: Vec<&mut [f32]> = if s1.is_empty() {
                    vec![]
                } else {
                    s1.chunks_mut(CHUNK).collect()
                };
                let s2c: Vec<&mut [f32]> = if s2.is_empty() {
                    vec![]
                } else {
                    s2.chunks_mut(CHUNK).collect()
                };
                let mut s1c = s1c.into_iter();
                let mut s2c = s2c.into_iter();
                let jobs: Vec<_> = w
                    .data
                    .chunks_mut(CHUNK)
                    .zip(g.chunks(CHUNK))
                    .map(|(wc, gc)| {
                        (
                            wc,
                            gc,
                            s1c.next().unwrap_or_default(),
                            s2c.next().unwrap_or_default(),
                        )
                    })
                    .collect();
                jobs.into_par_iter()
                    .for_each(|(wc, gc, a, b)| update_rule(kind, wc, gc, a, b, lr, step, &grad));
            } else {
                update_rule(kind, &mut w.data, g, s1, s2, lr, step, &grad);
            }
            if decay > 0.0 {
                let keep = 1.0 - lr * decay;
                w.data.iter_mut().for_each(|x| *x *= keep);
            }
        }
    }
}

/// Squared global norm of the dense gradients with the `l2 · w` term on regularized
/// parameters, i.e. of what [`DenseOptimizer::step`] applies before clipping.
pub fn grad_norm_sq(store: &ParamStore, grads: &[Option<Tensor>], l2: f32) -> f64 {
    store
        .iter()
        .filter(|(_, p)| p.trainable)
        .filter_map(|(id, p)| grads[id.0].as_ref().map(|g| (p, g)))
        .map(|(p, g)| {
            let l2 = if p.regularize { l2 } else { 0.0 };
            // large tensors in parallel chunks, summed in their order (deterministic)
            const CHUNK: usize = 1 << 16;
            let parts: Vec<f64> = g
                .data
                .par_chunks(CHUNK)
                .zip(p.value.data.par_chunks(CHUNK))
                .map(|(g, w)| sum_sq(g, w, l2))
                .collect();
            parts.iter().sum::<f64>()
        })
        .sum()
}

simd_fn! {
    /// `Σ (g + l2·w)²` in f64 with eight running sums, so the loop vectorizes (one running
    /// sum would wait on every add).
    pub(crate) fn sum_sq(g: &[f32], w: &[f32], l2: f32) -> f64 {
        if l2 == 0.0 {
            // the same sum without reading the weights (finite, so 0·w adds nothing): half
            // the memory traffic for the common case
            return sum_sq_of(g);
        }
        let mut acc = [0f64; 8];
        let (gc, wc) = (g.chunks_exact(8), w.chunks_exact(8));
        let (gr, wr) = (gc.remainder(), wc.remainder());
        for (g, w) in gc.zip(wc) {
            for k in 0..8 {
                let x = (g[k] + l2 * w[k]) as f64;
                acc[k] += x * x;
            }
        }
        let tail: f64 = gr
            .iter()
            .zip(wr)
            .map(|(g, w)| ((g + l2 * w) as f64).powi(2))
            .sum();
        acc.iter().sum::<f64>() + tail
    }
}

/// `Σ g²` in f64, in the lane order of [`sum_sq`].
#[inline(always)]
pub(crate) fn sum_sq_of(g: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let gc = g.chunks_exact(8);
    let tail: f64 = gc.remainder().iter().map(|&g| (g as f64).powi(2)).sum();
    for g in gc {
        for k in 0..8 {
            let x = g[k] as f64;
            acc[k] += x * x;
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_steps_match_hand_computation() {
        // With bias correction the first Adam step moves every weight by lr·sign(g).
        let k = OptimizerKind::adam();
        let mut w = vec![1.0f32, -2.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        k.update(&mut w, &[0.5, -3.0], &mut m, &mut v, 0.1, 1);
        assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6);
        // second step, by hand
        k.update(&mut w, &[0.25, 1.0], &mut m, &mut v, 0.1, 2);
        let m0 = 0.9 * 0.05 + 0.1 * 0.25;
        let v0 = 0.999 * 0.00025 + 0.001 * 0.0625;
        let want = 0.9 - 0.1 / (1.0 - 0.81) * m0 / ((v0 / (1.0 - 0.999f32.powi(2))).sqrt() + 1e-8);
        assert!((w[0] - want).abs() < 1e-5, "{} vs {want}", w[0]);
    }

    #[test]
    fn parameter_groups_scale_the_rate_and_decay_their_scope_only() {
        let mut store = ParamStore::new();
        let enc = store
            .scope("bert")
            .add("w", Tensor::from_vec(1, 1, vec![1.0]), true, true);
        let head = store.add("head.w", Tensor::from_vec(1, 1, vec![1.0]), true, true);
        let mut opt = DenseOptimizer::new(OptimizerKind::Sgd, &store);
        let groups = vec![ParamGroup {
            scope: "bert".into(),
            lr_scale: 0.1,
            weight_decay: 0.5,
        }];
        opt.set_groups(&store, groups).unwrap();
        let grads = vec![Some(Tensor::from_vec(1, 1, vec![2.0])); 2];
        opt.step(&mut store, &grads, 0.2, 1.0, 0.0);
        // bert.w: 1 − 0.02·2 = 0.96, then decay by 1 − 0.02·0.5; head.w: 1 − 0.2·2
        assert!((store.value(enc).data[0] - 0.96 * 0.99).abs() < 1e-7);
        assert!((store.value(head).data[0] - 0.6).abs() < 1e-7);
        let none = ParamGroup {
            scope: "bart".into(),
            lr_scale: 1.0,
            weight_decay: 0.0,
        };
        let err = opt.set_groups(&store, vec![none]).unwrap_err();
        assert!(err.contains("`bart`"), "{err}");
    }

    #[test]
    fn adagrad_matches_hand_computation() {
        let k = OptimizerKind::adagrad();
        let mut w = vec![1.0f32];
        let mut acc = vec![0.0];
        k.update(&mut w, &[2.0], &mut acc, &mut [], 0.1, 1);
        k.update(&mut w, &[1.0], &mut acc, &mut [], 0.1, 2);
        let want = 1.0 - 0.1 - 0.1 * 1.0 / 5.0f32.sqrt();
        assert!((w[0] - want).abs() < 1e-6);
    }
}
