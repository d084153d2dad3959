//! Recurrent layers over the segments of a packed batch, fused over time: one GEMM for every
//! token's input projection, then per time step one GEMM for the segments still running, and
//! the backward pass through time in the same blocked form.

use super::CustomOp;
use crate::graph::{Graph, NodeId};
use crate::kernels::matmul;
use crate::tensor::Tensor;
use crate::transformer::Segment;

impl Graph<'_> {
    /// A single-layer GRU without biases (PyTorch's `nn.GRU(bias=False)`) over each segment of
    /// packed `x` (`[tokens × in]`), from a zero state; returns every token's hidden state
    /// (`[tokens × hidden]`). `w_ih` is `[in × 3·hidden]` and `w_hh` `[hidden × 3·hidden]`,
    /// their column blocks the reset, update and new gates (PyTorch's `weight_ih_l0` and
    /// `weight_hh_l0` transposed):
    /// `r = σ(x W_r + h W_hr)`, `z = σ(x W_z + h W_hz)`, `n = tanh(x W_n + r ⊙ (h W_hn))`,
    /// `h' = (1 − z) ⊙ n + z ⊙ h`.
    pub fn gru(&mut self, x: NodeId, w_ih: NodeId, w_hh: NodeId, segs: &[Segment]) -> NodeId {
        let rows = self.value(x).rows;
        assert_eq!(
            segs.iter().map(|s| s.len).sum::<usize>(),
            rows,
            "gru: segments do not cover the rows"
        );
        self.custom(Gru::new(segs), &[x, w_ih, w_hh])
    }

    /// A single-layer LSTM over each segment of packed input-side gate pre-activations
    /// `gates` (`[tokens × 4·hidden]`, i.e. `x W_ih + b`, computed for every token in one
    /// GEMM by the caller), from zero states; returns every token's hidden state. `w_hh` is
    /// `[hidden × 4·hidden]`, its column blocks PyTorch's gate order (input, forget, cell,
    /// output; `weight_hh_l0` transposed):
    /// `i, f, o = σ(·)`, `g = tanh(·)`, `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.
    pub fn lstm(&mut self, gates: NodeId, w_hh: NodeId, segs: &[Segment]) -> NodeId {
        let rows = self.value(gates).rows;
        assert_eq!(
            segs.iter().map(|s| s.len).sum::<usize>(),
            rows,
            "lstm: segments do not cover the rows"
        );
        self.custom(
            Lstm {
                order: Schedule::new(segs),
                acts: Vec::new(),
                c: Vec::new(),
            },
            &[gates, w_hh],
        )
    }
}

/// Segments ordered longest first, so that the ones still running at step t are a prefix.
struct Schedule {
    order: Vec<Segment>,
}

impl Schedule {
    fn new(segs: &[Segment]) -> Self {
        let mut order = segs.to_vec();
        order.sort_by_key(|s| std::cmp::Reverse(s.len));
        Schedule { order }
    }

    /// How many segments run at step `t`.
    fn running(&self, t: usize) -> usize {
        self.order.partition_point(|s| s.len > t)
    }

    fn steps(&self) -> usize {
        self.order.first().map_or(0, |s| s.len)
    }

    /// How many segments run at step `t + 1` (the ones that end at `t` follow them).
    fn running_after(&self, t: usize) -> usize {
        if t + 1 < self.steps() {
            self.running(t + 1)
        } else {
            0
        }
    }
}

impl std::ops::Deref for Schedule {
    type Target = [Segment];
    fn deref(&self) -> &[Segment] {
        &self.order
    }
}

/// The recurrent side of the gates at step `t` for the `b` segments running then:
/// `h_prev · W_hh` (`[b × gates]`), zero at step 0 (the states start at zero).
fn recurrent_product(gh: &mut [f32], h_prev: &[f32], w_hh: &Tensor, b: usize, t: usize) {
    let (hidden, gates) = (w_hh.rows, w_hh.cols);
    let gh = &mut gh[..b * gates];
    if t == 0 {
        gh.fill(0.0);
    } else {
        matmul(
            gh,
            &h_prev[..b * hidden],
            &w_hh.data,
            b,
            gates,
            hidden,
            false,
            false,
            false,
        );
    }
}

/// The backward pass through `h_prev · W_hh` at one step for the `b` running segments:
/// `carry += dG · W_hhᵀ` (the gradient reaching each state from the step after it) and, when
/// wanted, `dW_hh += h_prevᵀ · dG`.
fn recurrent_product_backward(
    carry: &mut [f32],
    dg: &[f32],
    h_prev: &[f32],
    w_hh: &Tensor,
    dw_hh: Option<&mut [f32]>,
    b: usize,
) {
    let (hidden, gates) = (w_hh.rows, w_hh.cols);
    let dg = &dg[..b * gates];
    matmul(
        &mut carry[..b * hidden],
        dg,
        &w_hh.data,
        b,
        hidden,
        gates,
        false,
        true,
        true,
    );
    if let Some(dw) = dw_hh {
        matmul(
            dw,
            &h_prev[..b * hidden],
            dg,
            hidden,
            gates,
            b,
            true,
            false,
            true,
        );
    }
}

/// The GRU's recorded state: the schedule, and per token the gates and `h W_hn` the backward
/// pass needs.
struct Gru {
    order: Schedule,
    /// per token, `[tokens × hidden]` each
    r: Vec<f32>,
    z: Vec<f32>,
    n: Vec<f32>,
    hn: Vec<f32>,
}

impl Gru {
    fn new(segs: &[Segment]) -> Self {
        Gru {
            order: Schedule::new(segs),
            r: Vec::new(),
            z: Vec::new(),
            n: Vec::new(),
            hn: Vec::new(),
        }
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + crate::transformer::exp(-v))
}

impl CustomOp for Gru {
    fn name(&self) -> &'static str {
        "gru"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (x, w_ih, w_hh) = (inputs[0], inputs[1], inputs[2]);
        let hidden = w_hh.rows;
        let three = 3 * hidden;
        assert_eq!(w_ih.cols, three, "gru: w_ih must be [in × 3·hidden]");
        assert_eq!(w_hh.cols, three, "gru: w_hh must be [hidden × 3·hidden]");
        assert_eq!(
            w_ih.rows, x.cols,
            "gru: w_ih rows must match the input width"
        );
        let tokens = x.rows;
        // every token's input projection at once
        let mut gi = vec![0.0f32; tokens * three];
        matmul(
            &mut gi, &x.data, &w_ih.data, tokens, three, x.cols, false, false, false,
        );
        let mut out = Tensor::zeros(tokens, hidden);
        self.r = vec![0.0; tokens * hidden];
        self.z = vec![0.0; tokens * hidden];
        self.n = vec![0.0; tokens * hidden];
        self.hn = vec![0.0; tokens * hidden];
        let mut h_prev = vec![0.0f32; self.order.len() * hidden];
        let mut gh = vec![0.0f32; self.order.len() * three];
        for t in 0..self.order.steps() {
            let b = self.order.running(t);
            recurrent_product(&mut gh, &h_prev, w_hh, b, t);
            for (s, seg) in self.order[..b].iter().enumerate() {
                let row = seg.start + t;
                let gi = &gi[row * three..(row + 1) * three];
                let gh = &gh[s * three..(s + 1) * three];
                let hp = &mut h_prev[s * hidden..(s + 1) * hidden];
                let at = row * hidden..(row + 1) * hidden;
                let (r, z, n, hn) = (
                    &mut self.r[at.clone()],
                    &mut self.z[at.clone()],
                    &mut self.n[at.clone()],
                    &mut self.hn[at.clone()],
                );
                let h = &mut out.data[at];
                for j in 0..hidden {
                    r[j] = sigmoid(gi[j] + gh[j]);
                    z[j] = sigmoid(gi[hidden + j] + gh[hidden + j]);
                    hn[j] = gh[2 * hidden + j];
                    n[j] = crate::transformer::tanh(gi[2 * hidden + j] + r[j] * hn[j]);
                    h[j] = (1.0 - z[j]) * n[j] + z[j] * hp[j];
                    hp[j] = h[j];
                }
            }
        }
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (x, w_ih, w_hh) = (inputs[0], inputs[1], inputs[2]);
        let hidden = w_hh.rows;
        let three = 3 * hidden;
        let tokens = x.rows;
        let segs = self.order.len();
        // gradients of every token's gate pre-activations: [d r, d z, d n] (the input side)
        let mut dgi = vec![0.0f32; tokens * three];
        let mut dw_hh = vec![0.0f32; hidden * three];
        // dL/dh of each running segment's state, carried back one step at a time
        let mut carry = vec![0.0f32; segs * hidden];
        let mut dgh = vec![0.0f32; segs * three];
        let mut h_prev = vec![0.0f32; segs * hidden];
        for t in (0..self.order.steps()).rev() {
            let b = self.order.running(t);
            // segments that end at t start with no gradient from the future
            carry[self.order.running_after(t) * hidden..b * hidden].fill(0.0);
            for (s, seg) in self.order[..b].iter().enumerate() {
                let row = seg.start + t;
                let at = row * hidden..(row + 1) * hidden;
                let (r, z, n, hn) = (
                    &self.r[at.clone()],
                    &self.z[at.clone()],
                    &self.n[at.clone()],
                    &self.hn[at.clone()],
                );
                let dh_out = &grad.data[at];
                let hp = &mut h_prev[s * hidden..(s + 1) * hidden];
                if t > 0 {
                    hp.copy_from_slice(&output.data[(row - 1) * hidden..row * hidden]);
                } else {
                    hp.fill(0.0);
                }
                let dh = &mut carry[s * hidden..(s + 1) * hidden];
                let gi = &mut dgi[row * three..(row + 1) * three];
                let gh = &mut dgh[s * three..(s + 1) * three];
                for j in 0..hidden {
                    let d = dh[j] + dh_out[j];
                    let dn = d * (1.0 - z[j]);
                    let dz = d * (hp[j] - n[j]);
                    let da_n = dn * (1.0 - n[j] * n[j]);
                    let dr = da_n * hn[j];
                    let da_r = dr * r[j] * (1.0 - r[j]);
                    let da_z = dz * z[j] * (1.0 - z[j]);
                    gi[j] = da_r;
                    gi[hidden + j] = da_z;
                    gi[2 * hidden + j] = da_n;
                    gh[j] = da_r;
                    gh[hidden + j] = da_z;
                    gh[2 * hidden + j] = da_n * r[j];
                    // the direct path h → h'; the path through W_hh is added below
                    dh[j] = d * z[j];
                }
            }
            if t > 0 {
                let dw = needs[2].then_some(dw_hh.as_mut_slice());
                recurrent_product_backward(&mut carry, &dgh, &h_prev, w_hh, dw, b);
            }
        }
        let dx = needs[0].then(|| {
            let mut dx = Tensor::zeros(tokens, x.cols);
            matmul(
                &mut dx.data,
                &dgi,
                &w_ih.data,
                tokens,
                x.cols,
                three,
                false,
                true,
                false,
            );
            dx
        });
        let dw_ih = needs[1].then(|| {
            let mut d = Tensor::zeros(x.cols, three);
            matmul(
                &mut d.data,
                &x.data,
                &dgi,
                x.cols,
                three,
                tokens,
                true,
                false,
                false,
            );
            d
        });
        let dw_hh = needs[2].then(|| Tensor::from_vec(hidden, three, dw_hh));
        vec![dx, dw_ih, dw_hh]
    }
}

/// The LSTM's recorded state: per token the gate activations `[i, f, g, o]`
/// (`[tokens × 4·hidden]`) and the cell state (`[tokens × hidden]`).
struct Lstm {
    order: Schedule,
    acts: Vec<f32>,
    c: Vec<f32>,
}

impl CustomOp for Lstm {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let (gi, w_hh) = (inputs[0], inputs[1]);
        let hidden = w_hh.rows;
        let four = 4 * hidden;
        assert_eq!(w_hh.cols, four, "lstm: w_hh must be [hidden × 4·hidden]");
        assert_eq!(gi.cols, four, "lstm: gates must be [tokens × 4·hidden]");
        let tokens = gi.rows;
        let mut out = Tensor::zeros(tokens, hidden);
        self.acts = vec![0.0; tokens * four];
        self.c = vec![0.0; tokens * hidden];
        let segs = self.order.len();
        let (mut h_prev, mut c_prev) = (vec![0.0f32; segs * hidden], vec![0.0f32; segs * hidden]);
        let mut gh = vec![0.0f32; segs * four];
        for t in 0..self.order.steps() {
            let b = self.order.running(t);
            recurrent_product(&mut gh, &h_prev, w_hh, b, t);
            for (s, seg) in self.order[..b].iter().enumerate() {
                let row = seg.start + t;
                let a = &mut self.acts[row * four..(row + 1) * four];
                let (pre, gh) = (
                    &gi.data[row * four..(row + 1) * four],
                    &gh[s * four..(s + 1) * four],
                );
                // gates i, f, o through the sigmoid and g through tanh, in three straight
                // loops the compiler vectorises
                for (a, (p, q)) in a.iter_mut().zip(pre.iter().zip(gh)) {
                    *a = p + q;
                }
                let (ifg, o) = a.split_at_mut(3 * hidden);
                let (i_f, g) = ifg.split_at_mut(2 * hidden);
                i_f.iter_mut()
                    .chain(o.iter_mut())
                    .for_each(|v| *v = sigmoid(*v));
                g.iter_mut().for_each(|v| *v = crate::transformer::tanh(*v));
                let (hp, cp) = (
                    &mut h_prev[s * hidden..(s + 1) * hidden],
                    &mut c_prev[s * hidden..(s + 1) * hidden],
                );
                let c = &mut self.c[row * hidden..(row + 1) * hidden];
                let h = &mut out.data[row * hidden..(row + 1) * hidden];
                for j in 0..hidden {
                    let (i, f, g, o) = (a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j]);
                    c[j] = f * cp[j] + i * g;
                    h[j] = o * crate::transformer::tanh(c[j]);
                    cp[j] = c[j];
                    hp[j] = h[j];
                }
            }
        }
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        let (gi, w_hh) = (inputs[0], inputs[1]);
        let hidden = w_hh.rows;
        let four = 4 * hidden;
        let tokens = gi.rows;
        let segs = self.order.len();
        // gradients of every token's gate pre-activations (shared by both inputs' sides)
        let mut dgates = vec![0.0f32; tokens * four];
        let mut dw_hh = vec![0.0f32; hidden * four];
        // dL/dh and dL/dc of each running segment's state, carried back one step at a time
        let mut carry_h = vec![0.0f32; segs * hidden];
        let mut carry_c = vec![0.0f32; segs * hidden];
        let mut h_prev = vec![0.0f32; segs * hidden];
        let mut dg_block = vec![0.0f32; segs * four];
        let steps = self.order.steps();
        for t in (0..steps).rev() {
            let b = self.order.running(t);
            // segments that end at t start with no gradient from the future
            let ended = self.order.running_after(t) * hidden..b * hidden;
            carry_h[ended.clone()].fill(0.0);
            carry_c[ended].fill(0.0);
            for (s, seg) in self.order[..b].iter().enumerate() {
                let row = seg.start + t;
                let a = &self.acts[row * four..(row + 1) * four];
                let c = &self.c[row * hidden..(row + 1) * hidden];
                let dh_out = &grad.data[row * hidden..(row + 1) * hidden];
                let hp = &mut h_prev[s * hidden..(s + 1) * hidden];
                let first = t == 0;
                if first {
                    hp.fill(0.0);
                } else {
                    hp.copy_from_slice(&output.data[(row - 1) * hidden..row * hidden]);
                }
                let dh = &mut carry_h[s * hidden..(s + 1) * hidden];
                let dc = &mut carry_c[s * hidden..(s + 1) * hidden];
                let d = &mut dgates[row * four..(row + 1) * four];
                for j in 0..hidden {
                    let (i, f, g, o) = (a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j]);
                    let c_prev = if first {
                        0.0
                    } else {
                        self.c[(row - 1) * hidden + j]
                    };
                    let tc = crate::transformer::tanh(c[j]);
                    let dht = dh[j] + dh_out[j];
                    let dct = dc[j] + dht * o * (1.0 - tc * tc);
                    d[j] = dct * g * i * (1.0 - i);
                    d[hidden + j] = dct * c_prev * f * (1.0 - f);
                    d[2 * hidden + j] = dct * i * (1.0 - g * g);
                    d[3 * hidden + j] = dht * tc * o * (1.0 - o);
                    dc[j] = dct * f;
                    // the path through W_hh is added below
                    dh[j] = 0.0;
                }
                dg_block[s * four..(s + 1) * four].copy_from_slice(d);
            }
            if t > 0 {
                // the states' own gradients were moved into the gates above (dh = 0)
                let dw = needs[1].then_some(dw_hh.as_mut_slice());
                recurrent_product_backward(&mut carry_h, &dg_block, &h_prev, w_hh, dw, b);
            }
        }
        let dgi = needs[0].then(|| Tensor::from_vec(tokens, four, dgates));
        let dw_hh = needs[1].then(|| Tensor::from_vec(hidden, four, dw_hh));
        vec![dgi, dw_hh]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use crate::params::ParamStore;
    use rand::SeedableRng;

    fn segments(lengths: &[usize]) -> Vec<Segment> {
        crate::transformer::segments_from_lengths(lengths)
    }

    #[test]
    fn gru_matches_finite_differences_over_uneven_segments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (inp, hidden) = (3, 2);
        let mut store = ParamStore::new();
        let w_ih = store.add(
            "w_ih",
            init::normal(&mut rng, inp, 3 * hidden, 0.8),
            true,
            false,
        );
        let w_hh = store.add(
            "w_hh",
            init::normal(&mut rng, hidden, 3 * hidden, 0.8),
            true,
            false,
        );
        let segs = segments(&[3, 1, 4]);
        let x = init::normal(&mut rng, 8, inp, 1.0);
        let weights = init::normal(&mut rng, 8, hidden, 1.0);
        crate::testing::GradCheck::default()
            .run(&store, &[x], |g, ids| {
                let (a, b) = (g.param(w_ih), g.param(w_hh));
                let h = g.gru(ids[0], a, b, &segs);
                // a loss that weighs every token's state differently
                let w = g.input(weights.clone(), false);
                let p = g.mul(h, w);
                g.sum_all(p)
            })
            .unwrap();
    }

    #[test]
    fn a_segment_runs_from_a_zero_state_on_its_own() {
        // one token: h = (1 − z) ⊙ n with r, z, n from x alone
        let mut store = ParamStore::new();
        let w_ih = store.add(
            "w_ih",
            Tensor::from_vec(1, 3, vec![0.5, -1.0, 2.0]),
            true,
            false,
        );
        let w_hh = store.add(
            "w_hh",
            Tensor::from_vec(1, 3, vec![9.0, 9.0, 9.0]),
            true,
            false,
        );
        let mut g = Graph::new(&store, false);
        let x = g.input(Tensor::from_vec(3, 1, vec![1.0, 1.0, 1.0]), false);
        let (a, b) = (g.param(w_ih), g.param(w_hh));
        // segments [1] and [2]: tokens 0 and 1 start their segment, token 2 continues
        let h = g.gru(x, a, b, &segments(&[1, 2]));
        let h = &g.value(h).data;
        let want = (1.0 - sigmoid(-1.0)) * 2f32.tanh();
        assert!((h[0] - want).abs() < 1e-6);
        assert!((h[1] - want).abs() < 1e-6);
        assert!(
            (h[2] - h[1]).abs() > 1e-3,
            "the second token sees the state"
        );
    }

    #[test]
    fn lstm_matches_finite_differences_over_uneven_segments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let hidden = 2;
        let mut store = ParamStore::new();
        let w_hh = store.add(
            "w_hh",
            init::normal(&mut rng, hidden, 4 * hidden, 0.8),
            true,
            false,
        );
        let segs = segments(&[3, 1, 4]);
        let gates = init::normal(&mut rng, 8, 4 * hidden, 1.0);
        let weights = init::normal(&mut rng, 8, hidden, 1.0);
        crate::testing::GradCheck::default()
            .run(&store, &[gates], |g, ids| {
                let w = g.param(w_hh);
                let h = g.lstm(ids[0], w, &segs);
                let m = g.input(weights.clone(), false);
                let p = g.mul(h, m);
                g.sum_all(p)
            })
            .unwrap();
    }
}
