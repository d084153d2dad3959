//! Metrics. Click prediction: exact AUC (ties get half credit, as the Mann–Whitney statistic
//! and scikit-learn's `roc_auc_score` do), logloss clipped like scikit-learn, and gAUC.

use std::collections::HashMap;

pub mod rank;
pub mod registry;

pub use rank::{evaluate_full_ranking, top_k, RankKind, RankMetric, RankingReport, UserCase};
pub use registry::{expand, Metric};

/// Exact ROC AUC. Returns `None` when only one class is present.
pub fn auc(labels: &[f32], scores: &[f32]) -> Option<f64> {
    assert_eq!(labels.len(), scores.len(), "auc: lengths differ");
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = labels.iter().filter(|&&y| y > 0.5).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    // sum of the (average) ranks of the positives
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let p = idx[i..=j].iter().filter(|&&k| labels[k] > 0.5).count() as f64;
        rank_sum += p * avg_rank;
        i = j + 1;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Mean binary cross-entropy of probabilities, clipped to `[1e-7, 1 − 1e-7]`.
pub fn logloss(labels: &[f32], probs: &[f32]) -> f64 {
    assert_eq!(labels.len(), probs.len(), "logloss: lengths differ");
    if labels.is_empty() {
        return 0.0;
    }
    let eps = 1e-7f64;
    labels
        .iter()
        .zip(probs)
        .map(|(&y, &p)| {
            let p = (p as f64).clamp(eps, 1.0 - eps);
            -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / labels.len() as f64
}

/// Group AUC: the AUC of each group that has both classes, weighted by the group's size.
pub fn gauc(labels: &[f32], scores: &[f32], groups: &[u32]) -> Option<f64> {
    let mut by: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &g) in groups.iter().enumerate() {
        by.entry(g).or_default().push(i);
    }
    let (mut num, mut den) = (0.0, 0.0);
    let mut keys: Vec<_> = by.keys().copied().collect();
    keys.sort_unstable();
    for k in keys {
        let ix = &by[&k];
        let l: Vec<f32> = ix.iter().map(|&i| labels[i]).collect();
        let s: Vec<f32> = ix.iter().map(|&i| scores[i]).collect();
        if let Some(a) = auc(&l, &s) {
            num += a * ix.len() as f64;
            den += ix.len() as f64;
        }
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_hand_computed_with_ties() {
        // pairs (pos, neg): positives 0.8, 0.4(tie); negatives 0.4(tie), 0.1, 0.9
        let labels = [1.0, 1.0, 0.0, 0.0, 0.0];
        let scores = [0.8, 0.4, 0.4, 0.1, 0.9];
        // 0.8 beats 0.4,0.1 (2); 0.4 ties 0.4 (0.5), beats 0.1 (1) → 3.5 of 6
        assert!((auc(&labels, &scores).unwrap() - 3.5 / 6.0).abs() < 1e-12);
        assert_eq!(auc(&[1.0, 1.0], &[0.1, 0.2]), None);
        assert_eq!(auc(&[0.0, 1.0], &[0.1, 0.2]), Some(1.0));
    }

    #[test]
    fn logloss_hand_computed() {
        let want = -(0.8f64.ln() + 0.7f64.ln()) / 2.0;
        assert!((logloss(&[1.0, 0.0], &[0.8, 0.3]) - want).abs() < 1e-6);
        assert!(logloss(&[1.0], &[0.0]).is_finite());
    }

    #[test]
    fn gauc_weights_groups_by_size_and_skips_single_class() {
        let labels = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        let scores = [0.9, 0.1, 0.2, 0.8, 0.7, 0.5, 0.5];
        let groups = [1, 1, 2, 2, 2, 3, 3];
        // group1 auc 1 (2 rows), group2 auc 0 (3 rows), group3 single class
        assert!((gauc(&labels, &scores, &groups).unwrap() - 2.0 / 5.0).abs() < 1e-12);
    }
}
