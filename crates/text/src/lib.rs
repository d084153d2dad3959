//! A pretrained text encoder in-process: BERT-family models (all-MiniLM-L6-v2 by default) on
//! recforge's tape, so they can be run *and* fine-tuned without Python.
//!
//! - [`bert`]: the transformer (config struct + `forward`), loaded from safetensors;
//! - [`encoder`]: tokenization, packed batching, mean pooling + L2 normalisation — the
//!   sentence-transformers pipeline — and a contrastive fine-tuning objective;
//! - [`search`]: exact nearest neighbours over stored vectors;
//! - [`vectors`]: vector files (safetensors, `.npy`) and the text-hash cache.

pub mod bert;
pub mod encoder;
pub mod error;
pub mod search;
pub mod testing;
pub mod vectors;

pub use bert::{Bert, BertConfig};
pub use encoder::{
    default_model_dir, ContrastiveTrainer, Pooling, SentenceEncoder, TokenBatch, Tokens,
};
pub use error::{Result, TextError};
