//! One gradient checker for every op and model built on the tape: analytic gradients from
//! [`Graph::backward`] against central finite differences of the f32 forward pass.
//! [`GradCheck::run`] checks every input and parameter of one graph; for weights the tape
//! does not own (embedding rows, a model's tables), [`GradCheck::coordinate`] checks one
//! coordinate the caller moves.

use crate::graph::{Graph, NodeId};
use crate::params::ParamStore;
use crate::tensor::Tensor;

/// Step and tolerances of a finite-difference check: an analytic `a` and numeric `n` agree
/// when `|a − n| ≤ atol + rtol · max(|a|, |n|)`.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    pub step: f32,
    pub atol: f32,
    pub rtol: f32,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            step: 1e-3,
            atol: 2e-3,
            rtol: 2e-2,
        }
    }
}

impl GradCheck {
    /// Whether an analytic and a numeric derivative agree within the tolerances.
    pub fn agrees(&self, analytic: f64, numeric: f64) -> bool {
        (analytic - numeric).abs()
            <= self.atol as f64 + self.rtol as f64 * numeric.abs().max(analytic.abs())
    }

    /// Checks one coordinate: `loss_at(offset)` is the loss with the coordinate moved by
    /// `offset` (the caller moves it, evaluates, and puts it back); its central difference
    /// must agree with `analytic`. The error names the coordinate `what`.
    pub fn coordinate(
        &self,
        what: &str,
        analytic: f64,
        mut loss_at: impl FnMut(f32) -> f64,
    ) -> Result<(), String> {
        let h = self.step;
        let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
        if self.agrees(analytic, numeric) {
            Ok(())
        } else {
            Err(format!("{what}: analytic {analytic} numeric {numeric}"))
        }
    }

    /// Checks d(loss)/d(input) for every input and d(loss)/d(param) for every trainable
    /// parameter of `store`, where `build` records the scalar loss from the input nodes.
    /// Returns the first disagreement, naming the input or parameter and the entry.
    pub fn run(
        &self,
        store: &ParamStore,
        inputs: &[Tensor],
        build: impl Fn(&mut Graph, &[NodeId]) -> NodeId,
    ) -> Result<(), String> {
        self.run_params(store, inputs, |_| true, build)
    }

    /// As [`GradCheck::run`], for the trainable parameters whose names `checked` accepts
    /// (where an op's gradient deliberately differs from the function's, as a detach makes
    /// it, for the parameters upstream of it).
    pub fn run_params(
        &self,
        store: &ParamStore,
        inputs: &[Tensor],
        checked: impl Fn(&str) -> bool,
        build: impl Fn(&mut Graph, &[NodeId]) -> NodeId,
    ) -> Result<(), String> {
        let loss_of = |store: &ParamStore, inputs: &[Tensor]| -> f32 {
            let mut g = Graph::new(store, true);
            let ids: Vec<NodeId> = inputs.iter().map(|t| g.input(t.clone(), true)).collect();
            let l = build(&mut g, &ids);
            g.value(l).data[0]
        };
        let mut g = Graph::new(store, true);
        let ids: Vec<NodeId> = inputs.iter().map(|t| g.input(t.clone(), true)).collect();
        let l = build(&mut g, &ids);
        if g.value(l).len() != 1 {
            return Err(format!(
                "the loss should be [1×1], got {:?}",
                g.value(l).shape()
            ));
        }
        let grads = g.backward(l);
        for (k, (input, &id)) in inputs.iter().zip(&ids).enumerate() {
            let zero = Tensor::zeros(input.rows, input.cols);
            let analytic = grads.of(id).unwrap_or(&zero);
            for i in 0..input.len() {
                let mut moved = inputs.to_vec();
                self.coordinate(&format!("input {k}[{i}]"), analytic.data[i] as f64, |d| {
                    moved[k].data[i] = inputs[k].data[i] + d;
                    loss_of(store, &moved) as f64
                })?;
            }
        }
        for (pid, param) in store.iter() {
            if !param.trainable || !checked(&param.name) {
                continue;
            }
            let Some(analytic) = grads.param(pid) else {
                return Err(format!("no gradient for parameter {}", param.name));
            };
            let mut s = store.clone();
            for i in 0..param.value.len() {
                let what = format!("{}[{i}]", param.name);
                self.coordinate(&what, analytic.data[i] as f64, |d| {
                    s.value_mut(pid).data[i] = param.value.data[i] + d;
                    let l = loss_of(&s, inputs) as f64;
                    s.value_mut(pid).data[i] = param.value.data[i];
                    l
                })?;
            }
        }
        Ok(())
    }
}

/// [`GradCheck::run`] with the default step and tolerances.
pub fn check_gradients(
    store: &ParamStore,
    inputs: &[Tensor],
    build: impl Fn(&mut Graph, &[NodeId]) -> NodeId,
) -> Result<(), String> {
    GradCheck::default().run(store, inputs, build)
}
