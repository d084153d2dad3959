//! Embedding tables outside the tape. A batch gathers the rows it names; their gradients are
//! summed per distinct row ([`RowGrads`]) and only those rows are updated (row-wise lazy rule),
//! so the step costs the same whatever the table size. Small tables can instead be updated
//! densely, which reproduces PyTorch's dense `nn.Embedding` + Adam exactly (momentum keeps
//! moving rows a batch did not touch, and an L2 term decays every row every step).

use crate::init;
use crate::kernels::simd_fn;
use crate::optim::{apply_rule, sum_sq, sum_sq_of, OptimizerKind, RuleScalars};
use rand::Rng;
use rayon::prelude::*;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hashing for row ids: ids are small integers, SipHash's DoS resistance buys
/// nothing here and costs most of the scatter time.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (i as u64 ^ 0x9E37_79B9).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (i ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdMap = HashMap<u32, usize, BuildHasherDefault<IdHasher>>;

/// How a table's rows are updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Only the rows in the batch (lazy Adam / Adagrad): cost independent of table size.
    Sparse,
    /// Every row, every step: PyTorch's dense semantics.
    Dense,
}

#[derive(Clone, Debug)]
pub struct EmbeddingOptimizer {
    pub kind: OptimizerKind,
    pub mode: UpdateMode,
    /// L2 coefficient λ of `(λ/2)·‖W‖²`: adds `λ·w` to the gradient of each updated row.
    pub l2: f32,
}

/// A `[rows × dim]` table with its optimizer state.
#[derive(Clone, Debug)]
pub struct EmbeddingTable {
    pub rows: usize,
    pub dim: usize,
    pub weight: Vec<f32>,
    pub state1: Vec<f32>,
    pub state2: Vec<f32>,
}

/// Gradients summed per distinct row, in first-seen order (deterministic).
#[derive(Clone, Debug, Default)]
pub struct RowGrads {
    pub dim: usize,
    pub rows: Vec<u32>,
    pub grads: Vec<f32>,
    index: RowIndex,
}

/// Where a row's gradient sits: a hash map for large tables, a direct array for small ones
/// (dense-mode tables, whose step is O(table) anyway).
#[derive(Clone, Debug)]
enum RowIndex {
    Hashed(IdMap),
    Direct(Vec<u32>),
}

impl Default for RowIndex {
    fn default() -> Self {
        RowIndex::Hashed(IdMap::default())
    }
}

impl RowGrads {
    pub fn new(dim: usize) -> Self {
        RowGrads {
            dim,
            ..Default::default()
        }
    }

    /// For a table of `table_rows` rows: direct indexing (no hashing), O(table_rows) memory.
    pub fn direct(dim: usize, table_rows: usize) -> Self {
        RowGrads {
            dim,
            index: RowIndex::Direct(vec![u32::MAX; table_rows]),
            ..Default::default()
        }
    }

    /// Adds `scale · g` to row `row`'s gradient.
    #[inline]
    pub fn add(&mut self, row: u32, g: &[f32], scale: f32) {
        let dim = self.dim;
        let (rows, grads) = (&mut self.rows, &mut self.grads);
        let mut new_slot = || {
            rows.push(row);
            grads.resize(grads.len() + dim, 0.0);
            rows.len() - 1
        };
        let slot = match &mut self.index {
            RowIndex::Hashed(map) => *map.entry(row).or_insert_with(new_slot),
            RowIndex::Direct(ix) => {
                let e = &mut ix[row as usize];
                if *e == u32::MAX {
                    *e = new_slot() as u32;
                }
                *e as usize
            }
        };
        self.grads[slot * dim..(slot + 1) * dim]
            .iter_mut()
            .zip(g)
            .for_each(|(a, b)| *a += scale * b);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl EmbeddingTable {
    /// N(0, std) rows with row 0 (padding) zeroed, as FuxiCTR initializes embeddings.
    pub fn new(rows: usize, dim: usize, std: f32, kind: OptimizerKind, rng: &mut impl Rng) -> Self {
        let mut weight = init::normal(rng, rows, dim, std).data;
        let pad = dim.min(weight.len());
        weight[..pad].fill(0.0);
        Self::from_weight(rows, dim, weight, kind)
    }

    pub fn from_weight(rows: usize, dim: usize, weight: Vec<f32>, kind: OptimizerKind) -> Self {
        assert_eq!(weight.len(), rows * dim);
        let slots = kind.state_slots();
        EmbeddingTable {
            rows,
            dim,
            weight,
            state1: if slots >= 1 {
                vec![0.0; rows * dim]
            } else {
                vec![]
            },
            state2: if slots >= 2 {
                vec![0.0; rows * dim]
            } else {
                vec![]
            },
        }
    }

    #[inline]
    pub fn row(&self, r: u32) -> &[f32] {
        let r = r as usize;
        &self.weight[r * self.dim..(r + 1) * self.dim]
    }

    /// Squared norm of the gradient this step will apply (before clipping): the batch
    /// gradient plus the L2 term on the rows the mode updates.
    pub fn grad_norm_sq(&self, g: &RowGrads, opt: &EmbeddingOptimizer) -> f64 {
        let d = self.dim;
        if d == 0 {
            return 0.0;
        }
        // blocks of rows in parallel, summed in their order (deterministic)
        const BLOCK: usize = 2048;
        let touched: f64 = g
            .rows
            .par_chunks(BLOCK)
            .zip(g.grads.par_chunks(BLOCK * d))
            .map(|(rows, grads)| {
                rows.iter()
                    .zip(grads.chunks_exact(d))
                    .map(|(&r, gr)| sum_sq(gr, self.row(r), opt.l2))
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        match opt.mode {
            UpdateMode::Sparse => touched,
            UpdateMode::Dense if opt.l2 > 0.0 => {
                // every row's L2 term `Σ (λ·w)²`, with the touched rows' replaced by their
                // full entries
                let l2_sq = (opt.l2 as f64).powi(2);
                let all: f64 = self
                    .weight
                    .par_chunks(1 << 16)
                    .map(sum_sq_of)
                    .collect::<Vec<f64>>()
                    .iter()
                    .sum::<f64>()
                    * l2_sq;
                let touched_l2_only: f64 =
                    g.rows.iter().map(|&r| sum_sq_of(self.row(r))).sum::<f64>() * l2_sq;
                all - touched_l2_only + touched
            }
            UpdateMode::Dense => touched,
        }
    }

    /// Multiplies the rows `g` names by `factor` (decoupled weight decay on touched rows).
    pub fn decay_rows(&mut self, g: &RowGrads, factor: f32) {
        let d = self.dim;
        for &r in &g.rows {
            let r = r as usize;
            self.weight[r * d..(r + 1) * d]
                .iter_mut()
                .for_each(|w| *w *= factor);
        }
    }

    /// Applies one optimizer step: `scale` multiplies the whole gradient, L2 term included
    /// (clipping by global norm, as `clip_grad_norm_` after the loss); `step`
    /// counts from 1 and is shared with the dense optimizer (bias correction).
    pub fn apply(
        &mut self,
        g: &RowGrads,
        opt: &EmbeddingOptimizer,
        lr: f32,
        scale: f32,
        step: u64,
    ) {
        let d = self.dim;
        match opt.mode {
            UpdateMode::Sparse if d == 0 || g.rows.is_empty() => {}
            UpdateMode::Sparse => {
                // The table split into contiguous row ranges, one task each: a task updates
                // the batch's rows that fall in its range, in the batch's order, so the
                // result is the serial one whatever the split. A small batch of rows stays on
                // one thread (one range): spreading it costs more than its update.
                let ranges = if g.grads.len() < SPARSE_PARALLEL_MIN_VALUES {
                    1
                } else {
                    (rayon::current_num_threads() * 4).clamp(1, self.rows.max(1))
                };
                let per = self.rows.div_ceil(ranges).max(1) * d;
                let (l2, kind) = (opt.l2, opt.kind);
                let rule = RuleScalars::new(kind, lr, step);
                fn parts(v: &mut [f32], per: usize, ranges: usize) -> Vec<&mut [f32]> {
                    let mut p: Vec<&mut [f32]> = v.chunks_mut(per).collect();
                    p.resize_with(ranges, Default::default);
                    p
                }
                let (w, s1, s2) = (
                    parts(&mut self.weight, per, ranges),
                    parts(&mut self.state1, per, ranges),
                    parts(&mut self.state2, per, ranges),
                );
                // (one range runs on the calling thread: the trainer steps tables from its pool)
                w.into_par_iter()
                    .zip(s1.into_par_iter().zip(s2.into_par_iter()))
                    .enumerate()
                    .for_each(|(part, (w, (s1, s2)))| {
                        update_range(kind, rule, w, s1, s2, part * per, g, l2, scale)
                    });
            }
            UpdateMode::Dense => {
                let mut full = vec![0.0f32; self.weight.len()];
                for (i, &r) in g.rows.iter().enumerate() {
                    let r = r as usize;
                    full[r * d..(r + 1) * d].copy_from_slice(&g.grads[i * d..(i + 1) * d]);
                }
                if opt.l2 > 0.0 || scale != 1.0 {
                    full.iter_mut()
                        .zip(&self.weight)
                        .for_each(|(f, w)| *f = (*f + opt.l2 * w) * scale);
                }
                const CHUNK: usize = 1 << 14;
                let kind = opt.kind;
                let n = self.weight.len();
                let mut s1: Vec<&mut [f32]> = self.state1.chunks_mut(CHUNK).collect();
                let mut s2: Vec<&mut [f32]> = self.state2.chunks_mut(CHUNK).collect();
                s1.resize_with(n.div_ceil(CHUNK), Default::default);
                s2.resize_with(n.div_ceil(CHUNK), Default::default);
                self.weight
                    .par_chunks_mut(CHUNK)
                    .zip(full.par_chunks(CHUNK))
                    .zip(s1.into_par_iter().zip(s2.into_par_iter()))
                    .for_each(|((w, gch), (a, b))| kind.update(w, gch, a, b, lr, step));
            }
        }
    }
}

/// Below this many gradient values a sparse step runs on one thread.
const SPARSE_PARALLEL_MIN_VALUES: usize = 1 << 14;

simd_fn! {
    /// The sparse step on one contiguous range of a table (`w`, `s1`, `s2` start at value
    /// `lo`): the batch's rows inside it, in the batch's order.
    #[allow(clippy::too_many_arguments)]
    fn update_range(
        kind: OptimizerKind,
        rule: RuleScalars,
        w: &mut [f32],
        s1: &mut [f32],
        s2: &mut [f32],
        lo: usize,
        g: &RowGrads,
        l2: f32,
        scale: f32,
    ) {
        let d = g.dim;
        for (gr, &r) in g.grads.chunks_exact(d).zip(&g.rows) {
            let at = r as usize * d;
            if at < lo || at >= lo + w.len() {
                continue;
            }
            let span = at - lo..at - lo + d;
            let (a, b) = state_slices(s1, s2, span.clone());
            apply_rule(kind, rule, &mut w[span], gr, a, b, &|g, w| (g + l2 * w) * scale);
        }
    }
}

fn state_slices<'a>(
    s1: &'a mut [f32],
    s2: &'a mut [f32],
    span: std::ops::Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    let a = if s1.is_empty() {
        &mut [][..]
    } else {
        &mut s1[span.clone()]
    };
    let b = if s2.is_empty() {
        &mut [][..]
    } else {
        &mut s2[span]
    };
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn row_grads_sum_duplicates_in_first_seen_order() {
        for mut g in [RowGrads::new(2), RowGrads::direct(2, 10)] {
            g.add(5, &[1.0, 2.0], 1.0);
            g.add(3, &[1.0, 1.0], 1.0);
            g.add(5, &[0.5, 0.5], 2.0);
            assert_eq!(g.rows, vec![5, 3]);
            assert_eq!(g.grads, vec![2.0, 3.0, 1.0, 1.0]);
        }
    }

    /// The row-range split of the sparse step against the rule applied row by row, with rows
    /// in every range (the first and the last included), L2 and clipping scale, over steps.
    #[test]
    fn sparse_update_in_row_ranges_equals_the_serial_rule_and_norm_the_plain_sum() {
        let mut rng = StdRng::seed_from_u64(3);
        let d = 3;
        // a batch small enough for one thread, and one large enough to be split into ranges
        let few: Vec<u32> = vec![996, 0, 500, 13, 250, 751, 499, 1];
        let many: Vec<u32> = (0..7000u32).map(|i| (i * 7919) % 20011).collect();
        assert!(many.len() * d > SPARSE_PARALLEL_MIN_VALUES);
        for (rows, ids, kind) in [
            (997, &few, OptimizerKind::adam()),
            (997, &few, OptimizerKind::adagrad()),
            (997, &few, OptimizerKind::Sgd),
            (20011, &many, OptimizerKind::adam()),
            (20011, &many, OptimizerKind::adagrad()),
            (20011, &many, OptimizerKind::Sgd),
        ] {
            let mut table = EmbeddingTable::new(rows, d, 0.1, kind, &mut rng);
            let mut expect = table.clone();
            let opt = EmbeddingOptimizer {
                kind,
                mode: UpdateMode::Sparse,
                l2: 0.01,
            };
            for step in 1..=3u64 {
                let mut g = RowGrads::new(d);
                for &r in ids.iter() {
                    let v = [r as f32 * 1e-3, -0.5, step as f32];
                    g.add(r, &v, 1.0);
                }
                let mut norm = 0.0f64;
                for (i, &r) in g.rows.iter().enumerate() {
                    for k in 0..d {
                        let x = g.grads[i * d + k] + 0.01 * table.row(r)[k];
                        norm += (x as f64) * (x as f64);
                    }
                }
                let got = table.grad_norm_sq(&g, &opt);
                assert!((got - norm).abs() <= 1e-12 * norm, "{got} vs {norm}");
                table.apply(&g, &opt, 0.01, 0.5, step);
                for (i, &r) in g.rows.iter().enumerate() {
                    let span = r as usize * d..(r as usize + 1) * d;
                    let gi: Vec<f32> = (0..d)
                        .map(|k| (g.grads[i * d + k] + 0.01 * expect.weight[span.start + k]) * 0.5)
                        .collect();
                    let (a, b) = state_slices(&mut expect.state1, &mut expect.state2, span.clone());
                    kind.update(&mut expect.weight[span], &gi, a, b, 0.01, step);
                }
                assert_eq!(table.weight, expect.weight);
                assert_eq!(table.state1, expect.state1);
                assert_eq!(table.state2, expect.state2);
            }
        }
    }

    #[test]
    fn sparse_update_touches_only_named_rows_and_matches_dense_on_them() {
        let mut rng = StdRng::seed_from_u64(9);
        let kind = OptimizerKind::adam();
        let base = EmbeddingTable::new(100, 4, 0.1, kind, &mut rng);
        assert!(base.row(0).iter().all(|&v| v == 0.0), "padding row is zero");
        let mut g = RowGrads::new(4);
        g.add(7, &[0.1, -0.2, 0.3, 0.0], 1.0);
        g.add(42, &[1.0, 1.0, -1.0, 0.5], 1.0);
        let sparse_opt = EmbeddingOptimizer {
            kind,
            mode: UpdateMode::Sparse,
            l2: 0.0,
        };
        let dense_opt = EmbeddingOptimizer {
            kind,
            mode: UpdateMode::Dense,
            l2: 0.0,
        };
        let mut sparse = base.clone();
        let mut dense = base.clone();
        sparse.apply(&g, &sparse_opt, 0.01, 1.0, 1);
        dense.apply(&g, &dense_opt, 0.01, 1.0, 1);
        for r in 0..100u32 {
            if r == 7 || r == 42 {
                assert_ne!(sparse.row(r), base.row(r));
            } else {
                assert_eq!(sparse.row(r), base.row(r), "row {r} moved");
            }
            assert_eq!(sparse.row(r), dense.row(r));
        }
        // a second step without row 7: dense Adam's momentum still moves it, lazy Adam does not
        let mut g2 = RowGrads::new(4);
        g2.add(42, &[1.0; 4], 1.0);
        sparse.apply(&g2, &sparse_opt, 0.01, 1.0, 2);
        let before = dense.row(7).to_vec();
        dense.apply(&g2, &dense_opt, 0.01, 1.0, 2);
        assert_ne!(dense.row(7), &before[..]);
        assert_eq!(sparse.row(7), &before[..]);
    }

    #[test]
    fn dense_l2_norm_counts_every_row() {
        let kind = OptimizerKind::Sgd;
        let t = EmbeddingTable::from_weight(3, 1, vec![0.0, 2.0, -1.0], kind);
        let mut g = RowGrads::new(1);
        g.add(1, &[0.5], 1.0);
        let opt = EmbeddingOptimizer {
            kind,
            mode: UpdateMode::Dense,
            l2: 0.1,
        };
        // row 1: 0.5 + 0.2; row 2: -0.1
        let want = 0.7f64.powi(2) + 0.01;
        assert!((t.grad_norm_sq(&g, &opt) - want).abs() < 1e-6);
        let mut t2 = t.clone();
        t2.apply(&g, &opt, 1.0, 1.0, 1);
        assert!((t2.weight[1] - 1.3).abs() < 1e-6 && (t2.weight[2] + 0.9).abs() < 1e-6);
    }
}
