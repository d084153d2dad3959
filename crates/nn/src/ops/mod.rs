//! Ops outside the core tape, and the extension point that lets any crate add one.
//!
//! An op implements [`CustomOp`]: `forward` computes the output from its inputs (and may keep
//! what its backward pass needs), `backward` maps the output's gradient to the inputs'. The
//! [`Graph`](crate::Graph) records it like a built-in op (candle's `CustomOp` is the model).
//! The ops here are the ones recommender families beyond CTR need, grouped by kind:
//! [`sparse`] (a CSR matrix times a dense one, for graph convolution), [`loss`] (pairwise,
//! multinomial and Gaussian terms) and [`elementwise`] (reparameterisation).

pub mod elementwise;
pub mod loss;
pub mod sparse;

use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;

/// A differentiable op defined outside `graph.rs`.
pub trait CustomOp: Send + Sync {
    /// A short name for error messages.
    fn name(&self) -> &'static str;

    /// The output from the inputs' values (called once, when the op is recorded).
    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor;

    /// The gradient of each input from the output's gradient `grad`; `needs[i]` says whether
    /// input `i` wants one (return `None` where it does not).
    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>>;
}

impl Graph<'_> {
    /// Records `op` applied to `inputs` and returns its output node.
    pub fn custom(&mut self, op: impl CustomOp + 'static, inputs: &[NodeId]) -> NodeId {
        self.custom_boxed(Box::new(op), inputs)
    }
}

/// A scalar output's gradient (`[1×1]`), as a plain number.
pub(crate) fn scalar_grad(grad: &Tensor) -> f32 {
    debug_assert_eq!(grad.len(), 1, "scalar op with a non-scalar gradient");
    grad.data[0]
}
