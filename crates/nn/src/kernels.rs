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
    // SAFETY: `c` holds the m·n values the product writes (and reads, when accumulating).
    unsafe { gemm_into(c.as_mut_ptr(), a, b, m, n, k, trans_a, trans_b, accumulate) }
}

/// `op(a) · op(b)` in a new `[m×n]` buffer (as [`matmul`]) that the product writes once: no
/// zero-filling pass first, which on the training step's activation-sized gradients costs as
/// much as a ReLU pass.
pub fn matmul_new(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
) -> Vec<f32> {
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: with `accumulate` off the product only writes the destination, every one of its
    // m·n values (gemm sets them to zero when k is 0), so the buffer is initialised after it.
    unsafe {
        gemm_into(c.as_mut_ptr(), a, b, m, n, k, trans_a, trans_b, false);
        c.set_len(m * n);
    }
    c
}

/// The product behind [`matmul`] and [`matmul_new`].
///
/// # Safety
/// `c` must be valid for writes of `m·n` values, and initialised when `accumulate` is set.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    c: *mut f32,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    assert_eq!(a.len(), m * k, "matmul: lhs length");
    assert_eq!(b.len(), k * n, "matmul: rhs length");
    if m == 0 || n == 0 {
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
    // SAFETY: the asserts above keep every strided read of `a` and `b` inside the slices, and
    // the caller vouches for `c`; without `accumulate` gemm never reads the destination (and
    // zero-fills it when k is 0).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
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

/// The widest vector unit this CPU has, detected once: 2 AVX-512, 1 AVX2 with FMA, 0 neither.
#[inline]
pub fn simd_level() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);
    let cached = LEVEL.load(Ordering::Relaxed);
    if cached != u8::MAX {
        return cached;
    }
    #[cfg(target_arch = "x86_64")]
    let level = if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("fma")
    {
        2
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        1
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let level = 0;
    LEVEL.store(level, Ordering::Relaxed);
    level
}

/// Defines a function whose body is compiled three times — for AVX-512, for AVX2 and for the
/// baseline the build targets (SSE2 on x86-64) — and runs the widest the CPU has
/// ([`simd_level`]), so its loops vectorize at that width. The results do not depend on the
/// width: Rust never fuses a multiply and an add, and each lane does what the scalar loop
/// would. (`pulp`'s closure dispatch was tried first: its closures were not inlined into the
/// AVX-512 entry point, and the sparse product stayed 2.4× slower than a native build.)
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::kernels::simd_level() {
                    // SAFETY: simd_level found these instructions on this CPU.
                    2 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    1 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Elementwise loops split into chunks of this many values across threads.
const ELEMENTWISE_CHUNK: usize = 8192;

simd_fn! {
    fn map_chunk(x: &mut [f32], f: &(impl Fn(f32) -> f32 + Sync)) {
        x.iter_mut().for_each(|v| *v = f(*v))
    }
}

simd_fn! {
    fn zip_map_inplace_chunk(x: &mut [f32], y: &[f32], f: &(impl Fn(f32, f32) -> f32 + Sync)) {
        x.iter_mut().zip(y).for_each(|(a, b)| *a = f(*a, *b))
    }
}

/// Applies `f` to every element, on several threads for long slices.
pub fn map_inplace(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if x.len() >= PARALLEL_MIN_LEN {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .for_each(|c| map_chunk(c, &f));
    } else {
        map_chunk(x, &f);
    }
}

/// `out[i] = f(a[i], b[i])`.
pub fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    // the output's old values go unread (the closure ignores them)
    zip2_map_inplace(out, a, b, |_, a, b| f(a, b));
}

/// `x[i] = f(x[i], y[i])`.
pub(crate) fn zip_map_inplace(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len());
    if x.len() >= PARALLEL_MIN_LEN {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(y.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(a, b)| zip_map_inplace_chunk(a, b, &f));
    } else {
        zip_map_inplace_chunk(x, y, &f);
    }
}

simd_fn! {
    fn zip2_map_inplace_chunk(
        x: &mut [f32],
        a: &[f32],
        b: &[f32],
        f: &(impl Fn(f32, f32, f32) -> f32 + Sync),
    ) {
        for ((x, &a), &b) in x.iter_mut().zip(a).zip(b) {
            *x = f(*x, a, b);
        }
    }
}

/// `x[i] = f(x[i], a[i], b[i])`.
pub(crate) fn zip2_map_inplace(
    x: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) {
    assert!(x.len() == a.len() && a.len() == b.len());
    if x.len() >= PARALLEL_MIN_LEN {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                a.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(b.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(x, (a, b))| zip2_map_inplace_chunk(x, a, b, &f));
    } else {
        zip2_map_inplace_chunk(x, a, b, &f);
    }
}

/// Column sums of a row-major `[rows×cols]` matrix, over blocks of rows in parallel
/// ([`row_block_len`] values a block, their sums added in block order by [`add_in_order`]):
/// the same result on any number of threads.
pub fn par_col_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = x
        .par_chunks(row_block_len(cols))
        .map(|rows| {
            let mut sums = vec![0.0f32; cols];
            col_sums_into(&mut sums, rows, cols);
            sums
        })
        .collect();
    add_in_order(&partials, cols)
}

/// Values in a block of whole `cols`-wide rows for a row-blocked parallel pass: at least
/// [`PARALLEL_MIN_LEN`] values, fixed by the width alone, so the blocks (and the rounding of a
/// blocked sum) do not depend on the thread count.
pub(crate) fn row_block_len(cols: usize) -> usize {
    (PARALLEL_MIN_LEN / cols.max(1)).max(1) * cols.max(1)
}

/// The blocks' partial column sums added in block order.
pub(crate) fn add_in_order(partials: &[Vec<f32>], cols: usize) -> Vec<f32> {
    let mut total = vec![0.0f32; cols];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Asks the CPU to start loading the cache line at the start of `values` (a hint: no effect on
/// results).
#[inline(always)]
pub fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing into the program; the pointer is the
    // start of a live slice.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(values.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// `acc[i] += x[i]`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    zip_map_inplace(acc, x, |a, x| a + x);
}

/// `Σ a[k]·b[k]` in eight interleaved running sums (lane `k mod 8`) added pairwise at the
/// end: a fixed order, so the result does not depend on the vector width, and the loop
/// vectorizes (one running sum would wait on every add). Call it from a [`simd_fn!`] body.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

simd_fn! {
    /// Column sums of a row-major `[rows×cols]` matrix, accumulated into `out`.
    pub fn col_sums_into(out: &mut [f32], x: &[f32], cols: usize) {
        assert_eq!(out.len(), cols);
        for row in x.chunks_exact(cols) {
            out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
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
            // a new buffer holds what the product writes over a zeroed one, bit for bit
            let mut zeroed = vec![0.0; m * n];
            matmul(&mut zeroed, aa, bb, m, n, k, ta, tb, false);
            assert_eq!(matmul_new(aa, bb, m, n, k, ta, tb), zeroed, "{ta} {tb}");
        }
        // an empty inner size gives zeros, not whatever the new buffer held
        assert_eq!(matmul_new(&[], &[], 3, 4, 0, false, false), vec![0.0; 12]);
    }
}
