//! Losses, each a `[1×1]` node: binary cross-entropy on logits (CTR), softmax cross-entropy
//! over classes (in-batch contrastive losses), BPR's pairwise loss, the multinomial likelihood
//! of MultiVAE-style models, the Gaussian KL term, and the (not squared) Frobenius norm
//! LightGCN regularises with, a weighted BCE (the policy-gradient term) and smooth L1 (a
//! critic's regression).

use super::{scalar_grad, CustomOp};
use crate::graph::{accumulate, Graph, NodeId, Op};
use crate::kernels::{sigmoid, simd_fn};
use crate::tensor::Tensor;
use rayon::prelude::*;

impl Graph<'_> {
    /// Mean binary cross-entropy of `sigmoid(logits)` against `labels` (a `[1×1]` node),
    /// computed from the logits for stability.
    pub fn bce_with_logits(&mut self, logits: NodeId, labels: &[f32]) -> NodeId {
        let lv = self.value(logits);
        assert_eq!((lv.rows * lv.cols), labels.len(), "bce: label count");
        let n = labels.len().max(1) as f64;
        let loss: f64 = lv
            .data
            .iter()
            .zip(labels)
            .map(|(&z, &y)| bce_term(z, y))
            .sum::<f64>()
            / n;
        let rg = self.rg(logits);
        self.push(
            Op::BceWithLogits {
                logits,
                labels: labels.to_vec(),
            },
            Tensor::from_vec(1, 1, vec![loss as f32]),
            rg,
        )
    }

    pub(crate) fn bce_with_logits_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        logits: NodeId,
        labels: &[f32],
    ) {
        let lv = self.value(logits);
        let scale = gy.data[0] / labels.len().max(1) as f32;
        let data = lv
            .data
            .iter()
            .zip(labels)
            .map(|(&z, &y)| (sigmoid(z) - y) * scale)
            .collect();
        accumulate(&mut g[logits.0], Tensor::from_vec(lv.rows, lv.cols, data));
    }

    /// Mean cross-entropy of row-wise softmax over `logits[B×C]` against class `targets`.
    pub fn softmax_cross_entropy(&mut self, logits: NodeId, targets: &[u32]) -> NodeId {
        let lv = self.value(logits);
        assert_eq!(
            lv.rows,
            targets.len(),
            "softmax_cross_entropy: target count"
        );
        let cols = lv.cols;
        let mut probs = lv.data.clone();
        // rows in parallel, with the tape's vectorised exp: over a full item catalogue
        // (SASRec's softmax over every item) this pass is a large share of a step
        let loss: f64 = probs
            .par_chunks_mut(cols.max(1))
            .zip(targets.par_iter())
            .map(|(row, &t)| {
                assert!((t as usize) < cols, "softmax_cross_entropy: class {t}");
                let target = row[t as usize];
                softmax_row_lse(row) - target as f64
            })
            .sum();
        let loss = (loss / targets.len().max(1) as f64) as f32;
        let rg = self.rg(logits);
        self.push(
            Op::SoftmaxCrossEntropy {
                logits,
                targets: targets.to_vec(),
                probs,
            },
            Tensor::from_vec(1, 1, vec![loss]),
            rg,
        )
    }

    pub(crate) fn softmax_cross_entropy_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        logits: NodeId,
        targets: &[u32],
        probs: &[f32],
    ) {
        let lv = self.value(logits);
        let scale = gy.data[0] / targets.len().max(1) as f32;
        let mut gl = Tensor::from_vec(lv.rows, lv.cols, probs.to_vec());
        gl.data
            .par_chunks_mut(lv.cols.max(1))
            .zip(targets.par_iter())
            .for_each(|(row, &t)| {
                row[t as usize] -= 1.0;
                row.iter_mut().for_each(|v| *v *= scale);
            });
        accumulate(&mut g[logits.0], gl);
    }
}

/// `softplus(x) = ln(1 + eˣ)`, stable for large |x|.
fn softplus(x: f32) -> f32 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `mean_b softplus(neg_b − pos_b)` = `−mean ln σ(pos − neg)`.
struct Bpr;

impl CustomOp for Bpr {
    fn name(&self) -> &'static str {
        "bpr_loss"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (pos, neg) = (inputs[0], inputs[1]);
        assert_eq!(pos.shape(), neg.shape(), "bpr_loss: score shapes differ");
        let s: f64 = pos
            .data
            .iter()
            .zip(&neg.data)
            .map(|(&p, &n)| softplus(n - p) as f64)
            .sum();
        Tensor::from_vec(1, 1, vec![(s / pos.len().max(1) as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (pos, neg) = (inputs[0], inputs[1]);
        let k = scalar_grad(grad) / pos.len().max(1) as f32;
        // d softplus(n − p) / dn = σ(n − p)
        let dn: Vec<f32> = pos
            .data
            .iter()
            .zip(&neg.data)
            .map(|(&p, &n)| k * sigmoid(n - p))
            .collect();
        let gp =
            needs[0].then(|| Tensor::from_vec(pos.rows, pos.cols, dn.iter().map(|v| -v).collect()));
        let gn = needs[1].then(|| Tensor::from_vec(neg.rows, neg.cols, dn));
        vec![gp, gn]
    }
}

/// `‖x‖_F = sqrt(Σ x²)`.
struct FrobeniusNorm {
    norm: f32,
}

impl CustomOp for FrobeniusNorm {
    fn name(&self) -> &'static str {
        "frobenius_norm"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        self.norm = inputs[0].sum_sq().sqrt() as f32;
        Tensor::from_vec(1, 1, vec![self.norm])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let x = inputs[0];
        // the norm is not differentiable at 0; take the zero subgradient, as torch does
        let k = if self.norm > 0.0 {
            scalar_grad(grad) / self.norm
        } else {
            0.0
        };
        vec![needs[0]
            .then(|| Tensor::from_vec(x.rows, x.cols, x.data.iter().map(|v| k * v).collect()))]
    }
}

/// `−mean_b Σ_i x_bi · log softmax(z_b)_i` for logits `z[B×N]` and non-negative targets `x`.
struct MultinomialNll {
    targets: Vec<f32>,
    probs: Vec<f32>,
}

impl CustomOp for MultinomialNll {
    fn name(&self) -> &'static str {
        "multinomial_nll"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let z = inputs[0];
        assert_eq!(
            self.targets.len(),
            z.len(),
            "multinomial_nll: one target per logit"
        );
        let n = z.cols.max(1);
        self.probs = vec![0.0; z.len()];
        // rows in parallel, each row's loss term in f64, summed in row order (deterministic)
        let row_terms: Vec<f64> = z
            .data
            .par_chunks_exact(n)
            .zip(self.probs.par_chunks_exact_mut(n))
            .zip(self.targets.par_chunks_exact(n))
            .map(|((zr, pr), xr)| softmax_row_nll(zr, pr, xr))
            .collect();
        let total: f64 = row_terms.iter().sum();
        Tensor::from_vec(1, 1, vec![(total / z.rows.max(1) as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let z = inputs[0];
        if !needs[0] {
            return vec![None];
        }
        let n = z.cols.max(1);
        let k = scalar_grad(grad) / z.rows.max(1) as f32;
        let mut gz = Tensor::zeros(z.rows, z.cols);
        gz.data
            .par_chunks_exact_mut(n)
            .zip(self.probs.par_chunks_exact(n))
            .zip(self.targets.par_chunks_exact(n))
            .for_each(|((gr, pr), xr)| multinomial_grad_row(gr, pr, xr, k));
        vec![Some(gz)]
    }
}

simd_fn! {
    /// The softmax of `row` in place, returning its log-normaliser `ln Σ exp`: the tape's
    /// vectorised `exp` after subtracting the row's maximum, summed in 16 lanes.
    fn softmax_row_lse(row: &mut [f32]) -> f64 {
        // the maximum in 16 lanes too: a single running maximum is a dependency chain the
        // compiler leaves scalar
        let mut highs = [f32::NEG_INFINITY; 16];
        let whole = row.chunks_exact(16);
        let mut max = whole
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        for c in whole {
            for (h, &v) in highs.iter_mut().zip(c) {
                *h = if v > *h { v } else { *h };
            }
        }
        for h in highs {
            max = if h > max { h } else { max };
        }
        let mut lanes = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c.iter_mut()) {
                *v = crate::transformer::exp(*v - max);
                *l += *v;
            }
        }
        let mut sum: f64 = lanes.iter().map(|&l| l as f64).sum();
        for v in chunks.into_remainder() {
            *v = crate::transformer::exp(*v - max);
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
        max as f64 + sum.ln()
    }
}

simd_fn! {
    /// One row of [`MultinomialNll`]: the softmax of `z` into `p` (each `exp` taken once, in
    /// f32 after subtracting the row's maximum; the normaliser summed in f64) and the row's
    /// `−Σ x · log p`, over the non-zero targets only.
    fn softmax_row_nll(z: &[f32], p: &mut [f32], x: &[f32]) -> f64 {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for (p, &v) in p.iter_mut().zip(z) {
            *p = (v - max).exp();
            sum += *p as f64;
        }
        let inv = (1.0 / sum) as f32;
        p.iter_mut().for_each(|p| *p *= inv);
        let log_norm = max as f64 + sum.ln();
        z.iter()
            .zip(x)
            .filter(|&(_, &x)| x != 0.0)
            .map(|(&v, &x)| -(x as f64) * (v as f64 - log_norm))
            .sum()
    }
}

simd_fn! {
    /// One row of [`MultinomialNll`]'s gradient: `k · (Σx · p − x)`.
    fn multinomial_grad_row(g: &mut [f32], p: &[f32], x: &[f32], k: f32) {
        let mass: f32 = x.iter().sum();
        for ((g, &p), &x) in g.iter_mut().zip(p).zip(x) {
            *g = k * (mass * p - x);
        }
    }
}

/// `mean_b −½ Σ_j (1 + lv − mu² − exp lv)`: KL(N(mu, e^lv) ‖ N(0, 1)) averaged over rows.
struct GaussianKl;

impl CustomOp for GaussianKl {
    fn name(&self) -> &'static str {
        "gaussian_kl"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (mu, lv) = (inputs[0], inputs[1]);
        assert_eq!(
            mu.shape(),
            lv.shape(),
            "gaussian_kl: mu and logvar shapes differ"
        );
        let s: f64 = mu
            .data
            .iter()
            .zip(&lv.data)
            .map(|(&m, &l)| (1.0 + l - m * m - l.exp()) as f64)
            .sum();
        Tensor::from_vec(1, 1, vec![(-0.5 * s / mu.rows.max(1) as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (mu, lv) = (inputs[0], inputs[1]);
        let k = scalar_grad(grad) / mu.rows.max(1) as f32;
        let gm = needs[0]
            .then(|| Tensor::from_vec(mu.rows, mu.cols, mu.data.iter().map(|m| k * m).collect()));
        let gl = needs[1].then(|| {
            Tensor::from_vec(
                lv.rows,
                lv.cols,
                lv.data.iter().map(|l| k * 0.5 * (l.exp() - 1.0)).collect(),
            )
        });
        vec![gm, gl]
    }
}

impl Graph<'_> {
    /// BPR's pairwise loss `−mean ln σ(pos − neg)` over `[B×1]` (or any equal-shape) scores.
    pub fn bpr_loss(&mut self, pos: NodeId, neg: NodeId) -> NodeId {
        self.custom(Bpr, &[pos, neg])
    }

    /// `‖x‖_F`, not squared (LightGCN's regulariser in RecBole).
    pub fn frobenius_norm(&mut self, x: NodeId) -> NodeId {
        self.custom(FrobeniusNorm { norm: 0.0 }, &[x])
    }

    /// The multinomial negative log-likelihood of `targets` (row-major `[B×N]`, e.g. a user's
    /// interaction counts) under `softmax(logits)`, averaged over rows.
    pub fn multinomial_nll(&mut self, logits: NodeId, targets: Vec<f32>) -> NodeId {
        let op = MultinomialNll {
            targets,
            probs: Vec::new(),
        };
        self.custom(op, &[logits])
    }

    /// KL(N(mu, exp logvar) ‖ N(0, I)), summed over columns and averaged over rows.
    pub fn gaussian_kl(&mut self, mu: NodeId, logvar: NodeId) -> NodeId {
        self.custom(GaussianKl, &[mu, logvar])
    }
}

/// `Σ_i w_i · bce(z_i, y_i) / denom`: the policy-gradient term `−log π(a) · A` of a Bernoulli
/// policy with logit `z` (`−log π(a) = bce(z, a)`), or any weighted BCE.
struct WeightedBce {
    labels: Vec<f32>,
    weights: Vec<f32>,
    denom: f32,
}

/// `log(1 + e^z) − y z`, written to avoid overflow.
fn bce_term(z: f32, y: f32) -> f64 {
    let z = z as f64;
    z.max(0.0) - z * y as f64 + (-z.abs()).exp().ln_1p()
}

impl CustomOp for WeightedBce {
    fn name(&self) -> &'static str {
        "weighted_bce_with_logits"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let z = inputs[0];
        assert_eq!(z.len(), self.labels.len(), "weighted_bce: label count");
        let total: f64 = z
            .data
            .iter()
            .zip(&self.labels)
            .zip(&self.weights)
            .map(|((&z, &y), &w)| w as f64 * bce_term(z, y))
            .sum();
        Tensor::from_vec(1, 1, vec![(total / self.denom as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        _needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let z = inputs[0];
        let k = scalar_grad(grad) / self.denom;
        let data = z
            .data
            .iter()
            .zip(&self.labels)
            .zip(&self.weights)
            .map(|((&z, &y), &w)| (sigmoid(z) - y) * w * k)
            .collect();
        vec![Some(Tensor::from_vec(z.rows, z.cols, data))]
    }
}

/// `Σ_i smoothL1(x_i − t_i) / denom` with PyTorch's β = 1 (`0.5 d²` below 1, `|d| − 0.5`
/// above): the critic's regression onto its TD targets.
struct SmoothL1 {
    targets: Vec<f32>,
    denom: f32,
}

impl CustomOp for SmoothL1 {
    fn name(&self) -> &'static str {
        "smooth_l1"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let x = inputs[0];
        assert_eq!(x.len(), self.targets.len(), "smooth_l1: target count");
        let total: f64 = x
            .data
            .iter()
            .zip(&self.targets)
            .map(|(&x, &t)| {
                let d = (x - t).abs() as f64;
                if d < 1.0 {
                    0.5 * d * d
                } else {
                    d - 0.5
                }
            })
            .sum();
        Tensor::from_vec(1, 1, vec![(total / self.denom as f64) as f32])
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        _needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let x = inputs[0];
        let k = scalar_grad(grad) / self.denom;
        let data = x
            .data
            .iter()
            .zip(&self.targets)
            .map(|(&x, &t)| (x - t).clamp(-1.0, 1.0) * k)
            .collect();
        vec![Some(Tensor::from_vec(x.rows, x.cols, data))]
    }
}

impl Graph<'_> {
    /// `Σ_i weights_i · bce(logits_i, labels_i) / denom` (a `[1×1]` node).
    pub fn weighted_bce_with_logits(
        &mut self,
        logits: NodeId,
        labels: &[f32],
        weights: &[f32],
        denom: f32,
    ) -> NodeId {
        assert_eq!(labels.len(), weights.len(), "weighted_bce: weight count");
        let op = WeightedBce {
            labels: labels.to_vec(),
            weights: weights.to_vec(),
            denom: denom.max(f32::MIN_POSITIVE),
        };
        self.custom(op, &[logits])
    }

    /// `Σ_i smoothL1(x_i − targets_i) / denom` (a `[1×1]` node; PyTorch's β = 1).
    pub fn smooth_l1(&mut self, x: NodeId, targets: &[f32], denom: f32) -> NodeId {
        let op = SmoothL1 {
            targets: targets.to_vec(),
            denom: denom.max(f32::MIN_POSITIVE),
        };
        self.custom(op, &[x])
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_gradients;
    use crate::{init, Graph, ParamStore, Tensor};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn weighted_bce_and_smooth_l1_match_hand_values_and_finite_differences() {
        let store = ParamStore::new();
        let mut g = Graph::inference(&store);
        let z = g.input(Tensor::from_vec(3, 1, vec![0.0, 2.0, -1.0]), false);
        // w = (1, 2, 0): ln 2 + 2·(ln(1 + e²) − 2)
        let l = g.weighted_bce_with_logits(z, &[1.0, 1.0, 0.0], &[1.0, 2.0, 0.0], 2.0);
        let want = (2f64.ln() + 2.0 * ((1.0 + 2f64.exp()).ln() - 2.0)) / 2.0;
        assert!((g.value(l).data[0] as f64 - want).abs() < 1e-6);
        // |0 − 0.5| < 1: 0.125; |2 − (−1)| = 3: 2.5; |−1 − (−1)| = 0
        let s = g.smooth_l1(z, &[0.5, -1.0, -1.0], 1.0);
        assert!((g.value(s).data[0] - 2.625).abs() < 1e-6);
        let mut rng = StdRng::seed_from_u64(9);
        let x = init::normal(&mut rng, 5, 1, 2.0);
        check_gradients(&ParamStore::new(), &[x], |g, x| {
            let a = g.weighted_bce_with_logits(
                x[0],
                &[1.0, 0.0, 1.0, 0.0, 1.0],
                &[0.5, -1.0, 2.0, 0.0, 1.5],
                3.0,
            );
            let b = g.smooth_l1(x[0], &[0.3, -2.5, 0.0, 4.0, 1.0], 2.0);
            g.add(a, b)
        })
        .unwrap();
    }

    #[test]
    fn bce_matches_closed_form() {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let z = g.input(Tensor::from_vec(2, 1, vec![0.3, -1.2]), false);
        let l = g.bce_with_logits(z, &[1.0, 0.0]);
        let p = |z: f32| 1.0 / (1.0 + (-z).exp());
        let want = -(p(0.3).ln() + (1.0 - p(-1.2)).ln()) / 2.0;
        assert!((g.value(l).data[0] - want).abs() < 1e-6);
    }

    #[test]
    fn bpr_loss_at_equal_scores_is_ln_2() {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, true);
        let p = g.input(Tensor::zeros(4, 1), false);
        let n = g.input(Tensor::zeros(4, 1), false);
        let l = g.bpr_loss(p, n);
        assert!((g.value(l).data[0] - std::f32::consts::LN_2).abs() < 1e-7);
    }

    #[test]
    fn multinomial_nll_and_kl_known_values() {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, true);
        // uniform logits over 4 items, two interactions: 2 · ln 4
        let z = g.input(Tensor::zeros(1, 4), false);
        let l = g.multinomial_nll(z, vec![1.0, 0.0, 1.0, 0.0]);
        assert!((g.value(l).data[0] - 2.0 * 4f32.ln()).abs() < 1e-6);
        let mu = g.input(Tensor::zeros(2, 3), false);
        let lv = g.input(Tensor::zeros(2, 3), false);
        let kl = g.gaussian_kl(mu, lv);
        assert_eq!(g.value(kl).data[0], 0.0);
        let x = g.input(Tensor::from_vec(1, 2, vec![3.0, 4.0]), false);
        let f = g.frobenius_norm(x);
        assert_eq!(g.value(f).data[0], 5.0);
    }

    #[test]
    fn ranking_losses_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(9);
        let a = init::normal(&mut rng, 5, 1, 2.0);
        let b = init::normal(&mut rng, 5, 1, 2.0);
        check_gradients(&ParamStore::new(), &[a, b], |g, x| g.bpr_loss(x[0], x[1])).unwrap();

        let z = init::normal(&mut rng, 3, 6, 1.0);
        let targets: Vec<f32> = (0..18)
            .map(|i| ((i * 7) % 5 == 0) as u8 as f32 * 1.5)
            .collect();
        check_gradients(&ParamStore::new(), &[z], |g, x| {
            g.multinomial_nll(x[0], targets.clone())
        })
        .unwrap();

        let mu = init::normal(&mut rng, 3, 4, 1.0);
        let lv = init::normal(&mut rng, 3, 4, 0.5);
        check_gradients(&ParamStore::new(), &[mu, lv], |g, x| {
            g.gaussian_kl(x[0], x[1])
        })
        .unwrap();

        let w = init::normal(&mut rng, 3, 4, 1.0);
        check_gradients(&ParamStore::new(), &[w], |g, x| g.frobenius_norm(x[0])).unwrap();
    }
}
