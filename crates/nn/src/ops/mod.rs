//! The tape's ops, by family, and the extension point that lets any crate add one.
//!
//! A built-in op is a variant of the tape's `Op` enum (`graph.rs`), whose `Graph::backward`
//! dispatches it to a `<op>_backward` method. Each family file holds its ops' builders on
//! [`Graph`](crate::Graph), each beside its backward method, and their finite-difference tests:
//! `linear` (fused dense layers, bias, DCNv2's cross layer, `a · bᵀ`), [`elementwise`]
//! (arithmetic, activations, scaling, dropout, sums, reparameterisation), `norm` (batch and
//! layer norm, row softmax, L2 normalisation), `attention`, `gather` (row and segment
//! lookups, concatenation, slices, NCE and pair scoring), `interaction` (the FM term), [`fields`] (pairing, pooling and transposing the field
//! blocks of a row, for the field-interaction models),
//! [`loss`], [`sparse`] (a CSR matrix times a dense one, and LightGCN's layer mean, for
//! graph convolution), `recurrent` (GRU and LSTM fused over time, for GRU4Rec and DKT) and
//! [`decay_attention`] (AKT's distance-decayed attention) `memory` (DKVMN's key-value
//! memory, written and read over time) [`attentive_gru`] (AdvKT's generator recurrence) and `gradient_penalty` (WGAN-GP's
//! penalty in closed form, since the tape has no double backward). Adding a built-in op takes one variant, one match arm and the family
//! file's builder and backward method.
//!
//! An op can instead implement [`CustomOp`], with no change to the tape: `forward` computes
//! the output from its inputs (and may keep what its backward pass needs), `backward` maps the
//! output's gradient to the inputs'. The [`Graph`](crate::Graph) records it like a built-in op
//! (candle's `CustomOp` is the model); crates outside this one add ops this way, as do the
//! ranking losses, `spmm` and the reparameterisation here.

mod attention;
pub mod attentive_gru;
pub mod decay_attention;
pub mod elementwise;
pub mod fields;
mod gather;
mod gradient_penalty;
mod interaction;
mod linear;
pub mod loss;
mod memory;
mod norm;
pub use norm::BatchNormStats;
mod recurrent;
pub mod sparse;

use crate::graph::{Graph, NodeId};
use crate::tensor::Tensor;

/// A differentiable op defined outside the tape's `Op` enum.
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

/// A custom op's input gradients, each kept where `needs` asks for it.
pub(crate) fn wanted<const N: usize>(grads: [Tensor; N], needs: &[bool]) -> Vec<Option<Tensor>> {
    grads
        .into_iter()
        .zip(needs)
        .map(|(g, &n)| n.then_some(g))
        .collect()
}

/// Finite-difference checks shared by the families' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::graph::{Graph, NodeId};
    use crate::init;
    use crate::params::ParamStore;
    use crate::tensor::Tensor;
    use rand::rngs::StdRng;

    /// Checks d(loss)/d(input) and d(loss)/d(params) of `build` against central differences in f64
    /// terms of the f32 forward (step 1e-3).
    pub(crate) fn check(
        store: ParamStore,
        input: Tensor,
        build: impl Fn(&mut Graph, NodeId) -> NodeId,
    ) {
        let labels: Vec<f32> = (0..input.rows).map(|i| (i % 2) as f32).collect();
        check_loss(store, input, |g, x| {
            let y = build(g, x);
            g.bce_with_logits(y, &labels)
        });
    }

    /// As [`check`], for a `build` that returns the scalar loss itself.
    pub(crate) fn check_loss(
        store: ParamStore,
        input: Tensor,
        build: impl Fn(&mut Graph, NodeId) -> NodeId,
    ) {
        crate::testing::check_gradients(&store, &[input], |g, x| build(g, x[0])).unwrap();
    }

    pub(crate) fn rand_input(rng: &mut StdRng, rows: usize, cols: usize) -> Tensor {
        init::normal(rng, rows, cols, 1.0)
    }
}
