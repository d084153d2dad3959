//! The model zoo. Models are grouped by family (`ctr/`, `topk/`, `seq/`, `kt/`), one file per model, each a
//! config struct read from the FuxiCTR-style model config plus a `forward` on the tape.
//! [`FeatureEmbedding`] turns a batch of ids into the dense `[batch × Σ dims]` matrix every
//! CTR model starts from; [`layers`] holds the blocks models share.

pub mod ctr;
pub mod embedding;
pub mod kt;
pub mod layers;
pub mod seq;
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

/// A config error for experiment `cfg` (every family's models report through it).
pub(crate) fn config_error(cfg: &recforge_data::ModelConfig, msg: impl Into<String>) -> ModelError {
    ModelError::Config {
        expid: cfg.expid.clone(),
        msg: msg.into(),
    }
}

/// The model families; each keeps its own registry (`ctr::REGISTRY`, `topk::REGISTRY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ctr,
    Topk,
    Seq,
    Kt,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Ctr, Family::Topk, Family::Seq, Family::Kt];

    /// How the family is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Ctr => "a CTR model (its dataset lists feature columns)",
            Family::Topk => "a top-K model (its dataset has `task: topk`)",
            Family::Seq => "a sequential model (its dataset has `task: seq`)",
            Family::Kt => "a knowledge-tracing model (its dataset has `task: kt`)",
        }
    }

    pub fn model_names(self) -> Vec<&'static str> {
        match self {
            Family::Ctr => ctr::model_names(),
            Family::Topk => topk::model_names(),
            Family::Seq => seq::model_names(),
            Family::Kt => kt::model_names(),
        }
    }
}

/// The family whose registry holds model `name`.
pub fn family_of(name: &str) -> Option<Family> {
    Family::ALL
        .into_iter()
        .find(|f| f.model_names().contains(&name))
}

/// "unknown model" for `family`, saying which family the name belongs to when it is another's.
pub fn unknown_model(name: &str, family: Family) -> String {
    match family_of(name) {
        Some(other) => format!(
            "`{name}` is {}, and this dataset is for {}",
            other.describe(),
            family.describe().split(" (").next().unwrap_or_default()
        ),
        None => format!(
            "unknown model `{name}` (known: {})",
            family.model_names().join(", ")
        ),
    }
}
