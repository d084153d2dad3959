//! EASE (Steck, WWW'19; RecBole's `EASE`): the item–item weights in closed form,
//! P = (XᵀX + λI)⁻¹, B = −P / diag(P) with a zero diagonal; a user's scores are `x_u · B`.
//! The inverse comes from faer's Cholesky factorisation (XᵀX + λI is symmetric positive
//! definite for λ > 0), in f64. X is binary (a repeated interaction counts once; RecBole's
//! sparse matrix would sum repeats).

use super::{config_error, TopkBatch, TopkInput, TopkModel, TopkShape};
use crate::Result;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use rand::rngs::StdRng;
use rayon::prelude::*;
use recforge_data::interactions::{Interactions, UserItems};
use recforge_data::ModelConfig;
use recforge_nn::{Graph, NodeId, ParamId, ParamStore, Tensor};

pub(crate) const KEYS: &[&str] = &["reg_weight"];

pub struct Ease {
    params: ParamStore,
    similarity: ParamId,
    reg_weight: f64,
    n_items: usize,
}

impl Ease {
    pub fn new(cfg: &ModelConfig, shape: TopkShape) -> Result<Self> {
        let reg_weight = cfg
            .positive_f64_or("reg_weight", 250.0)
            .map_err(|e| config_error(cfg, e.to_string()))?;
        let mut params = ParamStore::new();
        let n = shape.n_items;
        let similarity = params.add("item_similarity", Tensor::zeros(n, n), false, false);
        Ok(Ease {
            params,
            similarity,
            reg_weight,
            n_items: n,
        })
    }
}

/// The Gram matrix XᵀX of binary rows (`train` user → items), in f64, column-major for faer.
fn gram(train: &UserItems, n: usize) -> Mat<f64> {
    // column a of the symmetric XᵀX counts, over the users of item a, their items: columns in
    // parallel, each written by one thread in order (integer counts, so exact in any order)
    let item_users = train.transpose(n);
    let mut cols = vec![0f64; n * n];
    cols.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(a, col)| {
            for &u in item_users.row(a as u32) {
                for &b in train.row(u) {
                    col[b as usize] += 1.0;
                }
            }
        });
    Mat::from_fn(n, n, |i, j| cols[j * n + i])
}

/// B = −P / diag(P), zero diagonal, for P = (G + λI)⁻¹; `None` if G + λI is not positive
/// definite (it is for any λ > 0).
pub fn ease_weights(train: &UserItems, n: usize, lambda: f64) -> Option<Vec<f32>> {
    let mut g = gram(train, n);
    for i in 0..n {
        g[(i, i)] += lambda;
    }
    let p = g.llt(Side::Lower).ok()?.inverse();
    let mut b = vec![0.0f32; n * n];
    b.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        for j in 0..n {
            if i != j {
                row[j] = (-p[(i, j)] / p[(j, j)]) as f32;
            }
        }
    });
    Some(b)
}

impl TopkModel for Ease {
    fn name(&self) -> &'static str {
        "EASE"
    }

    fn input(&self) -> TopkInput {
        TopkInput::ClosedForm
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn loss(&self, _: &mut Graph, _: &TopkBatch, _: u64, _: &mut StdRng) -> NodeId {
        unreachable!("EASE is fitted in closed form")
    }

    fn fit_closed_form(&mut self, data: &Interactions) -> Result<()> {
        let b = ease_weights(&data.train, self.n_items, self.reg_weight).ok_or_else(|| {
            crate::ModelError::Config {
                expid: "EASE".into(),
                msg: "XᵀX + λI is not positive definite".into(),
            }
        })?;
        self.params.value_mut(self.similarity).data = b;
        Ok(())
    }

    fn score_users(&self, users: &[u32], history: &UserItems, out: &mut [f32]) {
        let n = self.n_items;
        out.par_chunks_mut(n.max(1))
            .zip(users.par_iter())
            .for_each(|(row, &u)| self.score_history(history.row(u), row));
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let b = &self.params.value(self.similarity).data;
        let n = self.n_items;
        out.fill(0.0);
        for &i in items {
            let w = &b[i as usize * n..(i as usize + 1) * n];
            out.iter_mut().zip(w).for_each(|(o, v)| *o += v);
        }
    }
}
