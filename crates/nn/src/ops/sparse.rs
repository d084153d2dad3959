//! A sparse matrix in CSR form and `spmm` (sparse × dense) on the tape: the graph convolution
//! of LightGCN-style models, `Â · E`, with the backward pass `Âᵀ · G`.

use super::CustomOp;
use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// A `rows × cols` matrix in compressed sparse row form: row `r`'s entries are
/// `indices[indptr[r]..indptr[r+1]]` (column ids, ascending) with `values` alongside.
#[derive(Clone, Debug, PartialEq)]
pub struct CsrMatrix {
    pub rows: usize,
    pub cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl CsrMatrix {
    /// From `(row, col, value)` triplets in any order; repeated positions are summed.
    pub fn from_triplets(rows: usize, cols: usize, mut entries: Vec<(u32, u32, f32)>) -> Self {
        entries.sort_unstable_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0usize; rows + 1];
        let mut indices = Vec::with_capacity(entries.len());
        let mut values: Vec<f32> = Vec::with_capacity(entries.len());
        let mut last: Option<(u32, u32)> = None;
        for (r, c, v) in entries {
            assert!(
                (r as usize) < rows && (c as usize) < cols,
                "csr: entry out of range"
            );
            if last == Some((r, c)) {
                *values.last_mut().expect("a previous entry") += v;
                continue;
            }
            last = Some((r, c));
            indptr[r as usize + 1] += 1;
            indices.push(c);
            values.push(v);
        }
        for r in 0..rows {
            indptr[r + 1] += indptr[r];
        }
        CsrMatrix {
            rows,
            cols,
            indptr,
            indices,
            values,
        }
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row `r` as (column ids, values).
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// The value at `(r, c)`, zero where there is no entry.
    pub fn get(&self, r: usize, c: u32) -> f32 {
        let (ix, vals) = self.row(r);
        ix.binary_search(&c).map(|k| vals[k]).unwrap_or(0.0)
    }

    pub fn transpose(&self) -> CsrMatrix {
        let mut entries = Vec::with_capacity(self.nnz());
        for r in 0..self.rows {
            let (ix, vals) = self.row(r);
            entries.extend(ix.iter().zip(vals).map(|(&c, &v)| (c, r as u32, v)));
        }
        CsrMatrix::from_triplets(self.cols, self.rows, entries)
    }

    /// Whether the matrix equals its transpose (then `spmm` needs no second copy).
    pub fn is_symmetric(&self) -> bool {
        self.rows == self.cols && *self == self.transpose()
    }

    /// `self · x` for a dense `x[cols × d]`, rows in parallel.
    pub fn matmul(&self, x: &Tensor) -> Tensor {
        assert_eq!(
            x.rows, self.cols,
            "spmm: {}x{} · {}x{}",
            self.rows, self.cols, x.rows, x.cols
        );
        let d = x.cols;
        let mut out = Tensor::zeros(self.rows, d);
        if d == 0 {
            return out;
        }
        out.data
            .par_chunks_mut(d)
            .enumerate()
            .for_each(|(r, orow)| {
                let (ix, vals) = self.row(r);
                for (&c, &v) in ix.iter().zip(vals) {
                    let xrow = &x.data[c as usize * d..(c as usize + 1) * d];
                    orow.iter_mut().zip(xrow).for_each(|(o, &xv)| *o += v * xv);
                }
            });
        out
    }
}

/// `a · x` with `aᵀ` kept for the backward pass (the same `Arc` when `a` is symmetric).
struct Spmm {
    a: Arc<CsrMatrix>,
    at: Arc<CsrMatrix>,
}

impl CustomOp for Spmm {
    fn name(&self) -> &'static str {
        "spmm"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        self.a.matmul(inputs[0])
    }

    fn backward(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        vec![needs[0].then(|| self.at.matmul(grad))]
    }
}

/// A sparse matrix ready for the tape: the matrix and its transpose.
#[derive(Clone, Debug)]
pub struct SparseOperand {
    a: Arc<CsrMatrix>,
    at: Arc<CsrMatrix>,
}

impl SparseOperand {
    pub fn new(a: CsrMatrix) -> Self {
        let a = Arc::new(a);
        let at = if a.is_symmetric() {
            Arc::clone(&a)
        } else {
            Arc::new(a.transpose())
        };
        SparseOperand { a, at }
    }

    pub fn matrix(&self) -> &CsrMatrix {
        &self.a
    }
}

impl Graph<'_> {
    /// `a · x` for a sparse `a[R×C]` and a dense node `x[C×D]`; the gradient of `x` is `aᵀ · g`.
    pub fn spmm(&mut self, a: &SparseOperand, x: NodeId) -> NodeId {
        let op = Spmm {
            a: Arc::clone(&a.a),
            at: Arc::clone(&a.at),
        };
        self.custom(op, &[x])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use crate::{init, ParamStore};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn triplets_sum_repeats_and_transpose_round_trips() {
        let m = CsrMatrix::from_triplets(2, 3, vec![(1, 2, 1.0), (0, 1, 2.0), (1, 2, 0.5)]);
        assert_eq!(m.indptr, vec![0, 1, 2]);
        assert_eq!(m.get(1, 2), 1.5);
        assert_eq!(m.get(0, 0), 0.0);
        assert_eq!(m.transpose().transpose(), m);
        assert!(!m.is_symmetric());
    }

    #[test]
    fn spmm_matches_dense_product_and_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = CsrMatrix::from_triplets(
            3,
            4,
            vec![
                (0, 0, 0.5),
                (0, 3, -1.0),
                (1, 1, 2.0),
                (2, 0, 1.0),
                (2, 2, 0.25),
            ],
        );
        let x = init::normal(&mut rng, 4, 2, 1.0);
        let y = a.matmul(&x);
        for r in 0..3 {
            for j in 0..2 {
                let dense: f32 = (0..4).map(|c| a.get(r, c as u32) * x.data[c * 2 + j]).sum();
                assert!((y.data[r * 2 + j] - dense).abs() < 1e-6);
            }
        }
        let op = SparseOperand::new(a);
        let w = init::normal(&mut rng, 3, 2, 1.0);
        check_gradients(&ParamStore::new(), &[x], |g, xs| {
            let y = g.spmm(&op, xs[0]);
            let wn = g.input(w.clone(), false);
            let p = g.mul(y, wn);
            let s = g.sum_cols(p);
            let t = g.tanh(s);
            let s2 = g.mul(t, t);
            g.sum_all(s2)
        })
        .unwrap();
    }
}
