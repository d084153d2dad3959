//! Elementwise and reduction ops: sums, products, activations, scaling (by a constant or per
//! row), dropout, row sums and the sum of all entries, row stacking, the Gaussian
//! reparameterisation `mu + ε ⊙ exp(logvar / 2)` of variational models, and DIN's Dice
//! activation.

use super::{scalar_grad, CustomOp};
use crate::graph::{accumulate, Graph, NodeId, Op};
use crate::kernels::{map_inplace, sigmoid, zip_map, zip_map_inplace};
use crate::tensor::Tensor;
use crate::transformer;
use rand::Rng;

impl Graph<'_> {
    fn binary(
        &mut self,
        a: NodeId,
        b: NodeId,
        f: impl Fn(f32, f32) -> f32 + Sync,
        op: Op,
    ) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.shape(), bv.shape(), "elementwise op: shapes differ");
        let mut out = Tensor::zeros(av.rows, av.cols);
        zip_map(&mut out.data, &av.data, &bv.data, f);
        let rg = self.rg(a) || self.rg(b);
        self.push(op, out, rg)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(a, b, |x, y| x + y, Op::Add(a, b))
    }

    pub(crate) fn add_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, a: NodeId, b: NodeId) {
        if self.rg(a) {
            accumulate(&mut g[a.0], gy.clone());
        }
        if self.rg(b) {
            accumulate(&mut g[b.0], gy);
        }
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(a, b, |x, y| x * y, Op::Mul(a, b))
    }

    pub(crate) fn mul_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, a: NodeId, b: NodeId) {
        if self.rg(a) {
            let mut ga = Tensor::zeros(gy.rows, gy.cols);
            zip_map(&mut ga.data, &gy.data, &self.value(b).data, |g, v| g * v);
            accumulate(&mut g[a.0], ga);
        }
        if self.rg(b) {
            let mut gb = Tensor::zeros(gy.rows, gy.cols);
            zip_map(&mut gb.data, &gy.data, &self.value(a).data, |g, v| g * v);
            accumulate(&mut g[b.0], gb);
        }
    }

    fn unary(&mut self, x: NodeId, f: impl Fn(f32) -> f32 + Sync, op: Op) -> NodeId {
        let mut out = self.value(x).clone();
        map_inplace(&mut out.data, f);
        let rg = self.rg(x);
        self.push(op, out, rg)
    }

    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.unary(x, |v| v.max(0.0), Op::Relu(x))
    }

    pub(crate) fn relu_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
    ) {
        let mut gx = gy;
        let y = &out.data;
        zip_map_inplace(&mut gx.data, y, |g, y| if y > 0.0 { g } else { 0.0 });
        accumulate(&mut g[x.0], gx);
    }

    pub fn tanh(&mut self, x: NodeId) -> NodeId {
        self.unary(x, crate::transformer::tanh, Op::Tanh(x))
    }

    pub(crate) fn tanh_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
    ) {
        let mut gx = gy;
        zip_map_inplace(&mut gx.data, &out.data, |g, y| g * (1.0 - y * y));
        accumulate(&mut g[x.0], gx);
    }

    pub fn sigmoid(&mut self, x: NodeId) -> NodeId {
        self.unary(x, sigmoid, Op::Sigmoid(x))
    }

    pub(crate) fn sigmoid_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        out: &Tensor,
        x: NodeId,
    ) {
        let mut gx = gy;
        zip_map_inplace(&mut gx.data, &out.data, |g, y| g * y * (1.0 - y));
        accumulate(&mut g[x.0], gx);
    }

    /// The exact (erf) GELU.
    pub fn gelu(&mut self, x: NodeId) -> NodeId {
        self.unary(x, transformer::gelu, Op::Gelu(x))
    }

    pub(crate) fn gelu_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, x: NodeId) {
        let mut gx = gy;
        zip_map_inplace(&mut gx.data, &self.value(x).data, |g, v| {
            g * transformer::gelu_grad(v)
        });
        accumulate(&mut g[x.0], gx);
    }

    /// `c · x`.
    pub fn scale(&mut self, x: NodeId, c: f32) -> NodeId {
        self.unary(x, move |v| v * c, Op::Scale(x, c))
    }

    pub(crate) fn scale_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, x: NodeId, c: f32) {
        let mut gx = gy;
        map_inplace(&mut gx.data, move |v| v * c);
        accumulate(&mut g[x.0], gx);
    }

    /// Inverted dropout: in training, zero each element with probability `p` and scale the rest
    /// by `1/(1-p)`; identity in evaluation.
    pub fn dropout(&mut self, x: NodeId, p: f32, rng: &mut impl Rng) -> NodeId {
        if !self.train || p <= 0.0 {
            return x;
        }
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        let n = self.value(x).len();
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.gen::<f32>() < keep { scale } else { 0.0 })
            .collect();
        let xv = self.value(x);
        let mut out = Tensor::zeros(xv.rows, xv.cols);
        zip_map(&mut out.data, &xv.data, &mask, |a, m| a * m);
        let rg = self.rg(x);
        self.push(Op::Dropout(x, mask), out, rg)
    }

    pub(crate) fn dropout_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        mask: &[f32],
    ) {
        let mut gx = gy;
        zip_map_inplace(&mut gx.data, mask, |g, m| g * m);
        accumulate(&mut g[x.0], gx);
    }

    /// Scales each row of `x[B×N]` by `s[B×1]`.
    pub fn scale_rows(&mut self, x: NodeId, s: NodeId) -> NodeId {
        let (xv, sv) = (self.value(x), self.value(s));
        assert_eq!((sv.rows, sv.cols), (xv.rows, 1), "scale_rows: shape");
        let mut out = xv.clone();
        for (row, &k) in out.data.chunks_exact_mut(xv.cols).zip(&sv.data) {
            row.iter_mut().for_each(|v| *v *= k);
        }
        let rg = self.rg(x) || self.rg(s);
        self.push(Op::ScaleRows(x, s), out, rg)
    }

    pub(crate) fn scale_rows_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        s: NodeId,
    ) {
        let (xv, sv) = (self.value(x), self.value(s));
        let c = xv.cols;
        if self.rg(s) {
            let data = gy
                .data
                .chunks_exact(c)
                .zip(xv.data.chunks_exact(c))
                .map(|(gr, xr)| gr.iter().zip(xr).map(|(a, b)| a * b).sum())
                .collect();
            accumulate(&mut g[s.0], Tensor::from_vec(xv.rows, 1, data));
        }
        if self.rg(x) {
            let mut gx = gy;
            for (row, &k) in gx.data.chunks_exact_mut(c).zip(&sv.data) {
                row.iter_mut().for_each(|v| *v *= k);
            }
            accumulate(&mut g[x.0], gx);
        }
    }

    /// Row sums: `[B×N] → [B×1]`.
    pub fn sum_cols(&mut self, x: NodeId) -> NodeId {
        let xv = self.value(x);
        let data = xv
            .data
            .chunks_exact(xv.cols.max(1))
            .map(|r| r.iter().sum())
            .collect();
        let out = Tensor::from_vec(xv.rows, 1, data);
        let rg = self.rg(x);
        self.push(Op::SumCols(x), out, rg)
    }

    pub(crate) fn sum_cols_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, x: NodeId) {
        let xv = self.value(x);
        let mut gx = Tensor::zeros(xv.rows, xv.cols);
        for (row, &gr) in gx.data.chunks_exact_mut(xv.cols.max(1)).zip(&gy.data) {
            row.fill(gr);
        }
        accumulate(&mut g[x.0], gx);
    }
}

/// The sum of every entry, `[R×C] → [1×1]`, times `scale`.
struct SumAll {
    scale: f32,
}

impl CustomOp for SumAll {
    fn name(&self) -> &'static str {
        "sum_all"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let s: f64 = inputs[0].data.iter().map(|&v| v as f64).sum();
        Tensor::from_vec(1, 1, vec![(s * self.scale as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let x = inputs[0];
        let g = scalar_grad(grad) * self.scale;
        vec![needs[0].then(|| Tensor::from_vec(x.rows, x.cols, vec![g; x.len()]))]
    }
}

/// `mu + eps ⊙ exp(logvar / 2)`, keeping `eps ⊙ exp(logvar / 2)` for the backward pass.
struct Reparameterize {
    eps: Vec<f32>,
    noise: Vec<f32>,
}

impl CustomOp for Reparameterize {
    fn name(&self) -> &'static str {
        "reparameterize"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (mu, lv) = (inputs[0], inputs[1]);
        assert_eq!(
            mu.shape(),
            lv.shape(),
            "reparameterize: mu and logvar shapes differ"
        );
        assert_eq!(self.eps.len(), mu.len(), "reparameterize: one ε per entry");
        self.noise = lv
            .data
            .iter()
            .zip(&self.eps)
            .map(|(&l, &e)| e * (0.5 * l).exp())
            .collect();
        let data = mu
            .data
            .iter()
            .zip(&self.noise)
            .map(|(m, n)| m + n)
            .collect();
        Tensor::from_vec(mu.rows, mu.cols, data)
    }

    fn backward(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let glv = needs[1].then(|| {
            let data = grad
                .data
                .iter()
                .zip(&self.noise)
                .map(|(g, n)| 0.5 * g * n)
                .collect();
            Tensor::from_vec(grad.rows, grad.cols, data)
        });
        vec![needs[0].then(|| grad.clone()), glv]
    }
}

/// Row-wise stacking `[A; B; …]` of nodes with equal widths.
struct ConcatRows {
    rows: Vec<usize>,
}

impl CustomOp for ConcatRows {
    fn name(&self) -> &'static str {
        "concat_rows"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let cols = inputs[0].cols;
        assert!(
            inputs.iter().all(|t| t.cols == cols),
            "concat_rows: widths differ"
        );
        self.rows = inputs.iter().map(|t| t.rows).collect();
        let mut data = Vec::with_capacity(self.rows.iter().sum::<usize>() * cols);
        for t in inputs {
            data.extend_from_slice(&t.data);
        }
        Tensor::from_vec(self.rows.iter().sum(), cols, data)
    }

    fn backward(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let cols = grad.cols;
        let mut start = 0;
        self.rows
            .iter()
            .zip(needs)
            .map(|(&r, &need)| {
                let part = need.then(|| {
                    Tensor::from_vec(
                        r,
                        cols,
                        grad.data[start * cols..(start + r) * cols].to_vec(),
                    )
                });
                start += r;
                part
            })
            .collect()
    }
}

impl Graph<'_> {
    /// `[parts[0]; parts[1]; …]`: the parts stacked by rows (equal widths).
    pub fn concat_rows(&mut self, parts: &[NodeId]) -> NodeId {
        self.custom(ConcatRows { rows: Vec::new() }, parts)
    }

    /// The sum of all entries of `x`, as a `[1×1]` node.
    pub fn sum_all(&mut self, x: NodeId) -> NodeId {
        self.custom(SumAll { scale: 1.0 }, &[x])
    }

    /// The mean of all entries of `x`, as a `[1×1]` node.
    pub fn mean_all(&mut self, x: NodeId) -> NodeId {
        let n = self.value(x).len().max(1);
        self.custom(
            SumAll {
                scale: 1.0 / n as f32,
            },
            &[x],
        )
    }

    /// `mu + eps ⊙ exp(logvar / 2)` with the standard-normal (or scaled) draws `eps` given by
    /// the caller, so the noise is reproducible from the caller's generator.
    pub fn reparameterize(&mut self, mu: NodeId, logvar: NodeId, eps: Vec<f32>) -> NodeId {
        let op = Reparameterize {
            eps,
            noise: Vec::new(),
        };
        self.custom(op, &[mu, logvar])
    }
}

/// DIN's Dice, `x · (α + (1 − α) σ(x̂))` with `x̂` the batch-normalised `x`: inputs `x`, `x̂`
/// (`[N × H]`) and `α` (`[1 × H]`).
struct Dice;

impl CustomOp for Dice {
    fn name(&self) -> &'static str {
        "dice"
    }
    fn forward(&mut self, v: &[&Tensor]) -> Tensor {
        let (x, xn, alpha) = (v[0], v[1], &v[2].data);
        let mut out = Tensor::zeros(x.rows, x.cols);
        for ((o, xr), nr) in out
            .data
            .chunks_exact_mut(x.cols)
            .zip(x.data.chunks_exact(x.cols))
            .zip(xn.data.chunks_exact(x.cols))
        {
            for j in 0..x.cols {
                let p = sigmoid(nr[j]);
                o[j] = xr[j] * (alpha[j] + (1.0 - alpha[j]) * p);
            }
        }
        out
    }
    fn backward(
        &self,
        v: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (x, xn, alpha) = (v[0], v[1], &v[2].data);
        let c = x.cols;
        let mut gx = Tensor::zeros(x.rows, c);
        let mut gn = Tensor::zeros(x.rows, c);
        let mut ga = vec![0.0f32; c];
        for r in 0..x.rows {
            let span = r * c..(r + 1) * c;
            let (xr, nr, gr) = (
                &x.data[span.clone()],
                &xn.data[span.clone()],
                &g.data[span.clone()],
            );
            let (gxr, gnr) = (&mut gx.data[span.clone()], &mut gn.data[span]);
            for j in 0..c {
                let p = sigmoid(nr[j]);
                gxr[j] = gr[j] * (alpha[j] + (1.0 - alpha[j]) * p);
                gnr[j] = gr[j] * xr[j] * (1.0 - alpha[j]) * p * (1.0 - p);
                ga[j] += gr[j] * xr[j] * (1.0 - p);
            }
        }
        vec![
            needs[0].then_some(gx),
            needs[1].then_some(gn),
            needs[2].then(|| Tensor::from_vec(1, c, ga)),
        ]
    }
}

impl Graph<'_> {
    /// Dice (Zhou et al. 2018, FuxiCTR's `Dice`): `x · (α + (1 − α) σ(x̂))`, where `x̂` is `x`
    /// batch-normalised by the caller (no affine part) and `α` (`[1 × H]`) is learned.
    pub fn dice(&mut self, x: NodeId, normalized: NodeId, alpha: NodeId) -> NodeId {
        let (xv, nv, av) = (self.value(x), self.value(normalized), self.value(alpha));
        assert!(
            xv.shape() == nv.shape() && av.shape() == (1, xv.cols),
            "dice: x {:?}, normalised {:?}, alpha {:?}",
            xv.shape(),
            nv.shape(),
            av.shape()
        );
        self.custom(Dice, &[x, normalized, alpha])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Graph;
    use crate::ops::test_support::{check, rand_input};
    use crate::tensor::Tensor;
    use crate::testing::check_gradients;
    use crate::{init, ParamStore};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn linear_tanh_sigmoid_sum() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 4, 3), true, true);
        let b = s.add("b", init::normal(&mut rng, 1, 3, 0.5), true, false);
        check(s, rand_input(&mut rng, 5, 4), |g, x| {
            let h = g.linear(x, w, Some(b));
            let t = g.tanh(h);
            let sg = g.sigmoid(t);
            g.sum_cols(sg)
        });
    }

    #[test]
    fn relu_mlp() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::xavier_normal(&mut rng, 4, 6), true, true);
        let w2 = s.add("w2", init::xavier_normal(&mut rng, 6, 1), true, true);
        check(s, rand_input(&mut rng, 6, 4), |g, x| {
            let h = g.linear(x, w1, None);
            let r = g.relu(h);
            g.linear(r, w2, None)
        });
    }

    #[test]
    fn dropout_scales_kept_units_and_is_identity_in_eval() {
        let mut rng = StdRng::seed_from_u64(7);
        let store = ParamStore::new();
        let x = Tensor::from_vec(1, 10_000, vec![1.0; 10_000]);
        let mut g = Graph::new(&store, true);
        let xi = g.input(x.clone(), true);
        let y = g.dropout(xi, 0.25, &mut rng);
        let v = g.value(y);
        let kept = v.data.iter().filter(|&&a| a > 0.0).count() as f32 / 10_000.0;
        assert!((kept - 0.75).abs() < 0.02);
        assert!(v
            .data
            .iter()
            .all(|&a| a == 0.0 || (a - 1.0 / 0.75).abs() < 1e-6));
        let mut ge = Graph::new(&store, false);
        let xe = ge.input(x, false);
        assert_eq!(ge.dropout(xe, 0.25, &mut rng), xe);
    }

    #[test]
    fn reparameterize_and_means_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(5);
        let mu = init::normal(&mut rng, 3, 4, 1.0);
        let lv = init::normal(&mut rng, 3, 4, 0.5);
        let eps = init::normal(&mut rng, 3, 4, 1.0).data;
        check_gradients(&ParamStore::new(), &[mu, lv], |g, x| {
            let z = g.reparameterize(x[0], x[1], eps.clone());
            let t = g.tanh(z);
            let sq = g.mul(t, z);
            g.mean_all(sq)
        })
        .unwrap();
    }

    #[test]
    fn concat_rows_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(6);
        let a = init::normal(&mut rng, 2, 3, 1.0);
        let b = init::normal(&mut rng, 1, 3, 1.0);
        let w = init::normal(&mut rng, 3, 3, 1.0);
        check_gradients(&ParamStore::new(), &[a, b], |g, x| {
            let c = g.concat_rows(&[x[0], x[1]]);
            let wn = g.input(w.clone(), false);
            let m = g.mul(c, wn);
            let t = g.tanh(m);
            g.sum_all(t)
        })
        .unwrap();
    }

    #[test]
    fn zero_noise_returns_mu() {
        let store = ParamStore::new();
        let mut g = crate::Graph::new(&store, true);
        let mu = g.input(crate::Tensor::from_vec(1, 2, vec![0.5, -1.0]), false);
        let lv = g.input(crate::Tensor::from_vec(1, 2, vec![3.0, 2.0]), false);
        let z = g.reparameterize(mu, lv, vec![0.0, 0.0]);
        assert_eq!(g.value(z).data, vec![0.5, -1.0]);
        let s = g.sum_all(z);
        assert_eq!(g.value(s).data, vec![-0.5]);
    }

    #[test]
    fn dice_on_a_hand_case_and_against_finite_differences() {
        // x = 2, x̂ = 0 (σ = ½), α = 0.2: 2 · (0.2 + 0.8 · 0.5) = 1.2; x = −1, x̂ = ln 3 (σ = ¾),
        // α = 0.5: −1 · (0.5 + 0.5 · 0.75) = −0.875
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let x = g.input(Tensor::from_vec(1, 2, vec![2.0, -1.0]), false);
        let n = g.input(Tensor::from_vec(1, 2, vec![0.0, 3f32.ln()]), false);
        let a = g.input(Tensor::from_vec(1, 2, vec![0.2, 0.5]), false);
        let y = g.dice(x, n, a);
        let v = &g.value(y).data;
        assert!(
            (v[0] - 1.2).abs() < 1e-6 && (v[1] + 0.875).abs() < 1e-6,
            "{v:?}"
        );

        let mut rng = StdRng::seed_from_u64(8);
        let xs = init::normal(&mut rng, 4, 3, 1.0);
        let ns = init::normal(&mut rng, 4, 3, 1.0);
        let al = init::normal(&mut rng, 1, 3, 0.5);
        check_gradients(&ParamStore::new(), &[xs, ns, al], |g, v| {
            let d = g.dice(v[0], v[1], v[2]);
            let t = g.tanh(d);
            g.sum_all(t)
        })
        .unwrap();
    }
}
