//! The factorization machine's second-order interaction term.

use crate::graph::{Graph, NodeId, Op};
use crate::kernels::simd_fn;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Rows per parallel task: enough work per task to outweigh scheduling at FM's few flops a value.
const ROW_BLOCK: usize = 256;

impl Graph<'_> {
    /// Factorization-machine second-order term over `fields` embeddings of size `dim` laid out
    /// as `[B × fields·dim]`: `½ Σ_d ((Σ_f e_fd)² − Σ_f e_fd²)`, giving `[B×1]`.
    pub fn fm_interaction(&mut self, x: NodeId, fields: usize, dim: usize) -> NodeId {
        let xv = self.value(x);
        assert_eq!(xv.cols, fields * dim, "fm_interaction: width");
        // rows in parallel blocks; per-dimension running sums of squares so the loop vectorizes
        let mut data = vec![0.0f32; xv.rows];
        data.par_chunks_mut(ROW_BLOCK)
            .zip(xv.data.par_chunks(ROW_BLOCK * fields * dim))
            .for_each(|(out, rows)| fm_forward_block(out, rows, fields, dim));
        let out = Tensor::from_vec(xv.rows, 1, data);
        let rg = self.rg(x);
        self.push(Op::FmInteraction { x, fields, dim }, out, rg)
    }

    pub(crate) fn fm_interaction_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        fields: usize,
        dim: usize,
    ) {
        let xv = self.value(x);
        let (f, d) = (fields, dim);
        // added straight into the gradient already there (DeepFM's MLP leaves one): no second
        // buffer of the embeddings' size, no separate addition pass
        let mut gx = g[x.0]
            .take()
            .unwrap_or_else(|| Tensor::zeros(xv.rows, f * d));
        assert_eq!(gx.shape(), xv.shape(), "fm_interaction: gradient shape");
        gx.data
            .par_chunks_mut(ROW_BLOCK * f * d)
            .zip(xv.data.par_chunks(ROW_BLOCK * f * d))
            .zip(gy.data.par_chunks(ROW_BLOCK))
            .for_each(|((gblock, xblock), gyblock)| {
                fm_backward_block(gblock, xblock, gyblock, f * d, d)
            });
        g[x.0] = Some(gx);
    }
}

simd_fn! {
    /// The FM term of each row of `rows` (`fields` embeddings of `dim` each) into `out`.
    fn fm_forward_block(out: &mut [f32], rows: &[f32], fields: usize, dim: usize) {
        let (mut sum, mut sq) = (vec![0.0f32; dim], vec![0.0f32; dim]);
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(fields * dim)) {
            sum.fill(0.0);
            sq.fill(0.0);
            for e in row.chunks_exact(dim) {
                for d in 0..dim {
                    sum[d] += e[d];
                    sq[d] += e[d] * e[d];
                }
            }
            *o = 0.5 * sum.iter().zip(&sq).map(|(s, q)| s * s - q).sum::<f32>();
        }
    }
}

simd_fn! {
    /// Adds each row's `gy · (Σ_f e_f − e)` into its gradient row.
    fn fm_backward_block(grads: &mut [f32], rows: &[f32], gy: &[f32], width: usize, dim: usize) {
        let mut sum = vec![0.0f32; dim];
        for ((row, grow), &gr) in rows
            .chunks_exact(width)
            .zip(grads.chunks_exact_mut(width))
            .zip(gy)
        {
            sum.fill(0.0);
            for e in row.chunks_exact(dim) {
                sum.iter_mut().zip(e).for_each(|(s, v)| *s += v);
            }
            for (ge, e) in grow.chunks_exact_mut(dim).zip(row.chunks_exact(dim)) {
                for k in 0..dim {
                    ge[k] += gr * (sum[k] - e[k]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Graph;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn fm_interaction_matches_pairwise_sum_and_gradient() {
        let mut rng = StdRng::seed_from_u64(6);
        let (f, d) = (4, 3);
        let x = rand_input(&mut rng, 3, f * d);
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let xi = g.input(x.clone(), false);
        let y = g.fm_interaction(xi, f, d);
        for r in 0..3 {
            let e = |i: usize, k: usize| x.data[r * f * d + i * d + k];
            let mut want = 0.0;
            for i in 0..f {
                for j in i + 1..f {
                    want += (0..d).map(|k| e(i, k) * e(j, k)).sum::<f32>();
                }
            }
            assert!((g.value(y).data[r] - want).abs() < 1e-4);
        }
        check(ParamStore::new(), x, |g, x| g.fm_interaction(x, f, d));
    }
}
