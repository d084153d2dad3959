//! Training and evaluation of every model family: the one loop ([`fit`]) and what each family
//! plugs into it ([`TrainTask`]: CTR's [`Trainer`], MAP's [`pretrain::Pretrainer`], top-K's
//! [`topk`]), metrics by name, checkpoints and run directories.
//!
//! The loop follows FuxiCTR's so that results are comparable: gradient clipping at a global
//! norm, evaluation on the validation split every `eval_step` epochs, the learning rate
//! divided by 10 when the monitored metric does not improve (`reduce_lr_on_plateau`), early
//! stopping after `early_stop_patience` such evaluations, and the best checkpoint restored
//! before testing.

pub mod checkpoint;
pub mod fit;
pub mod kt;
pub mod pretrain;
pub mod run;
pub mod score;
pub mod seq;
pub mod text_features;
pub mod topk;
pub mod trainer;

pub use checkpoint::{load_checkpoint, save_checkpoint, CheckpointMeta};
pub use fit::{fit, EpochLog, FitConfig, FitReport, Metrics, Split, TrainTask};
pub use run::RunDir;
pub use trainer::{
    check_model_config, evaluate, EvalMetrics, Monitor, NonFiniteStep, TrainConfig, TrainObserver,
    TrainReport, Trainer,
};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {msg}")]
    Checkpoint {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error(
        "epoch {epoch}, step {step}: {what}; training stopped, the best checkpoint is kept as \
        it was"
    )]
    NonFinite {
        epoch: usize,
        step: u64,
        what: String,
    },
    #[error(transparent)]
    Data(#[from] recforge_data::DataError),
    #[error(transparent)]
    Model(#[from] recforge_models::ModelError),
    #[error(transparent)]
    Text(#[from] recforge_text::TextError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
