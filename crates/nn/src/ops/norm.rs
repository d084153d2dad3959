//! Normalisations: batch norm (and its folded form for scoring), layer norm with an optional
//! residual, and the row-wise softmax and L2 normalisation.

use crate::graph::{accumulate, Activation, Graph, NodeId, Op, StateUpdate};
use crate::kernels::{self, sigmoid};
use crate::params::ParamId;
use crate::tensor::Tensor;
use crate::transformer;
use rayon::prelude::*;

/// A batch norm's running statistics and their update rule.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormStats {
    pub running_mean: ParamId,
    pub running_var: ParamId,
    pub eps: f32,
    /// Weight of the batch's statistics in the running estimate.
    pub momentum: f32,
}

impl Graph<'_> {
    /// Batch normalization followed by `act`. When scoring ([`Graph::inference`]) this is one
    /// parallel pass `act(x·scale + shift)` with the running statistics folded into
    /// `scale`/`shift`; otherwise a `batch_norm` node and an activation node.
    pub fn batch_norm_act(
        &mut self,
        x: NodeId,
        gamma: ParamId,
        beta: ParamId,
        running_mean: ParamId,
        running_var: ParamId,
        act: Activation,
    ) -> NodeId {
        if !self.no_grad {
            let h = self.batch_norm(x, gamma, beta, running_mean, running_var);
            return match act {
                Activation::Linear => h,
                Activation::Relu => self.relu(h),
                Activation::Tanh => self.tanh(h),
                Activation::Sigmoid => self.sigmoid(h),
            };
        }
        const EPS: f32 = 1e-5;
        let p = self.params;
        let (g, b) = (&p.value(gamma).data, &p.value(beta).data);
        let (mean, var) = (&p.value(running_mean).data, &p.value(running_var).data);
        let scale: Vec<f32> = g
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + EPS).sqrt())
            .collect();
        let shift: Vec<f32> = b
            .iter()
            .zip(mean.iter().zip(&scale))
            .map(|(b, (m, s))| b - m * s)
            .collect();
        let xv = self.value(x);
        let (rows, c) = xv.shape();
        let mut out = Tensor::zeros(rows, c);
        // one loop per activation, so that each is vectorised (a match per element is not)
        match act {
            Activation::Linear => affine_rows(&mut out.data, &xv.data, &scale, &shift, |v| v),
            Activation::Relu => {
                affine_rows(&mut out.data, &xv.data, &scale, &shift, |v| v.max(0.0))
            }
            Activation::Tanh => affine_rows(&mut out.data, &xv.data, &scale, &shift, f32::tanh),
            Activation::Sigmoid => affine_rows(&mut out.data, &xv.data, &scale, &shift, sigmoid),
        }
        self.push(Op::Input, out, false)
    }

    /// Batch normalization over the rows (PyTorch's BatchNorm1d: biased variance to normalize,
    /// unbiased variance into the running estimate, momentum 0.1, eps 1e-5).
    pub fn batch_norm(
        &mut self,
        x: NodeId,
        gamma: ParamId,
        beta: ParamId,
        running_mean: ParamId,
        running_var: ParamId,
    ) -> NodeId {
        let stats = BatchNormStats {
            running_mean,
            running_var,
            eps: 1e-5,
            momentum: 0.1,
        };
        self.batch_norm_with(x, gamma, beta, stats)
    }

    /// [`Graph::batch_norm`] with its own eps and momentum (Dice's normalisation uses 1e-9 and
    /// 0.01).
    pub fn batch_norm_with(
        &mut self,
        x: NodeId,
        gamma: ParamId,
        beta: ParamId,
        stats: BatchNormStats,
    ) -> NodeId {
        let BatchNormStats {
            running_mean,
            running_var,
            eps,
            momentum,
        } = stats;
        let (b, c) = self.value(x).shape();
        let (mean, var) = if self.train {
            let xv = self.value(x);
            let mut mean = vec![0.0f64; c];
            for row in xv.data.chunks_exact(c) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += *v as f64);
            }
            mean.iter_mut().for_each(|m| *m /= b as f64);
            let mut var = vec![0.0f64; c];
            for row in xv.data.chunks_exact(c) {
                for j in 0..c {
                    let d = row[j] as f64 - mean[j];
                    var[j] += d * d;
                }
            }
            let biased: Vec<f32> = var.iter().map(|v| (v / b as f64) as f32).collect();
            let unbiased: Vec<f32> = var
                .iter()
                .map(|v| (v / (b.max(2) - 1) as f64) as f32)
                .collect();
            let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            self.state_updates.push(StateUpdate {
                param: running_mean,
                batch_value: mean.clone(),
                momentum,
            });
            self.state_updates.push(StateUpdate {
                param: running_var,
                batch_value: unbiased,
                momentum,
            });
            (mean, biased)
        } else {
            (
                self.params.value(running_mean).data.clone(),
                self.params.value(running_var).data.clone(),
            )
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let g = self.param(gamma);
        let bt = self.param(beta);
        let xv = self.value(x);
        let mut xhat = vec![0.0f32; b * c];
        for (xr, hr) in xv.data.chunks_exact(c).zip(xhat.chunks_exact_mut(c)) {
            for j in 0..c {
                hr[j] = (xr[j] - mean[j]) * inv_std[j];
            }
        }
        let (gv, bv) = (self.value(g), self.value(bt));
        let mut out = Tensor::zeros(b, c);
        for (orow, hr) in out.data.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
            for j in 0..c {
                orow[j] = gv.data[j] * hr[j] + bv.data[j];
            }
        }
        let rg = self.rg(x) || self.rg(g) || self.rg(bt);
        let train = self.train;
        self.push(
            Op::BatchNorm {
                x,
                gamma: g,
                beta: bt,
                xhat,
                inv_std,
                train,
            },
            out,
            rg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn batch_norm_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        xhat: &[f32],
        inv_std: &[f32],
        train: bool,
    ) {
        let (b, c) = (gy.rows, gy.cols);
        let gv = self.value(gamma);
        let mut sum_g = vec![0.0f32; c];
        let mut sum_gx = vec![0.0f32; c];
        for (gr, hr) in gy.data.chunks_exact(c).zip(xhat.chunks_exact(c)) {
            for j in 0..c {
                sum_g[j] += gr[j];
                sum_gx[j] += gr[j] * hr[j];
            }
        }
        if self.rg(gamma) {
            accumulate(&mut g[gamma.0], Tensor::from_vec(1, c, sum_gx.clone()));
        }
        if self.rg(beta) {
            accumulate(&mut g[beta.0], Tensor::from_vec(1, c, sum_g.clone()));
        }
        if self.rg(x) {
            let mut gx = Tensor::zeros(b, c);
            let bf = b as f32;
            for ((xr, gr), hr) in gx
                .data
                .chunks_exact_mut(c)
                .zip(gy.data.chunks_exact(c))
                .zip(xhat.chunks_exact(c))
            {
                for j in 0..c {
                    xr[j] = if train {
                        gv.data[j] * inv_std[j] * (gr[j] - sum_g[j] / bf - hr[j] * sum_gx[j] / bf)
                    } else {
                        gv.data[j] * inv_std[j] * gr[j]
                    };
                }
            }
            accumulate(&mut g[x.0], gx);
        }
    }

    /// Layer norm over each row with learned `gamma`/`beta` (`[1×N]`).
    pub fn layer_norm(&mut self, x: NodeId, gamma: ParamId, beta: ParamId, eps: f32) -> NodeId {
        self.layer_norm_impl(x, None, gamma, beta, eps)
    }

    /// `layer_norm(x + residual)` as one node: a transformer block's "add & norm".
    pub fn add_layer_norm(
        &mut self,
        x: NodeId,
        residual: NodeId,
        gamma: ParamId,
        beta: ParamId,
        eps: f32,
    ) -> NodeId {
        self.layer_norm_impl(x, Some(residual), gamma, beta, eps)
    }

    fn layer_norm_impl(
        &mut self,
        x: NodeId,
        residual: Option<NodeId>,
        gamma: ParamId,
        beta: ParamId,
        eps: f32,
    ) -> NodeId {
        let gn = self.param(gamma);
        let bn = self.param(beta);
        let (xv, gv, bv) = (self.value(x), self.value(gn), self.value(bn));
        assert_eq!(gv.cols, xv.cols, "layer_norm: width");
        let rv = residual.map(|r| &self.value(r).data[..]);
        let (y, xhat, inv_std) =
            transformer::layer_norm_forward(&xv.data, rv, &gv.data, &bv.data, eps);
        let out = Tensor::from_vec(xv.rows, xv.cols, y);
        let rg = self.rg(x) || residual.is_some_and(|r| self.rg(r)) || self.rg(gn) || self.rg(bn);
        let (xhat, inv_std) = if self.no_grad {
            (Vec::new(), Vec::new())
        } else {
            (xhat, inv_std)
        };
        self.push(
            Op::LayerNorm {
                x,
                residual,
                gamma: gn,
                beta: bn,
                xhat,
                inv_std,
            },
            out,
            rg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_norm_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        residual: Option<NodeId>,
        gamma: NodeId,
        beta: NodeId,
        xhat: &[f32],
        inv_std: &[f32],
    ) {
        let gv = self.value(gamma);
        let (dx, dgamma, dbeta) =
            transformer::layer_norm_backward(&gy.data, xhat, inv_std, &gv.data);
        let c = gv.cols;
        if self.rg(gamma) {
            accumulate(&mut g[gamma.0], Tensor::from_vec(1, c, dgamma));
        }
        if self.rg(beta) {
            accumulate(&mut g[beta.0], Tensor::from_vec(1, c, dbeta));
        }
        let dx = Tensor::from_vec(gy.rows, c, dx);
        if let Some(r) = residual.filter(|r| self.rg(*r)) {
            accumulate(&mut g[r.0], dx.clone());
        }
        if self.rg(x) {
            accumulate(&mut g[x.0], dx);
        }
    }

    pub fn softmax_rows(&mut self, x: NodeId) -> NodeId {
        let mut out = self.value(x).clone();
        let c = out.cols;
        for row in out.data.chunks_exact_mut(c) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            row.iter_mut().for_each(|v| {
                *v = (*v - m).exp();
                s += *v;
            });
            row.iter_mut().for_each(|v| *v /= s);
        }
        let rg = self.rg(x);
        self.push(Op::SoftmaxRows(x), out, rg)
    }

    pub(crate) fn softmax_rows_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
    ) {
        let y = out;
        let mut gx = gy;
        for (gr, yr) in gx
            .data
            .chunks_exact_mut(y.cols)
            .zip(y.data.chunks_exact(y.cols))
        {
            let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
            gr.iter_mut()
                .zip(yr)
                .for_each(|(gv, yv)| *gv = yv * (*gv - dot));
        }
        accumulate(&mut g[x.0], gx);
    }

    /// Each row divided by its L2 norm (floored at 1e-12, as `torch.nn.functional.normalize`).
    pub fn l2_normalize_rows(&mut self, x: NodeId) -> NodeId {
        let mut out = self.value(x).clone();
        let c = out.cols.max(1);
        let inv_norms: Vec<f32> = out
            .data
            .chunks_exact_mut(c)
            .map(|row| {
                let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v *= inv);
                inv
            })
            .collect();
        let rg = self.rg(x);
        self.push(Op::L2NormalizeRows { x, inv_norms }, out, rg)
    }

    pub(crate) fn l2_normalize_rows_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
        inv_norms: &[f32],
    ) {
        // y = x/|x|: dx = (g − y (g·y)) / |x|
        let y = out;
        let c = y.cols.max(1);
        let mut gx = gy;
        for ((gr, yr), &inv) in gx
            .data
            .chunks_exact_mut(c)
            .zip(y.data.chunks_exact(c))
            .zip(inv_norms)
        {
            let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
            gr.iter_mut()
                .zip(yr)
                .for_each(|(gv, yv)| *gv = (*gv - yv * dot) * inv);
        }
        accumulate(&mut g[x.0], gx);
    }
}

/// `out[r][j] = f(x[r][j] · scale[j] + shift[j])` over rows of `scale.len()` columns.
fn affine_rows(
    out: &mut [f32],
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    f: impl Fn(f32) -> f32 + Sync,
) {
    let c = scale.len();
    let rows_per_task = (kernels::PARALLEL_MIN_LEN / c.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * c)
        .zip(x.par_chunks(rows_per_task * c))
        .for_each(|(o, x)| {
            for (orow, xrow) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for j in 0..c {
                    orow[j] = f(xrow[j] * scale[j] + shift[j]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use crate::graph::{Activation, Graph};
    use crate::init;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use crate::tensor::Tensor;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn batch_norm_training() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 3, 4), true, true);
        let gamma = s.add("gamma", init::normal(&mut rng, 1, 4, 1.0), true, false);
        let beta = s.add("beta", init::normal(&mut rng, 1, 4, 1.0), true, false);
        let rm = s.add("rm", Tensor::zeros(1, 4), false, false);
        let rv = s.add("rv", Tensor::from_vec(1, 4, vec![1.0; 4]), false, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
        check(s, rand_input(&mut rng, 7, 3), |g, x| {
            let h = g.linear(x, w, None);
            let n = g.batch_norm(h, gamma, beta, rm, rv);
            let t = g.tanh(n);
            g.linear(t, v, None)
        });
    }

    #[test]
    fn folded_batch_norm_for_scoring_equals_the_evaluation_graph() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut s = ParamStore::new();
        let c = 300; // wide enough for the parallel path
        let gamma = s.add("gamma", init::normal(&mut rng, 1, c, 1.0), true, false);
        let beta = s.add("beta", init::normal(&mut rng, 1, c, 1.0), true, false);
        let rm = s.add("rm", init::normal(&mut rng, 1, c, 1.0), false, false);
        let rv_data = init::normal(&mut rng, 1, c, 1.0)
            .data
            .iter()
            .map(|v| v * v + 0.1)
            .collect();
        let rv = s.add("rv", Tensor::from_vec(1, c, rv_data), false, false);
        let x = rand_input(&mut rng, 70, c);
        for act in [Activation::Relu, Activation::Tanh, Activation::Linear] {
            let mut eval = Graph::new(&s, false);
            let xi = eval.input(x.clone(), false);
            let out = eval.batch_norm_act(xi, gamma, beta, rm, rv, act);
            let mut scoring = Graph::inference(&s);
            let xs = scoring.input(x.clone(), false);
            let folded = scoring.batch_norm_act(xs, gamma, beta, rm, rv, act);
            let (a, b) = (&eval.value(out).data, &scoring.value(folded).data);
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(b) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + a.abs()),
                    "{act:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn softmax_gating_and_scale_rows() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut s = ParamStore::new();
        let wg = s.add("wg", init::xavier_normal(&mut rng, 3, 2), true, true);
        check(s, rand_input(&mut rng, 4, 3), |g, x| {
            let logits = g.linear(x, wg, None);
            let gate = g.softmax_rows(logits);
            let g0 = g.slice_cols(gate, 0, 1);
            let g1 = g.slice_cols(gate, 1, 1);
            let a = g.scale_rows(x, g0);
            let t = g.tanh(x);
            let b2 = g.scale_rows(t, g1);
            let sum = g.add(a, b2);
            g.sum_cols(sum)
        });
    }
}
