//! One gradient checker for every op and model built on the tape: analytic gradients from
//! [`Graph::backward`] against central finite differences of the f32 forward pass.

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
    /// Checks d(loss)/d(input) for every input and d(loss)/d(param) for every trainable
    /// parameter of `store`, where `build` records the scalar loss from the input nodes.
    /// Returns the first disagreement, naming the input or parameter and the entry.
    pub fn run(
        &self,
        store: &ParamStore,
        inputs: &[Tensor],
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
        let agree = |a: f32, n: f32| (a - n).abs() <= self.atol + self.rtol * n.abs().max(a.abs());
        let h = self.step;
        for (k, (input, &id)) in inputs.iter().zip(&ids).enumerate() {
            let zero = Tensor::zeros(input.rows, input.cols);
            let analytic = grads.of(id).unwrap_or(&zero);
            for i in 0..input.len() {
                let mut moved = inputs.to_vec();
                moved[k].data[i] += h;
                let up = loss_of(store, &moved);
                moved[k].data[i] -= 2.0 * h;
                let down = loss_of(store, &moved);
                let numeric = (up - down) / (2.0 * h);
                if !agree(analytic.data[i], numeric) {
                    return Err(format!(
                        "input {k}[{i}]: analytic {} numeric {numeric}",
                        analytic.data[i]
                    ));
                }
            }
        }
        for (pid, param) in store.iter() {
            if !param.trainable {
                continue;
            }
            let Some(analytic) = grads.param(pid) else {
                return Err(format!("no gradient for parameter {}", param.name));
            };
            for i in 0..param.value.len() {
                let mut s = store.clone();
                s.value_mut(pid).data[i] += h;
                let up = loss_of(&s, inputs);
                s.value_mut(pid).data[i] -= 2.0 * h;
                let down = loss_of(&s, inputs);
                let numeric = (up - down) / (2.0 * h);
                if !agree(analytic.data[i], numeric) {
                    return Err(format!(
                        "{}[{i}]: analytic {} numeric {numeric}",
                        param.name, analytic.data[i]
                    ));
                }
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
