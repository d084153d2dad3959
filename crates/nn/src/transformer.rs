//! Kernels for transformer encoders over *packed* sequences: a batch is the tokens of every
//! sequence laid end to end (`[tokens × width]`), with `segments` giving each sequence's first
//! row and length. Dense layers then run on real tokens only (no padding), and attention runs
//! per sequence and head on strided views of the packed matrices.

use gemm::Parallelism;
use rayon::prelude::*;

/// One sequence of a packed batch: rows `start..start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
}

/// Segments laid end to end from row 0, one per length.
pub fn segments_from_lengths(lengths: &[usize]) -> Vec<Segment> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&len| {
            let s = Segment { start, len };
            start += len;
            s
        })
        .collect()
}

/// A matrix inside a slice: element `(r, c)` is at `off + r·rs + c·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    off: usize,
    rs: usize,
    cs: usize,
}

impl View {
    pub(crate) fn rows(off: usize, rs: usize) -> Self {
        View { off, rs, cs: 1 }
    }
    /// The transpose of a row-major view.
    pub(crate) fn t(self) -> Self {
        View {
            off: self.off,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn check(&self, len: usize, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = self.off + (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < len, "{what}: view out of bounds");
        }
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + scale · lhs[m×k] · rhs[k×n]` over strided views, on
/// one thread (callers parallelise over sequences).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_view(
    dst: &mut [f32],
    d: View,
    lhs: &[f32],
    a: View,
    rhs: &[f32],
    b: View,
    (m, n, k): (usize, usize, usize),
    scale: f32,
    accumulate: bool,
) {
    d.check(dst.len(), m, n, "gemm dst");
    a.check(lhs.len(), m, k, "gemm lhs");
    b.check(rhs.len(), k, n, "gemm rhs");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: `check` proves every strided element of each view lies inside its slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.off),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            rhs.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Splits `data` (rows of `width`) into the mutable row blocks of each segment.
pub(crate) fn split_segments<'a>(
    mut data: &'a mut [f32],
    segs: &[Segment],
    width: usize,
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(segs.len());
    let mut at = 0;
    for s in segs {
        assert_eq!(s.start, at, "segments must be laid end to end");
        let (head, tail) = data.split_at_mut(s.len * width);
        out.push(head);
        data = tail;
        at += s.len;
    }
    out
}

pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - m));
    let s: f32 = row.iter().sum();
    let inv = 1.0 / s;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// One head's probabilities `p` after its dropout `mask` (written into `buf`), or `p` itself
/// without dropout.
pub(crate) fn after_dropout<'a>(
    p: &'a [f32],
    mask: Option<&[f32]>,
    buf: &'a mut Option<Vec<f32>>,
) -> &'a [f32] {
    match (buf, mask) {
        (Some(buf), Some(m)) => {
            buf.iter_mut()
                .zip(p.iter().zip(m))
                .for_each(|(b, (a, k))| *b = a * k);
            buf
        }
        _ => p,
    }
}

/// How attention scores and probabilities are treated besides the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Divide the scores by √(head width) (the transformer's choice; AutoInt's `use_scale`).
    pub scaled: bool,
    /// Dropout on the attention probabilities in training (RecBole's and FuxiCTR's
    /// `attn_dropout_prob` / AutoInt's `net_dropout`).
    pub dropout: f32,
    /// Each token attends only to itself and the tokens before it in its segment (SASRec's
    /// left-to-right mask; with segments instead of padding, no key-padding mask is needed).
    pub causal: bool,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions {
            scaled: true,
            dropout: 0.0,
            causal: false,
        }
    }
}

impl AttentionOptions {
    /// The factor the scores are multiplied by for heads of width `head_dim`.
    pub fn score_scale(&self, head_dim: usize) -> f32 {
        if self.scaled {
            1.0 / (head_dim as f32).sqrt()
        } else {
            1.0
        }
    }
}

/// Multi-head self-attention `softmax(Q Kᵀ·scale) V` of every segment over its own tokens, with
/// `q`, `k`, `v` and `out` packed `[tokens × width]`, head `h` in columns `h·d..(h+1)·d`.
/// `drop`, when given, holds per segment an inverted-dropout mask (`0` or `1/(1−p)`) over its
/// probabilities, applied before they weight `V`. With `causal`, token `i` of a segment attends
/// to tokens `0..=i` only: the later ones get probability 0 (so the backward pass, which works
/// from the probabilities, needs nothing more). Returns the attention probabilities before
/// dropout (per segment: `heads × len × len`) for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    width: usize,
    heads: usize,
    segs: &[Segment],
    scale: f32,
    drop: Option<&[Vec<f32>]>,
    causal: bool,
) -> Vec<Vec<f32>> {
    assert!(
        width.is_multiple_of(heads),
        "attention: width not divisible by heads"
    );
    let d = width / heads;
    let chunks = split_segments(out, segs, width);
    chunks
        .into_par_iter()
        .zip(segs.par_iter())
        .enumerate()
        .map(|(i, (o, s))| {
            let n = s.len;
            let mut probs = vec![0.0f32; heads * n * n];
            let mut dropped = drop.map(|_| vec![0.0f32; n * n]);
            for h in 0..heads {
                let qkv = View::rows(s.start * width + h * d, width);
                let p = &mut probs[h * n * n..(h + 1) * n * n];
                gemm_view(
                    p,
                    View::rows(0, n),
                    q,
                    qkv,
                    k,
                    qkv.t(),
                    (n, n, d),
                    scale,
                    false,
                );
                if causal {
                    for (i, row) in p.chunks_exact_mut(n).enumerate() {
                        let (seen, later) = row.split_at_mut(i + 1);
                        softmax_in_place(seen);
                        later.fill(0.0);
                    }
                } else {
                    p.chunks_exact_mut(n).for_each(softmax_in_place);
                }
                let mask = drop.map(|m| &m[i][h * n * n..(h + 1) * n * n]);
                let weights = after_dropout(p, mask, &mut dropped);
                gemm_view(
                    o,
                    View::rows(h * d, width),
                    weights,
                    View::rows(0, n),
                    v,
                    qkv,
                    (n, d, n),
                    1.0,
                    false,
                );
            }
            probs
        })
        .collect()
}

/// One head's backward pass through `softmax → dropout → · V` of one segment: `dV = P̃ᵀ dO`
/// into `gv_s` (P̃ the probabilities `p` after the dropout `mask`, built in `dropped`), and the
/// scores' gradient into `ds`: `P ⊙ (dP − rowsum(dP ⊙ P))` with `dP = (dO Vᵀ) ⊙ mask`.
/// `global` views this head's columns of the packed `dout`/`v`, `local` the segment's own
/// rows of `gv_s`; `(n, d)` are the segment's length and the head width.
pub(crate) fn probs_backward(
    ds: &mut [f32],
    gv_s: &mut [f32],
    (p, mask, dropped): (&[f32], Option<&[f32]>, &mut Option<Vec<f32>>),
    dout: &[f32],
    v: &[f32],
    (global, local): (View, View),
    (n, d): (usize, usize),
) {
    let sq = View::rows(0, n);
    let weights = after_dropout(p, mask, dropped);
    gemm_view(
        gv_s,
        local,
        weights,
        sq.t(),
        dout,
        global,
        (n, d, n),
        1.0,
        false,
    );
    gemm_view(ds, sq, dout, global, v, global.t(), (n, n, d), 1.0, false);
    if let Some(m) = mask {
        ds.iter_mut().zip(m).for_each(|(g, k)| *g *= k);
    }
    for (dr, pr) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
        let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
        dr.iter_mut()
            .zip(pr)
            .for_each(|(g, &pv)| *g = pv * (*g - dot));
    }
}

/// Gradients of [`attention_forward`] with respect to `q`, `k` and `v` given `dout`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    probs: &[Vec<f32>],
    width: usize,
    heads: usize,
    segs: &[Segment],
    scale: f32,
    drop: Option<&[Vec<f32>]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = width / heads;
    let total = q.len();
    let (mut gq, mut gk, mut gv) = (vec![0.0; total], vec![0.0; total], vec![0.0; total]);
    let parts = split_segments(&mut gq, segs, width)
        .into_iter()
        .zip(split_segments(&mut gk, segs, width))
        .zip(split_segments(&mut gv, segs, width))
        .collect::<Vec<_>>();
    parts
        .into_par_iter()
        .zip(segs.par_iter().zip(probs.par_iter()))
        .enumerate()
        .for_each(|(i, (((gq_s, gk_s), gv_s), (s, probs)))| {
            let n = s.len;
            let mut ds = vec![0.0f32; n * n];
            let mut dropped = drop.map(|_| vec![0.0f32; n * n]);
            for h in 0..heads {
                let global = View::rows(s.start * width + h * d, width);
                let local = View::rows(h * d, width);
                let p = &probs[h * n * n..(h + 1) * n * n];
                let mask = drop.map(|m| &m[i][h * n * n..(h + 1) * n * n]);
                let sq = View::rows(0, n);
                probs_backward(
                    &mut ds,
                    gv_s,
                    (p, mask, &mut dropped),
                    dout,
                    v,
                    (global, local),
                    (n, d),
                );
                // dQ = scale · dS K, dK = scale · dSᵀ Q
                gemm_view(gq_s, local, &ds, sq, k, global, (n, d, n), scale, false);
                gemm_view(gk_s, local, &ds, sq.t(), q, global, (n, d, n), scale, false);
            }
        });
    (gq, gk, gv)
}

/// Row-wise layer norm `γ ⊙ (x − μ)/σ + β` of `x`, or of `x + residual` (the sum is never
/// stored); returns `(y, x̂, 1/σ)`.
pub fn layer_norm_forward(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let rows = x.len() / c;
    let mut y = vec![0.0f32; x.len()];
    let mut xhat = vec![0.0f32; x.len()];
    let mut inv_std = vec![0.0f32; rows];
    if let Some(r) = residual {
        assert_eq!(r.len(), x.len(), "layer_norm: residual shape");
    }
    y.par_chunks_mut(c)
        .zip(xhat.par_chunks_mut(c))
        .zip(inv_std.par_iter_mut())
        .enumerate()
        .for_each(|(row, ((yr, hr), is))| {
            let xr = &x[row * c..(row + 1) * c];
            // the sum goes through `hr` first, then is normalised in place
            match residual {
                Some(r) => hr
                    .iter_mut()
                    .zip(xr.iter().zip(&r[row * c..(row + 1) * c]))
                    .for_each(|(h, (a, b))| *h = a + b),
                None => hr.copy_from_slice(xr),
            }
            let xr = &*hr;
            let mean = xr.iter().sum::<f32>() / c as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
            let inv = 1.0 / (var + eps).sqrt();
            *is = inv;
            for j in 0..c {
                let h = (hr[j] - mean) * inv;
                hr[j] = h;
                yr[j] = h * gamma[j] + beta[j];
            }
        });
    (y, xhat, inv_std)
}

/// Gradients of [`layer_norm_forward`]: `(dx, dγ, dβ)`.
pub fn layer_norm_backward(
    dy: &[f32],
    xhat: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let mut dx = vec![0.0f32; dy.len()];
    dx.par_chunks_mut(c)
        .zip(dy.par_chunks(c))
        .zip(xhat.par_chunks(c))
        .zip(inv_std.par_iter())
        .for_each(|(((dxr, dyr), hr), &inv)| {
            let (mut mean_g, mut mean_gh) = (0.0f32, 0.0f32);
            for j in 0..c {
                let gg = dyr[j] * gamma[j];
                mean_g += gg;
                mean_gh += gg * hr[j];
            }
            mean_g /= c as f32;
            mean_gh /= c as f32;
            for j in 0..c {
                dxr[j] = inv * (dyr[j] * gamma[j] - mean_g - hr[j] * mean_gh);
            }
        });
    let mut dgamma = vec![0.0f32; c];
    let mut dbeta = vec![0.0f32; c];
    for (dyr, hr) in dy.chunks_exact(c).zip(xhat.chunks_exact(c)) {
        for j in 0..c {
            dgamma[j] += dyr[j] * hr[j];
            dbeta[j] += dyr[j];
        }
    }
    (dx, dgamma, dbeta)
}

/// `e^x` to ~2 ulp for x in [-87, 88] (0 below), without a libm call so that loops over it
/// vectorise: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n in the exponent.
#[inline]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // round to nearest by adding and removing 1.5·2^23 (`f32::round` is a libm call on
    // baseline x86-64, which would keep the loop scalar)
    const SHIFTER: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    // ln 2 split in two so n·ln2 is exact enough
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_5 + r * (0.008_333_4 + r * 0.001_388_9)))));
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    p * scale
}

/// `tanh` to a few ulp without a libm call, so that loops over it vectorise: Cephes' `tanhf`
/// (an odd polynomial below |x| = 0.625, `1 − 2 / (e^{2|x|} + 1)` above), branch-free.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs().min(9.5); // tanh(9.5) rounds to 1 in f32
    let z = a * a;
    let small = a + a
        * z
        * ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 0.133_314_42) * z
            - 0.333_332_8);
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let r = if a < 0.625 { small } else { large };
    r.copysign(x)
}

/// `erf` to ~1.5e-7 absolute (Abramowitz & Stegun 7.1.26), branch-free so it vectorises.
#[inline]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - poly * exp(-a * a);
    r.copysign(x)
}

/// BERT's exact GELU: `x · Φ(x)`.
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `d gelu / dx = Φ(x) + x φ(x)`.
#[inline]
pub fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = exp(-0.5 * x * x) * 0.398_942_3;
    cdf + x * pdf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0.0f32;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01 + 0.0037;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert_eq!(exp(-1000.0), (-87.3f32).exp());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn tanh_is_within_a_few_ulp_of_f64() {
        let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
        for i in -1200..=1200 {
            let x = i as f32 * 0.01 + 0.0037;
            let (got, want) = (tanh(x) as f64, (x as f64).tanh());
            worst_abs = worst_abs.max((got - want).abs());
            worst_rel = worst_rel.max(((got - want) / want).abs());
        }
        assert!(
            worst_rel < 5e-7 && worst_abs < 1.5e-7,
            "{worst_rel} {worst_abs}"
        );
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(-30.0), -1.0);
        assert!(tanh(1e-30) > 0.0 && tanh(-1e-30) < 0.0);
    }

    #[test]
    fn erf_matches_reference_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-1.5, -0.966_105_1),
            (3.0, 0.999_977_9),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn attention_equals_a_naive_masked_softmax() {
        // two sequences (3 and 2 tokens), 2 heads of width 2
        let (width, heads) = (4, 2);
        let segs = segments_from_lengths(&[3, 2]);
        let f = |i: usize, s: f32| ((i as f32 * s).sin()) * 0.8;
        let q: Vec<f32> = (0..20).map(|i| f(i, 1.3)).collect();
        let k: Vec<f32> = (0..20).map(|i| f(i, 0.7)).collect();
        let v: Vec<f32> = (0..20).map(|i| f(i, 2.1)).collect();
        let mut out = vec![0.0; 20];
        attention_forward(
            &q,
            &k,
            &v,
            &mut out,
            width,
            heads,
            &segs,
            1.0 / 2f32.sqrt(),
            None,
            false,
        );
        let d = 2;
        for s in &segs {
            for h in 0..heads {
                for i in 0..s.len {
                    let row = |m: &[f32], t: usize, c: usize| m[(s.start + t) * width + h * d + c];
                    let mut w: Vec<f32> = (0..s.len)
                        .map(|j| {
                            (0..d).map(|c| row(&q, i, c) * row(&k, j, c)).sum::<f32>()
                                / (d as f32).sqrt()
                        })
                        .collect();
                    softmax_in_place(&mut w);
                    for c in 0..d {
                        let want: f32 = (0..s.len).map(|j| w[j] * row(&v, j, c)).sum();
                        let got = out[(s.start + i) * width + h * d + c];
                        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
                    }
                }
            }
        }
    }
}
