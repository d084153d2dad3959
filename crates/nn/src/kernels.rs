//! Matrix multiply on the `gemm` crate (runtime CPU dispatch, AVX-512 where present) and the
//! elementwise loops the layers share.

use gemm::Parallelism;
use rayon::prelude::*;

/// Below this many multiply-adds a matmul stays on one thread: spawning costs more than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;
/// Elementwise loops split across threads only above this length.
pub const PARALLEL_MIN_LEN: usize = 1 << 15;

/// `c[m×n] = (accumulate ? c : 0) + op(a) · op(b)` with row-major storage, where `op(a)` is
/// `a[m×k]`, or `a` stored as `[k×m]` when `trans_a`; likewise `op(b)` is `b[k×n]` or `b`
/// stored as `[n×k]` when `trans_b`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    assert_eq!(c.len(), m * n, "matmul: output length");
    assert_eq!(a.len(), m * k, "matmul: lhs length");
    assert_eq!(b.len(), k * n, "matmul: rhs length");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let par = if m * n * k >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above guarantee every strided access stays inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Applies `f` to every element, on several threads for long slices.
pub fn map_inplace(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if x.len() >= PARALLEL_MIN_LEN {
        x.par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    } else {
        x.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// `out[i] = f(a[i], b[i])`.
pub fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert!(out.len() == a.len() && a.len() == b.len());
    if out.len() >= PARALLEL_MIN_LEN {
        out.par_chunks_mut(4096)
            .zip(a.par_chunks(4096).zip(b.par_chunks(4096)))
            .for_each(|(o, (a, b))| {
                for i in 0..o.len() {
                    o[i] = f(a[i], b[i]);
                }
            });
    } else {
        for i in 0..out.len() {
            out[i] = f(a[i], b[i]);
        }
    }
}

/// `x[i] = f(x[i], y[i])`.
pub(crate) fn zip_map_inplace(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len());
    if x.len() >= PARALLEL_MIN_LEN {
        x.par_chunks_mut(4096)
            .zip(y.par_chunks(4096))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a = f(*a, *b)));
    } else {
        x.iter_mut().zip(y).for_each(|(a, b)| *a = f(*a, *b));
    }
}

/// `acc[i] += x[i]`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len());
    if acc.len() >= PARALLEL_MIN_LEN {
        acc.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
    } else {
        acc.iter_mut().zip(x).for_each(|(a, x)| *a += x);
    }
}

/// Column sums of a row-major `[rows×cols]` matrix, accumulated into `out`.
pub fn col_sums_into(out: &mut [f32], x: &[f32], cols: usize) {
    assert_eq!(out.len(), cols);
    for row in x.chunks_exact(cols) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose() {
        let (m, n, k) = (37, 23, 19);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let want = naive(&a, &b, m, n, k);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut c = vec![1.0; m * n];
            let aa = if ta { &at } else { &a };
            let bb = if tb { &bt } else { &b };
            matmul(&mut c, aa, bb, m, n, k, ta, tb, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{ta} {tb}: {x} vs {y}");
            }
            // accumulate adds on top of what is there
            matmul(&mut c, aa, bb, m, n, k, ta, tb, true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-3);
            }
        }
    }
}
