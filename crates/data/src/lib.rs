//! Everything between a file on disk and a batch of integer ids.
//!
//! - [`config`]: FuxiCTR-style dataset and model configs (YAML), selected by experiment id;
//! - [`reader`]: streaming readers for CSV/TSV (Criteo raw), libSVM/libFM and Parquet;
//! - [`preprocess`]: FuxiCTR's column preprocess functions (`convert_hour`, `convert_to_bucket`, …);
//! - [`features`]: per-field vocabularies and the encoding of a record into fixed-width slots;
//! - [`cache`]: the encoded, memory-mapped binary cache, rebuilt when the config changes;
//! - [`interactions`]: implicit-feedback (user, item) data for top-K models, with a negative sampler;
//! - [`batch`]: shuffled mini-batches over an encoded split;
//! - [`synthetic`]: a click-log generator with a planted, known ground truth;
//! - [`splits`]: the project's fixed (RNG-free) splits of Frappe, the Criteo slice and ML-100K.

pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod features;
pub mod interactions;
pub mod kt;
pub mod preprocess;
pub mod reader;
pub mod sequences;
pub mod splits;
pub mod synthetic;

pub use batch::{Batch, BatchIter};
pub use cache::{EncodedDataset, EncodedSplit};
pub use config::{DatasetConfig, ExperimentConfig, FieldKind, FieldSpec, ModelConfig};
pub use error::DataError;
pub use features::{FeatureMap, FieldInfo};

/// Where the shared real datasets live: `$RECFORGE_DATA`, else `../shared/data`.
pub fn shared_data_dir() -> std::path::PathBuf {
    std::env::var_os("RECFORGE_DATA")
        .map(Into::into)
        .unwrap_or_else(|| "../shared/data".into())
}
