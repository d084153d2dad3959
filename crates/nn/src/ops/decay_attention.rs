//! AKT's monotonic attention (Ghosh et al., KDD'20), as pyKT 0.0.38's `akt.py` computes it,
//! over the segments of a packed batch. For head `h`, query `i` and an allowed key `j`
//! (`j ≤ i`, or `j < i` with the `strict` mask, whose first row then attends to nothing and
//! is zero):
//!
//! ```text
//! s_ij    = q_i·k_j / √d_k
//! p̃_ij    = softmax_j(s_ij)                         (no gradient: pyKT's torch.no_grad)
//! dist_ij = √max((Σ_j' p̃_ij' − Σ_{j'≤j} p̃_ij') · |i − j|, 0)
//! θ_h     = −softplus(γ_h)
//! a_ij    = softmax_j(s_ij · clamp(exp(θ_h · dist_ij), 1e-5, 1e5))   → dropout → Σ_j a_ij v_j
//! ```
//!
//! Attention decays with the distance to a key, measured in how much attention the keys in
//! between take. The op keeps the probabilities `a` (one `heads × len × len` block per
//! segment) and recomputes the scores and distances in the backward pass instead of storing
//! them: the same two GEMMs per head as the forward pass, not three more `L × L` tensors per
//! head as pyKT materialises.

use crate::graph::{Graph, NodeId};
use crate::ops::CustomOp;
use crate::tensor::Tensor;
use crate::transformer::{
    after_dropout, exp, gemm_view, probs_backward, softmax_in_place, split_segments, Segment, View,
};
use rand::Rng;
use rayon::prelude::*;

/// pyKT's clamp of the decay factor.
const DECAY_MIN: f32 = 1e-5;
const DECAY_MAX: f32 = 1e5;

/// The mask and dropout of one [`Graph::decay_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecayAttentionOptions {
    /// Dropout on the attention probabilities, in training only.
    pub dropout: f32,
    /// Query `i` sees keys `j < i` only (AKT's knowledge retriever: the current response
    /// stays hidden), and the first query's output is zero; otherwise keys `j ≤ i`.
    pub strict: bool,
}

impl Graph<'_> {
    /// AKT's distance-decayed multi-head attention of packed `q`, `k`, `v` (`[tokens × width]`)
    /// within each segment; `gammas` (`[heads × 1]`) are the per-head decay parameters before
    /// `−softplus`. Dropout masks come from `rng` (training only).
    #[allow(clippy::too_many_arguments)]
    pub fn decay_attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        gammas: NodeId,
        heads: usize,
        segs: &[Segment],
        opts: DecayAttentionOptions,
        rng: &mut impl Rng,
    ) -> NodeId {
        let drop = (self.train && opts.dropout > 0.0)
            .then(|| super::attention::dropout_masks(segs, heads, opts.dropout, rng));
        let op = DecayAttention {
            heads,
            segs: segs.to_vec(),
            strict: opts.strict,
            drop,
            keep_probs: !self.no_grad,
            probs: Vec::new(),
            detached_from: None,
        };
        self.custom(op, &[q, k, v, gammas])
    }
}

struct DecayAttention {
    heads: usize,
    segs: Vec<Segment>,
    strict: bool,
    drop: Option<Vec<Vec<f32>>>,
    keep_probs: bool,
    probs: Vec<Vec<f32>>,
    /// The `q`, `k` the distances are computed from, where not `q`, `k` themselves: the
    /// gradient check fixes them, which is what the detach means.
    detached_from: Option<(Tensor, Tensor)>,
}

/// Head `h`'s scores `scale · Q Kᵀ` of segment `s` into `dst` (`n × n`).
#[allow(clippy::too_many_arguments)]
fn head_scores(
    dst: &mut [f32],
    q: &[f32],
    k: &[f32],
    s: Segment,
    h: usize,
    d: usize,
    width: usize,
    scale: f32,
) {
    let qkv = View::rows(s.start * width + h * d, width);
    gemm_view(
        dst,
        View::rows(0, s.len),
        q,
        qkv,
        k,
        qkv.t(),
        (s.len, s.len, d),
        scale,
        false,
    );
}

/// `−softplus(γ)` (PyTorch's softplus: `x` itself above 20).
fn decay_rate(gamma: f32) -> f32 {
    let softplus = if gamma > 20.0 {
        gamma
    } else {
        gamma.max(0.0) + (-gamma.abs()).exp().ln_1p()
    };
    -softplus
}

/// The number of keys query `i` may see.
fn allowed(i: usize, strict: bool) -> usize {
    if strict {
        i
    } else {
        i + 1
    }
}

/// For query `i`, whose first `scores.len()` keys are allowed: each key's distance (into
/// `dist`) and decay factor (into `decay`), from the softmax of `scores` (the detached raw
/// scores). A factor above the clamp's floor has a gradient; at the floor it has none.
fn decay_row(scores: &[f32], i: usize, theta: f32, dist: &mut [f32], decay: &mut [f32]) {
    let m = scores.len();
    let (dist, decay) = (&mut dist[..m], &mut decay[..m]);
    dist.copy_from_slice(scores);
    softmax_in_place(dist);
    let total: f32 = dist.iter().sum();
    // the running sum first (serial), then straight loops that vectorise
    let mut cum = 0.0f32;
    for v in dist.iter_mut() {
        cum += *v;
        *v = total - cum;
    }
    for (j, (d, e)) in dist.iter_mut().zip(decay.iter_mut()).enumerate() {
        *d = (*d * (i - j) as f32).max(0.0).sqrt();
        *e = exp(theta * *d).clamp(DECAY_MIN, DECAY_MAX);
    }
}

impl CustomOp for DecayAttention {
    fn name(&self) -> &'static str {
        "decay_attention"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (q, k, v, gammas) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        assert!(
            q.shape() == k.shape() && k.shape() == v.shape(),
            "decay_attention: q, k, v shapes differ"
        );
        let (rows, width) = q.shape();
        let heads = self.heads;
        assert!(
            heads > 0 && width.is_multiple_of(heads),
            "decay_attention: width not divisible by heads"
        );
        assert_eq!(gammas.len(), heads, "decay_attention: one gamma per head");
        assert_eq!(
            self.segs.iter().map(|s| s.len).sum::<usize>(),
            rows,
            "decay_attention: segments do not cover the rows"
        );
        let d = width / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let thetas: Vec<f32> = gammas.data.iter().map(|&g| decay_rate(g)).collect();
        let (strict, drop) = (self.strict, self.drop.as_deref());
        let detached = self.detached_from.as_ref();
        let mut out = Tensor::zeros(rows, width);
        let chunks = split_segments(&mut out.data, &self.segs, width);
        let probs: Vec<Vec<f32>> = chunks
            .into_par_iter()
            .zip(self.segs.par_iter())
            .enumerate()
            .map(|(si, (o, s))| {
                let n = s.len;
                let mut probs = vec![0.0f32; heads * n * n];
                let mut dropped = drop.map(|_| vec![0.0f32; n * n]);
                let (mut dist, mut decay) = (vec![0.0f32; n], vec![0.0f32; n]);
                let mut raw = detached.map(|_| vec![0.0f32; n * n]);
                for (h, &theta) in thetas.iter().enumerate() {
                    let qkv = View::rows(s.start * width + h * d, width);
                    let p = &mut probs[h * n * n..(h + 1) * n * n];
                    head_scores(p, &q.data, &k.data, *s, h, d, width, scale);
                    if let (Some(raw), Some((rq, rk))) = (raw.as_mut(), detached) {
                        head_scores(raw, &rq.data, &rk.data, *s, h, d, width, scale);
                    }
                    for (i, row) in p.chunks_exact_mut(n).enumerate() {
                        let m = allowed(i, strict);
                        let (seen, later) = row.split_at_mut(m);
                        later.fill(0.0);
                        if m == 0 {
                            continue;
                        }
                        // the distances read the raw scores: this row before it is decayed
                        let dist_src = raw.as_ref().map_or(&*seen, |r| &r[i * n..i * n + m]);
                        decay_row(dist_src, i, theta, &mut dist, &mut decay);
                        seen.iter_mut().zip(&decay).for_each(|(v, e)| *v *= e);
                        softmax_in_place(seen);
                    }
                    let mask = drop.map(|m| &m[si][h * n * n..(h + 1) * n * n]);
                    let weights = after_dropout(p, mask, &mut dropped);
                    gemm_view(
                        o,
                        View::rows(h * d, width),
                        weights,
                        View::rows(0, n),
                        &v.data,
                        qkv,
                        (n, d, n),
                        1.0,
                        false,
                    );
                }
                probs
            })
            .collect();
        if self.keep_probs {
            self.probs = probs;
        }
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (q, k, v, gammas) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let (rows, width) = q.shape();
        let heads = self.heads;
        let d = width / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let thetas: Vec<f32> = gammas.data.iter().map(|&g| decay_rate(g)).collect();
        let (strict, drop) = (self.strict, self.drop.as_deref());
        let detached = self.detached_from.as_ref();
        let total = rows * width;
        let (mut gq, mut gk, mut gv) = (vec![0.0; total], vec![0.0; total], vec![0.0; total]);
        let parts = split_segments(&mut gq, &self.segs, width)
            .into_iter()
            .zip(split_segments(&mut gk, &self.segs, width))
            .zip(split_segments(&mut gv, &self.segs, width))
            .collect::<Vec<_>>();
        let gthetas: Vec<Vec<f64>> = parts
            .into_par_iter()
            .zip(self.segs.par_iter().zip(self.probs.par_iter()))
            .enumerate()
            .map(|(si, (((gq_s, gk_s), gv_s), (s, probs)))| {
                let n = s.len;
                let mut gtheta = vec![0.0f64; heads];
                let mut ds = vec![0.0f32; n * n];
                let mut scores = vec![0.0f32; n * n];
                let mut raw = detached.map(|_| vec![0.0f32; n * n]);
                let (mut dist, mut decay) = (vec![0.0f32; n], vec![0.0f32; n]);
                let mut dropped = drop.map(|_| vec![0.0f32; n * n]);
                for (h, &theta) in thetas.iter().enumerate() {
                    let global = View::rows(s.start * width + h * d, width);
                    let local = View::rows(h * d, width);
                    let sq = View::rows(0, n);
                    let p = &probs[h * n * n..(h + 1) * n * n];
                    let mask = drop.map(|m| &m[si][h * n * n..(h + 1) * n * n]);
                    // dV, and the gradient of the decayed scores S' through the softmax
                    probs_backward(
                        &mut ds,
                        gv_s,
                        (p, mask, &mut dropped),
                        &grad.data,
                        &v.data,
                        (global, local),
                        (n, d),
                    );
                    // S' = S ⊙ e: dS = dS' ⊙ e, dθ = Σ dS' ⊙ S ⊙ e ⊙ dist (inside the clamp)
                    head_scores(&mut scores, &q.data, &k.data, *s, h, d, width, scale);
                    if let (Some(raw), Some((rq, rk))) = (raw.as_mut(), detached) {
                        head_scores(raw, &rq.data, &rk.data, *s, h, d, width, scale);
                    }
                    let mut gt = 0.0f64;
                    for i in 0..n {
                        let m = allowed(i, strict);
                        if m == 0 {
                            continue;
                        }
                        let row = i * n..i * n + m;
                        let (srow, drow) = (&scores[row.clone()], &mut ds[row.clone()]);
                        let dist_src = raw.as_ref().map_or(srow, |r| &r[row]);
                        decay_row(dist_src, i, theta, &mut dist, &mut decay);
                        let mut row_gt = 0.0f32;
                        for (j, (g, &e)) in drow.iter_mut().zip(&decay).enumerate() {
                            if e > DECAY_MIN {
                                row_gt += *g * srow[j] * e * dist[j];
                            }
                            *g *= e;
                        }
                        gt += row_gt as f64;
                    }
                    gtheta[h] = gt;
                    // dQ = scale · dS K, dK = scale · dSᵀ Q
                    gemm_view(
                        gq_s,
                        local,
                        &ds,
                        sq,
                        &k.data,
                        global,
                        (n, d, n),
                        scale,
                        false,
                    );
                    gemm_view(
                        gk_s,
                        local,
                        &ds,
                        sq.t(),
                        &q.data,
                        global,
                        (n, d, n),
                        scale,
                        false,
                    );
                }
                gtheta
            })
            .collect();
        // dγ = dθ · (−σ(γ))
        let ggamma: Vec<f32> = (0..heads)
            .map(|h| {
                let gt: f64 = gthetas.iter().map(|g| g[h]).sum();
                let sig = 1.0 / (1.0 + (-gammas.data[h] as f64).exp());
                (-gt * sig) as f32
            })
            .collect();
        let shaped = |data: Vec<f32>| Tensor::from_vec(rows, width, data);
        vec![
            needs[0].then(|| shaped(gq)),
            needs[1].then(|| shaped(gk)),
            needs[2].then(|| shaped(gv)),
            needs[3].then(|| Tensor::from_vec(gammas.rows, gammas.cols, ggamma)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use crate::transformer::segments_from_lengths;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A naive evaluation of the formula in the module comment, in f64, one head at a time.
    fn naive(x: &Tensor, gammas: &[f32], heads: usize, lens: &[usize], strict: bool) -> Vec<f64> {
        let (rows, width) = x.shape();
        let d = width / heads;
        let mut out = vec![0.0f64; rows * width];
        let mut start = 0;
        for &n in lens {
            for (h, &g) in gammas.iter().enumerate() {
                let theta = -(1.0 + (g as f64).exp()).ln();
                let at = |t: usize, c: usize| x.data[(start + t) * width + h * d + c] as f64;
                for i in 0..n {
                    let m = if strict { i } else { i + 1 };
                    if m == 0 {
                        continue;
                    }
                    let s: Vec<f64> = (0..m)
                        .map(|j| {
                            (0..d).map(|c| at(i, c) * at(j, c)).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                    let pt: Vec<f64> = s.iter().map(|v| (v - mx).exp() / z).collect();
                    let mut cum = 0.0;
                    let decayed: Vec<f64> = (0..m)
                        .map(|j| {
                            cum += pt[j];
                            let dist = ((1.0 - cum) * (i - j) as f64).max(0.0).sqrt();
                            s[j] * (theta * dist).exp().clamp(1e-5, 1e5)
                        })
                        .collect();
                    let mx = decayed.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = decayed.iter().map(|v| (v - mx).exp()).sum();
                    for (j, sv) in decayed.iter().enumerate() {
                        let a = (sv - mx).exp() / z;
                        for c in 0..d {
                            out[(start + i) * width + h * d + c] += a * at(j, c);
                        }
                    }
                }
            }
            start += n;
        }
        out
    }

    fn run(x: &Tensor, gammas: &[f32], heads: usize, lens: &[usize], strict: bool) -> Tensor {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let xi = g.input(x.clone(), false);
        let gi = g.input(Tensor::from_vec(heads, 1, gammas.to_vec()), false);
        let segs = segments_from_lengths(lens);
        let opts = DecayAttentionOptions {
            dropout: 0.0,
            strict,
        };
        let a = g.decay_attention(
            xi,
            xi,
            xi,
            gi,
            heads,
            &segs,
            opts,
            &mut StdRng::seed_from_u64(0),
        );
        g.value(a).clone()
    }

    #[test]
    fn decay_attention_equals_the_formula() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = rand_input(&mut rng, 9, 4);
        let gammas = [0.4, -1.3];
        for strict in [false, true] {
            let got = run(&x, &gammas, 2, &[6, 3], strict);
            let want = naive(&x, &gammas, 2, &[6, 3], strict);
            for (k, (a, b)) in got.data.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "strict {strict} [{k}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn strict_mask_zeroes_the_first_row_and_hides_later_tokens() {
        let mut rng = StdRng::seed_from_u64(4);
        let x = rand_input(&mut rng, 5, 4);
        let base = run(&x, &[0.1, 0.2], 2, &[5], true);
        assert!(base.row(0).iter().all(|&v| v == 0.0));
        assert!(base.row(1).iter().any(|&v| v != 0.0));
        // the last token moves no earlier row
        let mut changed = x.clone();
        changed.data[4 * 4..].iter_mut().for_each(|v| *v += 1.0);
        let after = run(&changed, &[0.1, 0.2], 2, &[5], true);
        assert_eq!(&base.data[..4 * 4], &after.data[..4 * 4]);
    }

    #[test]
    fn decay_attention_matches_finite_differences() {
        // q = k = x; the distances read the unperturbed x (pyKT's detach), so the central
        // differences see exactly the function the backward pass differentiates
        for (strict, dropout) in [(false, 0.0), (true, 0.3)] {
            let mut rng = StdRng::seed_from_u64(5);
            let mut s = ParamStore::new();
            let wv = s.add("v", init::normal(&mut rng, 4, 4, 0.7), true, true);
            let gam = s.add(
                "gammas",
                Tensor::from_vec(2, 1, vec![0.3, -0.8]),
                true,
                false,
            );
            let segs = segments_from_lengths(&[5, 1, 3]);
            let x0 = rand_input(&mut rng, 9, 4);
            let reference = x0.clone();
            check(s, x0, |g, x| {
                let mut drop_rng = StdRng::seed_from_u64(8);
                let drop = (dropout > 0.0).then(|| {
                    super::super::attention::dropout_masks(&segs, 2, dropout, &mut drop_rng)
                });
                let v = g.linear(x, wv, None);
                let gm = g.param(gam);
                let op = DecayAttention {
                    heads: 2,
                    segs: segs.clone(),
                    strict,
                    drop,
                    keep_probs: true,
                    probs: Vec::new(),
                    detached_from: Some((reference.clone(), reference.clone())),
                };
                let a = g.custom(op, &[x, x, v, gm]);
                g.sum_cols(a)
            });
        }
    }

    #[test]
    fn gammas_gradient_matches_finite_differences_through_the_public_op() {
        // with q and k constant the detach changes nothing: the op as models call it
        let mut rng = StdRng::seed_from_u64(6);
        let mut s = ParamStore::new();
        let gam = s.add(
            "gammas",
            Tensor::from_vec(2, 1, vec![0.5, -0.4]),
            true,
            false,
        );
        let qk = rand_input(&mut rng, 7, 4);
        let segs = segments_from_lengths(&[7]);
        let opts = DecayAttentionOptions {
            dropout: 0.0,
            strict: false,
        };
        check(s, rand_input(&mut rng, 7, 4), |g, v| {
            let qk = g.input(qk.clone(), false);
            let gm = g.param(gam);
            let a = g.decay_attention(qk, qk, v, gm, 2, &segs, opts, &mut StdRng::seed_from_u64(0));
            g.sum_cols(a)
        });
    }
}
