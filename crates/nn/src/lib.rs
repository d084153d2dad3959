//! The numeric core of recforge.
//!
//! Dense layers run on a small reverse-mode tape ([`Graph`]) whose every op has a hand-written
//! backward pass on top of the `gemm` crate. Embedding tables live outside the tape: a batch
//! gathers only the rows it names, and [`EmbeddingTable`] updates only those rows, so a step
//! costs the same whatever the table size.

// Numeric loops index several slices in lockstep; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod embedding;
pub mod graph;
pub mod init;
pub mod kernels;
pub mod ops;
pub mod optim;
pub mod params;
pub mod tensor;
pub mod testing;
pub mod transformer;

pub use embedding::{EmbeddingOptimizer, EmbeddingTable, RowGrads, UpdateMode};
pub use graph::{Activation, Graph, NodeId, StateUpdate};
pub use ops::decay_attention::DecayAttentionOptions;
pub use ops::sparse::{CsrMatrix, SparseOperand};
pub use ops::{BatchNormStats, CustomOp};
pub use optim::{DenseOptimizer, OptimizerKind, ParamGroup};
pub use params::{ParamId, ParamStore, Scope};
pub use tensor::Tensor;
pub use transformer::{segments_from_lengths, AttentionOptions, Segment};
