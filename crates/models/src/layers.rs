//! Blocks shared by models, as FuxiCTR defines them.

use rand::rngs::StdRng;
use rand::Rng;
use recforge_nn::{init, BatchNormStats, Graph, NodeId, ParamId, ParamStore, Tensor};
use serde_json::Value;

pub use recforge_nn::Activation;

/// Reading activations from configs.
pub trait ActivationExt: Sized {
    fn parse(name: &str) -> Option<Self>;
    fn parse_per_layer(v: Option<&Value>, layers: usize) -> Result<Vec<Self>, String>;
}

impl ActivationExt for Activation {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            "sigmoid" => Some(Activation::Sigmoid),
            "linear" | "none" | "identity" => Some(Activation::Linear),
            _ => None,
        }
    }

    /// A config value that is one name or a list with one name per layer.
    fn parse_per_layer(v: Option<&Value>, layers: usize) -> Result<Vec<Self>, String> {
        layer_names(v, layers)?
            .iter()
            .map(|n| {
                Self::parse(n).ok_or_else(|| {
                    format!("unknown activation `{n}` (relu, tanh, sigmoid, linear)")
                })
            })
            .collect()
    }
}

/// One activation name per layer from a name or a list of `layers` names (default ReLU).
fn layer_names(v: Option<&Value>, layers: usize) -> Result<Vec<String>, String> {
    Ok(match v {
        None => vec!["relu".into(); layers],
        Some(Value::String(s)) => vec![s.clone(); layers],
        Some(Value::Array(a)) if a.len() == layers => a
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect(),
        Some(other) => {
            return Err(format!(
                "activations should be a name or a list of {layers} names, got {other}"
            ))
        }
    })
}

/// A hidden layer's activation: a plain function, or Dice (DIN's data-adaptive activation,
/// with a learned α and batch statistics of its own), which FuxiCTR's MLPs accept by name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HiddenActivation {
    Plain(Activation),
    Dice,
}

impl HiddenActivation {
    /// As [`ActivationExt::parse_per_layer`], with `dice` accepted too.
    pub fn parse_per_layer(v: Option<&Value>, layers: usize) -> Result<Vec<Self>, String> {
        layer_names(v, layers)?
            .iter()
            .map(|n| match Activation::parse(n) {
                Some(a) => Ok(HiddenActivation::Plain(a)),
                None if n.eq_ignore_ascii_case("dice") => Ok(HiddenActivation::Dice),
                None => Err(format!(
                    "unknown activation `{n}` (relu, tanh, sigmoid, linear, dice)"
                )),
            })
            .collect()
    }
}

/// Dice's parameters: `α`, and its normalisation (no affine part: constant 1 and 0, with
/// FuxiCTR's eps 1e-9 and momentum 0.01).
#[derive(Clone, Debug)]
pub struct Dice {
    alpha: ParamId,
    one: ParamId,
    zero: ParamId,
    mean: ParamId,
    var: ParamId,
}

impl Dice {
    pub fn new(ps: &mut ParamStore, name: &str, units: usize) -> Self {
        let mut add = |key: &str, v: f32, trainable: bool| {
            ps.add(
                format!("{name}.{key}"),
                Tensor::from_vec(1, units, vec![v; units]),
                trainable,
                false,
            )
        };
        Dice {
            alpha: add("alpha", 0.0, true),
            one: add("bn.weight", 1.0, false),
            zero: add("bn.bias", 0.0, false),
            mean: add("bn.running_mean", 0.0, false),
            var: add("bn.running_var", 1.0, false),
        }
    }

    pub fn forward(&self, g: &mut Graph, x: NodeId) -> NodeId {
        let stats = BatchNormStats {
            running_mean: self.mean,
            running_var: self.var,
            eps: 1e-9,
            momentum: 0.01,
        };
        let normalized = g.batch_norm_with(x, self.one, self.zero, stats);
        let alpha = g.param(self.alpha);
        g.dice(x, normalized, alpha)
    }
}

/// A linear layer `[in → out]` with Xavier-normal weight and zero bias.
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: ParamId,
    pub b: Option<ParamId>,
}

impl Linear {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        rng: &mut StdRng,
    ) -> Self {
        let w = ps.add(
            format!("{name}.weight"),
            init::xavier_normal(rng, fan_in, fan_out),
            true,
            true,
        );
        let b = bias.then(|| {
            ps.add(
                format!("{name}.bias"),
                Tensor::zeros(1, fan_out),
                true,
                false,
            )
        });
        Linear { w, b }
    }

    pub fn forward(&self, g: &mut Graph, x: NodeId) -> NodeId {
        g.linear(x, self.w, self.b)
    }

    pub fn params(&self) -> Vec<ParamId> {
        std::iter::once(self.w).chain(self.b).collect()
    }
}

#[derive(Clone, Debug)]
struct BatchNorm {
    gamma: ParamId,
    beta: ParamId,
    mean: ParamId,
    var: ParamId,
}

#[derive(Clone, Debug)]
struct HiddenLayer {
    linear: Linear,
    bn: Option<BatchNorm>,
    act: Activation,
    /// Dice in place of `act`.
    dice: Option<Dice>,
}

/// FuxiCTR's `MLP_Block`: per hidden layer Linear → BatchNorm (optional) → activation →
/// Dropout, then an optional output Linear.
#[derive(Clone, Debug)]
pub struct MlpBlock {
    layers: Vec<HiddenLayer>,
    output: Option<Linear>,
    dropout: f32,
    pub output_dim: usize,
}

#[derive(Clone, Debug)]
pub struct MlpConfig {
    pub hidden: Vec<usize>,
    pub activations: Vec<HiddenActivation>,
    pub dropout: f32,
    pub batch_norm: bool,
    pub output_dim: Option<usize>,
}

impl MlpBlock {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        input_dim: usize,
        cfg: &MlpConfig,
        rng: &mut StdRng,
    ) -> Self {
        let mut layers = Vec::new();
        let mut dim = input_dim;
        for (i, (&h, &act)) in cfg.hidden.iter().zip(&cfg.activations).enumerate() {
            let linear = Linear::new(ps, &format!("{name}.{i}"), dim, h, true, rng);
            let bn = cfg.batch_norm.then(|| BatchNorm {
                gamma: ps.add(
                    format!("{name}.{i}.bn.weight"),
                    Tensor::from_vec(1, h, vec![1.0; h]),
                    true,
                    false,
                ),
                beta: ps.add(
                    format!("{name}.{i}.bn.bias"),
                    Tensor::zeros(1, h),
                    true,
                    false,
                ),
                mean: ps.add(
                    format!("{name}.{i}.bn.running_mean"),
                    Tensor::zeros(1, h),
                    false,
                    false,
                ),
                var: ps.add(
                    format!("{name}.{i}.bn.running_var"),
                    Tensor::from_vec(1, h, vec![1.0; h]),
                    false,
                    false,
                ),
            });
            let (act, dice) = match act {
                HiddenActivation::Plain(a) => (a, None),
                HiddenActivation::Dice => (
                    Activation::Linear,
                    Some(Dice::new(ps, &format!("{name}.{i}.dice"), h)),
                ),
            };
            layers.push(HiddenLayer {
                linear,
                bn,
                act,
                dice,
            });
            dim = h;
        }
        let output = cfg
            .output_dim
            .map(|o| Linear::new(ps, &format!("{name}.out"), dim, o, true, rng));
        MlpBlock {
            layers,
            output,
            dropout: cfg.dropout,
            output_dim: cfg.output_dim.unwrap_or(dim),
        }
    }

    pub fn forward(&self, g: &mut Graph, x: NodeId, rng: &mut StdRng) -> NodeId {
        let h = self.hidden(g, x, rng);
        self.output(g, h)
    }

    /// The hidden layers only: the block's representation before its output layer.
    pub fn hidden(&self, g: &mut Graph, mut x: NodeId, rng: &mut StdRng) -> NodeId {
        for l in &self.layers {
            x = match &l.bn {
                Some(bn) => {
                    let h = l.linear.forward(g, x);
                    g.batch_norm_act(h, bn.gamma, bn.beta, bn.mean, bn.var, l.act)
                }
                None => g.dense(x, l.linear.w, l.linear.b, l.act),
            };
            if let Some(d) = &l.dice {
                x = d.forward(g, x);
            }
            x = g.dropout(x, self.dropout, rng);
        }
        x
    }

    /// The output layer (identity when the block has none).
    pub fn output(&self, g: &mut Graph, h: NodeId) -> NodeId {
        match &self.output {
            Some(o) => o.forward(g, h),
            None => h,
        }
    }

    /// Parameters of the output layer.
    pub fn output_params(&self) -> Vec<ParamId> {
        self.output.iter().flat_map(Linear::params).collect()
    }
}

/// DCNv2's full-rank cross network: `x_{l+1} = x_0 ⊙ (x_l W_l + b_l) + x_l`.
#[derive(Clone, Debug)]
pub struct CrossNetV2 {
    layers: Vec<Linear>,
}

impl CrossNetV2 {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        dim: usize,
        num_layers: usize,
        rng: &mut StdRng,
    ) -> Self {
        CrossNetV2 {
            layers: (0..num_layers)
                .map(|i| Linear::new(ps, &format!("{name}.{i}"), dim, dim, true, rng))
                .collect(),
        }
    }

    pub fn forward(&self, g: &mut Graph, x0: NodeId) -> NodeId {
        let mut x = x0;
        for l in &self.layers {
            let b = l.b.expect("cross layers have a bias");
            x = g.cross(x0, x, l.w, b);
        }
        x
    }
}

/// DCNv2's low-rank mixture of experts (FuxiCTR's `CrossNetMix`): per layer and expert,
/// `E_e(x_l) = x_0 ⊙ (U_e tanh(C_e tanh(V_eᵀ x_l)) + b_l)`, mixed by a softmax gate over
/// `x_l` (gates shared across layers), plus the residual `x_l`.
#[derive(Clone, Debug)]
pub struct CrossNetMix {
    layers: Vec<MixLayer>,
    gates: Vec<ParamId>,
}

#[derive(Clone, Debug)]
struct MixLayer {
    experts: Vec<(ParamId, ParamId, ParamId)>, // V [d×r], Cᵀ [r×r], Uᵀ [r×d]
    bias: ParamId,
}

impl CrossNetMix {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        dim: usize,
        num_layers: usize,
        low_rank: usize,
        num_experts: usize,
        rng: &mut StdRng,
    ) -> Self {
        // torch's xavier_normal_ on the [experts, d, r] tensors: fan_in = d·r, fan_out = experts·r
        let std_uv = (2.0 / ((dim * low_rank + num_experts * low_rank) as f32)).sqrt();
        let std_c = (2.0 / ((low_rank * low_rank + num_experts * low_rank) as f32)).sqrt();
        let layers = (0..num_layers)
            .map(|l| MixLayer {
                experts: (0..num_experts)
                    .map(|e| {
                        (
                            ps.add(
                                format!("{name}.{l}.{e}.V"),
                                init::normal(rng, dim, low_rank, std_uv),
                                true,
                                true,
                            ),
                            ps.add(
                                format!("{name}.{l}.{e}.C"),
                                init::normal(rng, low_rank, low_rank, std_c),
                                true,
                                true,
                            ),
                            ps.add(
                                format!("{name}.{l}.{e}.U"),
                                init::normal(rng, low_rank, dim, std_uv),
                                true,
                                true,
                            ),
                        )
                    })
                    .collect(),
                bias: ps.add(
                    format!("{name}.{l}.bias"),
                    Tensor::zeros(1, dim),
                    true,
                    false,
                ),
            })
            .collect();
        let gates = (0..num_experts)
            .map(|e| Linear::new(ps, &format!("{name}.gate.{e}"), dim, 1, false, rng).w)
            .collect();
        CrossNetMix { layers, gates }
    }

    pub fn forward(&self, g: &mut Graph, x0: NodeId) -> NodeId {
        let mut x = x0;
        for layer in &self.layers {
            let gate_logits: Vec<NodeId> =
                self.gates.iter().map(|&w| g.linear(x, w, None)).collect();
            let gl = g.concat(&gate_logits);
            let gate = g.softmax_rows(gl);
            let mut mixed = None;
            for (e, &(v, c, u)) in layer.experts.iter().enumerate() {
                let h = g.linear(x, v, None);
                let h = g.tanh(h);
                let h = g.linear(h, c, None);
                let h = g.tanh(h);
                let h = g.linear(h, u, Some(layer.bias));
                let out = g.mul(x0, h);
                let ge = g.slice_cols(gate, e, 1);
                let weighted = g.scale_rows(out, ge);
                mixed = Some(match mixed {
                    None => weighted,
                    Some(m) => g.add(m, weighted),
                });
            }
            let mixed = mixed.expect("at least one expert");
            x = g.add(mixed, x);
        }
        x
    }
}

/// Draws a seed for a sub-component, so adding one does not shift the others' streams.
pub fn child_rng(rng: &mut StdRng) -> StdRng {
    use rand::SeedableRng;
    StdRng::seed_from_u64(rng.gen())
}
