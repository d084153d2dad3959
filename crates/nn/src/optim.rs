//! Optimizers as element-wise update rules, shared by dense parameters and embedding rows, so a
//! row-wise sparse update is exactly the dense rule applied to fewer rows.

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
        match *self {
            OptimizerKind::Adam { beta1, beta2, eps } => {
                let bc1 = 1.0 - beta1.powi(step as i32);
                let bc2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt();
                let step_size = lr / bc1;
                for i in 0..w.len() {
                    let gi = g[i];
                    s1[i] = beta1 * s1[i] + (1.0 - beta1) * gi;
                    s2[i] = beta2 * s2[i] + (1.0 - beta2) * gi * gi;
                    w[i] -= step_size * s1[i] / (s2[i].sqrt() / bc2_sqrt + eps);
                }
            }
            OptimizerKind::Adagrad { eps } => {
                for i in 0..w.len() {
                    s1[i] += g[i] * g[i];
                    w[i] -= lr * g[i] / (s1[i].sqrt() + eps);
                }
            }
            OptimizerKind::Sgd => {
                for i in 0..w.len() {
                    w[i] -= lr * g[i];
                }
            }
        }
    }
}

/// Optimizer state for the dense parameters of a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct DenseOptimizer {
    pub kind: OptimizerKind,
    pub step: u64,
    /// Per parameter: first and second state slots (empty when the rule keeps none).
    pub state: Vec<(Vec<f32>, Vec<f32>)>,
}

impl DenseOptimizer {
    pub fn new(kind: OptimizerKind, store: &ParamStore) -> Self {
        let slots = kind.state_slots();
        let state = store
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
            state,
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
            let w = store.value_mut(id);
            let l2 = if regularize { l2 } else { 0.0 };
            let g: Vec<f32> = g
                .data
                .iter()
                .zip(&w.data)
                .map(|(g, w)| (g + l2 * w) * scale)
                .collect();
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
                    .for_each(|(wc, gc, a, b)| kind.update(wc, gc, a, b, lr, step));
            } else {
                kind.update(&mut w.data, &g, s1, s2, lr, step);
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
            g.data
                .iter()
                .zip(&p.value.data)
                .map(|(g, w)| ((g + l2 * w) as f64).powi(2))
                .sum::<f64>()
        })
        .sum()
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
