//! Click-through-rate models. Each file holds one model: its config (read from the model
//! config) and its forward pass. A model names the embedding matrices it consumes (e.g. FM
//! takes a dimension-1 table for first-order weights and a dimension-d table for factors);
//! [`Model`] owns those tables, the dense parameters, and runs a batch through them.

mod afm;
mod autoint;
mod dcn;
mod dcnv2;
mod deepfm;
mod din;
mod dnn;
mod fibinet;
mod finalmlp;
mod fm;
mod fwfm;
mod lr;
mod nfm;
mod pnn;
mod wide_deep;
mod xdeepfm;

pub use afm::Afm;
pub use autoint::AutoInt;
pub use dcn::Dcn;
pub use dcnv2::{Dcnv2, Dcnv2Structure};
pub use deepfm::DeepFm;
pub use din::{Din, LocalActivationUnit};
pub use dnn::Dnn;
pub use fibinet::{BilinearInteraction, BilinearType, FiBiNet, SqueezeExcitation};
pub use finalmlp::FinalMlp;
pub use fm::Fm;
pub use fwfm::FwFm;
pub use lr::Lr;
pub use nfm::Nfm;
pub use pnn::Pnn;
pub use wide_deep::WideDeep;
pub use xdeepfm::{Cin, XDeepFm};

use crate::embedding::FeatureEmbedding;
use crate::layers::{HiddenActivation, MlpBlock, MlpConfig};
use crate::{ModelError, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::{Batch, FeatureMap, ModelConfig};
use recforge_nn::graph::Grads;
use recforge_nn::{Graph, NodeId, OptimizerKind, ParamId, ParamStore};

/// What an embedding matrix a model consumes holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbeddingUse {
    /// One weight per feature value (dimension 1): first-order terms.
    FirstOrder,
    /// Each field's embedding (`embedding_dim`, or the field's own).
    Factors,
    /// A separate embedding of these fields only (by index), `[batch × Σ their dims]`:
    /// FinalMLP's gate contexts.
    Subset(Vec<usize>),
    /// As `Factors`, with these sequence fields one row per position (`max_len · d` columns,
    /// padding zero) instead of pooled: DIN's behaviour sequences.
    Positions(Vec<usize>),
    /// The padding mask of these sequence fields, `[batch × Σ max_len]` of 1 (an id) and 0.
    PaddingMask(Vec<usize>),
}

/// The part of a model that runs on the tape.
pub trait CtrNet: Send + Sync {
    /// The embedding matrices `forward` receives, in order.
    fn embeddings(&self) -> Vec<EmbeddingUse>;
    /// Click logits `[batch × 1]` from the embedded batch (`emb[k]` is `[batch × fields·dims[k]]`).
    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId;
    /// The instance representation `[batch × d]` the click head reads: the model up to its
    /// head, which self-supervised pretraining (MAP) trains. `None` for models without an
    /// encoder (LR, FM).
    fn encode(&self, _g: &mut Graph, _emb: &[NodeId], _rng: &mut StdRng) -> Option<NodeId> {
        None
    }
    /// The click head's parameters: left fresh when finetuning from a pretrained encoder.
    fn head_params(&self) -> Vec<ParamId> {
        Vec::new()
    }
}

/// What every model reads from its config, besides its own hyper-parameters.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub embedding_dim: usize,
    pub embedding_regularizer: f32,
    pub net_regularizer: f32,
    pub optimizer: OptimizerKind,
    pub seed: u64,
}

impl CommonConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let err = |e: recforge_data::DataError| ModelError::Config {
            expid: cfg.expid.clone(),
            msg: e.to_string(),
        };
        // LR and FM take one `regularizer` for both, as FuxiCTR's do
        let shared = cfg.non_negative_f64_or("regularizer", 0.0).map_err(err)?;
        let opt_name = cfg.str_or("optimizer", "adam");
        Ok(CommonConfig {
            embedding_dim: cfg.positive_usize_or("embedding_dim", 10).map_err(err)?,
            embedding_regularizer: cfg
                .non_negative_f32_or("embedding_regularizer", shared)
                .map_err(err)?,
            net_regularizer: cfg
                .non_negative_f32_or("net_regularizer", shared)
                .map_err(err)?,
            optimizer: OptimizerKind::parse(&opt_name).ok_or_else(|| ModelError::Config {
                expid: cfg.expid.clone(),
                msg: format!("unknown optimizer `{opt_name}` (adam, adagrad, sgd)"),
            })?,
            seed: cfg.usize_or("seed", 2024).map_err(err)? as u64,
        })
    }
}

/// The config keys one MLP reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MlpKeys {
    pub units: &'static str,
    pub activations: &'static str,
    pub dropout: &'static str,
    pub batch_norm: &'static str,
}

impl MlpKeys {
    /// `<units>` and `<activations>` with the shared `net_dropout` and `batch_norm`.
    pub const fn shared(units: &'static str, activations: &'static str) -> Self {
        MlpKeys {
            units,
            activations,
            dropout: "net_dropout",
            batch_norm: "batch_norm",
        }
    }
}

/// Reads an MLP's hidden sizes, activations, dropout and batch-norm flag from `cfg`.
pub(crate) fn mlp_config(
    cfg: &ModelConfig,
    units_key: &'static str,
    act_key: &'static str,
    default_units: &[usize],
    output_dim: Option<usize>,
) -> Result<MlpConfig> {
    mlp_config_keyed(
        cfg,
        MlpKeys::shared(units_key, act_key),
        default_units,
        output_dim,
    )
}

/// As [`mlp_config`], with every key named (FinalMLP's two MLPs have their own dropout and
/// batch-norm keys).
pub(crate) fn mlp_config_keyed(
    cfg: &ModelConfig,
    keys: MlpKeys,
    default_units: &[usize],
    output_dim: Option<usize>,
) -> Result<MlpConfig> {
    let err = |msg: String| ModelError::Config {
        expid: cfg.expid.clone(),
        msg,
    };
    let hidden = cfg
        .usize_list_or(keys.units, default_units)
        .map_err(|e| err(e.to_string()))?;
    if hidden.contains(&0) {
        return Err(err(format!(
            "`{}`: every layer needs at least one unit, got {hidden:?}",
            keys.units
        )));
    }
    let activations = HiddenActivation::parse_per_layer(cfg.get(keys.activations), hidden.len())
        .map_err(|m| err(format!("`{}`: {m}", keys.activations)))?;
    let dropout = cfg
        .f64_or_first(keys.dropout, 0.0)
        .map_err(|e| err(e.to_string()))? as f32;
    if !(0.0..1.0).contains(&dropout) {
        return Err(err(format!(
            "{} must be in [0, 1), got {dropout}",
            keys.dropout
        )));
    }
    Ok(MlpConfig {
        hidden,
        activations,
        dropout,
        batch_norm: cfg
            .bool_or(keys.batch_norm, false)
            .map_err(|e| err(e.to_string()))?,
        output_dim,
    })
}

/// The MLP read from `hidden_units` / `hidden_activations` (FuxiCTR's default 64-64-64) with a
/// one-logit output, over `input_dim` inputs: DNN's, DeepFM's, WideDeep's, NFM's and PNN's.
pub(crate) fn logit_mlp(b: &mut CtrBuild, input_dim: usize) -> Result<MlpBlock> {
    let c = mlp_config(
        b.cfg,
        "hidden_units",
        "hidden_activations",
        &[64, 64, 64],
        Some(1),
    )?;
    Ok(MlpBlock::new(b.params, "dnn", input_dim, &c, b.rng))
}

/// An MLP that a model has only when its hidden-unit list is not empty (FuxiCTR's
/// `dnn_hidden_units: []` turns AutoInt's, xDeepFM's and DCN's DNN off).
pub(crate) fn optional_mlp(
    b: &mut CtrBuild,
    keys: MlpKeys,
    name: &str,
    input_dim: usize,
    default_units: &[usize],
    output_dim: Option<usize>,
) -> Result<Option<MlpBlock>> {
    let c = mlp_config_keyed(b.cfg, keys, default_units, output_dim)?;
    Ok((!c.hidden.is_empty()).then(|| MlpBlock::new(b.params, name, input_dim, &c, b.rng)))
}

pub(crate) use crate::config_error;

/// A dropout rate in [0, 1) from `key` (a number, or a list whose entry `index` is used).
pub(crate) fn dropout_at(cfg: &ModelConfig, key: &str, index: usize) -> Result<f32> {
    let v = match cfg.get(key) {
        None => 0.0,
        Some(serde_json::Value::Array(a)) => {
            a.get(index).and_then(|v| v.as_f64()).ok_or_else(|| {
                config_error(
                    cfg,
                    format!("`{key}` should list at least {} numbers", index + 1),
                )
            })?
        }
        Some(v) => v
            .as_f64()
            .ok_or_else(|| config_error(cfg, format!("`{key}` should be a number, got {v}")))?,
    };
    if !(0.0..1.0).contains(&v) {
        return Err(config_error(
            cfg,
            format!("{key} must be in [0, 1), got {v}"),
        ));
    }
    Ok(v as f32)
}

/// A model ready to train or score: the tape part, its dense parameters and its tables.
pub struct Model {
    pub name: String,
    pub net: Box<dyn CtrNet>,
    pub params: ParamStore,
    pub embeddings: Vec<FeatureEmbedding>,
    pub common: CommonConfig,
}

/// A forward pass kept for its backward pass.
pub struct Forward<'a> {
    pub graph: Graph<'a>,
    pub logits: NodeId,
    pub emb_nodes: Vec<NodeId>,
}

/// What a CTR model's constructor receives.
pub struct CtrBuild<'a> {
    pub cfg: &'a ModelConfig,
    pub params: &'a mut ParamStore,
    pub rng: &'a mut StdRng,
    pub fields: usize,
    /// `embedding_dim`, every field's when `equal_dims` holds.
    pub dim: usize,
    /// Σ of the fields' embedding sizes.
    pub input_dim: usize,
    pub fmap: &'a FeatureMap,
}

/// One CTR model: its name as FuxiCTR spells it, the config keys it reads besides
/// [`COMMON_KEYS`], and how to build it. Adding a model is one file and one entry here.
pub struct CtrEntry {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    /// Takes inner products of field embeddings, so every field needs `embedding_dim`.
    pub inner_products: bool,
    pub build: fn(&mut CtrBuild) -> Result<Box<dyn CtrNet>>,
}

/// The CTR model registry.
pub const REGISTRY: &[CtrEntry] = &[
    CtrEntry {
        name: "LR",
        keys: &[],
        inner_products: false,
        build: |b| Ok(Box::new(Lr::new(b.params))),
    },
    CtrEntry {
        name: "FM",
        keys: &[],
        inner_products: true,
        build: |b| Ok(Box::new(Fm::new(b.params, b.fields, b.dim))),
    },
    CtrEntry {
        name: "DNN",
        keys: MLP_KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(Dnn::new(b)?)),
    },
    CtrEntry {
        name: "DeepFM",
        keys: MLP_KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(DeepFm::new(b)?)),
    },
    CtrEntry {
        name: "DCNv2",
        keys: dcnv2::KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(Dcnv2::new(b.cfg, b.params, b.input_dim, b.rng)?)),
    },
    CtrEntry {
        name: "WideDeep",
        keys: MLP_KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(WideDeep::new(b)?)),
    },
    CtrEntry {
        name: "DCN",
        keys: dcn::KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(Dcn::new(b)?)),
    },
    CtrEntry {
        name: "NFM",
        keys: MLP_KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(Nfm::new(b)?)),
    },
    CtrEntry {
        name: "PNN",
        keys: &[
            "hidden_units",
            "hidden_activations",
            "net_dropout",
            "batch_norm",
            "product_type",
        ],
        inner_products: true,
        build: |b| Ok(Box::new(Pnn::new(b)?)),
    },
    CtrEntry {
        name: "FwFM",
        keys: &["linear_type"],
        inner_products: true,
        build: |b| Ok(Box::new(FwFm::new(b)?)),
    },
    CtrEntry {
        name: "AFM",
        keys: afm::KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(Afm::new(b)?)),
    },
    CtrEntry {
        name: "AutoInt",
        keys: autoint::KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(AutoInt::new(b)?)),
    },
    CtrEntry {
        name: "xDeepFM",
        keys: xdeepfm::KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(XDeepFm::new(b)?)),
    },
    CtrEntry {
        name: "FiBiNET",
        keys: fibinet::KEYS,
        inner_products: true,
        build: |b| Ok(Box::new(FiBiNet::new(b)?)),
    },
    CtrEntry {
        name: "DIN",
        keys: din::KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(Din::new(b)?)),
    },
    CtrEntry {
        name: "FinalMLP",
        keys: finalmlp::KEYS,
        inner_products: false,
        build: |b| Ok(Box::new(FinalMlp::new(b)?)),
    },
];

/// The registry's entry for model `name`.
pub fn entry(name: &str) -> Option<&'static CtrEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The model names the registry knows, for messages.
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Model-config keys every model reads ([`CommonConfig`]).
pub const COMMON_KEYS: &[&str] = &[
    "model",
    "embedding_dim",
    "embedding_regularizer",
    "net_regularizer",
    "regularizer",
    "optimizer",
    "seed",
];

const MLP_KEYS: &[&str] = &[
    "hidden_units",
    "hidden_activations",
    "net_dropout",
    "batch_norm",
];

/// The model-config keys model `name` reads besides [`COMMON_KEYS`] (`None`: no such model).
pub fn model_keys(name: &str) -> Option<&'static [&'static str]> {
    entry(name).map(|e| e.keys)
}

/// Builds the model a config names, with parameters drawn from its `seed`.
pub fn build(cfg: &ModelConfig, fmap: &FeatureMap) -> Result<Model> {
    let common = CommonConfig::from_config(cfg)?;
    let mut rng = StdRng::seed_from_u64(common.seed);
    let mut params = ParamStore::new();
    let name = cfg.str_or("model", "");
    let fields = fmap.num_fields();
    let d = common.embedding_dim;
    let field_dims: Vec<usize> = fmap
        .fields
        .iter()
        .map(|f| f.spec.embedding_dim.unwrap_or(d))
        .collect();
    let input_dim: usize = field_dims.iter().sum();
    let Some(entry) = entry(&name) else {
        return Err(ModelError::Config {
            expid: cfg.expid.clone(),
            msg: crate::unknown_model(&name, crate::Family::Ctr),
        });
    };
    if entry.inner_products && field_dims.iter().any(|&x| x != d) {
        return Err(ModelError::Config {
            expid: cfg.expid.clone(),
            msg: format!(
                "{name} takes \
            inner products of field embeddings: every field needs embedding_dim {d}"
            ),
        });
    }
    let net = (entry.build)(&mut CtrBuild {
        cfg,
        params: &mut params,
        rng: &mut rng,
        fields,
        dim: d,
        input_dim,
        fmap,
    })?;
    let embeddings = net
        .embeddings()
        .iter()
        .enumerate()
        .map(|(k, usage)| {
            let name = format!("emb{k}");
            let dims = match usage {
                EmbeddingUse::FirstOrder => vec![1; fields],
                EmbeddingUse::Factors | EmbeddingUse::Positions(_) => field_dims.clone(),
                EmbeddingUse::Subset(keep) => (0..fields)
                    .map(|i| if keep.contains(&i) { field_dims[i] } else { 0 })
                    .collect(),
                EmbeddingUse::PaddingMask(seqs) => {
                    return FeatureEmbedding::padding_mask(&name, fmap, seqs)
                        .map_err(|msg| config_error(cfg, msg))
                }
            };
            let e = FeatureEmbedding::new(&name, fmap, &dims, common.optimizer, &mut rng)
                .map_err(|msg| config_error(cfg, msg))?;
            match usage {
                EmbeddingUse::Positions(seqs) => {
                    e.with_positions(seqs).map_err(|msg| config_error(cfg, msg))
                }
                _ => Ok(e),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Model {
        name,
        net,
        params,
        embeddings,
        common,
    })
}

impl Model {
    pub fn forward<'a>(&'a self, batch: &Batch, train: bool, rng: &mut StdRng) -> Forward<'a> {
        self.forward_on(Graph::new(&self.params, train), batch, rng)
    }

    fn forward_on<'a>(
        &'a self,
        mut graph: Graph<'a>,
        batch: &Batch,
        rng: &mut StdRng,
    ) -> Forward<'a> {
        let emb_nodes: Vec<NodeId> = self
            .embeddings
            .iter()
            .map(|e| graph.input(e.forward(batch), !e.is_padding_mask()))
            .collect();
        let logits = self.net.forward(&mut graph, &emb_nodes, rng);
        Forward {
            graph,
            logits,
            emb_nodes,
        }
    }

    /// Click probabilities for a batch (evaluation mode).
    pub fn predict(&self, batch: &Batch) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(0);
        let f = self.forward_on(Graph::inference(&self.params), batch, &mut rng);
        f.graph
            .value(f.logits)
            .data
            .iter()
            .map(|&z| recforge_nn::kernels::sigmoid(z))
            .collect()
    }

    /// Per-table row gradients of each embedding, taken from a backward pass over the
    /// embedding nodes `emb_nodes` of a forward pass on `batch`.
    pub fn embedding_grads(
        &self,
        batch: &Batch,
        emb_nodes: &[NodeId],
        grads: &mut Grads,
    ) -> Vec<Vec<recforge_nn::RowGrads>> {
        self.embeddings
            .iter()
            .zip(emb_nodes)
            .map(|(e, &n)| match grads.take(n) {
                Some(g) => e.backward(batch, &g),
                None => e.no_grads(),
            })
            .collect()
    }

    /// Sets the frozen sentence vectors of text field `field` in every embedding that has it.
    pub fn set_text_vectors(
        &mut self,
        field: &str,
        vectors: &recforge_nn::Tensor,
    ) -> std::result::Result<(), String> {
        let mut found = false;
        for e in &mut self.embeddings {
            found |= e.set_text_vectors(field, vectors)?;
        }
        if found {
            Ok(())
        } else {
            Err(format!("the model has no text field `{field}`"))
        }
    }

    pub fn num_parameters(&self) -> usize {
        self.params
            .iter()
            .filter(|(_, p)| p.trainable)
            .map(|(_, p)| p.value.len())
            .sum::<usize>()
            + self
                .embeddings
                .iter()
                .map(|e| e.num_values())
                .sum::<usize>()
    }
}
