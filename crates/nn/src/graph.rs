//! A reverse-mode tape over two-dimensional tensors. Each op stores what its backward pass
//! needs; `backward` walks the tape once in reverse. Ops are the ones CTR models are built from
//! (linear layers, activations, batch norm, dropout, cross layers, FM interaction, softmax
//! gating, losses); each has a finite-difference test below.

use crate::kernels::{self, add_assign, col_sums_into, map_inplace, matmul, sigmoid, zip_map};
use crate::ops::CustomOp;
use crate::params::{ParamId, ParamStore};
use crate::tensor::Tensor;
use crate::transformer::{self, Segment};
use rand::Rng;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub usize);

/// Running-statistics updates that a training-mode forward pass asks for (batch norm). They are
/// applied after the step so that the forward pass can borrow the parameters immutably.
#[derive(Clone, Debug)]
pub struct StateUpdate {
    pub param: ParamId,
    pub batch_value: Vec<f32>,
    pub momentum: f32,
}

/// Activations that can be fused into a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    #[inline]
    fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            Activation::Tanh => v.tanh(),
            Activation::Sigmoid => sigmoid(v),
        }
    }

    /// The derivative expressed through the output `y`.
    #[inline]
    fn grad_from_output(self, g: f32, y: f32) -> f32 {
        match self {
            Activation::Linear => g,
            Activation::Relu => {
                if y > 0.0 {
                    g
                } else {
                    0.0
                }
            }
            Activation::Tanh => g * (1.0 - y * y),
            Activation::Sigmoid => g * y * (1.0 - y),
        }
    }
}

enum Op {
    Input,
    /// DCNv2's cross layer `x0 ⊙ (xl · w + b) + xl` in one node; keeps `xl · w + b`.
    Cross {
        x0: NodeId,
        xl: NodeId,
        w: NodeId,
        b: NodeId,
        h: Vec<f32>,
    },
    /// `act(x · w + b)` in one node: one pass over the output, no intermediate copy.
    Dense {
        x: NodeId,
        w: NodeId,
        b: Option<NodeId>,
        act: Activation,
    },
    Param(ParamId),
    AddBias(NodeId, NodeId),
    Add(NodeId, NodeId),
    Mul(NodeId, NodeId),
    Relu(NodeId),
    Tanh(NodeId),
    Sigmoid(NodeId),
    Dropout(NodeId, Vec<f32>),
    BatchNorm {
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        xhat: Vec<f32>,
        inv_std: Vec<f32>,
        train: bool,
    },
    Concat(Vec<NodeId>),
    GatherSegments {
        x: NodeId,
        at: Vec<(u32, u32)>,
    },
    BlendRow {
        x: NodeId,
        row: NodeId,
        mask: Vec<f32>,
    },
    RowDotsIndexed {
        h: NodeId,
        rows: NodeId,
        idx: Vec<u32>,
    },
    SliceCols(NodeId, usize),
    SliceRows(NodeId, usize),
    SumCols(NodeId),
    ScaleRows(NodeId, NodeId),
    SoftmaxRows(NodeId),
    FmInteraction {
        x: NodeId,
        fields: usize,
        dim: usize,
    },
    BceWithLogits {
        logits: NodeId,
        labels: Vec<f32>,
    },
    GatherRows {
        table: NodeId,
        ids: Vec<u32>,
    },
    LayerNorm {
        x: NodeId,
        residual: Option<NodeId>,
        gamma: NodeId,
        beta: NodeId,
        xhat: Vec<f32>,
        inv_std: Vec<f32>,
    },
    Gelu(NodeId),
    Attention {
        q: NodeId,
        k: NodeId,
        v: NodeId,
        heads: usize,
        segs: Vec<Segment>,
        probs: Vec<Vec<f32>>,
    },
    SegmentMean {
        x: NodeId,
        segs: Vec<Segment>,
    },
    L2NormalizeRows {
        x: NodeId,
        inv_norms: Vec<f32>,
    },
    MatmulNt(NodeId, NodeId),
    Scale(NodeId, f32),
    SoftmaxCrossEntropy {
        logits: NodeId,
        targets: Vec<u32>,
        probs: Vec<f32>,
    },
    /// An op defined outside this file ([`crate::ops::CustomOp`]).
    Custom {
        op: Box<dyn CustomOp>,
        inputs: Vec<NodeId>,
    },
}

struct Node {
    op: Op,
    /// Empty for `Param` nodes, whose value lives in the store.
    value: Tensor,
    requires_grad: bool,
}

/// Gradients from one backward pass: per node (for inputs such as gathered embeddings) and
/// per dense parameter.
pub struct Grads {
    nodes: Vec<Option<Tensor>>,
    pub params: Vec<Option<Tensor>>,
}

impl Grads {
    pub fn of(&self, id: NodeId) -> Option<&Tensor> {
        self.nodes[id.0].as_ref()
    }

    pub fn take(&mut self, id: NodeId) -> Option<Tensor> {
        self.nodes[id.0].take()
    }

    pub fn param(&self, id: ParamId) -> Option<&Tensor> {
        self.params[id.0].as_ref()
    }
}

pub struct Graph<'p> {
    params: &'p ParamStore,
    nodes: Vec<Node>,
    pub train: bool,
    /// No backward pass will follow (scoring): ops may fold and fuse what only a backward
    /// pass would need kept apart.
    no_grad: bool,
    pub state_updates: Vec<StateUpdate>,
}

impl<'p> Graph<'p> {
    pub fn new(params: &'p ParamStore, train: bool) -> Self {
        Graph {
            params,
            nodes: Vec::with_capacity(64),
            train,
            no_grad: false,
            state_updates: Vec::new(),
        }
    }

    /// A graph for scoring only: evaluation mode, and `backward` must not be called.
    pub fn inference(params: &'p ParamStore) -> Self {
        Graph {
            no_grad: true,
            ..Graph::new(params, false)
        }
    }

    pub fn value(&self, id: NodeId) -> &Tensor {
        match self.nodes[id.0].op {
            Op::Param(p) => self.params.value(p),
            _ => &self.nodes[id.0].value,
        }
    }

    /// Moves a node's value out of the graph (a parameter's is copied); the graph must not be
    /// used for that node afterwards.
    pub fn take_value(&mut self, id: NodeId) -> Tensor {
        match self.nodes[id.0].op {
            Op::Param(p) => self.params.value(p).clone(),
            _ => std::mem::take(&mut self.nodes[id.0].value),
        }
    }

    fn push(&mut self, op: Op, value: Tensor, requires_grad: bool) -> NodeId {
        self.nodes.push(Node {
            op,
            value,
            requires_grad,
        });
        NodeId(self.nodes.len() - 1)
    }

    fn rg(&self, id: NodeId) -> bool {
        self.nodes[id.0].requires_grad
    }

    /// Records a boxed [`CustomOp`] applied to `inputs` (see [`Graph::custom`]).
    pub fn custom_boxed(&mut self, mut op: Box<dyn CustomOp>, inputs: &[NodeId]) -> NodeId {
        let values: Vec<&Tensor> = inputs.iter().map(|&i| self.value(i)).collect();
        let out = op.forward(&values);
        let rg = inputs.iter().any(|&i| self.rg(i));
        self.push(
            Op::Custom {
                op,
                inputs: inputs.to_vec(),
            },
            out,
            rg,
        )
    }

    /// A leaf holding data; with `requires_grad` its gradient is reported by `backward`.
    pub fn input(&mut self, value: Tensor, requires_grad: bool) -> NodeId {
        self.push(Op::Input, value, requires_grad)
    }

    pub fn param(&mut self, id: ParamId) -> NodeId {
        let trainable = self.params.get(id).trainable;
        self.push(Op::Param(id), Tensor::default(), trainable)
    }

    /// DCNv2's cross layer `x0 ⊙ (xl · w + b) + xl` as one node (saves three full-size
    /// intermediates per layer against separate matmul/mul/add nodes).
    pub fn cross(&mut self, x0: NodeId, xl: NodeId, w: ParamId, b: ParamId) -> NodeId {
        let wn = self.param(w);
        let bn = self.param(b);
        let (xv, wv, bv) = (self.value(xl), self.value(wn), self.value(bn));
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        assert_eq!(
            (wv.rows, n, bv.cols),
            (k, k, k),
            "cross: weight must be square over the input width"
        );
        assert_eq!(
            self.value(x0).shape(),
            (m, k),
            "cross: x0 and xl shapes differ"
        );
        let mut h = vec![0.0f32; m * n];
        h.chunks_exact_mut(n)
            .for_each(|row| row.copy_from_slice(&bv.data));
        matmul(&mut h, &xv.data, &wv.data, m, n, k, false, false, true);
        let mut out = Tensor::zeros(m, n);
        let (x0v, xlv) = (&self.value(x0).data, &self.value(xl).data);
        {
            out.data
                .par_chunks_mut(4096)
                .zip(h.par_chunks(4096))
                .enumerate()
                .for_each(|(c, (o, hc))| {
                    let base = c * 4096;
                    for i in 0..o.len() {
                        o[i] = x0v[base + i] * hc[i] + xlv[base + i];
                    }
                });
        }
        let rg = self.rg(x0) || self.rg(xl) || self.rg(wn) || self.rg(bn);
        self.push(
            Op::Cross {
                x0,
                xl,
                w: wn,
                b: bn,
                h,
            },
            out,
            rg,
        )
    }

    /// `x[B×N] + b[1×N]` broadcast over rows.
    pub fn add_bias(&mut self, x: NodeId, b: NodeId) -> NodeId {
        let (xv, bv) = (self.value(x), self.value(b));
        assert_eq!((bv.rows, bv.cols), (1, xv.cols), "add_bias: shape");
        let mut out = xv.clone();
        for row in out.data.chunks_exact_mut(out.cols) {
            row.iter_mut().zip(&bv.data).for_each(|(o, b)| *o += b);
        }
        let rg = self.rg(x) || self.rg(b);
        self.push(Op::AddBias(x, b), out, rg)
    }

    /// `x · w + b` (bias optional).
    pub fn linear(&mut self, x: NodeId, w: ParamId, b: Option<ParamId>) -> NodeId {
        self.dense(x, w, b, Activation::Linear)
    }

    /// `act(x · w + b)` as one fused node.
    pub fn dense(&mut self, x: NodeId, w: ParamId, b: Option<ParamId>, act: Activation) -> NodeId {
        let wn = self.param(w);
        let bn = b.map(|b| self.param(b));
        let (xv, wv) = (self.value(x), self.value(wn));
        assert_eq!(
            xv.cols, wv.rows,
            "dense: {}x{} · {}x{}",
            xv.rows, xv.cols, wv.rows, wv.cols
        );
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        let mut out = match bn {
            Some(bn) => {
                // the bias rows initialise the output, so it needs no zeroing first
                let bv = self.value(bn);
                assert_eq!((bv.rows, bv.cols), (1, n), "dense: bias shape");
                let mut data = Vec::with_capacity(m * n);
                (0..m).for_each(|_| data.extend_from_slice(&bv.data));
                Tensor::from_vec(m, n, data)
            }
            None => Tensor::zeros(m, n),
        };
        matmul(
            &mut out.data,
            &xv.data,
            &wv.data,
            m,
            n,
            k,
            false,
            false,
            bn.is_some(),
        );
        if act != Activation::Linear {
            map_inplace(&mut out.data, move |v| act.apply(v));
        }
        let rg = self.rg(x) || self.rg(wn) || bn.is_some_and(|b| self.rg(b));
        self.push(
            Op::Dense {
                x,
                w: wn,
                b: bn,
                act,
            },
            out,
            rg,
        )
    }

    fn binary(
        &mut self,
        a: NodeId,
        b: NodeId,
        f: impl Fn(f32, f32) -> f32 + Sync,
        op: Op,
    ) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.shape(), bv.shape(), "elementwise op: shapes differ");
        let mut out = Tensor::zeros(av.rows, av.cols);
        zip_map(&mut out.data, &av.data, &bv.data, f);
        let rg = self.rg(a) || self.rg(b);
        self.push(op, out, rg)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(a, b, |x, y| x + y, Op::Add(a, b))
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(a, b, |x, y| x * y, Op::Mul(a, b))
    }

    fn unary(&mut self, x: NodeId, f: impl Fn(f32) -> f32 + Sync, op: Op) -> NodeId {
        let mut out = self.value(x).clone();
        map_inplace(&mut out.data, f);
        let rg = self.rg(x);
        self.push(op, out, rg)
    }

    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.unary(x, |v| v.max(0.0), Op::Relu(x))
    }

    pub fn tanh(&mut self, x: NodeId) -> NodeId {
        self.unary(x, f32::tanh, Op::Tanh(x))
    }

    pub fn sigmoid(&mut self, x: NodeId) -> NodeId {
        self.unary(x, sigmoid, Op::Sigmoid(x))
    }

    /// Inverted dropout: in training, zero each element with probability `p` and scale the rest
    /// by `1/(1-p)`; identity in evaluation.
    pub fn dropout(&mut self, x: NodeId, p: f32, rng: &mut impl Rng) -> NodeId {
        if !self.train || p <= 0.0 {
            return x;
        }
        let keep = 1.0 - p;
        let scale = 1.0 / keep;
        let n = self.value(x).len();
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.gen::<f32>() < keep { scale } else { 0.0 })
            .collect();
        let xv = self.value(x);
        let mut out = Tensor::zeros(xv.rows, xv.cols);
        zip_map(&mut out.data, &xv.data, &mask, |a, m| a * m);
        let rg = self.rg(x);
        self.push(Op::Dropout(x, mask), out, rg)
    }

    /// Batch normalization followed by `act`. When scoring ([`Graph::inference`]) this is one
    /// parallel pass `act(x·scale + shift)` with the running statistics folded into
    /// `scale`/`shift`; otherwise a `batch_norm` node and an activation node.
    pub fn batch_norm_act(
        &mut self,
        x: NodeId,
        gamma: ParamId,
        beta: ParamId,
        running_mean: ParamId,
        running_var: ParamId,
        act: Activation,
    ) -> NodeId {
        if !self.no_grad {
            let h = self.batch_norm(x, gamma, beta, running_mean, running_var);
            return match act {
                Activation::Linear => h,
                Activation::Relu => self.relu(h),
                Activation::Tanh => self.tanh(h),
                Activation::Sigmoid => self.sigmoid(h),
            };
        }
        const EPS: f32 = 1e-5;
        let p = self.params;
        let (g, b) = (&p.value(gamma).data, &p.value(beta).data);
        let (mean, var) = (&p.value(running_mean).data, &p.value(running_var).data);
        let scale: Vec<f32> = g
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + EPS).sqrt())
            .collect();
        let shift: Vec<f32> = b
            .iter()
            .zip(mean.iter().zip(&scale))
            .map(|(b, (m, s))| b - m * s)
            .collect();
        let xv = self.value(x);
        let (rows, c) = xv.shape();
        let mut out = Tensor::zeros(rows, c);
        // one loop per activation, so that each is vectorised (a match per element is not)
        match act {
            Activation::Linear => affine_rows(&mut out.data, &xv.data, &scale, &shift, |v| v),
            Activation::Relu => {
                affine_rows(&mut out.data, &xv.data, &scale, &shift, |v| v.max(0.0))
            }
            Activation::Tanh => affine_rows(&mut out.data, &xv.data, &scale, &shift, f32::tanh),
            Activation::Sigmoid => affine_rows(&mut out.data, &xv.data, &scale, &shift, sigmoid),
        }
        self.push(Op::Input, out, false)
    }

    /// Batch normalization over the rows (PyTorch's BatchNorm1d: biased variance to normalize,
    /// unbiased variance into the running estimate, momentum 0.1, eps 1e-5).
    pub fn batch_norm(
        &mut self,
        x: NodeId,
        gamma: ParamId,
        beta: ParamId,
        running_mean: ParamId,
        running_var: ParamId,
    ) -> NodeId {
        const EPS: f32 = 1e-5;
        const MOMENTUM: f32 = 0.1;
        let (b, c) = self.value(x).shape();
        let (mean, var) = if self.train {
            let xv = self.value(x);
            let mut mean = vec![0.0f64; c];
            for row in xv.data.chunks_exact(c) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += *v as f64);
            }
            mean.iter_mut().for_each(|m| *m /= b as f64);
            let mut var = vec![0.0f64; c];
            for row in xv.data.chunks_exact(c) {
                for j in 0..c {
                    let d = row[j] as f64 - mean[j];
                    var[j] += d * d;
                }
            }
            let biased: Vec<f32> = var.iter().map(|v| (v / b as f64) as f32).collect();
            let unbiased: Vec<f32> = var
                .iter()
                .map(|v| (v / (b.max(2) - 1) as f64) as f32)
                .collect();
            let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            self.state_updates.push(StateUpdate {
                param: running_mean,
                batch_value: mean.clone(),
                momentum: MOMENTUM,
            });
            self.state_updates.push(StateUpdate {
                param: running_var,
                batch_value: unbiased,
                momentum: MOMENTUM,
            });
            (mean, biased)
        } else {
            (
                self.params.value(running_mean).data.clone(),
                self.params.value(running_var).data.clone(),
            )
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        let g = self.param(gamma);
        let bt = self.param(beta);
        let xv = self.value(x);
        let mut xhat = vec![0.0f32; b * c];
        for (xr, hr) in xv.data.chunks_exact(c).zip(xhat.chunks_exact_mut(c)) {
            for j in 0..c {
                hr[j] = (xr[j] - mean[j]) * inv_std[j];
            }
        }
        let (gv, bv) = (self.value(g), self.value(bt));
        let mut out = Tensor::zeros(b, c);
        for (orow, hr) in out.data.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
            for j in 0..c {
                orow[j] = gv.data[j] * hr[j] + bv.data[j];
            }
        }
        let rg = self.rg(x) || self.rg(g) || self.rg(bt);
        let train = self.train;
        self.push(
            Op::BatchNorm {
                x,
                gamma: g,
                beta: bt,
                xhat,
                inv_std,
                train,
            },
            out,
            rg,
        )
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

    /// Rows `start..start+len`.
    pub fn slice_rows(&mut self, x: NodeId, start: usize, len: usize) -> NodeId {
        let xv = self.value(x);
        assert!(start + len <= xv.rows, "slice_rows out of range");
        let c = xv.cols;
        let out = Tensor::from_vec(len, c, xv.data[start * c..(start + len) * c].to_vec());
        let rg = self.rg(x);
        self.push(Op::SliceRows(x, start), out, rg)
    }

    /// Row sums: `[B×N] → [B×1]`.
    pub fn sum_cols(&mut self, x: NodeId) -> NodeId {
        let xv = self.value(x);
        let data = xv
            .data
            .chunks_exact(xv.cols.max(1))
            .map(|r| r.iter().sum())
            .collect();
        let out = Tensor::from_vec(xv.rows, 1, data);
        let rg = self.rg(x);
        self.push(Op::SumCols(x), out, rg)
    }

    /// Scales each row of `x[B×N]` by `s[B×1]`.
    pub fn scale_rows(&mut self, x: NodeId, s: NodeId) -> NodeId {
        let (xv, sv) = (self.value(x), self.value(s));
        assert_eq!((sv.rows, sv.cols), (xv.rows, 1), "scale_rows: shape");
        let mut out = xv.clone();
        for (row, &k) in out.data.chunks_exact_mut(xv.cols).zip(&sv.data) {
            row.iter_mut().for_each(|v| *v *= k);
        }
        let rg = self.rg(x) || self.rg(s);
        self.push(Op::ScaleRows(x, s), out, rg)
    }

    pub fn softmax_rows(&mut self, x: NodeId) -> NodeId {
        let mut out = self.value(x).clone();
        let c = out.cols;
        for row in out.data.chunks_exact_mut(c) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            row.iter_mut().for_each(|v| {
                *v = (*v - m).exp();
                s += *v;
            });
            row.iter_mut().for_each(|v| *v /= s);
        }
        let rg = self.rg(x);
        self.push(Op::SoftmaxRows(x), out, rg)
    }

    /// Factorization-machine second-order term over `fields` embeddings of size `dim` laid out
    /// as `[B × fields·dim]`: `½ Σ_d ((Σ_f e_fd)² − Σ_f e_fd²)`, giving `[B×1]`.
    pub fn fm_interaction(&mut self, x: NodeId, fields: usize, dim: usize) -> NodeId {
        let xv = self.value(x);
        assert_eq!(xv.cols, fields * dim, "fm_interaction: width");
        let mut data = Vec::with_capacity(xv.rows);
        let mut sum = vec![0.0f32; dim];
        for row in xv.data.chunks_exact(fields * dim) {
            sum.fill(0.0);
            let mut sq = 0.0f32;
            for e in row.chunks_exact(dim) {
                for d in 0..dim {
                    sum[d] += e[d];
                    sq += e[d] * e[d];
                }
            }
            data.push(0.5 * (sum.iter().map(|s| s * s).sum::<f32>() - sq));
        }
        let out = Tensor::from_vec(xv.rows, 1, data);
        let rg = self.rg(x);
        self.push(Op::FmInteraction { x, fields, dim }, out, rg)
    }

    /// Mean binary cross-entropy of `sigmoid(logits)` against `labels` (a `[1×1]` node),
    /// computed from the logits for stability.
    pub fn bce_with_logits(&mut self, logits: NodeId, labels: &[f32]) -> NodeId {
        let lv = self.value(logits);
        assert_eq!((lv.rows * lv.cols), labels.len(), "bce: label count");
        let n = labels.len().max(1) as f64;
        let loss: f64 = lv
            .data
            .iter()
            .zip(labels)
            .map(|(&z, &y)| {
                let z = z as f64;
                // log(1+e^z) - y z, written to avoid overflow
                z.max(0.0) - z * y as f64 + (-z.abs()).exp().ln_1p()
            })
            .sum::<f64>()
            / n;
        let rg = self.rg(logits);
        self.push(
            Op::BceWithLogits {
                logits,
                labels: labels.to_vec(),
            },
            Tensor::from_vec(1, 1, vec![loss as f32]),
            rg,
        )
    }

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

    /// Layer norm over each row with learned `gamma`/`beta` (`[1×N]`).
    pub fn layer_norm(&mut self, x: NodeId, gamma: ParamId, beta: ParamId, eps: f32) -> NodeId {
        self.layer_norm_impl(x, None, gamma, beta, eps)
    }

    /// `layer_norm(x + residual)` as one node: a transformer block's "add & norm".
    pub fn add_layer_norm(
        &mut self,
        x: NodeId,
        residual: NodeId,
        gamma: ParamId,
        beta: ParamId,
        eps: f32,
    ) -> NodeId {
        self.layer_norm_impl(x, Some(residual), gamma, beta, eps)
    }

    fn layer_norm_impl(
        &mut self,
        x: NodeId,
        residual: Option<NodeId>,
        gamma: ParamId,
        beta: ParamId,
        eps: f32,
    ) -> NodeId {
        let gn = self.param(gamma);
        let bn = self.param(beta);
        let (xv, gv, bv) = (self.value(x), self.value(gn), self.value(bn));
        assert_eq!(gv.cols, xv.cols, "layer_norm: width");
        let rv = residual.map(|r| &self.value(r).data[..]);
        let (y, xhat, inv_std) =
            transformer::layer_norm_forward(&xv.data, rv, &gv.data, &bv.data, eps);
        let out = Tensor::from_vec(xv.rows, xv.cols, y);
        let rg = self.rg(x) || residual.is_some_and(|r| self.rg(r)) || self.rg(gn) || self.rg(bn);
        let (xhat, inv_std) = if self.no_grad {
            (Vec::new(), Vec::new())
        } else {
            (xhat, inv_std)
        };
        self.push(
            Op::LayerNorm {
                x,
                residual,
                gamma: gn,
                beta: bn,
                xhat,
                inv_std,
            },
            out,
            rg,
        )
    }

    /// The exact (erf) GELU.
    pub fn gelu(&mut self, x: NodeId) -> NodeId {
        self.unary(x, transformer::gelu, Op::Gelu(x))
    }

    /// Multi-head self-attention within each segment of packed `q`, `k`, `v` (`[tokens × width]`).
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        heads: usize,
        segs: &[Segment],
    ) -> NodeId {
        let (qv, kv, vv) = (self.value(q), self.value(k), self.value(v));
        assert!(
            qv.shape() == kv.shape() && kv.shape() == vv.shape(),
            "attention: q, k, v shapes differ"
        );
        let (rows, width) = qv.shape();
        assert_eq!(
            segs.iter().map(|s| s.len).sum::<usize>(),
            rows,
            "attention: segments do not cover the rows"
        );
        let mut out = Tensor::zeros(rows, width);
        let probs = transformer::attention_forward(
            &qv.data,
            &kv.data,
            &vv.data,
            &mut out.data,
            width,
            heads,
            segs,
        );
        let probs = if self.no_grad { Vec::new() } else { probs };
        let rg = self.rg(q) || self.rg(k) || self.rg(v);
        self.push(
            Op::Attention {
                q,
                k,
                v,
                heads,
                segs: segs.to_vec(),
                probs,
            },
            out,
            rg,
        )
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

    /// Each row divided by its L2 norm (floored at 1e-12, as `torch.nn.functional.normalize`).
    pub fn l2_normalize_rows(&mut self, x: NodeId) -> NodeId {
        let mut out = self.value(x).clone();
        let c = out.cols.max(1);
        let inv_norms: Vec<f32> = out
            .data
            .chunks_exact_mut(c)
            .map(|row| {
                let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v *= inv);
                inv
            })
            .collect();
        let rg = self.rg(x);
        self.push(Op::L2NormalizeRows { x, inv_norms }, out, rg)
    }

    /// `a[m×k] · b[n×k]ᵀ` for two nodes (similarity matrices).
    pub fn matmul_nt(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.cols, bv.cols, "matmul_nt: inner widths differ");
        let (m, n, k) = (av.rows, bv.rows, av.cols);
        let mut out = Tensor::zeros(m, n);
        matmul(
            &mut out.data,
            &av.data,
            &bv.data,
            m,
            n,
            k,
            false,
            true,
            false,
        );
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::MatmulNt(a, b), out, rg)
    }

    /// `c · x`.
    pub fn scale(&mut self, x: NodeId, c: f32) -> NodeId {
        self.unary(x, move |v| v * c, Op::Scale(x, c))
    }

    /// Mean cross-entropy of row-wise softmax over `logits[B×C]` against class `targets`.
    pub fn softmax_cross_entropy(&mut self, logits: NodeId, targets: &[u32]) -> NodeId {
        let lv = self.value(logits);
        assert_eq!(
            lv.rows,
            targets.len(),
            "softmax_cross_entropy: target count"
        );
        let mut probs = lv.data.clone();
        let mut loss = 0.0f64;
        for (row, &t) in probs.chunks_exact_mut(lv.cols).zip(targets) {
            assert!((t as usize) < lv.cols, "softmax_cross_entropy: class {t}");
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m as f64
                + row
                    .iter()
                    .map(|&v| ((v - m) as f64).exp())
                    .sum::<f64>()
                    .ln();
            loss += lse - row[t as usize] as f64;
            row.iter_mut()
                .for_each(|v| *v = ((*v as f64) - lse).exp() as f32);
        }
        let loss = (loss / targets.len().max(1) as f64) as f32;
        let rg = self.rg(logits);
        self.push(
            Op::SoftmaxCrossEntropy {
                logits,
                targets: targets.to_vec(),
                probs,
            },
            Tensor::from_vec(1, 1, vec![loss]),
            rg,
        )
    }

    /// Reverse pass from a scalar node.
    pub fn backward(&self, loss: NodeId) -> Grads {
        let n = self.nodes.len();
        let mut g: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut pg: Vec<Option<Tensor>> = (0..self.params.len()).map(|_| None).collect();
        let lv = self.value(loss);
        g[loss.0] = Some(Tensor::from_vec(lv.rows, lv.cols, vec![1.0; lv.len()]));

        for i in (0..=loss.0).rev() {
            let node = &self.nodes[i];
            if !node.requires_grad {
                continue;
            }
            let Some(gy) = g[i].take() else { continue };
            match &node.op {
                Op::Input => {
                    g[i] = Some(gy);
                }
                Op::Param(p) => accumulate(&mut pg[p.0], gy),
                Op::Cross { x0, xl, w, b, h } => {
                    let (x0v, xlv, wv) = (self.value(*x0), self.value(*xl), self.value(*w));
                    let (m, k) = (xlv.rows, xlv.cols);
                    let mut gz = Tensor::zeros(m, k);
                    zip_map(&mut gz.data, &gy.data, &x0v.data, |g, x| g * x);
                    if self.rg(*w) {
                        let mut gw = Tensor::zeros(k, k);
                        matmul(
                            &mut gw.data,
                            &xlv.data,
                            &gz.data,
                            k,
                            k,
                            m,
                            true,
                            false,
                            false,
                        );
                        accumulate(&mut g[w.0], gw);
                    }
                    if self.rg(*b) {
                        let mut gb = Tensor::zeros(1, k);
                        col_sums_into(&mut gb.data, &gz.data, k);
                        accumulate(&mut g[b.0], gb);
                    }
                    if self.rg(*xl) {
                        let mut gx = gy.clone();
                        matmul(&mut gx.data, &gz.data, &wv.data, m, k, k, false, true, true);
                        accumulate(&mut g[xl.0], gx);
                    }
                    if self.rg(*x0) {
                        let mut g0 = gy;
                        zip_map_inplace(&mut g0.data, h, |g, hv| g * hv);
                        accumulate(&mut g[x0.0], g0);
                    }
                }
                Op::Dense { x, w, b, act } => {
                    let mut gz = gy;
                    if *act != Activation::Linear {
                        let act = *act;
                        zip_map_inplace(&mut gz.data, &node.value.data, move |g, y| {
                            act.grad_from_output(g, y)
                        });
                    }
                    let (xv, wv) = (self.value(*x), self.value(*w));
                    let (m, k, n) = (xv.rows, xv.cols, wv.cols);
                    if self.rg(*w) {
                        let mut gw = Tensor::zeros(k, n);
                        matmul(
                            &mut gw.data,
                            &xv.data,
                            &gz.data,
                            k,
                            n,
                            m,
                            true,
                            false,
                            false,
                        );
                        accumulate(&mut g[w.0], gw);
                    }
                    if let Some(b) = b.filter(|b| self.rg(*b)) {
                        let mut gb = Tensor::zeros(1, n);
                        col_sums_into(&mut gb.data, &gz.data, n);
                        accumulate(&mut g[b.0], gb);
                    }
                    if self.rg(*x) {
                        let mut gx = Tensor::zeros(m, k);
                        matmul(
                            &mut gx.data,
                            &gz.data,
                            &wv.data,
                            m,
                            k,
                            n,
                            false,
                            true,
                            false,
                        );
                        accumulate(&mut g[x.0], gx);
                    }
                }
                Op::AddBias(x, bias) => {
                    if self.rg(*bias) {
                        let mut gb = Tensor::zeros(1, gy.cols);
                        col_sums_into(&mut gb.data, &gy.data, gy.cols);
                        accumulate(&mut g[bias.0], gb);
                    }
                    if self.rg(*x) {
                        accumulate(&mut g[x.0], gy);
                    }
                }
                Op::Add(a, b) => {
                    if self.rg(*a) {
                        accumulate(&mut g[a.0], gy.clone());
                    }
                    if self.rg(*b) {
                        accumulate(&mut g[b.0], gy);
                    }
                }
                Op::Mul(a, b) => {
                    if self.rg(*a) {
                        let mut ga = Tensor::zeros(gy.rows, gy.cols);
                        zip_map(&mut ga.data, &gy.data, &self.value(*b).data, |g, v| g * v);
                        accumulate(&mut g[a.0], ga);
                    }
                    if self.rg(*b) {
                        let mut gb = Tensor::zeros(gy.rows, gy.cols);
                        zip_map(&mut gb.data, &gy.data, &self.value(*a).data, |g, v| g * v);
                        accumulate(&mut g[b.0], gb);
                    }
                }
                Op::Relu(x) => {
                    let mut gx = gy;
                    let y = &node.value.data;
                    zip_map_inplace(&mut gx.data, y, |g, y| if y > 0.0 { g } else { 0.0 });
                    accumulate(&mut g[x.0], gx);
                }
                Op::Tanh(x) => {
                    let mut gx = gy;
                    zip_map_inplace(&mut gx.data, &node.value.data, |g, y| g * (1.0 - y * y));
                    accumulate(&mut g[x.0], gx);
                }
                Op::Sigmoid(x) => {
                    let mut gx = gy;
                    zip_map_inplace(&mut gx.data, &node.value.data, |g, y| g * y * (1.0 - y));
                    accumulate(&mut g[x.0], gx);
                }
                Op::Dropout(x, mask) => {
                    let mut gx = gy;
                    zip_map_inplace(&mut gx.data, mask, |g, m| g * m);
                    accumulate(&mut g[x.0], gx);
                }
                Op::BatchNorm {
                    x,
                    gamma,
                    beta,
                    xhat,
                    inv_std,
                    train,
                } => {
                    let (b, c) = (gy.rows, gy.cols);
                    let gv = self.value(*gamma);
                    let mut sum_g = vec![0.0f32; c];
                    let mut sum_gx = vec![0.0f32; c];
                    for (gr, hr) in gy.data.chunks_exact(c).zip(xhat.chunks_exact(c)) {
                        for j in 0..c {
                            sum_g[j] += gr[j];
                            sum_gx[j] += gr[j] * hr[j];
                        }
                    }
                    if self.rg(*gamma) {
                        accumulate(&mut g[gamma.0], Tensor::from_vec(1, c, sum_gx.clone()));
                    }
                    if self.rg(*beta) {
                        accumulate(&mut g[beta.0], Tensor::from_vec(1, c, sum_g.clone()));
                    }
                    if self.rg(*x) {
                        let mut gx = Tensor::zeros(b, c);
                        let bf = b as f32;
                        for ((xr, gr), hr) in gx
                            .data
                            .chunks_exact_mut(c)
                            .zip(gy.data.chunks_exact(c))
                            .zip(xhat.chunks_exact(c))
                        {
                            for j in 0..c {
                                xr[j] = if *train {
                                    gv.data[j]
                                        * inv_std[j]
                                        * (gr[j] - sum_g[j] / bf - hr[j] * sum_gx[j] / bf)
                                } else {
                                    gv.data[j] * inv_std[j] * gr[j]
                                };
                            }
                        }
                        accumulate(&mut g[x.0], gx);
                    }
                }
                Op::Concat(parts) => {
                    let mut off = 0;
                    for p in parts {
                        let w = self.value(*p).cols;
                        if self.rg(*p) {
                            let mut gp = Tensor::zeros(gy.rows, w);
                            for r in 0..gy.rows {
                                gp.data[r * w..(r + 1) * w]
                                    .copy_from_slice(&gy.row(r)[off..off + w]);
                            }
                            accumulate(&mut g[p.0], gp);
                        }
                        off += w;
                    }
                }
                Op::GatherSegments { x, at } => {
                    let xv = self.value(*x);
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
                Op::BlendRow { x, row, mask } => {
                    let c = gy.cols;
                    if self.rg(*row) {
                        let mut gr = vec![0.0f32; c];
                        for (i, (&gv, &m)) in gy.data.iter().zip(mask.iter()).enumerate() {
                            gr[i % c] += gv * m;
                        }
                        accumulate(&mut g[row.0], Tensor::from_vec(1, c, gr));
                    }
                    if self.rg(*x) {
                        let mut gx = gy;
                        gx.data
                            .iter_mut()
                            .zip(mask.iter())
                            .for_each(|(v, &m)| *v *= 1.0 - m);
                        accumulate(&mut g[x.0], gx);
                    }
                }
                Op::RowDotsIndexed { h, rows, idx } => {
                    let (hv, rv) = (self.value(*h), self.value(*rows));
                    let (p, j) = (hv.cols, gy.cols);
                    if self.rg(*h) {
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
                    if self.rg(*rows) {
                        // a scatter-add into few rows: sequential, it is memory-bound anyway
                        let mut gr = Tensor::zeros(rv.rows, p);
                        for (m, (gvals, ix)) in
                            gy.data.chunks_exact(j).zip(idx.chunks_exact(j)).enumerate()
                        {
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
                Op::SliceCols(x, start) => {
                    let xv = self.value(*x);
                    let mut gx = Tensor::zeros(xv.rows, xv.cols);
                    let len = gy.cols;
                    for r in 0..xv.rows {
                        gx.data[r * xv.cols + start..r * xv.cols + start + len]
                            .copy_from_slice(gy.row(r));
                    }
                    accumulate(&mut g[x.0], gx);
                }
                Op::SliceRows(x, start) => {
                    let xv = self.value(*x);
                    let mut gx = Tensor::zeros(xv.rows, xv.cols);
                    let c = xv.cols;
                    gx.data[start * c..start * c + gy.len()].copy_from_slice(&gy.data);
                    accumulate(&mut g[x.0], gx);
                }
                Op::SumCols(x) => {
                    let xv = self.value(*x);
                    let mut gx = Tensor::zeros(xv.rows, xv.cols);
                    for (row, &gr) in gx.data.chunks_exact_mut(xv.cols.max(1)).zip(&gy.data) {
                        row.fill(gr);
                    }
                    accumulate(&mut g[x.0], gx);
                }
                Op::ScaleRows(x, s) => {
                    let (xv, sv) = (self.value(*x), self.value(*s));
                    let c = xv.cols;
                    if self.rg(*s) {
                        let data = gy
                            .data
                            .chunks_exact(c)
                            .zip(xv.data.chunks_exact(c))
                            .map(|(gr, xr)| gr.iter().zip(xr).map(|(a, b)| a * b).sum())
                            .collect();
                        accumulate(&mut g[s.0], Tensor::from_vec(xv.rows, 1, data));
                    }
                    if self.rg(*x) {
                        let mut gx = gy;
                        for (row, &k) in gx.data.chunks_exact_mut(c).zip(&sv.data) {
                            row.iter_mut().for_each(|v| *v *= k);
                        }
                        accumulate(&mut g[x.0], gx);
                    }
                }
                Op::SoftmaxRows(x) => {
                    let y = &node.value;
                    let mut gx = gy;
                    for (gr, yr) in gx
                        .data
                        .chunks_exact_mut(y.cols)
                        .zip(y.data.chunks_exact(y.cols))
                    {
                        let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
                        gr.iter_mut()
                            .zip(yr)
                            .for_each(|(gv, yv)| *gv = yv * (*gv - dot));
                    }
                    accumulate(&mut g[x.0], gx);
                }
                Op::FmInteraction { x, fields, dim } => {
                    let xv = self.value(*x);
                    let (f, d) = (*fields, *dim);
                    let mut gx = Tensor::zeros(xv.rows, f * d);
                    let mut sum = vec![0.0f32; d];
                    for ((row, grow), &gr) in xv
                        .data
                        .chunks_exact(f * d)
                        .zip(gx.data.chunks_exact_mut(f * d))
                        .zip(&gy.data)
                    {
                        sum.fill(0.0);
                        for e in row.chunks_exact(d) {
                            sum.iter_mut().zip(e).for_each(|(s, v)| *s += v);
                        }
                        for (ge, e) in grow.chunks_exact_mut(d).zip(row.chunks_exact(d)) {
                            for k in 0..d {
                                ge[k] = gr * (sum[k] - e[k]);
                            }
                        }
                    }
                    accumulate(&mut g[x.0], gx);
                }
                Op::BceWithLogits { logits, labels } => {
                    let lv = self.value(*logits);
                    let scale = gy.data[0] / labels.len().max(1) as f32;
                    let data = lv
                        .data
                        .iter()
                        .zip(labels)
                        .map(|(&z, &y)| (sigmoid(z) - y) * scale)
                        .collect();
                    accumulate(&mut g[logits.0], Tensor::from_vec(lv.rows, lv.cols, data));
                }
                Op::GatherRows { table, ids } => {
                    let tv = self.value(*table);
                    let w = tv.cols;
                    let mut gt = Tensor::zeros(tv.rows, w);
                    for (r, &i) in ids.iter().enumerate() {
                        let dst = &mut gt.data[i as usize * w..(i as usize + 1) * w];
                        dst.iter_mut().zip(gy.row(r)).for_each(|(a, b)| *a += b);
                    }
                    accumulate(&mut g[table.0], gt);
                }
                Op::LayerNorm {
                    x,
                    residual,
                    gamma,
                    beta,
                    xhat,
                    inv_std,
                } => {
                    let gv = self.value(*gamma);
                    let (dx, dgamma, dbeta) =
                        transformer::layer_norm_backward(&gy.data, xhat, inv_std, &gv.data);
                    let c = gv.cols;
                    if self.rg(*gamma) {
                        accumulate(&mut g[gamma.0], Tensor::from_vec(1, c, dgamma));
                    }
                    if self.rg(*beta) {
                        accumulate(&mut g[beta.0], Tensor::from_vec(1, c, dbeta));
                    }
                    let dx = Tensor::from_vec(gy.rows, c, dx);
                    if let Some(r) = residual.filter(|r| self.rg(*r)) {
                        accumulate(&mut g[r.0], dx.clone());
                    }
                    if self.rg(*x) {
                        accumulate(&mut g[x.0], dx);
                    }
                }
                Op::Gelu(x) => {
                    let mut gx = gy;
                    zip_map_inplace(&mut gx.data, &self.value(*x).data, |g, v| {
                        g * transformer::gelu_grad(v)
                    });
                    accumulate(&mut g[x.0], gx);
                }
                Op::Attention {
                    q,
                    k,
                    v,
                    heads,
                    segs,
                    probs,
                } => {
                    let (qv, kv, vv) = (self.value(*q), self.value(*k), self.value(*v));
                    let (gq, gk, gv) = transformer::attention_backward(
                        &qv.data, &kv.data, &vv.data, &gy.data, probs, qv.cols, *heads, segs,
                    );
                    let (r, c) = qv.shape();
                    for (id, grad) in [(q, gq), (k, gk), (v, gv)] {
                        if self.rg(*id) {
                            accumulate(&mut g[id.0], Tensor::from_vec(r, c, grad));
                        }
                    }
                }
                Op::SegmentMean { x, segs } => {
                    let xv = self.value(*x);
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
                Op::L2NormalizeRows { x, inv_norms } => {
                    // y = x/|x|: dx = (g − y (g·y)) / |x|
                    let y = &node.value;
                    let c = y.cols.max(1);
                    let mut gx = gy;
                    for ((gr, yr), &inv) in gx
                        .data
                        .chunks_exact_mut(c)
                        .zip(y.data.chunks_exact(c))
                        .zip(inv_norms)
                    {
                        let dot: f32 = gr.iter().zip(yr).map(|(a, b)| a * b).sum();
                        gr.iter_mut()
                            .zip(yr)
                            .for_each(|(gv, yv)| *gv = (*gv - yv * dot) * inv);
                    }
                    accumulate(&mut g[x.0], gx);
                }
                Op::MatmulNt(a, b) => {
                    let (av, bv) = (self.value(*a), self.value(*b));
                    let (m, n, k) = (av.rows, bv.rows, av.cols);
                    if self.rg(*a) {
                        let mut ga = Tensor::zeros(m, k);
                        matmul(
                            &mut ga.data,
                            &gy.data,
                            &bv.data,
                            m,
                            k,
                            n,
                            false,
                            false,
                            false,
                        );
                        accumulate(&mut g[a.0], ga);
                    }
                    if self.rg(*b) {
                        let mut gb = Tensor::zeros(n, k);
                        matmul(
                            &mut gb.data,
                            &gy.data,
                            &av.data,
                            n,
                            k,
                            m,
                            true,
                            false,
                            false,
                        );
                        accumulate(&mut g[b.0], gb);
                    }
                }
                Op::Scale(x, c) => {
                    let mut gx = gy;
                    let c = *c;
                    map_inplace(&mut gx.data, move |v| v * c);
                    accumulate(&mut g[x.0], gx);
                }
                Op::SoftmaxCrossEntropy {
                    logits,
                    targets,
                    probs,
                } => {
                    let lv = self.value(*logits);
                    let scale = gy.data[0] / targets.len().max(1) as f32;
                    let mut gl = Tensor::from_vec(lv.rows, lv.cols, probs.clone());
                    for (row, &t) in gl.data.chunks_exact_mut(lv.cols).zip(targets) {
                        row[t as usize] -= 1.0;
                        row.iter_mut().for_each(|v| *v *= scale);
                    }
                    accumulate(&mut g[logits.0], gl);
                }
                Op::Custom { op, inputs } => {
                    let values: Vec<&Tensor> = inputs.iter().map(|&i| self.value(i)).collect();
                    let needs: Vec<bool> = inputs.iter().map(|&i| self.rg(i)).collect();
                    let grads = op.backward(&values, &node.value, &gy, &needs);
                    assert_eq!(
                        grads.len(),
                        inputs.len(),
                        "{}: one gradient per input",
                        op.name()
                    );
                    for (&i, gi) in inputs.iter().zip(grads) {
                        if let (true, Some(t)) = (self.rg(i), gi) {
                            let v = self.value(i);
                            assert_eq!(t.shape(), v.shape(), "{}: gradient shape", op.name());
                            accumulate(&mut g[i.0], t);
                        }
                    }
                }
            }
        }
        Grads {
            nodes: g,
            params: pg,
        }
    }
}

fn accumulate(slot: &mut Option<Tensor>, t: Tensor) {
    match slot {
        Some(acc) => add_assign(&mut acc.data, &t.data),
        None => *slot = Some(t),
    }
}

/// `out[r][j] = f(x[r][j] · scale[j] + shift[j])` over rows of `scale.len()` columns.
fn affine_rows(
    out: &mut [f32],
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    f: impl Fn(f32) -> f32 + Sync,
) {
    let c = scale.len();
    let rows_per_task = (kernels::PARALLEL_MIN_LEN / c.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * c)
        .zip(x.par_chunks(rows_per_task * c))
        .for_each(|(o, x)| {
            for (orow, xrow) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for j in 0..c {
                    orow[j] = f(xrow[j] * scale[j] + shift[j]);
                }
            }
        });
}

fn zip_map_inplace(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len());
    if x.len() >= kernels::PARALLEL_MIN_LEN {
        x.par_chunks_mut(4096)
            .zip(y.par_chunks(4096))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a = f(*a, *b)));
    } else {
        x.iter_mut().zip(y).for_each(|(a, b)| *a = f(*a, *b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Checks d(loss)/d(input) and d(loss)/d(params) of `build` against central differences in f64
    /// terms of the f32 forward (step 1e-3).
    fn check(store: ParamStore, input: Tensor, build: impl Fn(&mut Graph, NodeId) -> NodeId) {
        let labels: Vec<f32> = (0..input.rows).map(|i| (i % 2) as f32).collect();
        check_loss(store, input, |g, x| {
            let y = build(g, x);
            g.bce_with_logits(y, &labels)
        });
    }

    /// As [`check`], for a `build` that returns the scalar loss itself.
    fn check_loss(store: ParamStore, input: Tensor, build: impl Fn(&mut Graph, NodeId) -> NodeId) {
        crate::testing::check_gradients(&store, &[input], |g, x| build(g, x[0])).unwrap();
    }

    fn rand_input(rng: &mut StdRng, rows: usize, cols: usize) -> Tensor {
        init::normal(rng, rows, cols, 1.0)
    }

    #[test]
    fn transformer_block_matches_finite_differences() {
        // a packed batch of two sequences (3 and 2 tokens): attention with 2 heads, output
        // projection, residual, layer norm, GELU feed-forward, per-token logit
        let mut rng = StdRng::seed_from_u64(21);
        let mut s = ParamStore::new();
        let mut lin = |s: &mut ParamStore, name: &str, i: usize, o: usize| {
            let w = s.add(
                format!("{name}.w"),
                init::normal(&mut rng, i, o, 0.5),
                true,
                true,
            );
            let b = s.add(
                format!("{name}.b"),
                init::normal(&mut rng, 1, o, 0.3),
                true,
                false,
            );
            (w, b)
        };
        let (wq, bq) = lin(&mut s, "q", 4, 4);
        let (wk, bk) = lin(&mut s, "k", 4, 4);
        let (wv, bv) = lin(&mut s, "v", 4, 4);
        let (wo, bo) = lin(&mut s, "o", 4, 4);
        let (wf, bf) = lin(&mut s, "f", 4, 3);
        let (wl, bl) = lin(&mut s, "l", 3, 1);
        let gamma = s.add(
            "ln.g",
            Tensor::from_vec(1, 4, vec![1.1, 0.9, 1.3, 0.7]),
            true,
            false,
        );
        let beta = s.add(
            "ln.b",
            Tensor::from_vec(1, 4, vec![0.1, -0.2, 0.0, 0.3]),
            true,
            false,
        );
        let segs = crate::segments_from_lengths(&[3, 2]);
        check(s, rand_input(&mut rng, 5, 4), |g, x| {
            let q = g.linear(x, wq, Some(bq));
            let k = g.linear(x, wk, Some(bk));
            let v = g.linear(x, wv, Some(bv));
            let a = g.attention(q, k, v, 2, &segs);
            let o = g.linear(a, wo, Some(bo));
            let n = g.add_layer_norm(o, x, gamma, beta, 1e-5);
            let n = g.layer_norm(n, gamma, beta, 1e-5);
            let f = g.linear(n, wf, Some(bf));
            let h = g.gelu(f);
            g.linear(h, wl, Some(bl))
        });
    }

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
    fn linear_tanh_sigmoid_sum() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 4, 3), true, true);
        let b = s.add("b", init::normal(&mut rng, 1, 3, 0.5), true, false);
        check(s, rand_input(&mut rng, 5, 4), |g, x| {
            let h = g.linear(x, w, Some(b));
            let t = g.tanh(h);
            let sg = g.sigmoid(t);
            g.sum_cols(sg)
        });
    }

    #[test]
    fn fused_dense_with_every_activation() {
        for act in [
            Activation::Linear,
            Activation::Relu,
            Activation::Tanh,
            Activation::Sigmoid,
        ] {
            let mut rng = StdRng::seed_from_u64(11);
            let mut s = ParamStore::new();
            let w = s.add("w", init::xavier_normal(&mut rng, 5, 4), true, true);
            let b = s.add("b", init::normal(&mut rng, 1, 4, 0.5), true, false);
            let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
            check(s, rand_input(&mut rng, 6, 5), |g, x| {
                let h = g.dense(x, w, Some(b), act);
                g.dense(h, v, None, Activation::Linear)
            });
        }
    }

    #[test]
    fn relu_mlp() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::xavier_normal(&mut rng, 4, 6), true, true);
        let w2 = s.add("w2", init::xavier_normal(&mut rng, 6, 1), true, true);
        check(s, rand_input(&mut rng, 6, 4), |g, x| {
            let h = g.linear(x, w1, None);
            let r = g.relu(h);
            g.linear(r, w2, None)
        });
    }

    #[test]
    fn batch_norm_training() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = ParamStore::new();
        let w = s.add("w", init::xavier_normal(&mut rng, 3, 4), true, true);
        let gamma = s.add("gamma", init::normal(&mut rng, 1, 4, 1.0), true, false);
        let beta = s.add("beta", init::normal(&mut rng, 1, 4, 1.0), true, false);
        let rm = s.add("rm", Tensor::zeros(1, 4), false, false);
        let rv = s.add("rv", Tensor::from_vec(1, 4, vec![1.0; 4]), false, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
        check(s, rand_input(&mut rng, 7, 3), |g, x| {
            let h = g.linear(x, w, None);
            let n = g.batch_norm(h, gamma, beta, rm, rv);
            let t = g.tanh(n);
            g.linear(t, v, None)
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

    #[test]
    fn folded_batch_norm_for_scoring_equals_the_evaluation_graph() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut s = ParamStore::new();
        let c = 300; // wide enough for the parallel path
        let gamma = s.add("gamma", init::normal(&mut rng, 1, c, 1.0), true, false);
        let beta = s.add("beta", init::normal(&mut rng, 1, c, 1.0), true, false);
        let rm = s.add("rm", init::normal(&mut rng, 1, c, 1.0), false, false);
        let rv_data = init::normal(&mut rng, 1, c, 1.0)
            .data
            .iter()
            .map(|v| v * v + 0.1)
            .collect();
        let rv = s.add("rv", Tensor::from_vec(1, c, rv_data), false, false);
        let x = rand_input(&mut rng, 70, c);
        for act in [Activation::Relu, Activation::Tanh, Activation::Linear] {
            let mut eval = Graph::new(&s, false);
            let xi = eval.input(x.clone(), false);
            let out = eval.batch_norm_act(xi, gamma, beta, rm, rv, act);
            let mut scoring = Graph::inference(&s);
            let xs = scoring.input(x.clone(), false);
            let folded = scoring.batch_norm_act(xs, gamma, beta, rm, rv, act);
            let (a, b) = (&eval.value(out).data, &scoring.value(folded).data);
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(b) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + a.abs()),
                    "{act:?}: {a} vs {b}"
                );
            }
        }
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
    fn fused_cross_layers_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut s = ParamStore::new();
        let w1 = s.add("w1", init::xavier_normal(&mut rng, 4, 4), true, true);
        let b1 = s.add("b1", init::normal(&mut rng, 1, 4, 0.3), true, false);
        let w2 = s.add("w2", init::xavier_normal(&mut rng, 4, 4), true, true);
        let b2 = s.add("b2", init::normal(&mut rng, 1, 4, 0.3), true, false);
        let v = s.add("v", init::xavier_normal(&mut rng, 4, 1), true, true);
        check(s, rand_input(&mut rng, 5, 4), |g, x0| {
            let x1 = g.cross(x0, x0, w1, b1);
            let x2 = g.cross(x0, x1, w2, b2);
            g.linear(x2, v, None)
        });
    }

    #[test]
    fn softmax_gating_and_scale_rows() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut s = ParamStore::new();
        let wg = s.add("wg", init::xavier_normal(&mut rng, 3, 2), true, true);
        check(s, rand_input(&mut rng, 4, 3), |g, x| {
            let logits = g.linear(x, wg, None);
            let gate = g.softmax_rows(logits);
            let g0 = g.slice_cols(gate, 0, 1);
            let g1 = g.slice_cols(gate, 1, 1);
            let a = g.scale_rows(x, g0);
            let t = g.tanh(x);
            let b2 = g.scale_rows(t, g1);
            let sum = g.add(a, b2);
            g.sum_cols(sum)
        });
    }

    #[test]
    fn fm_interaction_matches_pairwise_sum_and_gradient() {
        let mut rng = StdRng::seed_from_u64(6);
        let (f, d) = (4, 3);
        let x = rand_input(&mut rng, 3, f * d);
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let xi = g.input(x.clone(), false);
        let y = g.fm_interaction(xi, f, d);
        for r in 0..3 {
            let e = |i: usize, k: usize| x.data[r * f * d + i * d + k];
            let mut want = 0.0;
            for i in 0..f {
                for j in i + 1..f {
                    want += (0..d).map(|k| e(i, k) * e(j, k)).sum::<f32>();
                }
            }
            assert!((g.value(y).data[r] - want).abs() < 1e-4);
        }
        check(ParamStore::new(), x, |g, x| g.fm_interaction(x, f, d));
    }

    #[test]
    fn dropout_scales_kept_units_and_is_identity_in_eval() {
        let mut rng = StdRng::seed_from_u64(7);
        let store = ParamStore::new();
        let x = Tensor::from_vec(1, 10_000, vec![1.0; 10_000]);
        let mut g = Graph::new(&store, true);
        let xi = g.input(x.clone(), true);
        let y = g.dropout(xi, 0.25, &mut rng);
        let v = g.value(y);
        let kept = v.data.iter().filter(|&&a| a > 0.0).count() as f32 / 10_000.0;
        assert!((kept - 0.75).abs() < 0.02);
        assert!(v
            .data
            .iter()
            .all(|&a| a == 0.0 || (a - 1.0 / 0.75).abs() < 1e-6));
        let mut ge = Graph::new(&store, false);
        let xe = ge.input(x, false);
        assert_eq!(ge.dropout(xe, 0.25, &mut rng), xe);
    }

    #[test]
    fn bce_matches_closed_form() {
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let z = g.input(Tensor::from_vec(2, 1, vec![0.3, -1.2]), false);
        let l = g.bce_with_logits(z, &[1.0, 0.0]);
        let p = |z: f32| 1.0 / (1.0 + (-z).exp());
        let want = -(p(0.3).ln() + (1.0 - p(-1.2)).ln()) / 2.0;
        assert!((g.value(l).data[0] - want).abs() < 1e-6);
    }
}
