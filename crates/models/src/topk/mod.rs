//! Top-K recommenders on implicit feedback (RecBole's "general" family). Each file holds one
//! model: its config (RecBole's key names) and its loss and scores on the tape. They share
//! one contract, [`TopkModel`]: a training loss on a batch of the kind the model asks for
//! ([`TopkInput`]), or a closed-form fit; scores of every item for a block of users (the
//! full-ranking evaluator's input) or for an ad-hoc history (serving); and dense parameters in
//! a [`ParamStore`], which is all a checkpoint holds.

mod bpr;
mod diffrec;
pub mod diffusion;
mod ease;
pub mod kmeans;
mod ldiffrec;
mod lightgcn;
mod multivae;
mod pop;

pub use bpr::Bpr;
pub use diffrec::{time_weights, DiffRec, StepLosses};
pub use ease::Ease;
pub use ldiffrec::LDiffRec;
pub use lightgcn::LightGcn;
pub use multivae::MultiVae;
pub use pop::Pop;

use crate::Result;
use rand::rngs::StdRng;
use recforge_data::interactions::{Interactions, UserItems};
use recforge_data::ModelConfig;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore, Tensor};

/// What a training batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkInput {
    /// (user, positive, sampled negative) triples, one per training interaction.
    Pairs,
    /// Users with their training rows (autoencoders).
    Users,
    /// Nothing: the model is fitted in closed form ([`TopkModel::fit_closed_form`]).
    ClosedForm,
}

/// One training batch.
pub enum TopkBatch {
    Pairs {
        users: Vec<u32>,
        pos: Vec<u32>,
        neg: Vec<u32>,
    },
    Users {
        users: Vec<u32>,
        /// `users.len() × n_items`, row-major: 1 where the user interacted in training.
        rows: Vec<f32>,
    },
}

impl TopkBatch {
    pub fn len(&self) -> usize {
        match self {
            TopkBatch::Pairs { users, .. } | TopkBatch::Users { users, .. } => users.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dense interaction rows of `users` (`users.len() × n_items`).
pub fn history_rows(history: &UserItems, users: &[u32], n_items: usize) -> Vec<f32> {
    let mut rows = vec![0.0f32; users.len() * n_items];
    for (r, &u) in users.iter().enumerate() {
        for &i in history.row(u) {
            rows[r * n_items + i as usize] = 1.0;
        }
    }
    rows
}

/// The contract every top-K model keeps.
pub trait TopkModel: Send + Sync {
    fn name(&self) -> &'static str;
    fn input(&self) -> TopkInput;
    fn params(&self) -> &ParamStore;
    /// Mutable parameters (for the optimizer and checkpoint loading); invalidates whatever
    /// [`TopkModel::prepare_scoring`] cached.
    fn params_mut(&mut self) -> &mut ParamStore;

    /// The scalar training loss of `batch` on `g`; `step` counts optimizer steps from 1 (for
    /// schedules such as MultiVAE's KL annealing).
    fn loss(&self, g: &mut Graph, batch: &TopkBatch, step: u64, rng: &mut StdRng) -> NodeId;

    /// Fits a closed-form model from the training interactions.
    fn fit_closed_form(&mut self, _data: &Interactions) -> Result<()> {
        Ok(())
    }

    /// Reads what the model needs from the training data beyond its rows (T-DiffRec: each
    /// user's time order); called once before training.
    fn prepare_training(&mut self, _data: &Interactions) -> Result<()> {
        Ok(())
    }

    /// The model config a checkpoint stores: `cfg` with whatever the model derived from data
    /// it will not have at load time (L-DiffRec's item clusters).
    fn checkpoint_config(&self, cfg: &ModelConfig) -> ModelConfig {
        cfg.clone()
    }

    /// Called after the parameters change and before scoring (LightGCN propagates once).
    fn prepare_scoring(&mut self) {}

    /// Scores of every item for each of `users` into `out` (`users.len() × n_items`), given
    /// the users' training rows in `history`.
    fn score_users(&self, users: &[u32], history: &UserItems, out: &mut [f32]);

    /// Scores of every item for an ad-hoc history (a user the model has not seen).
    fn score_history(&self, items: &[u32], out: &mut [f32]);

    /// Item vectors for item-to-item similarity, where the model has them.
    fn item_vectors(&self) -> Option<Tensor> {
        None
    }
}

/// A top-K model's constructor: config, shape, training CSR, seed.
pub type TopkBuilder = fn(&ModelConfig, TopkShape, &UserItems, u64) -> Result<Box<dyn TopkModel>>;

/// One top-K model: its name as RecBole spells it, the config keys it reads besides
/// [`COMMON_KEYS`], and how to build it (from the config, the shape, the training CSR and the
/// seed). Adding a model is one file and one entry here.
pub struct TopkEntry {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub build: TopkBuilder,
}

/// The top-K model registry.
pub const REGISTRY: &[TopkEntry] = &[
    TopkEntry {
        name: "Pop",
        keys: &[],
        build: |_, shape, _, _| Ok(Box::new(Pop::new(shape))),
    },
    TopkEntry {
        name: "BPR",
        keys: bpr::KEYS,
        build: |cfg, shape, _, seed| Ok(Box::new(Bpr::new(cfg, shape, seed)?)),
    },
    TopkEntry {
        name: "LightGCN",
        keys: lightgcn::KEYS,
        build: |cfg, shape, train, seed| Ok(Box::new(LightGcn::new(cfg, shape, train, seed)?)),
    },
    TopkEntry {
        name: "MultiVAE",
        keys: multivae::KEYS,
        build: |cfg, shape, _, seed| Ok(Box::new(MultiVae::new(cfg, shape, seed)?)),
    },
    TopkEntry {
        name: "DiffRec",
        keys: diffrec::KEYS,
        build: |cfg, shape, train, seed| Ok(Box::new(DiffRec::new(cfg, shape, train, seed)?)),
    },
    TopkEntry {
        name: "LDiffRec",
        keys: ldiffrec::KEYS,
        build: |cfg, shape, _, seed| Ok(Box::new(LDiffRec::new(cfg, shape, seed)?)),
    },
    TopkEntry {
        name: "EASE",
        keys: ease::KEYS,
        build: |cfg, shape, _, _| Ok(Box::new(Ease::new(cfg, shape)?)),
    },
];

/// The registry's entry for model `name`.
pub fn entry(name: &str) -> Option<&'static TopkEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The model names the registry knows, for messages.
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Model-config keys every top-K model reads.
pub const COMMON_KEYS: &[&str] = &["model", "seed"];

/// The keys model `name` reads besides [`COMMON_KEYS`] (`None`: no such model).
pub fn model_keys(name: &str) -> Option<&'static [&'static str]> {
    entry(name).map(|e| e.keys)
}

/// Shape facts a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopkShape {
    pub n_users: usize,
    pub n_items: usize,
}

/// Builds the model a config names, parameters drawn from its `seed` (RecBole's default 2020).
/// `train` is the user → items CSR of the training split (graph models build their adjacency
/// from it); checkpoint loading passes the same.
pub fn build(cfg: &ModelConfig, shape: TopkShape, train: &UserItems) -> Result<Box<dyn TopkModel>> {
    let name = cfg.str_or("model", "");
    let seed = cfg
        .usize_or("seed", 2020)
        .map_err(|e| config_error(cfg, e.to_string()))? as u64;
    match entry(&name) {
        Some(e) => (e.build)(cfg, shape, train, seed),
        None => Err(config_error(
            cfg,
            crate::unknown_model(&name, crate::Family::Topk),
        )),
    }
}

pub(crate) use crate::config_error;

/// `embedding_size` (RecBole) or `embedding_dim` (FuxiCTR), default 64.
pub(crate) fn embedding_size(cfg: &ModelConfig) -> Result<usize> {
    let key = if cfg.get("embedding_dim").is_some() {
        "embedding_dim"
    } else {
        "embedding_size"
    };
    cfg.positive_usize_or(key, 64)
        .map_err(|e| config_error(cfg, e.to_string()))
}

/// A linear layer of an MLP: `w` is `[in × out]`, `b` is `[1 × out]`.
pub(crate) struct Layer {
    pub w: ParamId,
    pub b: ParamId,
}

/// Linear layers `dims[0] → dims[1] → …` named `{prefix}.{k}.weight|bias`, Xavier-normal weights
/// and zero biases (RecBole's `xavier_normal_initialization`).
pub(crate) fn mlp(
    params: &mut ParamStore,
    rng: &mut StdRng,
    prefix: &str,
    dims: &[usize],
) -> Vec<Layer> {
    dims.windows(2)
        .enumerate()
        .map(|(k, io)| Layer {
            w: params.add(
                format!("{prefix}.{k}.weight"),
                init::xavier_normal(rng, io[0], io[1]),
                true,
                true,
            ),
            b: params.add(
                format!("{prefix}.{k}.bias"),
                Tensor::zeros(1, io[1]),
                true,
                true,
            ),
        })
        .collect()
}

/// `layers` applied in turn, `act` between them and none after the last.
pub(crate) fn run(g: &mut Graph, layers: &[Layer], mut x: NodeId, act: Activation) -> NodeId {
    for (k, l) in layers.iter().enumerate() {
        let a = if k + 1 < layers.len() {
            act
        } else {
            Activation::Linear
        };
        x = g.dense(x, l.w, Some(l.b), a);
    }
    x
}

/// The transpose of an `[in × n_items]` output weight: one row per item (item vectors of an
/// autoencoder's decoder).
pub(crate) fn columns_as_rows(w: &Tensor) -> Tensor {
    let mut t = Tensor::zeros(w.cols, w.rows);
    for r in 0..w.rows {
        for c in 0..w.cols {
            t.data[c * w.rows + r] = w.data[r * w.cols + c];
        }
    }
    t
}

/// `out[r][i] = u[r] · items[i]`: scores of every item for a block of user vectors.
pub(crate) fn dot_all_items(users: &[f32], items: &Tensor, out: &mut [f32]) {
    let d = items.cols;
    let m = users.len() / d.max(1);
    recforge_nn::kernels::matmul(
        out,
        users,
        &items.data,
        m,
        items.rows,
        d,
        false,
        true,
        false,
    );
}

/// The mean of the rows `items` of `table` (a fold-in user vector for an ad-hoc history);
/// zeros for an empty history.
pub(crate) fn mean_rows(table: &Tensor, items: &[u32]) -> Vec<f32> {
    let d = table.cols;
    let mut v = vec![0.0f32; d];
    for &i in items {
        v.iter_mut()
            .zip(table.row(i as usize))
            .for_each(|(a, b)| *a += b);
    }
    let n = items.len().max(1) as f32;
    v.iter_mut().for_each(|a| *a /= n);
    v
}

#[cfg(test)]
mod tests;
