//! Elementwise and reduction ops: the sum of all entries, and the Gaussian
//! reparameterisation `mu + ε ⊙ exp(logvar / 2)` of variational models.

use super::{scalar_grad, CustomOp};
use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;

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

#[cfg(test)]
mod tests {
    use crate::testing::check_gradients;
    use crate::{init, ParamStore};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

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
}
