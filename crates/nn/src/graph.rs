//! A reverse-mode tape over two-dimensional tensors. Each op stores what its backward pass
//! needs; `backward` walks the tape once in reverse. This file is the tape itself: nodes, the
//! `Op` enum with one variant per built-in op, and the reverse loop whose `match` hands each
//! variant to its backward function. The ops live by family in [`crate::ops`] (`linear`,
//! `elementwise`, `norm`, `attention`, `gather`, `interaction`, `loss`), each builder beside
//! its backward function and its finite-difference tests.

use crate::kernels::{add_assign, sigmoid, zip2_map_inplace, zip_map};
use crate::ops::CustomOp;
use crate::params::{ParamId, ParamStore};
use crate::tensor::Tensor;
use crate::transformer::Segment;

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
    pub(crate) fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            Activation::Tanh => crate::transformer::tanh(v),
            Activation::Sigmoid => sigmoid(v),
        }
    }

    /// The derivative expressed through the output `y`.
    #[inline]
    pub(crate) fn grad_from_output(self, g: f32, y: f32) -> f32 {
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

/// One variant per built-in op, holding its inputs and what its backward pass needs. The
/// builder and backward function of each live in its family file under `crate::ops`.
pub(crate) enum Op {
    Input,
    Param(ParamId),
    // ops/linear.rs
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
    AddBias(NodeId, NodeId),
    MatmulNt(NodeId, NodeId),
    // ops/elementwise.rs
    Add(NodeId, NodeId),
    Mul(NodeId, NodeId),
    Relu(NodeId),
    Tanh(NodeId),
    Sigmoid(NodeId),
    Gelu(NodeId),
    Scale(NodeId, f32),
    Dropout(NodeId, Vec<f32>),
    ScaleRows(NodeId, NodeId),
    SumCols(NodeId),
    // ops/norm.rs
    BatchNorm {
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        xhat: Vec<f32>,
        inv_std: Vec<f32>,
        train: bool,
    },
    LayerNorm {
        x: NodeId,
        residual: Option<NodeId>,
        gamma: NodeId,
        beta: NodeId,
        xhat: Vec<f32>,
        inv_std: Vec<f32>,
    },
    SoftmaxRows(NodeId),
    L2NormalizeRows {
        x: NodeId,
        inv_norms: Vec<f32>,
    },
    // ops/attention.rs
    Attention {
        q: NodeId,
        k: NodeId,
        v: NodeId,
        heads: usize,
        segs: Vec<Segment>,
        scale: f32,
        probs: Vec<Vec<f32>>,
        drop: Option<Vec<Vec<f32>>>,
    },
    // ops/gather.rs
    GatherRows {
        table: NodeId,
        ids: Vec<u32>,
    },
    GatherSegments {
        x: NodeId,
        at: Vec<(u32, u32)>,
    },
    SegmentMean {
        x: NodeId,
        segs: Vec<Segment>,
    },
    Concat(Vec<NodeId>),
    SliceCols(NodeId, usize),
    SliceRows(NodeId, usize),
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
    PairDots {
        a: NodeId,
        a_ids: Vec<u32>,
        b: NodeId,
        b_ids: Vec<u32>,
    },
    // ops/interaction.rs
    FmInteraction {
        x: NodeId,
        fields: usize,
        dim: usize,
    },
    // ops/loss.rs
    BceWithLogits {
        logits: NodeId,
        labels: Vec<f32>,
    },
    SoftmaxCrossEntropy {
        logits: NodeId,
        targets: Vec<u32>,
        probs: Vec<f32>,
    },
    /// An op defined outside this enum ([`crate::ops::CustomOp`]).
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
    pub(crate) params: &'p ParamStore,
    nodes: Vec<Node>,
    pub train: bool,
    /// No backward pass will follow (scoring): ops may fold and fuse what only a backward
    /// pass would need kept apart.
    pub(crate) no_grad: bool,
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

    pub(crate) fn push(&mut self, op: Op, value: Tensor, requires_grad: bool) -> NodeId {
        self.nodes.push(Node {
            op,
            value,
            requires_grad,
        });
        NodeId(self.nodes.len() - 1)
    }

    pub(crate) fn rg(&self, id: NodeId) -> bool {
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
            let out = &node.value;
            match &node.op {
                Op::Input => {
                    g[i] = Some(gy);
                }
                Op::Param(p) => accumulate(&mut pg[p.0], gy),
                Op::Cross { x0, xl, w, b, h } => {
                    self.cross_backward(&mut g, gy, *x0, *xl, *w, *b, h)
                }
                Op::Dense { x, w, b, act } => {
                    self.dense_backward(&mut g, gy, out, *x, *w, *b, *act)
                }
                Op::AddBias(x, bias) => self.add_bias_backward(&mut g, gy, *x, *bias),
                Op::MatmulNt(a, b) => self.matmul_nt_backward(&mut g, gy, *a, *b),
                Op::Add(a, b) => self.add_backward(&mut g, gy, *a, *b),
                Op::Mul(a, b) => self.mul_backward(&mut g, gy, *a, *b),
                Op::Relu(x) => self.relu_backward(&mut g, gy, out, *x),
                Op::Tanh(x) => self.tanh_backward(&mut g, gy, out, *x),
                Op::Sigmoid(x) => self.sigmoid_backward(&mut g, gy, out, *x),
                Op::Gelu(x) => self.gelu_backward(&mut g, gy, *x),
                Op::Scale(x, c) => self.scale_backward(&mut g, gy, *x, *c),
                Op::Dropout(x, mask) => self.dropout_backward(&mut g, gy, *x, mask),
                Op::ScaleRows(x, s) => self.scale_rows_backward(&mut g, gy, *x, *s),
                Op::SumCols(x) => self.sum_cols_backward(&mut g, gy, *x),
                Op::BatchNorm {
                    x,
                    gamma,
                    beta,
                    xhat,
                    inv_std,
                    train,
                } => self.batch_norm_backward(&mut g, gy, *x, *gamma, *beta, xhat, inv_std, *train),
                Op::LayerNorm {
                    x,
                    residual,
                    gamma,
                    beta,
                    xhat,
                    inv_std,
                } => self
                    .layer_norm_backward(&mut g, gy, *x, *residual, *gamma, *beta, xhat, inv_std),
                Op::SoftmaxRows(x) => self.softmax_rows_backward(&mut g, gy, out, *x),
                Op::L2NormalizeRows { x, inv_norms } => {
                    self.l2_normalize_rows_backward(&mut g, gy, out, *x, inv_norms)
                }
                Op::Attention {
                    q,
                    k,
                    v,
                    heads,
                    segs,
                    scale,
                    probs,
                    drop,
                } => self.attention_backward(
                    &mut g,
                    gy,
                    (*q, *k, *v),
                    *heads,
                    segs,
                    *scale,
                    probs,
                    drop.as_deref(),
                ),
                Op::GatherRows { table, ids } => self.gather_rows_backward(&mut g, gy, *table, ids),
                Op::GatherSegments { x, at } => self.gather_segments_backward(&mut g, gy, *x, at),
                Op::SegmentMean { x, segs } => self.segment_mean_backward(&mut g, gy, *x, segs),
                Op::Concat(parts) => self.concat_backward(&mut g, gy, parts),
                Op::SliceCols(x, start) => self.slice_cols_backward(&mut g, gy, *x, *start),
                Op::SliceRows(x, start) => self.slice_rows_backward(&mut g, gy, *x, *start),
                Op::BlendRow { x, row, mask } => {
                    self.blend_row_backward(&mut g, gy, *x, *row, mask)
                }
                Op::RowDotsIndexed { h, rows, idx } => {
                    self.row_dots_indexed_backward(&mut g, gy, *h, *rows, idx)
                }
                Op::PairDots { a, a_ids, b, b_ids } => {
                    self.pair_dots_backward(&mut g, gy, *a, a_ids, *b, b_ids)
                }
                Op::FmInteraction { x, fields, dim } => {
                    self.fm_interaction_backward(&mut g, gy, *x, *fields, *dim)
                }
                Op::BceWithLogits { logits, labels } => {
                    self.bce_with_logits_backward(&mut g, gy, *logits, labels)
                }
                Op::SoftmaxCrossEntropy {
                    logits,
                    targets,
                    probs,
                } => self.softmax_cross_entropy_backward(&mut g, gy, *logits, targets, probs),
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

/// Adds `f(a[i], b[i])` into a gradient slot of shape `shape`: in place when the slot holds a
/// gradient (one pass, no buffer for the term, the sum rounded as [`accumulate`] rounds it),
/// into a new buffer otherwise.
pub(crate) fn accumulate_zip(
    slot: &mut Option<Tensor>,
    (rows, cols): (usize, usize),
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    match slot {
        Some(acc) => {
            assert_eq!(acc.shape(), (rows, cols), "gradient shape");
            zip2_map_inplace(&mut acc.data, a, b, |x, a, b| x + f(a, b));
        }
        None => {
            let mut t = Tensor::zeros(rows, cols);
            zip_map(&mut t.data, a, b, f);
            *slot = Some(t);
        }
    }
}

/// Adds `t` into a gradient slot (or fills an empty one).
pub(crate) fn accumulate(slot: &mut Option<Tensor>, t: Tensor) {
    match slot {
        Some(acc) => add_assign(&mut acc.data, &t.data),
        None => *slot = Some(t),
    }
}
