//! Ops that move entries by index or position: embedding rows, per-instance segments and their
//! means, column concatenation and slices, a learnable row blended in by mask, row dots
//! against indexed table rows (NCE scoring) and dots of indexed row pairs (top-K scores).

use crate::graph::{accumulate, Graph, NodeId, Op};
use crate::kernels::{dot, simd_fn};
use crate::tensor::Tensor;
use crate::transformer::Segment;
use rayon::prelude::*;

impl Graph<'_> {
    /// Rows `ids` of a `[rows × width]` table node (an embedding lookup through the tape; the
    /// table's gradient is dense, as `torch.nn.Embedding`'s is by default).
    pub fn gather_rows(&mut self, table: NodeId, ids: &[u32]) -> NodeId {
        let tv = self.value(table);
        let w = tv.cols;
        let mut data = Vec::with_capacity(ids.len() * w);
        for &i in ids {
            assert!(
                (i as usize) < tv.rows,
                "gather_rows: row {i} of {}",
                tv.rows
            );
            data.extend_from_slice(tv.row(i as usize));
        }
        let out = Tensor::from_vec(ids.len(), w, data);
        let rg = self.rg(table);
        self.push(
            Op::GatherRows {
                table,
                ids: ids.to_vec(),
            },
            out,
            rg,
        )
    }

    pub(crate) fn gather_rows_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        table: NodeId,
        ids: &[u32],
    ) {
        let tv = self.value(table);
        let w = tv.cols;
        // scattered straight into the table's gradient: a table gathered twice (BPR's users
        // for the positive and the negative) gets no second table-sized buffer
        let gt = g[table.0].get_or_insert_with(|| Tensor::zeros(tv.rows, w));
        scatter_add_rows(&mut gt.data, ids, &gy.data, w, None);
    }

    /// Row `i` of the output is `x[row_i][col_i .. col_i+len]` for `at[i] = (row_i, col_i)`:
    /// picks per-instance segments (e.g. the projections of the masked fields) into rows.
    pub fn gather_segments(&mut self, x: NodeId, at: Vec<(u32, u32)>, len: usize) -> NodeId {
        let xv = self.value(x);
        let mut data = Vec::with_capacity(at.len() * len);
        for &(r, c) in &at {
            let start = r as usize * xv.cols + c as usize;
            assert!(
                c as usize + len <= xv.cols,
                "gather_segments: segment out of range"
            );
            data.extend_from_slice(&xv.data[start..start + len]);
        }
        let out = Tensor::from_vec(at.len(), len, data);
        let rg = self.rg(x);
        self.push(Op::GatherSegments { x, at }, out, rg)
    }

    pub(crate) fn gather_segments_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        at: &[(u32, u32)],
    ) {
        let xv = self.value(x);
        let len = gy.cols;
        let mut gx = Tensor::zeros(xv.rows, xv.cols);
        for (i, &(r, c)) in at.iter().enumerate() {
            let start = r as usize * xv.cols + c as usize;
            gx.data[start..start + len]
                .iter_mut()
                .zip(gy.row(i))
                .for_each(|(a, b)| *a += b);
        }
        accumulate(&mut g[x.0], gx);
    }

    /// The mean of each segment's rows: `[tokens × N] → [segments × N]`.
    pub fn segment_mean(&mut self, x: NodeId, segs: &[Segment]) -> NodeId {
        let xv = self.value(x);
        let c = xv.cols;
        let mut out = Tensor::zeros(segs.len(), c);
        for (o, s) in out.data.chunks_exact_mut(c).zip(segs) {
            for r in s.start..s.start + s.len {
                o.iter_mut().zip(xv.row(r)).for_each(|(a, b)| *a += b);
            }
            let inv = 1.0 / s.len.max(1) as f32;
            o.iter_mut().for_each(|v| *v *= inv);
        }
        let rg = self.rg(x);
        self.push(
            Op::SegmentMean {
                x,
                segs: segs.to_vec(),
            },
            out,
            rg,
        )
    }

    pub(crate) fn segment_mean_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        segs: &[Segment],
    ) {
        let xv = self.value(x);
        let c = xv.cols;
        let mut gx = Tensor::zeros(xv.rows, c);
        for (gr, s) in gy.data.chunks_exact(c).zip(segs) {
            let inv = 1.0 / s.len.max(1) as f32;
            for r in s.start..s.start + s.len {
                gx.data[r * c..(r + 1) * c]
                    .iter_mut()
                    .zip(gr)
                    .for_each(|(a, b)| *a += b * inv);
            }
        }
        accumulate(&mut g[x.0], gx);
    }

    /// Concatenates along columns.
    pub fn concat(&mut self, parts: &[NodeId]) -> NodeId {
        let rows = self.value(parts[0]).rows;
        let cols: usize = parts.iter().map(|&p| self.value(p).cols).sum();
        let mut out = Tensor::zeros(rows, cols);
        let mut off = 0;
        for &p in parts {
            let v = self.value(p);
            assert_eq!(v.rows, rows, "concat: row counts differ");
            for r in 0..rows {
                out.data[r * cols + off..r * cols + off + v.cols].copy_from_slice(v.row(r));
            }
            off += v.cols;
        }
        let rg = parts.iter().any(|&p| self.rg(p));
        self.push(Op::Concat(parts.to_vec()), out, rg)
    }

    pub(crate) fn concat_backward(&self, g: &mut [Option<Tensor>], gy: Tensor, parts: &[NodeId]) {
        let mut off = 0;
        for p in parts {
            let w = self.value(*p).cols;
            if self.rg(*p) {
                let mut gp = Tensor::zeros(gy.rows, w);
                for r in 0..gy.rows {
                    gp.data[r * w..(r + 1) * w].copy_from_slice(&gy.row(r)[off..off + w]);
                }
                accumulate(&mut g[p.0], gp);
            }
            off += w;
        }
    }

    /// Columns `start..start+len`.
    pub fn slice_cols(&mut self, x: NodeId, start: usize, len: usize) -> NodeId {
        let xv = self.value(x);
        assert!(start + len <= xv.cols, "slice_cols out of range");
        let mut out = Tensor::zeros(xv.rows, len);
        for r in 0..xv.rows {
            out.data[r * len..(r + 1) * len].copy_from_slice(&xv.row(r)[start..start + len]);
        }
        let rg = self.rg(x);
        self.push(Op::SliceCols(x, start), out, rg)
    }

    pub(crate) fn slice_cols_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        start: usize,
    ) {
        let xv = self.value(x);
        let mut gx = Tensor::zeros(xv.rows, xv.cols);
        let len = gy.cols;
        for r in 0..xv.rows {
            gx.data[r * xv.cols + start..r * xv.cols + start + len].copy_from_slice(gy.row(r));
        }
        accumulate(&mut g[x.0], gx);
    }

    /// Rows `start..start+len`.
    pub fn slice_rows(&mut self, x: NodeId, start: usize, len: usize) -> NodeId {
        let xv = self.value(x);
        assert!(start + len <= xv.rows, "slice_rows out of range");
        let c = xv.cols;
        let out = Tensor::from_vec(len, c, xv.data[start * c..(start + len) * c].to_vec());
        let rg = self.rg(x);
        self.push(Op::SliceRows(x, start), out, rg)
    }

    pub(crate) fn slice_rows_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        start: usize,
    ) {
        let xv = self.value(x);
        let mut gx = Tensor::zeros(xv.rows, xv.cols);
        let c = xv.cols;
        gx.data[start * c..start * c + gy.len()].copy_from_slice(&gy.data);
        accumulate(&mut g[x.0], gx);
    }

    /// `out = x ⊙ (1 − mask) + row ⊙ mask`, `row[1×C]` broadcast over the rows, `mask` 0/1 of
    /// `x`'s shape: replaces the masked entries (e.g. masked fields' embeddings) by a learnable
    /// row in one pass.
    pub fn blend_row(&mut self, x: NodeId, row: NodeId, mask: Vec<f32>) -> NodeId {
        let (xv, rv) = (self.value(x), self.value(row));
        let c = xv.cols;
        assert_eq!((rv.rows, rv.cols), (1, c), "blend_row: row shape");
        assert_eq!(mask.len(), xv.len(), "blend_row: mask shape");
        let data = xv
            .data
            .iter()
            .zip(&mask)
            .enumerate()
            .map(|(i, (&v, &m))| if m != 0.0 { rv.data[i % c] } else { v })
            .collect();
        let out = Tensor::from_vec(xv.rows, c, data);
        let rg = self.rg(x) || self.rg(row);
        self.push(Op::BlendRow { x, row, mask }, out, rg)
    }

    pub(crate) fn blend_row_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        x: NodeId,
        row: NodeId,
        mask: &[f32],
    ) {
        let c = gy.cols;
        if self.rg(row) {
            let mut gr = vec![0.0f32; c];
            for (i, (&gv, &m)) in gy.data.iter().zip(mask.iter()).enumerate() {
                gr[i % c] += gv * m;
            }
            accumulate(&mut g[row.0], Tensor::from_vec(1, c, gr));
        }
        if self.rg(x) {
            let mut gx = gy;
            gx.data
                .iter_mut()
                .zip(mask.iter())
                .for_each(|(v, &m)| *v *= 1.0 - m);
            accumulate(&mut g[x.0], gx);
        }
    }

    /// `out[r] = a[a_ids[r]] · b[b_ids[r]]` as a `[n×1]` column: the scores of `n` (user, item)
    /// pairs from two tables (or one, `a == b`), without materialising the `2n` gathered rows.
    /// The backward pass scatters straight into the tables' gradients.
    pub fn pair_dots(&mut self, a: NodeId, a_ids: &[u32], b: NodeId, b_ids: &[u32]) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        let w = av.cols;
        assert_eq!(bv.cols, w, "pair_dots: widths differ");
        assert_eq!(
            a_ids.len(),
            b_ids.len(),
            "pair_dots: id lists differ in length"
        );
        for (ids, t) in [(a_ids, av), (b_ids, bv)] {
            if let Some(&i) = ids.iter().find(|&&i| i as usize >= t.rows) {
                panic!("pair_dots: row {i} of {}", t.rows);
            }
        }
        let mut data = vec![0.0; a_ids.len()];
        pair_dots_into(&mut data, &av.data, a_ids, &bv.data, b_ids, w);
        let out = Tensor::from_vec(a_ids.len(), 1, data);
        let rg = self.rg(a) || self.rg(b);
        let op = Op::PairDots {
            a,
            a_ids: a_ids.to_vec(),
            b,
            b_ids: b_ids.to_vec(),
        };
        self.push(op, out, rg)
    }

    pub(crate) fn pair_dots_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        a: NodeId,
        a_ids: &[u32],
        b: NodeId,
        b_ids: &[u32],
    ) {
        // d/da[i] = gy · b[j] and d/db[j] = gy · a[i]; one pass per table, so that `a == b`
        // (LightGCN's propagated table) accumulates into a single buffer
        for (dst, src, dst_ids, src_ids) in [(a, b, a_ids, b_ids), (b, a, b_ids, a_ids)] {
            if !self.rg(dst) {
                continue;
            }
            let (dv, sv) = (self.value(dst), self.value(src));
            let w = dv.cols;
            let gt = g[dst.0].get_or_insert_with(|| Tensor::zeros(dv.rows, w));
            scatter_add_rows(
                &mut gt.data,
                dst_ids,
                &sv.data,
                w,
                Some((src_ids, &gy.data)),
            );
        }
    }

    /// `out[m][c] = h[m] · rows[idx[m·J + c]]` for `h[M×P]`, `rows[R×P]`, `idx` of `M·J`
    /// entries: each row of `h` scored against `J` rows of a small table of distinct rows
    /// (NCE: a target and its sampled negatives), without materialising `M·J` copies.
    pub fn row_dots_indexed(&mut self, h: NodeId, rows: NodeId, idx: Vec<u32>) -> NodeId {
        let (hv, rv) = (self.value(h), self.value(rows));
        let (m, p) = hv.shape();
        assert_eq!(rv.cols, p, "row_dots_indexed: widths differ");
        assert!(
            m > 0 && idx.len().is_multiple_of(m),
            "row_dots_indexed: idx must hold J entries per row"
        );
        assert!(
            idx.iter().all(|&i| (i as usize) < rv.rows),
            "row_dots_indexed: index out of range"
        );
        let j = idx.len() / m;
        let mut data = vec![0.0f32; m * j];
        data.par_chunks_mut(j)
            .zip(hv.data.par_chunks(p))
            .zip(idx.par_chunks(j))
            .for_each(|((out, hr), ix)| {
                for (v, &r) in out.iter_mut().zip(ix) {
                    let row = &rv.data[r as usize * p..(r as usize + 1) * p];
                    *v = hr.iter().zip(row).map(|(a, b)| a * b).sum();
                }
            });
        let out = Tensor::from_vec(m, j, data);
        let rg = self.rg(h) || self.rg(rows);
        self.push(Op::RowDotsIndexed { h, rows, idx }, out, rg)
    }

    pub(crate) fn row_dots_indexed_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        h: NodeId,
        rows: NodeId,
        idx: &[u32],
    ) {
        let (hv, rv) = (self.value(h), self.value(rows));
        let (p, j) = (hv.cols, gy.cols);
        if self.rg(h) {
            let mut gh = Tensor::zeros(hv.rows, p);
            gh.data
                .par_chunks_mut(p)
                .zip(gy.data.par_chunks(j))
                .zip(idx.par_chunks(j))
                .for_each(|((ghr, gr), ix)| {
                    for (gv, &r) in gr.iter().zip(ix) {
                        let row = &rv.data[r as usize * p..(r as usize + 1) * p];
                        ghr.iter_mut().zip(row).for_each(|(a, b)| *a += gv * b);
                    }
                });
            accumulate(&mut g[h.0], gh);
        }
        if self.rg(rows) {
            // a scatter-add into few rows: sequential, it is memory-bound anyway
            let mut gr = Tensor::zeros(rv.rows, p);
            for (m, (gvals, ix)) in gy.data.chunks_exact(j).zip(idx.chunks_exact(j)).enumerate() {
                let hr = hv.row(m);
                for (gv, &r) in gvals.iter().zip(ix) {
                    gr.data[r as usize * p..(r as usize + 1) * p]
                        .iter_mut()
                        .zip(hr)
                        .for_each(|(a, b)| *a += gv * b);
                }
            }
            accumulate(&mut g[rows.0], gr);
        }
    }
}

simd_fn! {
    /// `out[r] = a[a_ids[r]] · b[b_ids[r]]` for row-major tables of width `w`.
    fn pair_dots_into(out: &mut [f32], a: &[f32], a_ids: &[u32], b: &[f32], b_ids: &[u32], w: usize) {
        for ((o, &i), &j) in out.iter_mut().zip(a_ids).zip(b_ids) {
            let (i, j) = (i as usize * w, j as usize * w);
            *o = dot(&a[i..i + w], &b[j..j + w]);
        }
    }
}

simd_fn! {
    /// `dst[ids[r]] += src[r]` for rows of width `w`; with `weighted = (rows, scale)`, instead
    /// `dst[ids[r]] += scale[r] · src[rows[r]]` (a gathered row scaled by its pair's gradient).
    fn scatter_add_rows(
        dst: &mut [f32],
        ids: &[u32],
        src: &[f32],
        w: usize,
        weighted: Option<(&[u32], &[f32])>,
    ) {
        for (r, &i) in ids.iter().enumerate() {
            let row = &mut dst[i as usize * w..(i as usize + 1) * w];
            match weighted {
                None => row.iter_mut().zip(&src[r * w..(r + 1) * w]).for_each(|(a, b)| *a += b),
                Some((rows, scale)) => {
                    let (j, c) = (rows[r] as usize * w, scale[r]);
                    row.iter_mut().zip(&src[j..j + w]).for_each(|(a, &b)| *a += c * b)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::init;
    use crate::ops::test_support::{check, check_loss, rand_input};
    use crate::params::ParamStore;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn embedding_lookup_pooling_and_contrastive_loss_match_finite_differences() {
        // gathered table rows + an input, mean-pooled per segment, normalised, in-batch
        // softmax over scaled cosine similarities (MultipleNegativesRankingLoss)
        let mut rng = StdRng::seed_from_u64(22);
        let mut s = ParamStore::new();
        let table = s.add("table", init::normal(&mut rng, 6, 3, 0.7), true, false);
        let w = s.add("w", init::normal(&mut rng, 3, 3, 0.7), true, true);
        let ids = [4u32, 1, 4, 0, 5, 2, 3];
        let segs = crate::segments_from_lengths(&[2, 2, 1, 2]);
        check_loss(s, rand_input(&mut rng, 7, 3), |g, x| {
            let t = g.param(table);
            let e = g.gather_rows(t, &ids);
            let h = g.add(e, x);
            let p = g.linear(h, w, None);
            let pooled = g.segment_mean(p, &segs);
            let n = g.l2_normalize_rows(pooled);
            let a = g.slice_rows(n, 0, 2);
            let b = g.slice_rows(n, 2, 2);
            let sim = g.matmul_nt(a, b);
            let z = g.scale(sim, 3.0);
            g.softmax_cross_entropy(z, &[0, 1])
        });
    }

    #[test]
    fn pair_dots_known_values_and_finite_differences() {
        use crate::{Graph, Tensor};
        // a width of 10 runs both the eight-lane body and the tail of the dot product
        let a = Tensor::from_vec(2, 10, (0..20).map(|v| v as f32 * 0.5).collect());
        let b = Tensor::from_vec(3, 10, (0..30).map(|v| 1.0 - v as f32 * 0.1).collect());
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let (an, bn) = (g.input(a.clone(), false), g.input(b.clone(), false));
        let d = g.pair_dots(an, &[1, 0, 1], bn, &[2, 0, 0]);
        for (r, (i, j)) in [(1usize, 2usize), (0, 0), (1, 0)].into_iter().enumerate() {
            let want: f32 = a.row(i).iter().zip(b.row(j)).map(|(x, y)| x * y).sum();
            assert!((g.value(d).data[r] - want).abs() < 1e-4, "pair {r}");
        }
        // two tables (BPR), and one table on both sides (LightGCN's propagated rows), with
        // repeated ids so that rows accumulate
        let mut rng = StdRng::seed_from_u64(8);
        let mut s = ParamStore::new();
        let items = s.add("items", init::normal(&mut rng, 4, 10, 0.5), true, true);
        check_loss(s, rand_input(&mut rng, 3, 10), |g, users| {
            let t = g.param(items);
            let pos = g.pair_dots(users, &[0, 2, 2, 1], t, &[3, 1, 3, 0]);
            let neg = g.pair_dots(users, &[0, 2, 2, 1], t, &[2, 2, 0, 0]);
            g.bpr_loss(pos, neg)
        });
        check_loss(ParamStore::new(), rand_input(&mut rng, 5, 10), |g, all| {
            let pos = g.pair_dots(all, &[0, 1, 1], all, &[3, 4, 1]);
            let neg = g.pair_dots(all, &[0, 1, 1], all, &[4, 2, 2]);
            g.bpr_loss(pos, neg)
        });
    }

    #[test]
    fn cross_layer_concat_slice_mul_add() {
        // DCNv2's cross layer: x1 = x0 * (x0 W + b) + x0, then a head over [x1, slice]
        let mut rng = StdRng::seed_from_u64(4);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 4, 4), true, true);
        let b = s.add("b", init::normal(&mut rng, 1, 4, 0.3), true, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 6, 1), true, true);
        check(s, rand_input(&mut rng, 5, 4), |g, x0| {
            let h = g.linear(x0, w, Some(b));
            let m = g.mul(x0, h);
            let x1 = g.add(m, x0);
            let sl = g.slice_cols(x0, 1, 2);
            let c = g.concat(&[x1, sl]);
            g.linear(c, v, None)
        });
    }

    #[test]
    fn blend_row_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(15);
        let mut s = ParamStore::new();
        let row = s.add("mask_row", init::normal(&mut rng, 1, 4, 0.5), true, false);
        let v = s.add("v", init::normal(&mut rng, 4, 1, 0.5), true, false);
        let mask: Vec<f32> = (0..20).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
        check(s, rand_input(&mut rng, 5, 4), |g, x| {
            let r = g.param(row);
            let b = g.blend_row(x, r, mask.clone());
            let t = g.tanh(b);
            g.linear(t, v, None)
        });
    }

    #[test]
    fn nce_scoring_ops_match_finite_differences() {
        // MAP's MFP head: project, pick the masked fields' segments, score each against its
        // target + negatives (output rows as a second input), then a per-row logit
        let mut rng = StdRng::seed_from_u64(14);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 3, 8), true, true);
        let out_rows = s.add(
            "out_rows",
            init::normal(&mut rng, 4 * 3, 4, 0.5),
            true,
            false,
        );
        let v = s.add("v", init::normal(&mut rng, 3, 1, 0.5), true, false);
        check(s, rand_input(&mut rng, 4, 3), |g, x| {
            let p = g.linear(x, w, None);
            let at = vec![(0, 4), (1, 0), (2, 4), (3, 0)];
            let h = g.gather_segments(p, at, 4);
            let o = g.param(out_rows);
            // 4 rows of h, 3 candidates each, over 12 table rows (some repeated)
            let idx = vec![0, 5, 5, 1, 2, 11, 3, 3, 7, 4, 0, 9];
            let scores = g.row_dots_indexed(h, o, idx);
            let t = g.tanh(scores);
            g.linear(t, v, None)
        });
    }
}
