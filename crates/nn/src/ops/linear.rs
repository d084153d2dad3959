//! Linear layers: `x · w + b` with a fused activation, a broadcast bias, DCNv2's cross layer
//! and the product `a · bᵀ` of two nodes.

use crate::graph::{accumulate, accumulate_zip, Activation, Graph, NodeId, Op};
use crate::kernels::{
    add_in_order, map_inplace, matmul, matmul_new, par_col_sums, row_block_len, simd_fn, zip_map,
};
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
        let mut h = matmul_new(&xv.data, &wv.data, m, n, k, false, false);
        let mut out = Tensor::zeros(m, n);
        let (x0v, xlv, bias) = (&self.value(x0).data, &self.value(xl).data, &bv.data);
        // one pass: the bias into `h` (kept for the backward pass), and the layer's output
        let block = row_block_len(n);
        out.data
            .par_chunks_mut(block)
            .zip(h.par_chunks_mut(block))
            .zip(x0v.par_chunks(block).zip(xlv.par_chunks(block)))
            .for_each(|((o, h), (x0, xl))| cross_output_block(o, h, x0, xl, bias));
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
            add_product(&mut g[w.0], (k, k), &xlv.data, &gz.data, m, true, false);
        }
        if self.rg(b) {
            accumulate(
                &mut g[b.0],
                Tensor::from_vec(1, k, par_col_sums(&gz.data, k)),
            );
        }
        if self.rg(x0) {
            accumulate_zip(&mut g[x0.0], (m, k), &gy.data, h, |g, hv| g * hv);
        }
        if self.rg(xl) {
            // the residual's gradient is `gy` itself: the product is added onto it in place
            let mut gx = gy;
            matmul(&mut gx.data, &gz.data, &wv.data, m, k, k, false, true, true);
            accumulate(&mut g[xl.0], gx);
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
            let gb = par_col_sums(&gy.data, gy.cols);
            accumulate(&mut g[bias.0], Tensor::from_vec(1, gy.cols, gb));
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
        let mut out = Tensor::from_vec(m, n, matmul_new(&xv.data, &wv.data, m, n, k, false, false));
        let bias = bn.map(|bn| {
            let bv = self.value(bn);
            assert_eq!((bv.rows, bv.cols), (1, n), "dense: bias shape");
            bv.data.as_slice()
        });
        bias_act_rows(&mut out.data, bias, n, act);
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
        let want_bias = b.filter(|b| self.rg(*b));
        // the activation's derivative and the bias gradient in one pass over the output
        let bias_grad =
            act_grad_col_sums(&mut gz.data, &out.data, out.cols, act, want_bias.is_some());
        let (xv, wv) = (self.value(x), self.value(w));
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        if self.rg(w) {
            add_product(&mut g[w.0], (k, n), &xv.data, &gz.data, m, true, false);
        }
        if let (Some(b), Some(gb)) = (want_bias, bias_grad) {
            accumulate(&mut g[b.0], Tensor::from_vec(1, n, gb));
        }
        if self.rg(x) {
            add_product(&mut g[x.0], (m, k), &gz.data, &wv.data, n, false, true);
        }
    }

    /// `a[m×k] · b[n×k]ᵀ` for two nodes (similarity matrices).
    pub fn matmul_nt(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.cols, bv.cols, "matmul_nt: inner widths differ");
        let (m, n, k) = (av.rows, bv.rows, av.cols);
        // written once by the product (no zero-filling pass: this is a full item catalogue's
        // logits for the sequential models)
        let out = Tensor::from_vec(m, n, matmul_new(&av.data, &bv.data, m, n, k, false, true));
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
            add_product(&mut g[a.0], (m, k), &gy.data, &bv.data, n, false, false);
        }
        if self.rg(b) {
            add_product(&mut g[b.0], (n, k), &gy.data, &av.data, m, true, false);
        }
    }
}

simd_fn! {
    /// DCNv2's cross output on a block of rows: `h += b`, then `out = x0 ⊙ h + xl`.
    fn cross_output_block(out: &mut [f32], h: &mut [f32], x0: &[f32], xl: &[f32], bias: &[f32]) {
        let n = bias.len();
        for (((o, h), x0), xl) in out
            .chunks_exact_mut(n)
            .zip(h.chunks_exact_mut(n))
            .zip(x0.chunks_exact(n))
            .zip(xl.chunks_exact(n))
        {
            for j in 0..n {
                h[j] += bias[j];
                o[j] = x0[j] * h[j] + xl[j];
            }
        }
    }
}

/// Adds the product `op(a) · op(b)` (`shape` = `[rows × cols]`, inner size `inner`) into a
/// gradient slot: in place when the slot already holds a gradient, so neither a new buffer nor
/// a separate addition pass is needed (the sum is rounded as `accumulate` rounds it), and into
/// a buffer the product writes once otherwise.
#[allow(clippy::too_many_arguments)]
fn add_product(
    slot: &mut Option<Tensor>,
    (rows, cols): (usize, usize),
    a: &[f32],
    b: &[f32],
    inner: usize,
    trans_a: bool,
    trans_b: bool,
) {
    match slot {
        Some(acc) => {
            assert_eq!(acc.shape(), (rows, cols), "gradient shape");
            matmul(
                &mut acc.data,
                a,
                b,
                rows,
                cols,
                inner,
                trans_a,
                trans_b,
                true,
            );
        }
        None => {
            let data = matmul_new(a, b, rows, cols, inner, trans_a, trans_b);
            *slot = Some(Tensor::from_vec(rows, cols, data));
        }
    }
}

/// Turns the output gradient `g` into the pre-activation gradient in place (through the outputs
/// `y`), and returns its column sums when `col_sums` is set, in one pass. The rows go in blocks
/// fixed by the width alone, each block's sums added in block order: the same result on any
/// number of threads.
fn act_grad_col_sums(
    g: &mut [f32],
    y: &[f32],
    cols: usize,
    act: Activation,
    col_sums: bool,
) -> Option<Vec<f32>> {
    assert_eq!(g.len(), y.len(), "dense: gradient shape");
    if act == Activation::Linear && !col_sums {
        return None;
    }
    let block = row_block_len(cols);
    let partials: Vec<Vec<f32>> = g
        .par_chunks_mut(block)
        .zip(y.par_chunks(block))
        .map(|(g, y)| {
            let mut sums = vec![0.0f32; if col_sums { cols } else { 0 }];
            act_grad_block(g, y, &mut sums, cols, act);
            sums
        })
        .collect();
    col_sums.then(|| add_in_order(&partials, cols))
}

simd_fn! {
    /// [`act_grad_col_sums`] on one block of rows; `sums` is empty when no sums are wanted.
    fn act_grad_block(g: &mut [f32], y: &[f32], sums: &mut [f32], cols: usize, act: Activation) {
        for (grow, yrow) in g.chunks_exact_mut(cols).zip(y.chunks_exact(cols)) {
            match act {
                Activation::Linear => {}
                Activation::Relu => grow
                    .iter_mut()
                    .zip(yrow)
                    .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 }),
                act => grow
                    .iter_mut()
                    .zip(yrow)
                    .for_each(|(g, &y)| *g = act.grad_from_output(*g, y)),
            }
            if !sums.is_empty() {
                sums.iter_mut().zip(grow.iter()).for_each(|(s, v)| *s += v);
            }
        }
    }
}

/// `x[r][j] = act(x[r][j] + bias[j])` over row-major `x` with `cols` columns, in one pass (rows
/// split across threads when long).
fn bias_act_rows(x: &mut [f32], bias: Option<&[f32]>, cols: usize, act: Activation) {
    match (bias, act) {
        (None, Activation::Linear) => {}
        (None, act) => map_inplace(x, move |v| act.apply(v)),
        (Some(bias), act) => {
            x.par_chunks_mut(row_block_len(cols)).for_each(|block| {
                add_bias_act_block(block, bias, act);
            });
        }
    }
}

simd_fn! {
    fn add_bias_act_block(block: &mut [f32], bias: &[f32], act: Activation) {
        for row in block.chunks_exact_mut(bias.len()) {
            match act {
                Activation::Linear => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
                Activation::Relu => row.iter_mut().zip(bias).for_each(|(v, b)| *v = (*v + b).max(0.0)),
                act => row.iter_mut().zip(bias).for_each(|(v, b)| *v = act.apply(*v + b)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Activation, Graph};
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
    fn an_input_read_by_several_ops_sums_their_gradients() {
        // the products add into the input's gradient slot in place when it is already filled
        let mut rng = StdRng::seed_from_u64(13);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::xavier_normal(&mut rng, 6, 4), true, true);
        let b1 = s.add("b1", init::normal(&mut rng, 1, 4, 0.5), true, false);
        let w2 = s.add("w2", init::xavier_normal(&mut rng, 6, 1), true, true);
        let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
        check(s, rand_input(&mut rng, 5, 6), |g, x| {
            let fm = g.fm_interaction(x, 3, 2);
            let h = g.dense(x, w1, Some(b1), Activation::Relu);
            let deep = g.dense(h, v, None, Activation::Linear);
            let wide = g.linear(x, w2, None);
            let y = g.add(deep, wide);
            g.add(y, fm)
        });
    }

    #[test]
    fn dense_and_cross_gradients_do_not_depend_on_the_thread_count() {
        // enough rows for several blocks of the activation and bias-gradient passes
        let rows = 5000;
        let mut rng = StdRng::seed_from_u64(14);
        let mut s = ParamStore::new();
        let wc = s.add("wc", init::xavier_normal(&mut rng, 8, 8), true, true);
        let bc = s.add("bc", init::normal(&mut rng, 1, 8, 0.5), true, false);
        let w = s.add("w", init::xavier_normal(&mut rng, 8, 40), true, true);
        let b = s.add("b", init::normal(&mut rng, 1, 40, 0.5), true, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 40, 1), true, true);
        let x = rand_input(&mut rng, rows, 8);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut g = Graph::new(&s, true);
                let xn = g.input(x.clone(), true);
                let c = g.cross(xn, xn, wc, bc);
                let h = g.dense(c, w, Some(b), Activation::Tanh);
                let y = g.dense(h, v, None, Activation::Linear);
                let labels: Vec<f32> = (0..rows).map(|i| (i % 3 == 0) as u8 as f32).collect();
                let loss = g.bce_with_logits(y, &labels);
                let mut grads = g.backward(loss);
                let gx = grads.take(xn).unwrap().data;
                (
                    [wc, bc, w, b, v].map(|p| grads.param(p).unwrap().data.clone()),
                    gx,
                )
            })
        };
        assert_eq!(run(1), run(3));
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
