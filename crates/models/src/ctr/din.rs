//! DIN (Zhou et al. 2018, FuxiCTR's `DIN`): target attention over a behaviour sequence. For
//! each pair of a target (`din_target_field`, e.g. `item_id`) and a sequence field
//! (`din_sequence_field`, e.g. the user's earlier items, sharing `item_id`'s embedding), the
//! local activation unit scores every position `h` of the sequence against the target `t` with
//! an MLP over `[t, h, t − h, t ⊙ h]` (Dice activations by default), zeroes padding, optionally
//! softmaxes, and pools `Σ w·h`; that pooled vector takes the sequence field's place among the
//! field embeddings, and a DNN over all of them gives the logit. A target or sequence entry may
//! be a list of fields (FuxiCTR's tuples, e.g. `[item_id, cate_id]`), concatenated.

use super::{config_error, mlp_config_keyed, CtrBuild, CtrNet, EmbeddingUse, MlpKeys};
use crate::layers::{ActivationExt, HiddenActivation, MlpBlock};
use crate::Result;
use rand::rngs::StdRng;
use recforge_data::{FieldKind, ModelConfig};
use recforge_nn::{Activation, Graph, NodeId, ParamId, Tensor};
use serde_json::Value;

/// The model-config keys DIN reads.
pub(crate) const KEYS: &[&str] = &[
    "dnn_hidden_units",
    "dnn_activations",
    "net_dropout",
    "batch_norm",
    "attention_hidden_units",
    "attention_hidden_activations",
    "attention_output_activation",
    "attention_dropout",
    "din_target_field",
    "din_sequence_field",
    "din_use_softmax",
];

/// FuxiCTR's additive mask for padding before a softmax.
const MASKED_SCORE: f32 = -1.0e9;

/// One target/sequence pair and its local activation unit.
struct TargetAttention {
    targets: Vec<usize>,
    sequences: Vec<usize>,
    /// Positions of the sequences (they share one length).
    len: usize,
    /// Where the first sequence field's mask starts in the padding-mask input.
    mask_offset: usize,
    unit: LocalActivationUnit,
}

/// The MLP `[t, h, t − h, t ⊙ h] → score` and how its scores become weights.
pub struct LocalActivationUnit {
    pub mlp: MlpBlock,
    /// `attention_output_activation`, applied to the score.
    pub output: Activation,
    /// `din_use_softmax`: weights a softmax over the unpadded positions, not the raw scores.
    pub softmax: bool,
}

impl LocalActivationUnit {
    /// Pooled `Σ_l w_l h_l` (`[B × width]`) of target `t` (`[B × width]`) over the positions
    /// `h` (`[B·len × width]`, position-major within a row) with padding mask `mask`
    /// (`[B × len]`, 1 for an id).
    pub fn forward(
        &self,
        g: &mut Graph,
        t: NodeId,
        h: NodeId,
        mask: NodeId,
        len: usize,
        rng: &mut StdRng,
    ) -> NodeId {
        let (batch, width) = g.value(t).shape();
        let t_rep = g.repeat_rows(t, len);
        let neg_h = g.scale(h, -1.0);
        let diff = g.add(t_rep, neg_h);
        let prod = g.mul(t_rep, h);
        let input = g.concat(&[t_rep, h, diff, prod]);
        let scores = self.mlp.forward(g, input, rng);
        let scores = match self.output {
            Activation::Linear => scores,
            Activation::Relu => g.relu(scores),
            Activation::Tanh => g.tanh(scores),
            Activation::Sigmoid => g.sigmoid(scores),
        };
        let scores = g.reshape(scores, batch, len);
        let mut w = g.mul(scores, mask);
        if self.softmax {
            let fill: Vec<f32> = g
                .value(mask)
                .data
                .iter()
                .map(|&m| MASKED_SCORE * (1.0 - m))
                .collect();
            let fill = g.input(Tensor::from_vec(batch, len, fill), false);
            let masked = g.add(w, fill);
            w = g.softmax_rows(masked);
        }
        let w = g.expand_groups(w, width);
        let h_rows = g.reshape(h, batch, len * width);
        let weighted = g.mul(w, h_rows);
        g.sum_blocks(weighted, width)
    }
}

pub struct Din {
    attentions: Vec<TargetAttention>,
    dnn: MlpBlock,
    /// Per field: its columns in the positions embedding (start, width).
    columns: Vec<(usize, usize)>,
    /// Per field: its embedding size.
    dims: Vec<usize>,
    /// The sequence fields given per position, and those whose masks are read.
    positioned: Vec<usize>,
    masked: Vec<usize>,
}

/// A `din_*_field` value: a name, or a list of entries each a name or a list of names.
fn field_groups(cfg: &ModelConfig, key: &str, default: &str) -> Result<Vec<Vec<String>>> {
    let bad = || {
        config_error(
            cfg,
            format!("`{key}` should be a field name or a list of names (or of lists of names)"),
        )
    };
    let names = |v: &Value| -> Option<Vec<String>> {
        match v {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        }
    };
    match cfg.get(key) {
        None => Ok(vec![vec![default.to_string()]]),
        Some(Value::String(s)) => Ok(vec![vec![s.clone()]]),
        Some(Value::Array(a)) if !a.is_empty() => {
            a.iter().map(|v| names(v).ok_or_else(bad)).collect()
        }
        Some(_) => Err(bad()),
    }
}

impl Din {
    pub fn new(b: &mut CtrBuild) -> Result<Self> {
        let cfg = b.cfg;
        let err = |e: recforge_data::DataError| config_error(cfg, e.to_string());
        let targets = field_groups(cfg, "din_target_field", "item_id")?;
        let sequences = field_groups(cfg, "din_sequence_field", "click_history")?;
        if targets.len() != sequences.len() {
            return Err(config_error(
                cfg,
                format!(
                    "din_target_field has {} entries but din_sequence_field has {}",
                    targets.len(),
                    sequences.len()
                ),
            ));
        }
        let fmap = b.fmap;
        let index = |name: &str| {
            fmap.field_index(name)
                .ok_or_else(|| config_error(cfg, format!("DIN: the dataset has no field `{name}`")))
        };
        let dims: Vec<usize> = fmap
            .fields
            .iter()
            .map(|f| f.spec.embedding_dim.unwrap_or(b.dim))
            .collect();
        let mut pairs = Vec::new();
        for (t_names, s_names) in targets.iter().zip(&sequences) {
            if t_names.len() != s_names.len() {
                return Err(config_error(
                    cfg,
                    format!("DIN: target {t_names:?} and sequence {s_names:?} differ in length"),
                ));
            }
            let t: Vec<usize> = t_names.iter().map(|n| index(n)).collect::<Result<_>>()?;
            let s: Vec<usize> = s_names.iter().map(|n| index(n)).collect::<Result<_>>()?;
            let mut len = None;
            for (&ti, &si) in t.iter().zip(&s) {
                let FieldKind::Sequence { max_len, .. } = fmap.fields[si].spec.kind else {
                    return Err(config_error(
                        cfg,
                        format!(
                            "DIN: din_sequence_field `{}` is not a sequence field",
                            fmap.fields[si].spec.name
                        ),
                    ));
                };
                if matches!(fmap.fields[ti].spec.kind, FieldKind::Sequence { .. }) {
                    return Err(config_error(
                        cfg,
                        format!(
                            "DIN: din_target_field `{}` is a sequence field",
                            fmap.fields[ti].spec.name
                        ),
                    ));
                }
                if *len.get_or_insert(max_len) != max_len {
                    return Err(config_error(
                        cfg,
                        format!("DIN: the sequences {s_names:?} differ in max_len"),
                    ));
                }
                if dims[ti] != dims[si] {
                    return Err(config_error(
                        cfg,
                        format!(
                            "DIN: target `{}` and sequence `{}` differ in embedding_dim",
                            fmap.fields[ti].spec.name, fmap.fields[si].spec.name
                        ),
                    ));
                }
            }
            pairs.push((t, s, len.unwrap_or(1)));
        }
        let mut positioned: Vec<usize> = pairs.iter().flat_map(|p| p.1.clone()).collect();
        positioned.sort_unstable();
        if positioned.windows(2).any(|w| w[0] == w[1]) {
            return Err(config_error(
                cfg,
                "DIN: a sequence field appears in din_sequence_field twice",
            ));
        }
        let mut masked: Vec<usize> = pairs.iter().map(|p| p.1[0]).collect();
        masked.sort_unstable();
        let max_len = |f: usize| match fmap.fields[f].spec.kind {
            FieldKind::Sequence { max_len, .. } => max_len,
            _ => 1,
        };
        let mut columns = Vec::new();
        let mut at = 0;
        for (f, &d) in dims.iter().enumerate() {
            let w = if positioned.contains(&f) {
                d * max_len(f)
            } else {
                d
            };
            columns.push((at, w));
            at += w;
        }
        let mask_start = |f: usize| -> usize {
            masked
                .iter()
                .take_while(|&&m| m < f)
                .map(|&m| max_len(m))
                .sum()
        };
        let softmax = cfg.bool_or("din_use_softmax", false).map_err(err)?;
        let mut attention_cfg = mlp_config_keyed(
            cfg,
            MlpKeys {
                units: "attention_hidden_units",
                activations: "attention_hidden_activations",
                dropout: "attention_dropout",
                // FuxiCTR's DIN attention has no batch norm and no key for it: a key no
                // config may set reads as false
                batch_norm: "din_attention_batch_norm",
            },
            &[64],
            Some(1),
        )?;
        if cfg.get("attention_hidden_activations").is_none() {
            attention_cfg.activations = vec![HiddenActivation::Dice; attention_cfg.hidden.len()];
        }
        let output = match cfg.get("attention_output_activation") {
            None | Some(Value::Null) => Activation::Linear,
            Some(v) => Activation::parse(v.as_str().unwrap_or("")).ok_or_else(|| {
                config_error(
                    cfg,
                    format!(
                        "`attention_output_activation`: `{v}` is not relu, tanh, sigmoid, linear \
                         or null"
                    ),
                )
            })?,
        };
        let attentions = pairs
            .into_iter()
            .enumerate()
            .map(|(k, (targets, sequences, len))| {
                let width: usize = targets.iter().map(|&t| dims[t]).sum();
                let name = format!("attention_layers.{k}");
                let mlp = MlpBlock::new(b.params, &name, 4 * width, &attention_cfg, b.rng);
                TargetAttention {
                    mask_offset: mask_start(sequences[0]),
                    targets,
                    sequences,
                    len,
                    unit: LocalActivationUnit {
                        mlp,
                        output,
                        softmax,
                    },
                }
            })
            .collect();
        let dnn_cfg = mlp_config_keyed(
            cfg,
            MlpKeys::shared("dnn_hidden_units", "dnn_activations"),
            &[512, 128, 64],
            Some(1),
        )?;
        let dnn = MlpBlock::new(b.params, "dnn", b.input_dim, &dnn_cfg, b.rng);
        Ok(Din {
            attentions,
            dnn,
            columns,
            dims,
            positioned,
            masked,
        })
    }

    /// The field embeddings with each behaviour sequence replaced by its attention pooling:
    /// `[B × Σ dims]`, what the DNN reads.
    fn features(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let (x, masks) = (emb[0], emb[1]);
        let batch = g.value(x).rows;
        let mut parts: Vec<Option<NodeId>> = vec![None; self.dims.len()];
        for a in &self.attentions {
            let cat = |g: &mut Graph, fields: &[usize], rows: usize| {
                let pieces: Vec<NodeId> = fields
                    .iter()
                    .map(|&f| {
                        let (start, w) = self.columns[f];
                        let s = g.slice_cols(x, start, w);
                        g.reshape(s, rows, self.dims[f])
                    })
                    .collect();
                if pieces.len() == 1 {
                    pieces[0]
                } else {
                    g.concat(&pieces)
                }
            };
            let t = cat(g, &a.targets, batch);
            let h = cat(g, &a.sequences, batch * a.len);
            let mask = g.slice_cols(masks, a.mask_offset, a.len);
            let pooled = a.unit.forward(g, t, h, mask, a.len, rng);
            let mut at = 0;
            for &s in &a.sequences {
                parts[s] = Some(g.slice_cols(pooled, at, self.dims[s]));
                at += self.dims[s];
            }
        }
        let parts: Vec<NodeId> = parts
            .into_iter()
            .enumerate()
            .map(|(f, p)| {
                p.unwrap_or_else(|| {
                    let (start, w) = self.columns[f];
                    g.slice_cols(x, start, w)
                })
            })
            .collect();
        g.concat(&parts)
    }
}

impl CtrNet for Din {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![
            EmbeddingUse::Positions(self.positioned.clone()),
            EmbeddingUse::PaddingMask(self.masked.clone()),
        ]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let x = self.features(g, emb, rng);
        self.dnn.forward(g, x, rng)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        let x = self.features(g, emb, rng);
        Some(self.dnn.hidden(g, x, rng))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.dnn.output_params()
    }
}

#[cfg(test)]
mod tests {
    use super::LocalActivationUnit;
    use crate::layers::{Dice, MlpBlock, MlpConfig};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use recforge_nn::{Activation, Graph, ParamStore, Tensor};

    /// One row, embedding size 1: target t = 2, positions h = (1, 3), scored by a single
    /// linear layer with weights 1 and bias 0: `t + h + (t − h) + t·h = 2t + t·h`, i.e. 6 and 10.
    fn pooled(mask: [f32; 2], softmax: bool) -> f32 {
        let mut ps = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(0);
        let cfg = MlpConfig {
            hidden: vec![],
            activations: vec![],
            dropout: 0.0,
            batch_norm: false,
            output_dim: Some(1),
        };
        let mlp = MlpBlock::new(&mut ps, "att", 4, &cfg, &mut rng);
        let w = ps.find("att.out.weight").unwrap();
        ps.value_mut(w).data.fill(1.0);
        let unit = LocalActivationUnit {
            mlp,
            output: Activation::Linear,
            softmax,
        };
        let mut g = Graph::new(&ps, false);
        let t = g.input(Tensor::from_vec(1, 1, vec![2.0]), false);
        let h = g.input(Tensor::from_vec(2, 1, vec![1.0, 3.0]), false);
        let m = g.input(Tensor::from_vec(1, 2, mask.to_vec()), false);
        let out = unit.forward(&mut g, t, h, m, 2, &mut rng);
        g.value(out).data[0]
    }

    #[test]
    fn local_activation_unit_on_a_hand_case() {
        // raw weights: 6·1 + 10·3
        assert!((pooled([1.0, 1.0], false) - 36.0).abs() < 1e-4);
        // padding zeroes the second weight
        assert!((pooled([1.0, 0.0], false) - 6.0).abs() < 1e-5);
        // softmax over (6, 10): (e⁻⁴·1 + 3) / (1 + e⁻⁴)
        let e = (-4f32).exp();
        assert!((pooled([1.0, 1.0], true) - (e + 3.0) / (1.0 + e)).abs() < 1e-5);
        // softmax with the second position padded puts all weight on the first
        assert!((pooled([1.0, 0.0], true) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn dice_normalizes_over_the_batch_then_gates() {
        // a column (1, 3): batch mean 2, biased variance 1, so x̂ = (−1, 1); with α = 0 Dice is
        // x·σ(x̂) = (σ(−1), 3σ(1)); with α = 0.5 it is x·(0.5 + 0.5σ(x̂))
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        for alpha in [0.0f32, 0.5] {
            let mut ps = ParamStore::new();
            let dice = Dice::new(&mut ps, "d", 1);
            let a = ps.find("d.alpha").unwrap();
            ps.value_mut(a).data[0] = alpha;
            let mut g = Graph::new(&ps, true);
            let x = g.input(Tensor::from_vec(2, 1, vec![1.0, 3.0]), false);
            let y = dice.forward(&mut g, x);
            let v = &g.value(y).data;
            let want = [
                1.0 * (alpha + (1.0 - alpha) * sig(-1.0)),
                3.0 * (alpha + (1.0 - alpha) * sig(1.0)),
            ];
            assert!(
                (v[0] - want[0]).abs() < 1e-5 && (v[1] - want[1]).abs() < 1e-5,
                "{v:?} vs {want:?}"
            );
            // the running statistics move by momentum 0.01 toward the batch's (mean 2,
            // unbiased variance 2)
            let ups = &g.state_updates;
            assert_eq!(ups.len(), 2);
            assert!(ups.iter().all(|u| (u.momentum - 0.01).abs() < 1e-9));
            assert_eq!(ups[0].batch_value, vec![2.0]);
            assert_eq!(ups[1].batch_value, vec![2.0]);
        }
    }
}
