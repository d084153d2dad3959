//! Initializers as FuxiCTR uses them: Xavier-normal weights with zero biases for linear layers,
//! N(0, 1e-4) for embeddings with the padding row zeroed.

use crate::tensor::Tensor;
use rand::Rng;
use rand_distr::{Distribution, Normal};

pub fn normal(rng: &mut impl Rng, rows: usize, cols: usize, std: f32) -> Tensor {
    let dist = Normal::new(0.0f32, std).expect("finite std");
    Tensor::from_vec(
        rows,
        cols,
        (0..rows * cols).map(|_| dist.sample(rng)).collect(),
    )
}

/// Xavier (Glorot) normal for a `[fan_in, fan_out]` weight.
pub fn xavier_normal(rng: &mut impl Rng, fan_in: usize, fan_out: usize) -> Tensor {
    let std = (2.0 / (fan_in + fan_out) as f32).sqrt();
    normal(rng, fan_in, fan_out, std)
}

/// Xavier (Glorot) uniform for a `[fan_in, fan_out]` weight: U(−b, b), b = √(6 / (in + out)).
pub fn xavier_uniform(rng: &mut impl Rng, fan_in: usize, fan_out: usize) -> Tensor {
    uniform(
        rng,
        fan_in,
        fan_out,
        (6.0 / (fan_in + fan_out) as f32).sqrt(),
    )
}

/// U(−bound, bound); PyTorch's default for `nn.Linear` and `nn.GRU` weights is
/// bound = 1/√fan_in (for a GRU, 1/√hidden).
pub fn uniform(rng: &mut impl Rng, rows: usize, cols: usize, bound: f32) -> Tensor {
    let data = (0..rows * cols)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    Tensor::from_vec(rows, cols, data)
}
