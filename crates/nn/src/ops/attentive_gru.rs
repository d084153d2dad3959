//! AdvKT's generator recurrence (fulingyue/AdvKT, `models.py: generator.cell`) fused over the
//! segments of a packed batch. Token `t` of a segment has a question vector `v_t` and an action
//! `a_t ∈ {0, 1}` (the response the generator acts on: the true one, a sample, or its own
//! thresholded guess). From `h_0 = 0`:
//!
//! ```text
//! α_t    = softmax([0, v_t·v_0, …, v_t·v_{t−1}] · scale)   (a zero key whose value is h_0 = 0)
//! hw_t   = Σ_{j<t} α_{t,j} h_{j+1}                          (attention over the states so far)
//! x_t    = [a_t·hw_t, a_t·v_t, (1 − a_t)·hw_t, (1 − a_t)·v_t]
//! h_{t+1} = GRU(x_t, h_t)                                    (PyTorch's form, biases on both sides)
//! ```
//!
//! The op returns `[h_t ; hw_t]` for every token (`[tokens × 2·hidden]`): what the generator's
//! heads read at `t`. The attention weights depend on the questions only, so the actions are
//! the only thing a free-running rollout decides step by step: [`run_segment`] takes them from
//! a policy (the rollout samples them from the generator's own logit), and the op, recorded
//! with the chosen actions, recomputes exactly that trajectory on the tape.

use super::CustomOp;
use crate::graph::{Graph, NodeId};
use crate::kernels::{matmul, sigmoid};
use crate::tensor::Tensor;
use crate::transformer::Segment;
use rayon::prelude::*;

/// The GRU's weights in the tape's layout: `w_ih` `[2·(hidden + v) × 3·hidden]`, `w_hh`
/// `[hidden × 3·hidden]`, biases `[1 × 3·hidden]`; gate blocks reset, update, new.
#[derive(Clone, Copy)]
pub struct AttentiveGruWeights<'a> {
    pub w_ih: &'a Tensor,
    pub w_hh: &'a Tensor,
    pub b_ih: &'a Tensor,
    pub b_hh: &'a Tensor,
    /// The attention's score scale (AdvKT: `1 / √(2·d)`).
    pub scale: f32,
}

/// One segment's forward pass, and what its backward pass reads.
#[derive(Clone, Debug, Default)]
pub struct SegmentTrace {
    /// `h_0 … h_{L−1}` (`L × hidden`): the state each token starts from
    pub h: Vec<f32>,
    pub hw: Vec<f32>,
    /// gates per token (`L × hidden` each) and `h W_hn + b_hn`
    pub r: Vec<f32>,
    pub z: Vec<f32>,
    pub n: Vec<f32>,
    pub hn: Vec<f32>,
    /// query `t`'s weights on keys `0..t` (the zero key left out), at offset `t(t−1)/2`
    pub alpha: Vec<f32>,
    pub actions: Vec<u8>,
}

/// `x_t` from `hw_t`, `v_t` and the action.
fn gru_input(x: &mut [f32], hw: &[f32], v: &[f32], a: u8) {
    let (hd, vd) = (hw.len(), v.len());
    x.fill(0.0);
    let off = if a == 1 { 0 } else { hd + vd };
    x[off..off + hd].copy_from_slice(hw);
    x[off + hd..off + hd + vd].copy_from_slice(v);
}

/// Runs one segment (`v`: its `L × v_width` question vectors) from a zero state; `policy(t,
/// h_t, hw_t)` picks each token's action once `h_t` and `hw_t` are known.
pub fn run_segment(
    v: &[f32],
    v_width: usize,
    w: AttentiveGruWeights,
    mut policy: impl FnMut(usize, &[f32], &[f32]) -> u8,
) -> SegmentTrace {
    let hidden = w.w_hh.rows;
    let len = v.len() / v_width.max(1);
    let xw = w.w_ih.rows;
    assert_eq!(xw, 2 * (hidden + v_width), "attentive_gru: input width");
    let mut tr = SegmentTrace {
        h: vec![0.0; len * hidden],
        hw: vec![0.0; len * hidden],
        r: vec![0.0; len * hidden],
        z: vec![0.0; len * hidden],
        n: vec![0.0; len * hidden],
        hn: vec![0.0; len * hidden],
        alpha: vec![0.0; len * len.saturating_sub(1) / 2],
        actions: Vec::with_capacity(len),
    };
    let (mut x, mut gi, mut gh) = (vec![0.0; xw], vec![0.0; 3 * hidden], vec![0.0; 3 * hidden]);
    for t in 0..len {
        let vt = &v[t * v_width..(t + 1) * v_width];
        // attention over the earlier questions, the zero key scoring 0
        if t > 0 {
            let base = t * (t - 1) / 2;
            let alpha = &mut tr.alpha[base..base + t];
            let mut max = 0.0f32;
            for (j, a) in alpha.iter_mut().enumerate() {
                let vj = &v[j * v_width..(j + 1) * v_width];
                *a = w.scale * vt.iter().zip(vj).map(|(x, y)| x * y).sum::<f32>();
                max = max.max(*a);
            }
            let mut sum = (-max).exp();
            for a in alpha.iter_mut() {
                *a = (*a - max).exp();
                sum += *a;
            }
            let hw = &mut tr.hw[t * hidden..(t + 1) * hidden];
            for (j, a) in alpha.iter_mut().enumerate() {
                *a /= sum;
                let hj = &tr.h[(j + 1) * hidden..(j + 2) * hidden];
                for (o, &x) in hw.iter_mut().zip(hj) {
                    *o += *a * x;
                }
            }
        }
        let (h_t, hw_t) = (
            &tr.h[t * hidden..(t + 1) * hidden],
            &tr.hw[t * hidden..(t + 1) * hidden],
        );
        let a = policy(t, h_t, hw_t);
        tr.actions.push(a);
        if t + 1 == len {
            break; // the last state is read by nothing
        }
        gru_input(&mut x, hw_t, vt, a);
        matmul(
            &mut gi,
            &x,
            &w.w_ih.data,
            1,
            3 * hidden,
            xw,
            false,
            false,
            false,
        );
        matmul(
            &mut gh,
            h_t,
            &w.w_hh.data,
            1,
            3 * hidden,
            hidden,
            false,
            false,
            false,
        );
        let rows = t * hidden..(t + 1) * hidden;
        let mut next = vec![0.0; hidden];
        for k in 0..hidden {
            let r = sigmoid(gi[k] + w.b_ih.data[k] + gh[k] + w.b_hh.data[k]);
            let (kz, kn) = (hidden + k, 2 * hidden + k);
            let z = sigmoid(gi[kz] + w.b_ih.data[kz] + gh[kz] + w.b_hh.data[kz]);
            let hn = gh[kn] + w.b_hh.data[kn];
            let n = (gi[kn] + w.b_ih.data[kn] + r * hn).tanh();
            next[k] = (1.0 - z) * n + z * h_t[k];
            let i = rows.start + k;
            (tr.r[i], tr.z[i], tr.n[i], tr.hn[i]) = (r, z, n, hn);
        }
        tr.h[(t + 1) * hidden..(t + 2) * hidden].copy_from_slice(&next);
    }
    tr
}

impl Graph<'_> {
    /// The generator recurrence of packed question vectors `v` (`[tokens × v_width]`) under
    /// the fixed `actions` (one per token), within each segment; returns `[h_t ; hw_t]`
    /// (`[tokens × 2·hidden]`). `w_ih`, `w_hh`, `b_ih`, `b_hh` as [`AttentiveGruWeights`].
    #[allow(clippy::too_many_arguments)]
    pub fn attentive_gru(
        &mut self,
        v: NodeId,
        actions: &[u8],
        w_ih: NodeId,
        w_hh: NodeId,
        b_ih: NodeId,
        b_hh: NodeId,
        segs: &[Segment],
        scale: f32,
    ) -> NodeId {
        let op = AttentiveGru {
            actions: actions.to_vec(),
            segs: segs.to_vec(),
            scale,
            traces: Vec::new(),
        };
        self.custom(op, &[v, w_ih, w_hh, b_ih, b_hh])
    }
}

struct AttentiveGru {
    actions: Vec<u8>,
    segs: Vec<Segment>,
    scale: f32,
    traces: Vec<SegmentTrace>,
}

fn weights<'a>(inputs: &[&'a Tensor], scale: f32) -> AttentiveGruWeights<'a> {
    AttentiveGruWeights {
        w_ih: inputs[1],
        w_hh: inputs[2],
        b_ih: inputs[3],
        b_hh: inputs[4],
        scale,
    }
}

/// One segment's gradients: its question vectors' rows, its tokens' gate gradients on the
/// input and recurrent side (`L × 3·hidden` each) and its GRU inputs (`L × in`).
struct SegmentGrads {
    dv: Vec<f32>,
    dgi: Vec<f32>,
    dgh: Vec<f32>,
    x: Vec<f32>,
}

impl AttentiveGru {
    fn segment_backward(
        &self,
        s: Segment,
        tr: &SegmentTrace,
        inputs: &[&Tensor],
        grad: &Tensor,
    ) -> SegmentGrads {
        let w = weights(inputs, self.scale);
        let v = inputs[0];
        let (hidden, vd, len) = (w.w_hh.rows, v.cols, s.len);
        let xw = w.w_ih.rows;
        let vrow = |t: usize| v.row(s.start + t);
        let mut out = SegmentGrads {
            dv: vec![0.0; len * vd],
            dgi: vec![0.0; len * 3 * hidden],
            dgh: vec![0.0; len * 3 * hidden],
            x: vec![0.0; len * xw],
        };
        // dL/dh_t, filled by the output rows, the steps after t and the attention of later queries
        let mut dh = vec![0.0f32; (len + 1) * hidden];
        for t in 0..len {
            dh[t * hidden..(t + 1) * hidden].copy_from_slice(&grad.row(s.start + t)[..hidden]);
        }
        let mut dx = vec![0.0f32; xw];
        for t in (0..len).rev() {
            let rows = t * hidden..(t + 1) * hidden;
            let mut dhw: Vec<f32> = grad.row(s.start + t)[hidden..].to_vec();
            let a = tr.actions[t];
            if t + 1 < len {
                // the GRU step t → t + 1
                let dnext = dh[(t + 1) * hidden..(t + 2) * hidden].to_vec();
                let (dgi, dgh) = (
                    &mut out.dgi[t * 3 * hidden..(t + 1) * 3 * hidden],
                    &mut out.dgh[t * 3 * hidden..(t + 1) * 3 * hidden],
                );
                let h_t = &tr.h[rows.clone()];
                for k in 0..hidden {
                    let i = rows.start + k;
                    let (r, z, n, hn) = (tr.r[i], tr.z[i], tr.n[i], tr.hn[i]);
                    let g = dnext[k];
                    let dn = g * (1.0 - z) * (1.0 - n * n);
                    let dz = g * (h_t[k] - n) * z * (1.0 - z);
                    let dr = dn * hn * r * (1.0 - r);
                    dgi[k] = dr;
                    dgi[hidden + k] = dz;
                    dgi[2 * hidden + k] = dn;
                    dgh[k] = dr;
                    dgh[hidden + k] = dz;
                    dgh[2 * hidden + k] = dn * r;
                    dh[i] += g * z;
                }
                matmul(
                    &mut dh[rows.clone()],
                    dgh,
                    &w.w_hh.data,
                    1,
                    hidden,
                    3 * hidden,
                    false,
                    true,
                    true,
                );
                matmul(
                    &mut dx,
                    dgi,
                    &w.w_ih.data,
                    1,
                    xw,
                    3 * hidden,
                    false,
                    true,
                    false,
                );
                let off = if a == 1 { 0 } else { hidden + vd };
                for (o, &g) in dhw.iter_mut().zip(&dx[off..off + hidden]) {
                    *o += g;
                }
                for (o, &g) in out.dv[t * vd..(t + 1) * vd]
                    .iter_mut()
                    .zip(&dx[off + hidden..off + hidden + vd])
                {
                    *o += g;
                }
                gru_input(
                    &mut out.x[t * xw..(t + 1) * xw],
                    &tr.hw[rows.clone()],
                    vrow(t),
                    a,
                );
            }
            if t > 0 {
                // hw_t = Σ_j α_j h_{j+1}, α the softmax of scale · v_t·v_j beside the zero key
                let alpha = &tr.alpha[t * (t - 1) / 2..t * (t - 1) / 2 + t];
                let mut dalpha = vec![0.0f32; t];
                for (j, (&aj, da)) in alpha.iter().zip(dalpha.iter_mut()).enumerate() {
                    let hj = (j + 1) * hidden..(j + 2) * hidden;
                    *da = dhw.iter().zip(&tr.h[hj.clone()]).map(|(x, y)| x * y).sum();
                    for (o, &g) in dh[hj].iter_mut().zip(&dhw) {
                        *o += aj * g;
                    }
                }
                let mean: f32 = alpha.iter().zip(&dalpha).map(|(a, d)| a * d).sum();
                let vt = vrow(t).to_vec();
                for j in 0..t {
                    let ds = alpha[j] * (dalpha[j] - mean) * self.scale;
                    if ds == 0.0 {
                        continue;
                    }
                    let vj = vrow(j);
                    for k in 0..vd {
                        out.dv[t * vd + k] += ds * vj[k];
                        out.dv[j * vd + k] += ds * vt[k];
                    }
                }
            }
        }
        out
    }
}

impl CustomOp for AttentiveGru {
    fn name(&self) -> &'static str {
        "attentive_gru"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let w = weights(inputs, self.scale);
        let v = inputs[0];
        let hidden = w.w_hh.rows;
        assert_eq!(
            self.actions.len(),
            v.rows,
            "attentive_gru: one action per token"
        );
        self.traces = self
            .segs
            .par_iter()
            .map(|s| {
                let rows = &v.data[s.start * v.cols..(s.start + s.len) * v.cols];
                let acts = &self.actions[s.start..s.start + s.len];
                run_segment(rows, v.cols, w, |t, _, _| acts[t])
            })
            .collect();
        let mut out = Tensor::zeros(v.rows, 2 * hidden);
        for (s, tr) in self.segs.iter().zip(&self.traces) {
            for t in 0..s.len {
                let row = &mut out.data[(s.start + t) * 2 * hidden..(s.start + t + 1) * 2 * hidden];
                row[..hidden].copy_from_slice(&tr.h[t * hidden..(t + 1) * hidden]);
                row[hidden..].copy_from_slice(&tr.hw[t * hidden..(t + 1) * hidden]);
            }
        }
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let v = inputs[0];
        let (hidden, xw, vd) = (inputs[2].rows, inputs[1].rows, v.cols);
        let parts: Vec<SegmentGrads> = self
            .segs
            .par_iter()
            .zip(&self.traces)
            .map(|(&s, tr)| self.segment_backward(s, tr, inputs, grad))
            .collect();
        let tokens = v.rows;
        let g3 = 3 * hidden;
        let (mut dv, mut dgi, mut dgh, mut x, mut hp) = (
            Tensor::zeros(tokens, vd),
            vec![0.0; tokens * g3],
            vec![0.0; tokens * g3],
            vec![0.0; tokens * xw],
            vec![0.0; tokens * hidden],
        );
        for ((s, p), tr) in self.segs.iter().zip(&parts).zip(&self.traces) {
            let r = s.start..s.start + s.len;
            dv.data[r.start * vd..r.end * vd].copy_from_slice(&p.dv);
            dgi[r.start * g3..r.end * g3].copy_from_slice(&p.dgi);
            dgh[r.start * g3..r.end * g3].copy_from_slice(&p.dgh);
            x[r.start * xw..r.end * xw].copy_from_slice(&p.x);
            hp[r.start * hidden..r.end * hidden].copy_from_slice(&tr.h);
        }
        let col_sums = |m: &[f32]| {
            let mut b = Tensor::zeros(1, g3);
            for row in m.chunks_exact(g3) {
                for (o, &v) in b.data.iter_mut().zip(row) {
                    *o += v;
                }
            }
            b
        };
        let mut dw_ih = Tensor::zeros(xw, g3);
        matmul(
            &mut dw_ih.data,
            &x,
            &dgi,
            xw,
            g3,
            tokens,
            true,
            false,
            false,
        );
        let mut dw_hh = Tensor::zeros(hidden, g3);
        matmul(
            &mut dw_hh.data,
            &hp,
            &dgh,
            hidden,
            g3,
            tokens,
            true,
            false,
            false,
        );
        let (db_ih, db_hh) = (col_sums(&dgi), col_sums(&dgh));
        super::wanted([dv, dw_ih, dw_hh, db_ih, db_hh], needs)
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

    /// The cell as AdvKT's code writes it, one token at a time in f64, with stacks of the
    /// states and questions so far (a zero question and zero state first).
    fn naive(v: &Tensor, actions: &[u8], w: AttentiveGruWeights, len: usize) -> Vec<f64> {
        let (hd, vd) = (w.w_hh.rows, v.cols);
        let f = |t: &Tensor| t.data.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (wih, whh, bih, bhh) = (f(w.w_ih), f(w.w_hh), f(w.b_ih), f(w.b_hh));
        let mut h = vec![0.0f64; hd];
        let (mut stack_h, mut stack_q) = (vec![vec![0.0; hd]], vec![vec![0.0; vd]]);
        let mut out = Vec::new();
        for t in 0..len {
            let q: Vec<f64> = v.row(t).iter().map(|&x| x as f64).collect();
            let scores: Vec<f64> = stack_q
                .iter()
                .map(|k| w.scale as f64 * k.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let mut hw = vec![0.0; hd];
            for (a, sh) in e.iter().zip(&stack_h) {
                for k in 0..hd {
                    hw[k] += a / sum * sh[k];
                }
            }
            out.extend(h.iter().chain(&hw).cloned());
            let a = actions[t] as f64;
            let x: Vec<f64> = hw
                .iter()
                .chain(&q)
                .map(|x| x * a)
                .chain(hw.iter().chain(&q).map(|x| x * (1.0 - a)))
                .collect();
            let gate = |k: usize, wt: &[f64], inp: &[f64], b: &[f64]| -> f64 {
                b[k] + inp
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x * wt[i * 3 * hd + k])
                    .sum::<f64>()
            };
            let s = |x: f64| 1.0 / (1.0 + (-x).exp());
            let next: Vec<f64> = (0..hd)
                .map(|k| {
                    let r = s(gate(k, &wih, &x, &bih) + gate(k, &whh, &h, &bhh));
                    let z = s(gate(hd + k, &wih, &x, &bih) + gate(hd + k, &whh, &h, &bhh));
                    let n = (gate(2 * hd + k, &wih, &x, &bih)
                        + r * gate(2 * hd + k, &whh, &h, &bhh))
                    .tanh();
                    (1.0 - z) * n + z * h[k]
                })
                .collect();
            h = next;
            stack_h.push(h.clone());
            stack_q.push(q);
        }
        out
    }

    fn params(rng: &mut StdRng, hd: usize, vd: usize) -> [Tensor; 4] {
        [
            init::normal(rng, 2 * (hd + vd), 3 * hd, 0.4),
            init::normal(rng, hd, 3 * hd, 0.4),
            init::normal(rng, 1, 3 * hd, 0.3),
            init::normal(rng, 1, 3 * hd, 0.3),
        ]
    }

    #[test]
    fn states_equal_the_codes_cell_step_by_step() {
        let mut rng = StdRng::seed_from_u64(1);
        let (hd, vd) = (3, 2);
        let [wih, whh, bih, bhh] = params(&mut rng, hd, vd);
        let v = init::normal(&mut rng, 5, vd, 1.0);
        let actions = [1, 0, 0, 1, 1];
        let w = AttentiveGruWeights {
            w_ih: &wih,
            w_hh: &whh,
            b_ih: &bih,
            b_hh: &bhh,
            scale: 0.7,
        };
        let tr = run_segment(&v.data, vd, w, |t, _, _| actions[t]);
        let want = naive(&v, &actions, w, 5);
        for t in 0..5 {
            for k in 0..hd {
                let (h, hw) = (tr.h[t * hd + k] as f64, tr.hw[t * hd + k] as f64);
                assert!((h - want[t * 2 * hd + k]).abs() < 1e-5, "h[{t}][{k}]");
                assert!(
                    (hw - want[t * 2 * hd + hd + k]).abs() < 1e-5,
                    "hw[{t}][{k}]"
                );
            }
        }
        // the policy sees the state it decides from
        let mut seen = Vec::new();
        run_segment(&v.data, vd, w, |t, h, _| {
            seen.push(h.to_vec());
            actions[t]
        });
        assert_eq!(seen[3], tr.h[3 * hd..4 * hd]);
    }

    #[test]
    fn attentive_gru_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(2);
        let (hd, vd) = (3, 2);
        let mut s = ParamStore::new();
        let [wih, whh, bih, bhh] = params(&mut rng, hd, vd);
        let ids = [
            s.add("w_ih", wih, true, false),
            s.add("w_hh", whh, true, false),
            s.add("b_ih", bih, true, false),
            s.add("b_hh", bhh, true, false),
        ];
        let wv = s.add("wv", init::normal(&mut rng, 4, vd, 0.8), true, false);
        let segs = segments_from_lengths(&[5, 1, 3]);
        let actions = [1, 0, 1, 1, 0, 1, 0, 0, 1];
        let x = init::normal(&mut rng, 9, 4, 1.0);
        let wo = init::normal(&mut rng, 1, 2 * hd, 1.0);
        check_gradients(&s, &[x], |g, x| {
            let v = g.linear(x[0], wv, None);
            let p: Vec<NodeId> = ids.iter().map(|&id| g.param(id)).collect();
            let out = g.attentive_gru(v, &actions, p[0], p[1], p[2], p[3], &segs, 0.6);
            let o = g.input(wo.clone(), false);
            let y = g.matmul_nt(out, o);
            let y = g.tanh(y);
            g.sum_all(y)
        })
        .unwrap();
    }
}
