//! A sparse matrix in CSR form and `spmm` (sparse × dense) on the tape: the graph convolution
//! of LightGCN-style models, `Â · E`, with the backward pass `Âᵀ · G`.

use super::CustomOp;
use crate::graph::{Graph, NodeId};
use crate::kernels::{add_assign, map_inplace, simd_fn};
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
        // blocks of rows in parallel; within a row, the sum runs over its entries in order,
        // so every thread count and vector width gives the same bits
        const ROWS_PER_TASK: usize = 64;
        out.data
            .par_chunks_mut(d * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(t, block)| spmm_rows(self, t * ROWS_PER_TASK, block, &x.data, d));
        out
    }
}

simd_fn! {
    /// Rows `first..` of `a · x` into `block` (whole rows of width `d`).
    fn spmm_rows(a: &CsrMatrix, first: usize, block: &mut [f32], x: &[f32], d: usize) {
        for (k, orow) in block.chunks_exact_mut(d).enumerate() {
            let r = first + k;
            let (lo, hi) = (a.indptr[r], a.indptr[r + 1]);
            spmm_row(orow, &a.indices[lo..hi], &a.values[lo..hi], x, d);
        }
    }
}

/// Values per register block of [`spmm_row`]: 64 floats are four AVX-512 or eight AVX2
/// registers, which stay in registers across a row's entries.
const SPMM_BLOCK: usize = 64;

/// `orow = Σ_e vals[e] · x[ix[e]]` for one output row (`orow` starts zeroed). Columns go in
/// blocks of [`SPMM_BLOCK`] held in a local accumulator, so the row is loaded and stored once,
/// not once per entry.
#[inline(always)]
fn spmm_row(orow: &mut [f32], ix: &[u32], vals: &[f32], x: &[f32], d: usize) {
    let mut start = 0;
    while start + SPMM_BLOCK <= d {
        let mut acc = [0f32; SPMM_BLOCK];
        for (&c, &v) in ix.iter().zip(vals) {
            let at = c as usize * d + start;
            let xb: &[f32; SPMM_BLOCK] = x[at..at + SPMM_BLOCK].try_into().expect("a block");
            for k in 0..SPMM_BLOCK {
                acc[k] += v * xb[k];
            }
        }
        orow[start..start + SPMM_BLOCK].copy_from_slice(&acc);
        start += SPMM_BLOCK;
    }
    if start < d {
        let tail = &mut orow[start..];
        for (&c, &v) in ix.iter().zip(vals) {
            let at = c as usize * d + start;
            let xr = &x[at..at + tail.len()];
            tail.iter_mut().zip(xr).for_each(|(o, &xv)| *o += v * xv);
        }
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

/// `(x + a·x + … + a^K·x) / (K + 1)`: the layer mean of LightGCN-style propagation as one op.
/// The map is linear, so the backward pass needs no activation: with `gs = g / (K + 1)`, the
/// input's gradient is `gs + aᵀ(gs + aᵀ(… gs))` (K products, Horner's order). Same products
/// and sums as the composed `spmm`/`add`/`scale` ops, in the same order — the same bits —
/// without the 2K + 1 intermediate nodes and their buffers.
struct LayerMean {
    a: Arc<CsrMatrix>,
    at: Arc<CsrMatrix>,
    layers: usize,
}

impl LayerMean {
    /// `t / (K + 1)` as the composed `scale` op computes it (`v · (1 / (K + 1))`).
    fn divide_by_layer_count(&self, t: &mut Tensor) {
        if self.layers > 0 {
            let c = 1.0 / (self.layers + 1) as f32;
            map_inplace(&mut t.data, move |v| v * c);
        }
    }
}

impl CustomOp for LayerMean {
    fn name(&self) -> &'static str {
        "spmm_layer_mean"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let x = inputs[0];
        let mut sum = x.clone();
        let mut e = std::borrow::Cow::Borrowed(x);
        for _ in 0..self.layers {
            e = std::borrow::Cow::Owned(self.a.matmul(&e));
            add_assign(&mut sum.data, &e.data);
        }
        self.divide_by_layer_count(&mut sum);
        sum
    }

    fn backward(
        &self,
        _: &[&Tensor],
        _: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        if !needs[0] {
            return vec![None];
        }
        let mut gs = grad.clone();
        self.divide_by_layer_count(&mut gs);
        let mut acc = gs.clone();
        for _ in 0..self.layers {
            acc = self.at.matmul(&acc);
            add_assign(&mut acc.data, &gs.data);
        }
        vec![Some(acc)]
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

    /// The mean of `x, a·x, …, a^layers·x` for a square sparse `a` (LightGCN's layer
    /// combination), as one op; see [`Graph::spmm`] for the shapes.
    pub fn spmm_layer_mean(&mut self, a: &SparseOperand, x: NodeId, layers: usize) -> NodeId {
        assert_eq!(
            a.a.rows, a.a.cols,
            "spmm_layer_mean: the matrix must be square"
        );
        let op = LayerMean {
            a: Arc::clone(&a.a),
            at: Arc::clone(&a.at),
            layers,
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

    #[test]
    fn layer_mean_equals_the_composed_ops_bit_for_bit_and_finite_differences() {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(5);
        // square, not symmetric: the backward pass must use the transpose
        let entries = (0..12u32)
            .map(|k| (k * 7 % 5, k * 3 % 5, rng.gen_range(-1.0f32..1.0)))
            .collect();
        let a = SparseOperand::new(CsrMatrix::from_triplets(5, 5, entries));
        assert!(!a.matrix().is_symmetric());
        let x = init::normal(&mut rng, 5, 3, 1.0);
        let w = init::normal(&mut rng, 5, 3, 1.0);
        for layers in [0, 1, 3] {
            let run = |fused: bool| {
                let store = ParamStore::new();
                let mut g = Graph::new(&store, true);
                let xi = g.input(x.clone(), true);
                let y = if fused {
                    g.spmm_layer_mean(&a, xi, layers)
                } else {
                    let (mut e, mut sum) = (xi, xi);
                    for _ in 0..layers {
                        e = g.spmm(&a, e);
                        sum = g.add(sum, e);
                    }
                    if layers > 0 {
                        g.scale(sum, 1.0 / (layers + 1) as f32)
                    } else {
                        sum
                    }
                };
                let wn = g.input(w.clone(), false);
                let p = g.mul(y, wn);
                let l = g.sum_all(p);
                let grads = g.backward(l);
                let gx = grads.of(xi).expect("a gradient").data.clone();
                (g.value(y).data.clone(), gx)
            };
            assert_eq!(run(true), run(false), "{layers} layers");
        }
        check_gradients(&ParamStore::new(), &[x], |g, xs| {
            let y = g.spmm_layer_mean(&a, xs[0], 2);
            let wn = g.input(w.clone(), false);
            let p = g.mul(y, wn);
            let t = g.tanh(p);
            let s = g.mul(t, t);
            g.sum_all(s)
        })
        .unwrap();
    }
}
