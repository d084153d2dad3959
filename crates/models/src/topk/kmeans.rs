//! Lloyd's k-means with Euclidean distance, as L-DiffRec clusters its items: iterate until the
//! centres move less than `tol` in total squared distance (`kmeans_pytorch`'s rule). The
//! initial centres are k-means++'s (each next one drawn with probability ∝ its squared distance
//! to the nearest chosen), where `kmeans_pytorch` takes random points — which can leave two
//! centres splitting each of two blobs. A cluster left empty takes the point farthest from its
//! centre.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The cluster of each of the `rows × cols` points (`k ≤ rows`), with the centres.
pub fn kmeans(
    points: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    seed: u64,
    tol: f64,
    max_iter: usize,
) -> (Vec<usize>, Vec<f32>) {
    assert!(k >= 1 && k <= rows, "kmeans: {k} clusters of {rows} points");
    let point = |i: usize| &points[i * cols..(i + 1) * cols];
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut centres: Vec<f32> = point(rng.gen_range(0..rows)).to_vec();
    let mut nearest: Vec<f64> = (0..rows).map(|i| dist(point(i), &centres)).collect();
    while centres.len() < k * cols {
        let total: f64 = nearest.iter().sum();
        let next = if total > 0.0 {
            let mut u = rng.gen::<f64>() * total;
            nearest
                .iter()
                .position(|&d| {
                    u -= d;
                    u < 0.0
                })
                .unwrap_or(rows - 1)
        } else {
            rng.gen_range(0..rows) // every point sits on a centre already
        };
        centres.extend_from_slice(point(next));
        let c = &centres[centres.len() - cols..];
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(dist(point(i), c));
        }
    }
    let mut labels = vec![0usize; rows];
    for _ in 0..max_iter.max(1) {
        let mut nearest = vec![0f64; rows];
        for i in 0..rows {
            let (c, d) = (0..k)
                .map(|c| (c, dist(point(i), &centres[c * cols..(c + 1) * cols])))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("k ≥ 1");
            labels[i] = c;
            nearest[i] = d;
        }
        let mut next = vec![0f64; k * cols];
        let mut counts = vec![0usize; k];
        for i in 0..rows {
            counts[labels[i]] += 1;
            for (s, &x) in next[labels[i] * cols..].iter_mut().zip(point(i)) {
                *s += x as f64;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // an empty cluster restarts at the point worst served by its centre
                let far = (0..rows)
                    .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]))
                    .expect("rows ≥ 1");
                nearest[far] = 0.0;
                labels[far] = c;
                for (s, &x) in next[c * cols..(c + 1) * cols].iter_mut().zip(point(far)) {
                    *s = x as f64;
                }
                counts[c] = 1;
            } else {
                next[c * cols..(c + 1) * cols]
                    .iter_mut()
                    .for_each(|s| *s /= counts[c] as f64);
            }
        }
        let next: Vec<f32> = next.into_iter().map(|v| v as f32).collect();
        let shift = dist(&next, &centres);
        centres = next;
        if shift < tol {
            break;
        }
    }
    (labels, centres)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_separated_blobs_are_found() {
        // points around (0, 0) and (10, 10), interleaved
        let mut pts = Vec::new();
        for k in 0..20 {
            let j = (k % 5) as f32 * 0.1;
            if k % 2 == 0 {
                pts.extend([j, -j]);
            } else {
                pts.extend([10.0 + j, 10.0 - j]);
            }
        }
        for seed in 0..5 {
            let (labels, centres) = kmeans(&pts, 20, 2, 2, seed, 1e-4, 100);
            for k in 0..20 {
                assert_eq!(labels[k] == labels[0], k % 2 == 0, "seed {seed}");
            }
            let c = labels[1];
            assert!((centres[c * 2] - 10.2).abs() < 0.01, "{centres:?}");
        }
    }
}
