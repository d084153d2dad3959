//! The model zoo. Models are grouped by family (`ctr/`, `topk/`), one file per model, each a
//! config struct read from the FuxiCTR-style model config plus a `forward` on the tape.
//! [`FeatureEmbedding`] turns a batch of ids into the dense `[batch × Σ dims]` matrix every
//! CTR model starts from; [`layers`] holds the blocks models share.

pub mod ctr;
pub mod embedding;
pub mod layers;
pub mod topk;

pub use ctr::{build, CtrNet, Model};
pub use embedding::FeatureEmbedding;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model config `{expid}`: {msg}")]
    Config { expid: String, msg: String },
    #[error(transparent)]
    Data(#[from] recforge_data::DataError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
