//! WGAN-GP's gradient penalty (Gulrajani et al., 2017) for a one-hidden-layer ReLU network
//! with a sigmoid output, `D(x) = σ(relu(x W₁ + b₁) · w₂ + b₂)` — AdvKT's discriminator head.
//! PyTorch computes it with a double backward pass (`autograd.grad(create_graph=True)`); the
//! tape has none, so the op writes the input gradient in closed form,
//!
//! ```text
//! g(x) = ∂D/∂x = s(1 − s) · W₁ (m ⊙ w₂),   s = D(x),  m = 1[x W₁ + b₁ > 0]
//! GP   = mean_i (‖g(x_i)‖ − 1)²
//! ```
//!
//! and differentiates that by hand (the ReLU mask is piecewise constant, so it passes no
//! gradient to the pre-activation through `m`).

use super::{scalar_grad, CustomOp};
use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;

impl Graph<'_> {
    /// `mean_i (‖∇ₓD(x_i)‖ − 1)²` over the rows of `x` (`[n × in]`), for `D` with `w1`
    /// `[in × hidden]`, `b1` `[1 × hidden]`, `w2` `[hidden × 1]`, `b2` `[1 × 1]`.
    pub fn gradient_penalty(
        &mut self,
        x: NodeId,
        w1: NodeId,
        b1: NodeId,
        w2: NodeId,
        b2: NodeId,
    ) -> NodeId {
        self.custom(GradientPenalty, &[x, w1, b1, w2, b2])
    }
}

struct GradientPenalty;

/// One row's forward quantities.
struct Row {
    pre: Vec<f32>,
    s: f32,
    /// `W₁ (m ⊙ w₂)`
    q: Vec<f32>,
}

fn row_forward(x: &[f32], w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: f32) -> Row {
    let hidden = w1.cols;
    let mut pre = b1.data.clone();
    for (&xi, wrow) in x.iter().zip(w1.data.chunks_exact(hidden)) {
        for (p, &w) in pre.iter_mut().zip(wrow) {
            *p += xi * w;
        }
    }
    let z: f32 = b2
        + pre
            .iter()
            .zip(&w2.data)
            .map(|(&p, &w)| p.max(0.0) * w)
            .sum::<f32>();
    let s = 1.0 / (1.0 + (-z).exp());
    let q = w1
        .data
        .chunks_exact(hidden)
        .map(|wrow| {
            wrow.iter()
                .zip(&pre)
                .zip(&w2.data)
                .map(|((&w, &p), &u)| if p > 0.0 { w * u } else { 0.0 })
                .sum()
        })
        .collect();
    Row { pre, s, q }
}

impl CustomOp for GradientPenalty {
    fn name(&self) -> &'static str {
        "gradient_penalty"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (x, w1, b1, w2, b2) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
        assert_eq!(x.cols, w1.rows, "gradient_penalty: input width");
        let total: f64 = (0..x.rows)
            .map(|i| {
                let r = row_forward(x.row(i), w1, b1, w2, b2.data[0]);
                let c = r.s * (1.0 - r.s);
                let norm = (c as f64) * r.q.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                (norm - 1.0).powi(2)
            })
            .sum();
        Tensor::from_vec(1, 1, vec![(total / x.rows.max(1) as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (x, w1, b1, w2, b2) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
        let (n, hidden) = (x.rows, w1.cols);
        let scale = scalar_grad(grad) / n.max(1) as f32;
        let mut dx = Tensor::zeros(x.rows, x.cols);
        let mut dw1 = Tensor::zeros(w1.rows, w1.cols);
        let mut db1 = Tensor::zeros(1, hidden);
        let mut dw2 = Tensor::zeros(hidden, 1);
        let mut db2 = Tensor::zeros(1, 1);
        for i in 0..n {
            let xi = x.row(i);
            let r = row_forward(xi, w1, b1, w2, b2.data[0]);
            let c = r.s * (1.0 - r.s);
            let qn = r.q.iter().map(|v| v * v).sum::<f32>().sqrt();
            let norm = c * qn;
            if qn == 0.0 {
                // g = 0: the penalty is 1 and flat in every direction the mask allows
                continue;
            }
            // dGP/dg = 2(‖g‖ − 1) g/‖g‖ with g = c q, so g/‖g‖ = q/‖q‖: written without
            // dividing by c, which underflows to 0 where the sigmoid saturates
            let k = scale * 2.0 * (norm - 1.0) / qn;
            let dg: Vec<f32> = r.q.iter().map(|&q| k * q).collect();
            // through c = s(1 − s): dc = dg·q; through q = W₁ u: dq = c dg
            let dc: f32 = dg.iter().zip(&r.q).map(|(a, b)| a * b).sum();
            let dq: Vec<f32> = dg.iter().map(|&g| c * g).collect();
            // u = m ⊙ w₂; dW₁ += dq uᵀ; du = W₁ᵀ dq
            let mut du = vec![0.0f32; hidden];
            for (a, (wrow, dwrow)) in w1
                .data
                .chunks_exact(hidden)
                .zip(dw1.data.chunks_exact_mut(hidden))
                .enumerate()
            {
                for o in 0..hidden {
                    if r.pre[o] > 0.0 {
                        dwrow[o] += dq[a] * w2.data[o];
                        du[o] += wrow[o] * dq[a];
                    }
                }
            }
            // dz from dc = (1 − 2s) ds, ds = s(1 − s) dz
            let dz = dc * (1.0 - 2.0 * r.s) * c;
            db2.data[0] += dz;
            let mut dpre = vec![0.0f32; hidden];
            for o in 0..hidden {
                if r.pre[o] > 0.0 {
                    dw2.data[o] += du[o] + dz * r.pre[o];
                    dpre[o] = dz * w2.data[o];
                }
            }
            for (o, d) in db1.data.iter_mut().zip(&dpre) {
                *o += d;
            }
            let dxi = &mut dx.data[i * x.cols..(i + 1) * x.cols];
            for (a, (wrow, dwrow)) in w1
                .data
                .chunks_exact(hidden)
                .zip(dw1.data.chunks_exact_mut(hidden))
                .enumerate()
            {
                for o in 0..hidden {
                    dwrow[o] += xi[a] * dpre[o];
                    dxi[a] += wrow[o] * dpre[o];
                }
            }
        }
        super::wanted([dx, dw1, db1, dw2, db2], needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use crate::params::ParamStore;
    use crate::testing::check_gradients;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_penalty_reads_the_input_gradient_of_the_head() {
        // D's input gradient by central differences, then the penalty by hand
        let mut rng = StdRng::seed_from_u64(3);
        let (w1, b1) = (
            init::normal(&mut rng, 3, 4, 1.0),
            init::normal(&mut rng, 1, 4, 0.5),
        );
        let (w2, b2) = (
            init::normal(&mut rng, 4, 1, 1.0),
            Tensor::from_vec(1, 1, vec![0.2]),
        );
        let x = init::normal(&mut rng, 2, 3, 1.0);
        let d = |x: &[f32]| row_forward(x, &w1, &b1, &w2, 0.2).s as f64;
        let mut want = 0.0;
        for i in 0..2 {
            let mut sq = 0.0;
            for a in 0..3 {
                let (mut up, mut down) = (x.row(i).to_vec(), x.row(i).to_vec());
                up[a] += 1e-3;
                down[a] -= 1e-3;
                sq += ((d(&up) - d(&down)) / 2e-3).powi(2);
            }
            want += (sq.sqrt() - 1.0).powi(2) / 2.0;
        }
        let got = GradientPenalty.forward(&[&x, &w1, &b1, &w2, &b2]).data[0] as f64;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn a_saturated_head_gives_finite_gradients() {
        // s = σ(≈ 200) rounds to 1, so s(1 − s) = 0: the penalty is 1 and its gradient finite
        let w1 = Tensor::from_vec(1, 1, vec![1.0]);
        let (b1, w2) = (Tensor::zeros(1, 1), Tensor::from_vec(1, 1, vec![100.0]));
        let b2 = Tensor::zeros(1, 1);
        let x = Tensor::from_vec(1, 1, vec![2.0]);
        let inputs = [&x, &w1, &b1, &w2, &b2];
        let out = GradientPenalty.forward(&inputs);
        assert_eq!(out.data[0], 1.0);
        let grads = GradientPenalty.backward(
            &inputs,
            &out,
            &Tensor::from_vec(1, 1, vec![1.0]),
            &[true; 5],
        );
        for g in grads.into_iter().flatten() {
            assert!(g.data.iter().all(|v| v.is_finite()), "{:?}", g.data);
        }
    }

    #[test]
    fn gradient_penalty_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::normal(&mut rng, 3, 5, 1.0), true, false);
        let b1 = s.add("b1", init::normal(&mut rng, 1, 5, 0.5), true, false);
        let w2 = s.add("w2", init::normal(&mut rng, 5, 1, 1.5), true, false);
        let b2 = s.add("b2", Tensor::from_vec(1, 1, vec![0.3]), true, false);
        let x = init::normal(&mut rng, 4, 3, 1.0);
        check_gradients(&s, &[x], |g, x| {
            let p = [w1, b1, w2, b2].map(|id| g.param(id));
            g.gradient_penalty(x[0], p[0], p[1], p[2], p[3])
        })
        .unwrap();
    }
}
