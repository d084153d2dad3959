//! Full-ranking evaluation for top-K recommendation: per user, score every item, drop the
//! items the user must not be recommended (seen in training, or in validation at test time),
//! select the top K by (score desc, item id asc) — a selection, not a full sort, and
//! deterministic on ties — and compute Recall/NDCG/Hit/MRR/Precision@K against the held-out
//! items. Per-user values are kept so two models can be compared with a paired test.

use rayon::prelude::*;

/// A ranking metric at a cut-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RankKind {
    /// hits in the top K / |held-out items|
    Recall,
    /// DCG@K / IDCG@K with the ideal over min(|held-out|, K) hits
    Ndcg,
    /// 1 when any held-out item is in the top K
    Hit,
    /// 1 / rank of the first hit within the top K (0 without one)
    Mrr,
    /// hits in the top K / K
    Precision,
}

impl RankKind {
    pub fn name(self) -> &'static str {
        match self {
            RankKind::Recall => "recall",
            RankKind::Ndcg => "ndcg",
            RankKind::Hit => "hit",
            RankKind::Mrr => "mrr",
            RankKind::Precision => "precision",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "recall" => RankKind::Recall,
            "ndcg" => RankKind::Ndcg,
            "hit" | "hr" | "hitrate" => RankKind::Hit,
            "mrr" => RankKind::Mrr,
            "precision" => RankKind::Precision,
            _ => return None,
        })
    }
}

/// `kind@k`, e.g. `recall@20`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RankMetric {
    pub kind: RankKind,
    pub k: usize,
}

impl RankMetric {
    pub fn name(&self) -> String {
        format!("{}@{}", self.kind.name(), self.k)
    }

    /// The metric's value for one user from the hit flags of the top list (`hits[j]`: the item
    /// at rank j is held out) and the number of held-out items.
    pub fn of_user(&self, hits: &[bool], n_relevant: usize) -> f64 {
        let k = self.k.min(hits.len());
        let top = &hits[..k];
        let count = top.iter().filter(|&&h| h).count() as f64;
        match self.kind {
            RankKind::Recall => count / n_relevant.max(1) as f64,
            RankKind::Precision => count / self.k as f64,
            RankKind::Hit => (count > 0.0) as u8 as f64,
            RankKind::Mrr => top
                .iter()
                .position(|&h| h)
                .map_or(0.0, |j| 1.0 / (j + 1) as f64),
            RankKind::Ndcg => {
                let dcg: f64 = top
                    .iter()
                    .enumerate()
                    .filter(|(_, &h)| h)
                    .map(|(j, _)| 1.0 / ((j + 2) as f64).log2())
                    .sum();
                let ideal: f64 = (0..n_relevant.min(self.k))
                    .map(|j| 1.0 / ((j + 2) as f64).log2())
                    .sum();
                if ideal > 0.0 {
                    dcg / ideal
                } else {
                    0.0
                }
            }
        }
    }
}

/// The `k` best items of `scores` by (score desc, id asc), leaving out `excluded` (ascending
/// item ids). Selection in O(n) followed by a sort of the `k` chosen.
pub fn top_k(scores: &[f32], k: usize, excluded: &[u32]) -> Vec<u32> {
    debug_assert!(
        excluded.windows(2).all(|w| w[0] < w[1]),
        "excluded must be ascending"
    );
    let mut skip = excluded.iter().peekable();
    let mut cand: Vec<u32> = Vec::with_capacity(scores.len());
    for i in 0..scores.len() as u32 {
        while skip.next_if(|&&e| e < i).is_some() {}
        if skip.next_if_eq(&&i).is_some() {
            continue;
        }
        cand.push(i);
    }
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < cand.len() {
        cand.select_nth_unstable_by(k, better);
        cand.truncate(k);
    }
    cand.sort_unstable_by(better);
    cand
}

/// Per-user values of each metric, for the users that have at least one held-out item.
#[derive(Clone, Debug, Default)]
pub struct RankingReport {
    pub metrics: Vec<RankMetric>,
    pub users: Vec<u32>,
    /// `values[u][m]`: metric `m` of `users[u]`.
    pub values: Vec<Vec<f64>>,
}

impl RankingReport {
    /// Each metric averaged over the evaluated users, as (name, value).
    pub fn means(&self) -> Vec<(String, f64)> {
        let n = self.users.len().max(1) as f64;
        self.metrics
            .iter()
            .enumerate()
            .map(|(m, metric)| {
                let s: f64 = self.values.iter().map(|v| v[m]).sum();
                (metric.name(), s / n)
            })
            .collect()
    }
}

/// What the evaluator needs to know of one user.
pub struct UserCase<'a> {
    pub user: u32,
    /// held-out items, ascending
    pub relevant: &'a [u32],
    /// items never to recommend (train, or train ∪ valid), ascending
    pub excluded: &'a [u32],
}

/// Ranks every item for each user and scores the top lists. `score_block(users, out)` fills
/// `out` (row-major `users.len() × n_items`) with the model's scores; it is called on blocks
/// of `block_users` users, and the rows of a block are ranked in parallel.
pub fn evaluate_full_ranking(
    cases: &[UserCase<'_>],
    n_items: usize,
    metrics: &[RankMetric],
    block_users: usize,
    score_block: &mut dyn FnMut(&[u32], &mut [f32]),
) -> RankingReport {
    let max_k = metrics.iter().map(|m| m.k).max().unwrap_or(0);
    let mut report = RankingReport {
        metrics: metrics.to_vec(),
        ..Default::default()
    };
    let cases: Vec<&UserCase> = cases.iter().filter(|c| !c.relevant.is_empty()).collect();
    let mut scores = Vec::new();
    for block in cases.chunks(block_users.max(1)) {
        let users: Vec<u32> = block.iter().map(|c| c.user).collect();
        scores.clear();
        scores.resize(users.len() * n_items, 0.0f32);
        score_block(&users, &mut scores);
        let rows: Vec<Vec<f64>> = scores
            .par_chunks(n_items.max(1))
            .zip(block.par_iter())
            .map(|(row, case)| {
                let top = top_k(row, max_k, case.excluded);
                let hits: Vec<bool> = top
                    .iter()
                    .map(|i| case.relevant.binary_search(i).is_ok())
                    .collect();
                metrics
                    .iter()
                    .map(|m| m.of_user(&hits, case.relevant.len()))
                    .collect()
            })
            .collect();
        report.users.extend(users);
        report.values.extend(rows);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: RankKind, k: usize) -> RankMetric {
        RankMetric { kind, k }
    }

    #[test]
    fn hand_computed_ranking() {
        // held out {2, 5}; the ranking is [5, 1, 2]
        let hits = [true, false, true];
        assert_eq!(m(RankKind::Recall, 2).of_user(&hits, 2), 0.5);
        assert!((m(RankKind::Ndcg, 2).of_user(&hits, 2) - 0.6131).abs() < 1e-4);
        assert!((m(RankKind::Ndcg, 3).of_user(&hits, 2) - 0.9197).abs() < 1e-4);
        assert_eq!(m(RankKind::Hit, 1).of_user(&hits, 2), 1.0);
        assert_eq!(m(RankKind::Precision, 3).of_user(&hits, 2), 2.0 / 3.0);
        assert_eq!(m(RankKind::Mrr, 3).of_user(&[false, true, false], 2), 0.5);
        assert_eq!(m(RankKind::Mrr, 1).of_user(&[false, true], 2), 0.0);
        // an oracle scores 1 on every metric but precision
        for kind in [
            RankKind::Recall,
            RankKind::Ndcg,
            RankKind::Hit,
            RankKind::Mrr,
        ] {
            assert_eq!(m(kind, 2).of_user(&[true, true], 2), 1.0);
        }
    }

    #[test]
    fn top_k_orders_by_score_then_id_and_never_returns_excluded() {
        let scores = [0.5, 0.9, 0.5, 0.9, 0.1, 2.0];
        assert_eq!(top_k(&scores, 3, &[]), vec![5, 1, 3]);
        assert_eq!(top_k(&scores, 3, &[1, 5]), vec![3, 0, 2]);
        assert_eq!(top_k(&scores, 10, &[0, 1, 2, 3]), vec![5, 4]);
        assert_eq!(top_k(&scores, 0, &[]), Vec::<u32>::new());
    }

    #[test]
    fn full_ranking_masks_and_skips_users_without_held_out_items() {
        // items 0..4; user 0 holds out {2}, has seen {0}; user 1 holds out nothing
        let cases = [
            UserCase {
                user: 0,
                relevant: &[2],
                excluded: &[0],
            },
            UserCase {
                user: 1,
                relevant: &[],
                excluded: &[],
            },
        ];
        let mut calls = 0;
        let report = evaluate_full_ranking(
            &cases,
            4,
            &[m(RankKind::Recall, 1), m(RankKind::Ndcg, 2)],
            8,
            &mut |users, out| {
                calls += 1;
                assert_eq!(users, &[0]);
                // item 0 scores best but is masked, so item 2 ranks first
                out.copy_from_slice(&[9.0, 1.0, 5.0, 0.0]);
            },
        );
        assert_eq!(calls, 1);
        assert_eq!(report.users, vec![0]);
        assert_eq!(
            report.means(),
            vec![("recall@1".into(), 1.0), ("ndcg@2".into(), 1.0)]
        );
    }
}
