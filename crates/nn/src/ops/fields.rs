//! Ops over the blocks of a row: a CTR batch row is its fields' embeddings side by side
//! (`[B × F·d]`), and the field-interaction models (PNN, FwFM, AFM, NFM, FiBiNET, xDeepFM,
//! AutoInt) pair, pool, rescale and transpose those blocks. Each op is a [`CustomOp`]; its
//! builder on [`Graph`] checks the shapes.

use super::CustomOp;
use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;

/// The field pairs `(i, j)`, `i < j`, in row-major upper-triangle order (torch's
/// `triu_indices(F, F, 1)`, which FuxiCTR's pairwise layers use).
pub fn field_pairs(fields: usize) -> Vec<(usize, usize)> {
    (0..fields)
        .flat_map(|i| (i + 1..fields).map(move |j| (i, j)))
        .collect()
}

struct Reshape {
    rows: usize,
    cols: usize,
}

impl CustomOp for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        Tensor::from_vec(self.rows, self.cols, x[0].data.clone())
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(Tensor::from_vec(x[0].rows, x[0].cols, g.data.clone()))]
    }
}

/// `a_i ⊙ b_j` for every field pair `i < j`: `[B × F·d]² → [B × P·d]`.
struct PairProducts {
    pairs: Vec<(usize, usize)>,
    dim: usize,
}

impl CustomOp for PairProducts {
    fn name(&self) -> &'static str {
        "pair_products"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        let (a, b, d) = (x[0], x[1], self.dim);
        let width = self.pairs.len() * d;
        let mut out = Tensor::zeros(a.rows, width);
        for ((o, ar), br) in out
            .data
            .chunks_exact_mut(width.max(1))
            .zip(a.data.chunks_exact(a.cols))
            .zip(b.data.chunks_exact(b.cols))
        {
            for (op, &(i, j)) in o.chunks_exact_mut(d).zip(&self.pairs) {
                let (ai, bj) = (&ar[i * d..(i + 1) * d], &br[j * d..(j + 1) * d]);
                op.iter_mut()
                    .zip(ai.iter().zip(bj))
                    .for_each(|(o, (p, q))| *o = p * q);
            }
        }
        out
    }
    fn backward(
        &self,
        x: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (a, b, d) = (x[0], x[1], self.dim);
        let mut ga = needs[0].then(|| Tensor::zeros(a.rows, a.cols));
        let mut gb = needs[1].then(|| Tensor::zeros(b.rows, b.cols));
        for r in 0..a.rows {
            let gr = &g.data[r * g.cols..(r + 1) * g.cols];
            let (ar, br) = (a.row(r), b.row(r));
            for (gp, &(i, j)) in gr.chunks_exact(d).zip(&self.pairs) {
                if let Some(ga) = ga.as_mut() {
                    let dst = &mut ga.data[r * a.cols + i * d..r * a.cols + (i + 1) * d];
                    let bj = &br[j * d..(j + 1) * d];
                    dst.iter_mut()
                        .zip(gp.iter().zip(bj))
                        .for_each(|(o, (g, q))| *o += g * q);
                }
                if let Some(gb) = gb.as_mut() {
                    let dst = &mut gb.data[r * b.cols + j * d..r * b.cols + (j + 1) * d];
                    let ai = &ar[i * d..(i + 1) * d];
                    dst.iter_mut()
                        .zip(gp.iter().zip(ai))
                        .for_each(|(o, (g, p))| *o += g * p);
                }
            }
        }
        vec![ga, gb]
    }
}

/// Sums of consecutive groups of `group` columns: `[B × G·group] → [B × G]`.
struct GroupSums {
    group: usize,
}

impl CustomOp for GroupSums {
    fn name(&self) -> &'static str {
        "group_sums"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        let x = x[0];
        let data = x
            .data
            .chunks_exact(self.group)
            .map(|c| c.iter().sum())
            .collect();
        Tensor::from_vec(x.rows, x.cols / self.group, data)
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(expand(g, self.group, x[0].shape()))]
    }
}

/// Each column repeated `group` times: `[B × G] → [B × G·group]` (the adjoint of
/// [`GroupSums`]).
struct ExpandGroups {
    group: usize,
}

fn expand(x: &Tensor, group: usize, shape: (usize, usize)) -> Tensor {
    let mut data = Vec::with_capacity(x.len() * group);
    for &v in &x.data {
        data.extend(std::iter::repeat_n(v, group));
    }
    Tensor::from_vec(shape.0, shape.1, data)
}

impl CustomOp for ExpandGroups {
    fn name(&self) -> &'static str {
        "expand_groups"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        expand(x[0], self.group, (x[0].rows, x[0].cols * self.group))
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        let data = g
            .data
            .chunks_exact(self.group)
            .map(|c| c.iter().sum())
            .collect();
        vec![Some(Tensor::from_vec(x[0].rows, x[0].cols, data))]
    }
}

/// The sum of a row's consecutive blocks of `width` columns: `[B × n·width] → [B × width]`.
struct SumBlocks {
    width: usize,
}

impl CustomOp for SumBlocks {
    fn name(&self) -> &'static str {
        "sum_blocks"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        let (x, w) = (x[0], self.width);
        let mut out = Tensor::zeros(x.rows, w);
        for (o, row) in out
            .data
            .chunks_exact_mut(w)
            .zip(x.data.chunks_exact(x.cols))
        {
            for block in row.chunks_exact(w) {
                o.iter_mut().zip(block).for_each(|(o, v)| *o += v);
            }
        }
        out
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        let x = x[0];
        let mut data = Vec::with_capacity(x.len());
        for gr in g.data.chunks_exact(self.width) {
            for _ in 0..x.cols / self.width {
                data.extend_from_slice(gr);
            }
        }
        vec![Some(Tensor::from_vec(x.rows, x.cols, data))]
    }
}

/// Each row read as a `[r × c]` matrix and transposed to `[c × r]`.
struct TransposeBlocks {
    r: usize,
    c: usize,
}

fn transpose_rows(x: &Tensor, r: usize, c: usize) -> Tensor {
    let mut out = Tensor::zeros(x.rows, x.cols);
    for (o, row) in out
        .data
        .chunks_exact_mut(r * c)
        .zip(x.data.chunks_exact(r * c))
    {
        for i in 0..r {
            for j in 0..c {
                o[j * r + i] = row[i * c + j];
            }
        }
    }
    out
}

impl CustomOp for TransposeBlocks {
    fn name(&self) -> &'static str {
        "transpose_blocks"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        transpose_rows(x[0], self.r, self.c)
    }
    fn backward(&self, _: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(transpose_rows(g, self.c, self.r))]
    }
}

/// Per row, the outer product of `a[N × F]` and `b[N × H]` flattened: `[N × F·H]`, column
/// `f·H + h` holding `a_f b_h`.
struct RowOuter;

impl CustomOp for RowOuter {
    fn name(&self) -> &'static str {
        "row_outer"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        let (a, b) = (x[0], x[1]);
        let mut out = Tensor::zeros(a.rows, a.cols * b.cols);
        for ((o, ar), br) in out
            .data
            .chunks_exact_mut((a.cols * b.cols).max(1))
            .zip(a.data.chunks_exact(a.cols))
            .zip(b.data.chunks_exact(b.cols))
        {
            for (of, &af) in o.chunks_exact_mut(b.cols).zip(ar) {
                of.iter_mut().zip(br).for_each(|(o, &bh)| *o = af * bh);
            }
        }
        out
    }
    fn backward(
        &self,
        x: &[&Tensor],
        _: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (a, b) = (x[0], x[1]);
        let mut ga = needs[0].then(|| Tensor::zeros(a.rows, a.cols));
        let mut gb = needs[1].then(|| Tensor::zeros(b.rows, b.cols));
        for r in 0..a.rows {
            let gr = &g.data[r * g.cols..(r + 1) * g.cols];
            let (ar, br) = (a.row(r), b.row(r));
            for (f, gf) in gr.chunks_exact(b.cols).enumerate() {
                if let Some(ga) = ga.as_mut() {
                    ga.data[r * a.cols + f] = gf.iter().zip(br).map(|(g, v)| g * v).sum();
                }
                if let Some(gb) = gb.as_mut() {
                    let dst = &mut gb.data[r * b.cols..(r + 1) * b.cols];
                    dst.iter_mut().zip(gf).for_each(|(o, g)| *o += g * ar[f]);
                }
            }
        }
        vec![ga, gb]
    }
}

/// Each row repeated `times` times in place: `[B × C] → [B·times × C]` (a target's embedding
/// beside each position of its behaviour sequence).
struct RepeatRows {
    times: usize,
}

impl CustomOp for RepeatRows {
    fn name(&self) -> &'static str {
        "repeat_rows"
    }
    fn forward(&mut self, x: &[&Tensor]) -> Tensor {
        let x = x[0];
        let mut data = Vec::with_capacity(x.len() * self.times);
        for row in x.data.chunks_exact(x.cols.max(1)) {
            for _ in 0..self.times {
                data.extend_from_slice(row);
            }
        }
        Tensor::from_vec(x.rows * self.times, x.cols, data)
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        let c = x[0].cols;
        let mut gx = Tensor::zeros(x[0].rows, c);
        for (dst, block) in gx
            .data
            .chunks_exact_mut(c.max(1))
            .zip(g.data.chunks_exact((c * self.times).max(1)))
        {
            for gr in block.chunks_exact(c.max(1)) {
                dst.iter_mut().zip(gr).for_each(|(d, v)| *d += v);
            }
        }
        vec![Some(gx)]
    }
}

impl Graph<'_> {
    /// The same values read as `[rows × cols]` (row-major order kept): `[B × F·d]` is
    /// `[B·F × d]`, one field embedding a row.
    pub fn reshape(&mut self, x: NodeId, rows: usize, cols: usize) -> NodeId {
        let n = self.value(x).len();
        assert_eq!(rows * cols, n, "reshape: {n} values into {rows}x{cols}");
        self.custom(Reshape { rows, cols }, &[x])
    }

    /// `a_i ⊙ b_j` for every field pair `i < j` ([`field_pairs`] order) of two `[B × F·dim]`
    /// matrices, giving `[B × P·dim]` with `P = F(F−1)/2`; `a` and `b` may be the same node.
    pub fn pair_products(&mut self, a: NodeId, b: NodeId, fields: usize, dim: usize) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert!(
            av.shape() == bv.shape() && av.cols == fields * dim,
            "pair_products: {}x{} and {}x{} for {fields} fields of {dim}",
            av.rows,
            av.cols,
            bv.rows,
            bv.cols
        );
        let pairs = field_pairs(fields);
        self.custom(PairProducts { pairs, dim }, &[a, b])
    }

    /// The inner product of every field pair `i < j`: `[B × F·dim] → [B × P]`.
    pub fn pair_inner_products(&mut self, x: NodeId, fields: usize, dim: usize) -> NodeId {
        let p = self.pair_products(x, x, fields, dim);
        self.group_sums(p, dim)
    }

    /// Sums of consecutive groups of `group` columns: `[B × G·group] → [B × G]`.
    pub fn group_sums(&mut self, x: NodeId, group: usize) -> NodeId {
        let cols = self.value(x).cols;
        assert!(
            group > 0 && cols.is_multiple_of(group),
            "group_sums: {cols} columns in groups of {group}"
        );
        self.custom(GroupSums { group }, &[x])
    }

    /// Each column repeated `group` times: `[B × G] → [B × G·group]` (per-field weights
    /// spread over the field's embedding).
    pub fn expand_groups(&mut self, x: NodeId, group: usize) -> NodeId {
        assert!(group > 0, "expand_groups: empty groups");
        self.custom(ExpandGroups { group }, &[x])
    }

    /// The sum of each row's consecutive blocks of `width` columns: `[B × n·width] → [B × width]`
    /// (Σ over fields of the field embeddings).
    pub fn sum_blocks(&mut self, x: NodeId, width: usize) -> NodeId {
        let cols = self.value(x).cols;
        assert!(
            width > 0 && cols.is_multiple_of(width),
            "sum_blocks: {cols} columns in blocks of {width}"
        );
        self.custom(SumBlocks { width }, &[x])
    }

    /// Each row read as an `[r × c]` matrix, transposed: `[B × r·c] → [B × c·r]`.
    pub fn transpose_blocks(&mut self, x: NodeId, r: usize, c: usize) -> NodeId {
        let cols = self.value(x).cols;
        assert_eq!(cols, r * c, "transpose_blocks: {cols} columns as {r}x{c}");
        self.custom(TransposeBlocks { r, c }, &[x])
    }

    /// Each row repeated `times` times, the copies adjacent: `[B × C] → [B·times × C]`.
    pub fn repeat_rows(&mut self, x: NodeId, times: usize) -> NodeId {
        assert!(times > 0, "repeat_rows: zero copies");
        self.custom(RepeatRows { times }, &[x])
    }

    /// Per row, the outer product `a ⊗ b` flattened: `[N × F], [N × H] → [N × F·H]`.
    pub fn row_outer(&mut self, a: NodeId, b: NodeId) -> NodeId {
        assert_eq!(
            self.value(a).rows,
            self.value(b).rows,
            "row_outer: row counts differ"
        );
        self.custom(RowOuter, &[a, b])
    }
}

#[cfg(test)]
mod tests {
    use super::field_pairs;
    use crate::graph::Graph;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use crate::tensor::Tensor;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn run(x: Tensor, f: impl Fn(&mut Graph, crate::NodeId) -> crate::NodeId) -> Tensor {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let xi = g.input(x, false);
        let y = f(&mut g, xi);
        g.value(y).clone()
    }

    #[test]
    fn pairs_follow_the_upper_triangle_row_by_row() {
        assert_eq!(field_pairs(3), vec![(0, 1), (0, 2), (1, 2)]);
        assert!(field_pairs(1).is_empty());
    }

    #[test]
    fn pair_products_and_inner_products_on_a_hand_case() {
        // one row, 3 fields of 2: e0 = (1, 2), e1 = (3, 4), e2 = (5, 6)
        let x = Tensor::from_vec(1, 6, vec![1., 2., 3., 4., 5., 6.]);
        let p = run(x.clone(), |g, x| g.pair_products(x, x, 3, 2));
        assert_eq!(p.data, vec![3., 8., 5., 12., 15., 24.]);
        let ip = run(x, |g, x| g.pair_inner_products(x, 3, 2));
        assert_eq!(ip.data, vec![11., 17., 39.]);
    }

    #[test]
    fn block_ops_on_a_hand_case() {
        let x = Tensor::from_vec(1, 6, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            run(x.clone(), |g, x| g.group_sums(x, 2)).data,
            vec![3., 7., 11.]
        );
        assert_eq!(
            run(x.clone(), |g, x| g.sum_blocks(x, 2)).data,
            vec![9., 12.]
        );
        // [[1,2,3],[4,5,6]]ᵀ = [[1,4],[2,5],[3,6]]
        assert_eq!(
            run(x.clone(), |g, x| g.transpose_blocks(x, 2, 3)).data,
            vec![1., 4., 2., 5., 3., 6.]
        );
        let e = run(Tensor::from_vec(1, 2, vec![7., 8.]), |g, x| {
            g.expand_groups(x, 3)
        });
        assert_eq!(e.data, vec![7., 7., 7., 8., 8., 8.]);
        let o = run(x, |g, x| {
            let a = g.slice_cols(x, 0, 2);
            let b = g.slice_cols(x, 2, 3);
            g.row_outer(a, b)
        });
        assert_eq!(o.data, vec![3., 4., 5., 6., 8., 10.]);
        let r = run(Tensor::from_vec(2, 2, vec![1., 2., 3., 4.]), |g, x| {
            g.repeat_rows(x, 2)
        });
        assert_eq!((r.rows, r.data), (4, vec![1., 2., 1., 2., 3., 4., 3., 4.]));
    }

    #[test]
    fn field_ops_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(17);
        let (f, d) = (4, 3);
        let x = rand_input(&mut rng, 3, f * d);
        check(ParamStore::new(), x.clone(), |g, x| {
            // a_i ⊙ b_j with b a different node, then pooled and paired again
            let b = g.tanh(x);
            let p = g.pair_products(x, b, f, d);
            let s = g.group_sums(p, d);
            let e = g.expand_groups(s, 2);
            let pooled = g.sum_blocks(e, 4);
            g.sum_cols(pooled)
        });
        check(ParamStore::new(), x.clone(), |g, x| {
            let ip = g.pair_inner_products(x, f, d);
            g.sum_cols(ip)
        });
        check(ParamStore::new(), x, |g, x| {
            let t = g.transpose_blocks(x, f, d);
            let r = g.reshape(t, 3 * d, f);
            let b = g.tanh(r);
            let o = g.row_outer(r, b);
            let back = g.reshape(o, 3, d * f * f);
            let s = g.sum_blocks(back, f);
            g.sum_cols(s)
        });
        check(ParamStore::new(), rand_input(&mut rng, 3, 2), |g, x| {
            let r = g.repeat_rows(x, 3);
            let t = g.tanh(r);
            let back = g.reshape(t, 3, 6);
            g.sum_cols(back)
        });
    }
}
