//! Exact nearest-neighbour search: queries against a matrix of stored vectors, scored by dot
//! product (cosine for normalised vectors) with one matrix multiply per block of stored rows,
//! keeping a running top-k per query. Memory stays at `queries × block` scores.

use crate::error::{Result, TextError};
use recforge_nn::kernels::matmul;
use recforge_nn::Tensor;

/// How many stored vectors one multiply scores.
const BLOCK_ROWS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Dot product (cosine similarity when both sides are L2-normalised).
    Dot,
    /// Cosine similarity, normalising both sides here.
    Cosine,
}

fn normalized(t: &Tensor) -> Tensor {
    let mut out = t.clone();
    for row in out.data.chunks_exact_mut(t.cols.max(1)) {
        let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

/// The `k` best stored rows for each query row, best first (ties: lower index first).
pub fn top_k(queries: &Tensor, stored: &Tensor, k: usize, metric: Metric) -> Result<Vec<Vec<Hit>>> {
    if queries.cols != stored.cols {
        return Err(TextError::Invalid(format!(
            "queries have {} dimensions, stored vectors {}",
            queries.cols, stored.cols
        )));
    }
    let (q, s) = match metric {
        Metric::Dot => (queries.clone(), stored.clone()),
        Metric::Cosine => (normalized(queries), normalized(stored)),
    };
    let (nq, d) = (q.rows, q.cols);
    let k = k.min(s.rows);
    let mut best: Vec<Vec<Hit>> = vec![Vec::with_capacity(k + 1); nq];
    let mut scores = Vec::new();
    for start in (0..s.rows).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(s.rows - start);
        scores.clear();
        scores.resize(nq * rows, 0.0);
        let block = &s.data[start * d..(start + rows) * d];
        matmul(&mut scores, &q.data, block, nq, rows, d, false, true, false);
        for (qi, row) in scores.chunks_exact(rows).enumerate() {
            let heap = &mut best[qi];
            for (j, &score) in row.iter().enumerate() {
                if heap.len() == k && heap.last().is_some_and(|w| score <= w.score) {
                    continue;
                }
                let hit = Hit {
                    index: start + j,
                    score,
                };
                // insertion into a short sorted list: k is small next to the stored rows
                let at = heap.partition_point(|h| h.score >= score);
                heap.insert(at, hit);
                heap.truncate(k);
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_equals_sorting_every_score() {
        let stored = Tensor::from_vec(
            9000,
            3,
            (0..27000)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect(),
        );
        let queries = Tensor::from_vec(2, 3, vec![1.0, 0.0, -1.0, 0.3, 0.9, 0.1]);
        for metric in [Metric::Dot, Metric::Cosine] {
            let hits = top_k(&queries, &stored, 5, metric).expect("same dims");
            let (q, s) = match metric {
                Metric::Dot => (queries.clone(), stored.clone()),
                Metric::Cosine => (normalized(&queries), normalized(&stored)),
            };
            for (qi, got) in hits.iter().enumerate() {
                let mut all: Vec<(usize, f32)> = (0..s.rows)
                    .map(|j| (j, (0..3).map(|c| q.row(qi)[c] * s.row(j)[c]).sum()))
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                assert_eq!(got.len(), 5);
                for (h, (j, sc)) in got.iter().zip(&all) {
                    assert!(
                        (h.score - sc).abs() < 1e-5,
                        "{metric:?}: {} vs {sc}",
                        h.score
                    );
                    if h.index != *j {
                        // equal scores may come in either order only when they tie
                        assert!(
                            (s.row(h.index).iter().zip(s.row(*j)).all(|(a, b)| a == b))
                                || (h.score - sc).abs() < 1e-6
                        );
                    }
                }
            }
        }
        assert!(top_k(&queries, &Tensor::zeros(4, 2), 1, Metric::Dot).is_err());
    }
}
