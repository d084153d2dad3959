//! A BERT encoder (the architecture of all-MiniLM-L6-v2 and most sentence encoders): config
//! from the model's `config.json`, weights from `model.safetensors` under Hugging Face names,
//! and a `forward` over packed token batches on recforge's tape, so every parameter — and
//! the input embeddings, for soft prompts — gets a gradient.

use crate::encoder::TokenBatch;
use crate::error::{io_err, Result, TextError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f32,
}

fn two() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f32 {
    0.1
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let cfg: BertConfig = serde_json::from_str(&text).map_err(|e| TextError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate().map_err(|msg| TextError::Format {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (gelu)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// Parameter ids of one linear layer (weight stored `[in × out]`).
#[derive(Clone, Copy, Debug)]
struct Linear {
    w: ParamId,
    b: ParamId,
}

#[derive(Clone, Copy, Debug)]
struct LayerNorm {
    gamma: ParamId,
    beta: ParamId,
}

#[derive(Clone, Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The transformer: embeddings (word + position + token type, layer norm) then
/// `num_hidden_layers` post-norm blocks.
#[derive(Clone, Debug)]
pub struct Bert {
    pub config: BertConfig,
    pub params: ParamStore,
    word: ParamId,
    position: ParamId,
    token_type: ParamId,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// Hugging Face's linear weights are `[out × in]`; the tape's are `[in × out]`.
fn transpose(t: &Tensor) -> Tensor {
    let mut out = Tensor::zeros(t.cols, t.rows);
    for r in 0..t.rows {
        for c in 0..t.cols {
            out.data[c * t.rows + r] = t.data[r * t.cols + c];
        }
    }
    out
}

struct Builder<F> {
    params: ParamStore,
    fill: F,
}

impl<F: FnMut(&str, usize, usize) -> Result<Tensor>> Builder<F> {
    fn table(&mut self, name: &str, rows: usize, cols: usize) -> Result<ParamId> {
        let t = (self.fill)(name, rows, cols)?;
        Ok(self.params.add(name, t, true, false))
    }

    /// `name.weight` `[out × in]` stored transposed (`regularize` marks the linear weights,
    /// which `save` transposes back) and `name.bias`.
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = transpose(&(self.fill)(&format!("{name}.weight"), out, inp)?);
        let w = self.params.add(format!("{name}.weight"), w, true, true);
        let b = self.table(&format!("{name}.bias"), 1, out)?;
        Ok(Linear { w, b })
    }

    fn norm(&mut self, name: &str, width: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.table(&format!("{name}.weight"), 1, width)?,
            beta: self.table(&format!("{name}.bias"), 1, width)?,
        })
    }
}

impl Bert {
    /// Builds the parameter layout, filling each tensor (Hugging Face name, HF shape) from `fill`.
    fn build(
        config: BertConfig,
        fill: impl FnMut(&str, usize, usize) -> Result<Tensor>,
    ) -> Result<Self> {
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        let mut b = Builder {
            params: ParamStore::new(),
            fill,
        };
        let word = b.table("embeddings.word_embeddings.weight", config.vocab_size, h)?;
        let position = b.table(
            "embeddings.position_embeddings.weight",
            config.max_position_embeddings,
            h,
        )?;
        let token_type = b.table(
            "embeddings.token_type_embeddings.weight",
            config.type_vocab_size,
            h,
        )?;
        let emb_norm = b.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: b.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: b.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: b.linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: b.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: b.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: b.linear(&format!("{p}.intermediate.dense"), ff, h)?,
                output: b.linear(&format!("{p}.output.dense"), h, ff)?,
                out_norm: b.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            config,
            params: b.params,
            word,
            position,
            token_type,
            emb_norm,
            layers,
        })
    }

    /// A randomly initialised model (BERT's N(0, 0.02), unit layer norms): tests and
    /// training from scratch.
    pub fn random(config: BertConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let built = Self::build(config, |name, rows, cols| {
            Ok(if name.ends_with("LayerNorm.weight") {
                Tensor::from_vec(rows, cols, vec![1.0; rows * cols])
            } else if name.ends_with(".bias") {
                Tensor::zeros(rows, cols)
            } else {
                init::normal(&mut rng, rows, cols, 0.02)
            })
        });
        built.expect("random initialisation cannot fail")
    }

    /// Loads `model.safetensors` (memory-mapped) with the sizes of `config`. Names may carry
    /// a `bert.` prefix (checkpoints saved from `BertForPreTraining` and kin).
    pub fn load(config: BertConfig, path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        // SAFETY: a read-only map; the file is not modified while we read it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| TextError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let names: std::collections::HashSet<String> = st.names().into_iter().cloned().collect();
        Self::build(config, |name, rows, cols| {
            let key = [name.to_string(), format!("bert.{name}")]
                .into_iter()
                .find(|k| names.contains(k))
                .ok_or_else(|| TextError::Format {
                    path: path.to_path_buf(),
                    msg: format!("tensor `{name}` is missing"),
                })?;
            let view = st.tensor(&key).map_err(|e| TextError::Format {
                path: path.to_path_buf(),
                msg: format!("{key}: {e}"),
            })?;
            read_f32(&view, rows, cols).map_err(|msg| TextError::Format {
                path: path.to_path_buf(),
                msg: format!("{key}: {msg}"),
            })
        })
    }

    /// Writes the weights under Hugging Face names and layouts (atomically), so a fine-tuned
    /// model loads back here or in `transformers`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(_, p)| {
                let t = if p.regularize {
                    transpose(&p.value)
                } else {
                    p.value.clone()
                };
                (p.name.clone(), t)
            })
            .collect();
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t)| {
                let shape = if t.rows == 1 && !n.contains("embeddings.") {
                    vec![t.cols]
                } else {
                    vec![t.rows, t.cols]
                };
                let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (n.clone(), raw, shape)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, raw, shape)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), raw)
                    .map_err(|e| TextError::Invalid(e.to_string()))?;
                Ok((n.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::serialize(views, &None).map_err(|e| TextError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        crate::vectors::write_atomic(path, &data)
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The word-embedding rows of `ids`: the input embeddings `forward_embeds` takes, to which
    /// a caller may add or splice its own rows (soft prompts).
    pub fn embed_ids(&self, g: &mut Graph, ids: &[u32]) -> NodeId {
        let table = g.param(self.word);
        g.gather_rows(table, ids)
    }

    /// The last hidden states `[tokens × hidden]` of a packed batch.
    pub fn forward(&self, g: &mut Graph, batch: &TokenBatch, rng: &mut StdRng) -> NodeId {
        let words = self.embed_ids(g, &batch.ids);
        self.forward_embeds(g, words, batch, rng)
    }

    /// As [`forward`](Self::forward), from input embeddings `[tokens × hidden]` (one row per
    /// token of `batch`): position and token-type embeddings are added here.
    pub fn forward_embeds(
        &self,
        g: &mut Graph,
        input_embeds: NodeId,
        batch: &TokenBatch,
        rng: &mut StdRng,
    ) -> NodeId {
        let mut x = self.embeddings(g, input_embeds, batch, rng);
        for l in &self.layers {
            x = self.layer(g, l, x, batch, rng);
        }
        x
    }

    /// The last hidden states of a packed batch for scoring: each layer runs on a graph of its
    /// own that is dropped before the next, so memory holds one layer's intermediates, not
    /// the whole network's (no backward pass can follow).
    pub fn forward_inference(&self, batch: &TokenBatch) -> Tensor {
        let mut rng = StdRng::seed_from_u64(0);
        let mut g = Graph::inference(&self.params);
        let words = self.embed_ids(&mut g, &batch.ids);
        let x = self.embeddings(&mut g, words, batch, &mut rng);
        let mut x = g.take_value(x);
        for l in &self.layers {
            let mut g = Graph::inference(&self.params);
            let input = g.input(x, false);
            let out = self.layer(&mut g, l, input, batch, &mut rng);
            x = g.take_value(out);
        }
        x
    }

    /// Word (given) + position + token-type embeddings, layer norm, dropout.
    fn embeddings(
        &self,
        g: &mut Graph,
        input_embeds: NodeId,
        batch: &TokenBatch,
        rng: &mut StdRng,
    ) -> NodeId {
        let pos_table = g.param(self.position);
        let positions = g.gather_rows(pos_table, &batch.positions);
        let type_table = g.param(self.token_type);
        let types = g.gather_rows(type_table, &batch.type_ids);
        let x = g.add(input_embeds, positions);
        let x = g.add_layer_norm(
            x,
            types,
            self.emb_norm.gamma,
            self.emb_norm.beta,
            self.config.layer_norm_eps,
        );
        g.dropout(x, self.config.hidden_dropout_prob, rng)
    }

    /// One post-norm block: self-attention, add & norm, GELU feed-forward, add & norm.
    fn layer(
        &self,
        g: &mut Graph,
        l: &Layer,
        x: NodeId,
        batch: &TokenBatch,
        rng: &mut StdRng,
    ) -> NodeId {
        let (p_drop, eps) = (self.config.hidden_dropout_prob, self.config.layer_norm_eps);
        let q = g.linear(x, l.query.w, Some(l.query.b));
        let k = g.linear(x, l.key.w, Some(l.key.b));
        let v = g.linear(x, l.value.w, Some(l.value.b));
        let a = g.attention(q, k, v, self.config.num_attention_heads, &batch.segments);
        let o = g.linear(a, l.attn_out.w, Some(l.attn_out.b));
        let o = g.dropout(o, p_drop, rng);
        let h = g.add_layer_norm(o, x, l.attn_norm.gamma, l.attn_norm.beta, eps);
        let f = g.linear(h, l.intermediate.w, Some(l.intermediate.b));
        let f = g.gelu(f);
        let o = g.linear(f, l.output.w, Some(l.output.b));
        let o = g.dropout(o, p_drop, rng);
        g.add_layer_norm(o, h, l.out_norm.gamma, l.out_norm.beta, eps)
    }
}

fn read_f32(view: &TensorView, rows: usize, cols: usize) -> std::result::Result<Tensor, String> {
    if view.dtype() != Dtype::F32 {
        return Err(format!("dtype {:?}, expected F32", view.dtype()));
    }
    let n: usize = view.shape().iter().product();
    if n != rows * cols {
        return Err(format!("shape {:?}, expected {rows}×{cols}", view.shape()));
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(rows, cols, data))
}
