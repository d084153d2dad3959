//! Linear layers: `x · w + b` with a fused activation, a broadcast bias, DCNv2's cross layer
//! and the product `a · bᵀ` of two nodes.

use crate::graph::{accumulate, Activation, Graph, NodeId, Op};
use crate::kernels::{col_sums_into, map_inplace, matmul, zip_map, zip_map_inplace};
use crate::params::ParamId;
use crate::tensor::Tensor;
use rayon::prelude::*;

impl Graph<'_> {
    /// DCNv2's cross layer `x0 ⊙ (xl · w + b) + xl` as one node (saves three full-size
    /// intermediates per layer against separate matmul/mul/add nodes).
    pub fn cross(&mut self, x0: NodeId, xl: NodeId, w: ParamId, b: ParamId) -> NodeId {
        let wn = self.param(w);
        let bn = self.param(b);
        let (xv, wv, bv) = (self.value(xl), self.value(wn), self.value(bn));
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        assert_eq!(
            (wv.rows, n, bv.cols),
            (k, k, k),
            "cross: weight must be square over the input width"
        );
        assert_eq!(
            self.value(x0).shape(),
            (m, k),
            "cross: x0 and xl shapes differ"
        );
        let mut h = vec![0.0f32; m * n];
        h.chunks_exact_mut(n)
            .for_each(|row| row.copy_from_slice(&bv.data));
        matmul(&mut h, &xv.data, &wv.data, m, n, k, false, false, true);
        let mut out = Tensor::zeros(m, n);
        let (x0v, xlv) = (&self.value(x0).data, &self.value(xl).data);
        {
            out.data
                .par_chunks_mut(4096)
                .zip(h.par_chunks(4096))
                .enumerate()
                .for_each(|(c, (o, hc))| {
                    let base = c * 4096;
                    for i in 0..o.len() {
                        o[i] = x0v[base + i] * hc[i] + xlv[base + i];
                    }
                });
        }
        let rg = self.rg(x0) || self.rg(xl) || self.rg(wn) || self.rg(bn);
        self.push(
            Op::Cross {
                x0,
                xl,
                w: wn,
                b: bn,
                h,
            },
            out,
            rg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cross_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x0: NodeId,
        xl: NodeId,
        w: NodeId,
        b: NodeId,
        h: &[f32],
    ) {
        let (x0v, xlv, wv) = (self.value(x0), self.value(xl), self.value(w));
        let (m, k) = (xlv.rows, xlv.cols);
        let mut gz = Tensor::zeros(m, k);
        zip_map(&mut gz.data, &gy.data, &x0v.data, |g, x| g * x);
        if self.rg(w) {
            let mut gw = Tensor::zeros(k, k);
            matmul(
                &mut gw.data,
                &xlv.data,
                &gz.data,
                k,
                k,
                m,
                true,
                false,
                false,
            );
            accumulate(&mut g[w.0], gw);
        }
        if self.rg(b) {
            let mut gb = Tensor::zeros(1, k);
            col_sums_into(&mut gb.data, &gz.data, k);
            accumulate(&mut g[b.0], gb);
        }
        if self.rg(xl) {
            let mut gx = gy.clone();
            matmul(&mut gx.data, &gz.data, &wv.data, m, k, k, false, true, true);
            accumulate(&mut g[xl.0], gx);
        }
        if self.rg(x0) {
            let mut g0 = gy;
            zip_map_inplace(&mut g0.data, h, |g, hv| g * hv);
            accumulate(&mut g[x0.0], g0);
        }
    }

    /// `x[B×N] + b[1×N]` broadcast over rows.
    pub fn add_bias(&mut self, x: NodeId, b: NodeId) -> NodeId {
        let (xv, bv) = (self.value(x), self.value(b));
        assert_eq!((bv.rows, bv.cols), (1, xv.cols), "add_bias: shape");
        let mut out = xv.clone();
        for row in out.data.chunks_exact_mut(out.cols) {
            row.iter_mut().zip(&bv.data).for_each(|(o, b)| *o += b);
        }
        let rg = self.rg(x) || self.rg(b);
        self.push(Op::AddBias(x, b), out, rg)
    }

    pub(crate) fn add_bias_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        bias: NodeId,
    ) {
        if self.rg(bias) {
            let mut gb = Tensor::zeros(1, gy.cols);
            col_sums_into(&mut gb.data, &gy.data, gy.cols);
            accumulate(&mut g[bias.0], gb);
        }
        if self.rg(x) {
            accumulate(&mut g[x.0], gy);
        }
    }

    /// `x · w + b` (bias optional).
    pub fn linear(&mut self, x: NodeId, w: ParamId, b: Option<ParamId>) -> NodeId {
        self.dense(x, w, b, Activation::Linear)
    }

    /// `act(x · w + b)` as one fused node.
    pub fn dense(&mut self, x: NodeId, w: ParamId, b: Option<ParamId>, act: Activation) -> NodeId {
        let wn = self.param(w);
        let bn = b.map(|b| self.param(b));
        let (xv, wv) = (self.value(x), self.value(wn));
        assert_eq!(
            xv.cols, wv.rows,
            "dense: {}x{} · {}x{}",
            xv.rows, xv.cols, wv.rows, wv.cols
        );
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        let mut out = match bn {
            Some(bn) => {
                // the bias rows initialise the output, so it needs no zeroing first
                let bv = self.value(bn);
                assert_eq!((bv.rows, bv.cols), (1, n), "dense: bias shape");
                let mut data = Vec::with_capacity(m * n);
                (0..m).for_each(|_| data.extend_from_slice(&bv.data));
                Tensor::from_vec(m, n, data)
            }
            None => Tensor::zeros(m, n),
        };
        matmul(
            &mut out.data,
            &xv.data,
            &wv.data,
            m,
            n,
            k,
            false,
            false,
            bn.is_some(),
        );
        if act != Activation::Linear {
            map_inplace(&mut out.data, move |v| act.apply(v));
        }
        let rg = self.rg(x) || self.rg(wn) || bn.is_some_and(|b| self.rg(b));
        self.push(
            Op::Dense {
                x,
                w: wn,
                b: bn,
                act,
            },
            out,
            rg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dense_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        act: Activation,
    ) {
        let mut gz = gy;
        if act != Activation::Linear {
            zip_map_inplace(&mut gz.data, &out.data, move |g, y| {
                act.grad_from_output(g, y)
            });
        }
        let (xv, wv) = (self.value(x), self.value(w));
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        if self.rg(w) {
            let mut gw = Tensor::zeros(k, n);
            matmul(
                &mut gw.data,
                &xv.data,
                &gz.data,
                k,
                n,
                m,
                true,
                false,
                false,
            );
            accumulate(&mut g[w.0], gw);
        }
        if let Some(b) = b.filter(|b| self.rg(*b)) {
            let mut gb = Tensor::zeros(1, n);
            col_sums_into(&mut gb.data, &gz.data, n);
            accumulate(&mut g[b.0], gb);
        }
        if self.rg(x) {
            let mut gx = Tensor::zeros(m, k);
            matmul(
                &mut gx.data,
                &gz.data,
                &wv.data,
                m,
                k,
                n,
                false,
                true,
                false,
            );
            accumulate(&mut g[x.0], gx);
        }
    }

    /// `a[m×k] · b[n×k]ᵀ` for two nodes (similarity matrices).
    pub fn matmul_nt(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.cols, bv.cols, "matmul_nt: inner widths differ");
        let (m, n, k) = (av.rows, bv.rows, av.cols);
        let mut out = Tensor::zeros(m, n);
        matmul(
            &mut out.data,
            &av.data,
            &bv.data,
            m,
            n,
            k,
            false,
            true,
            false,
        );
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::MatmulNt(a, b), out, rg)
    }

    pub(crate) fn matmul_nt_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        a: NodeId,
        b: NodeId,
    ) {
        let (av, bv) = (self.value(a), self.value(b));
        let (m, n, k) = (av.rows, bv.rows, av.cols);
        if self.rg(a) {
            let mut ga = Tensor::zeros(m, k);
            matmul(
                &mut ga.data,
                &gy.data,
                &bv.data,
                m,
                k,
                n,
                false,
                false,
                false,
            );
            accumulate(&mut g[a.0], ga);
        }
        if self.rg(b) {
            let mut gb = Tensor::zeros(n, k);
            matmul(
                &mut gb.data,
                &gy.data,
                &av.data,
                n,
                k,
                m,
                true,
                false,
                false,
            );
            accumulate(&mut g[b.0], gb);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Activation;
    use crate::init;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn fused_dense_with_every_activation() {
        for act in [
            Activation::Linear,
            Activation::Relu,
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let mut rng = StdRng::seed_from_u64(11);
            let mut s = ParamStore::new();
            let w = s.add("w", init::xavier_normal(&mut rng, 5, 4), true, true);
            let b = s.add("b", init::normal(&mut rng, 1, 4, 0.5), true, false);
            let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
            check(s, rand_input(&mut rng, 6, 5), |g, x| {
                let h = g.dense(x, w, Some(b), act);
                g.dense(h, v, None, Activation::Linear)
            });
        }
    }

    #[test]
    fn fused_cross_layers_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::xavier_normal(&mut rng, 4, 4), true, true);
        let b1 = s.add("b1", init::normal(&mut rng, 1, 4, 0.3), true, false);
        let w2 = s.add("w2", init::xavier_normal(&mut rng, 4, 4), true, true);
        let b2 = s.add("b2", init::normal(&mut rng, 1, 4, 0.3), true, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
        check(s, rand_input(&mut rng, 5, 4), |g, x0| {
            let x1 = g.cross(x0, x0, w1, b1);
            let x2 = g.cross(x0, x1, w2, b2);
            g.linear(x2, v, None)
        });
    }
}
