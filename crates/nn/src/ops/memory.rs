//! DKVMN's value memory (Zhang et al., WWW'17) as pyKT 0.0.38's `dkvmn.py` runs it, fused over
//! the segments of a packed batch. Each segment starts from the same memory `M₀` (`slots × d`)
//! and, at each token `t` with attention `w_t` (`slots`), erase `e_t` and add `a_t` (`d`):
//!
//! ```text
//! read_t = Σ_i w_ti · M_{t−1,i}                      (the memory before t's own write)
//! M_t    = M_{t−1} ⊙ (1 − w_t e_tᵀ) + w_t a_tᵀ
//! ```
//!
//! pyKT stacks every step's memory (`tokens × slots × d`: 0.5 GB for a 64 × 200 batch at its
//! defaults). The op keeps nothing: the backward pass replays one segment's writes at a time
//! and runs back through time from them.

use crate::graph::{Graph, NodeId};
use crate::ops::CustomOp;
use crate::tensor::Tensor;
use crate::transformer::Segment;
use rayon::prelude::*;

impl Graph<'_> {
    /// The reads `[tokens × d]` of a key-value memory `memory0` (`[slots × d]`) written within
    /// each segment: attention `w` `[tokens × slots]`, erase `e` and add `a` `[tokens × d]`.
    pub fn kv_memory(
        &mut self,
        w: NodeId,
        erase: NodeId,
        add: NodeId,
        memory0: NodeId,
        segs: &[Segment],
    ) -> NodeId {
        self.custom(
            KvMemory {
                segs: segs.to_vec(),
            },
            &[w, erase, add, memory0],
        )
    }
}

struct KvMemory {
    segs: Vec<Segment>,
}

/// One write: `m ← m ⊙ (1 − w eᵀ) + w aᵀ`.
fn write(m: &mut [f32], w: &[f32], e: &[f32], a: &[f32]) {
    let d = e.len();
    for (row, &wi) in m.chunks_exact_mut(d).zip(w) {
        for ((x, &ej), &aj) in row.iter_mut().zip(e).zip(a) {
            *x = *x * (1.0 - wi * ej) + wi * aj;
        }
    }
}

/// `out = wᵀ m`.
fn read(out: &mut [f32], m: &[f32], w: &[f32]) {
    let d = out.len();
    out.fill(0.0);
    for (row, &wi) in m.chunks_exact(d).zip(w) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += wi * x;
        }
    }
}

/// A segment's gradients: rows of `w`, `e`, `a` (its tokens) and its share of `M₀`'s.
struct SegmentGrads {
    w: Vec<f32>,
    e: Vec<f32>,
    a: Vec<f32>,
    memory0: Vec<f32>,
}

impl KvMemory {
    fn segment_backward(
        &self,
        s: Segment,
        inputs: &[&Tensor],
        grad: &Tensor,
        slots: usize,
        d: usize,
    ) -> SegmentGrads {
        let (w, e, a, m0) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let size = slots * d;
        // memories[t] = M_{t−1}: the memory token t reads
        let mut memories = vec![0.0f32; s.len * size];
        if s.len > 0 {
            memories[..size].copy_from_slice(&m0.data);
        }
        for j in 1..s.len {
            let (done, rest) = memories.split_at_mut(j * size);
            let next = &mut rest[..size];
            next.copy_from_slice(&done[(j - 1) * size..]);
            let t = s.start + j - 1;
            write(next, w.row(t), e.row(t), a.row(t));
        }
        let mut out = SegmentGrads {
            w: vec![0.0; s.len * slots],
            e: vec![0.0; s.len * d],
            a: vec![0.0; s.len * d],
            memory0: Vec::new(),
        };
        // dL/dM_t, starting after the last write (which nothing reads)
        let mut gm = vec![0.0f32; size];
        for j in (0..s.len).rev() {
            let t = s.start + j;
            let m = &memories[j * size..(j + 1) * size];
            let (wt, et, at, gr) = (w.row(t), e.row(t), a.row(t), grad.row(t));
            let gw = &mut out.w[j * slots..(j + 1) * slots];
            let ge = &mut out.e[j * d..(j + 1) * d];
            let ga = &mut out.a[j * d..(j + 1) * d];
            for i in 0..slots {
                let (mi, gmi) = (&m[i * d..(i + 1) * d], &mut gm[i * d..(i + 1) * d]);
                let wi = wt[i];
                let mut dw = 0.0f32;
                for jj in 0..d {
                    let g = gmi[jj];
                    // the write M_t = M_{t−1}(1 − w e) + w a
                    dw += g * (at[jj] - mi[jj] * et[jj]) + gr[jj] * mi[jj];
                    ge[jj] -= g * mi[jj] * wi;
                    ga[jj] += g * wi;
                    // back to M_{t−1}: through the write and through the read
                    gmi[jj] = g * (1.0 - wi * et[jj]) + wi * gr[jj];
                }
                gw[i] = dw;
            }
        }
        out.memory0 = gm;
        out
    }
}

impl CustomOp for KvMemory {
    fn name(&self) -> &'static str {
        "kv_memory"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (w, e, a, m0) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let d = m0.cols;
        assert_eq!(
            w.cols, m0.rows,
            "kv_memory: attention width vs memory slots"
        );
        assert!(e.cols == d && a.cols == d, "kv_memory: erase/add width");
        let mut out = Tensor::zeros(w.rows, d);
        let mut parts = Vec::with_capacity(self.segs.len());
        let mut rest = out.data.as_mut_slice();
        let mut at = 0;
        for s in &self.segs {
            let (_, tail) = rest.split_at_mut((s.start - at) * d);
            let (mine, tail) = tail.split_at_mut(s.len * d);
            parts.push((*s, mine));
            rest = tail;
            at = s.start + s.len;
        }
        parts.into_par_iter().for_each(|(s, dst)| {
            let mut m = m0.data.clone();
            for (j, row) in dst.chunks_exact_mut(d).enumerate() {
                let t = s.start + j;
                read(row, &m, w.row(t));
                if j + 1 < s.len {
                    write(&mut m, w.row(t), e.row(t), a.row(t));
                }
            }
        });
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (w, m0) = (inputs[0], inputs[3]);
        let (slots, d) = (m0.rows, m0.cols);
        let parts: Vec<SegmentGrads> = self
            .segs
            .par_iter()
            .map(|&s| self.segment_backward(s, inputs, grad, slots, d))
            .collect();
        let mut gw = Tensor::zeros(w.rows, slots);
        let mut ge = Tensor::zeros(w.rows, d);
        let mut ga = Tensor::zeros(w.rows, d);
        let mut gm0 = Tensor::zeros(slots, d);
        for (s, p) in self.segs.iter().zip(&parts) {
            gw.data[s.start * slots..(s.start + s.len) * slots].copy_from_slice(&p.w);
            ge.data[s.start * d..(s.start + s.len) * d].copy_from_slice(&p.e);
            ga.data[s.start * d..(s.start + s.len) * d].copy_from_slice(&p.a);
            if s.len > 0 {
                for (x, y) in gm0.data.iter_mut().zip(&p.memory0) {
                    *x += y;
                }
            }
        }
        super::wanted([gw, ge, ga, gm0], needs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use crate::params::ParamStore;
    use crate::testing::check_gradients;
    use crate::transformer::segments_from_lengths;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// The recurrence step by step in f64, as pyKT writes it.
    fn naive(w: &Tensor, e: &Tensor, a: &Tensor, m0: &Tensor, lengths: &[usize]) -> Vec<f64> {
        let (slots, d) = (m0.rows, m0.cols);
        let mut out = Vec::new();
        let mut t = 0;
        for &len in lengths {
            let mut m: Vec<f64> = m0.data.iter().map(|&x| x as f64).collect();
            for _ in 0..len {
                for j in 0..d {
                    out.push((0..slots).map(|i| w.row(t)[i] as f64 * m[i * d + j]).sum());
                }
                for i in 0..slots {
                    for j in 0..d {
                        let (wi, ej, aj) =
                            (w.row(t)[i] as f64, e.row(t)[j] as f64, a.row(t)[j] as f64);
                        m[i * d + j] = m[i * d + j] * (1.0 - wi * ej) + wi * aj;
                    }
                }
                t += 1;
            }
        }
        out
    }

    #[test]
    fn reads_equal_the_recurrence() {
        let mut rng = StdRng::seed_from_u64(1);
        let lengths = [4, 1, 3];
        let w = init::uniform(&mut rng, 8, 3, 1.0);
        let e = init::uniform(&mut rng, 8, 2, 1.0);
        let a = init::uniform(&mut rng, 8, 2, 1.0);
        let m0 = init::normal(&mut rng, 3, 2, 1.0);
        let store = ParamStore::new();
        let mut g = Graph::inference(&store);
        let ids: Vec<NodeId> = [&w, &e, &a, &m0]
            .iter()
            .map(|t| g.input((*t).clone(), false))
            .collect();
        let r = g.kv_memory(
            ids[0],
            ids[1],
            ids[2],
            ids[3],
            &segments_from_lengths(&lengths),
        );
        let want = naive(&w, &e, &a, &m0, &lengths);
        for (k, (got, want)) in g.value(r).data.iter().zip(&want).enumerate() {
            assert!((*got as f64 - want).abs() < 1e-5, "[{k}] {got} vs {want}");
        }
        // a segment's first read is the initial memory's, whatever came before
        let first = &g.value(r).data[4 * 2..5 * 2];
        let mut alone = vec![0.0; 2];
        read(&mut alone, &m0.data, w.row(4));
        assert_eq!(first, alone.as_slice());
    }

    #[test]
    fn kv_memory_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = ParamStore::new();
        let m0 = s.add("m0", init::normal(&mut rng, 3, 4, 0.8), true, false);
        let we = s.add("we", init::normal(&mut rng, 4, 4, 0.6), true, false);
        let wa = s.add("wa", init::normal(&mut rng, 4, 4, 0.6), true, false);
        let wk = s.add("wk", init::normal(&mut rng, 4, 3, 0.6), true, false);
        let segs = segments_from_lengths(&[4, 1, 3]);
        let x = init::normal(&mut rng, 8, 4, 1.0);
        check_gradients(&s, &[x], |g, x| {
            let logits = g.linear(x[0], wk, None);
            let w = g.softmax_rows(logits);
            let e = g.linear(x[0], we, None);
            let e = g.sigmoid(e);
            let a = g.linear(x[0], wa, None);
            let a = g.tanh(a);
            let m = g.param(m0);
            let r = g.kv_memory(w, e, a, m, &segs);
            let r = g.tanh(r);
            g.sum_all(r)
        })
        .unwrap();
    }
}
