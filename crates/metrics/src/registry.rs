//! Metrics by name, as configs write them: FuxiCTR's (`AUC`, `logloss`, `gAUC`), RecBole's
//! (`Recall`, `NDCG` with `topk: [10, 20]`), or recforge's own lower-case `recall@20`. Names are
//! case-insensitive; a metric's canonical name is lower-case, as `--metrics-json` writes it.

use crate::rank::{RankKind, RankMetric};

/// A metric recforge computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Auc,
    Logloss,
    Gauc,
    /// accuracy of `score ≥ 0.5` against `label ≥ 0.5`
    Acc,
    Rmse,
    Mae,
    Rank(RankMetric),
}

impl Metric {
    /// One metric name (`auc`, `recall@20`, `NDCG@10`); `None` when it names nothing known or
    /// is a ranking metric without its cut-off.
    pub fn parse(name: &str) -> Option<Metric> {
        let lower = name.trim().to_ascii_lowercase();
        if let Some((kind, k)) = lower.split_once('@') {
            let k: usize = k.parse().ok().filter(|&k| k > 0)?;
            return Some(Metric::Rank(RankMetric {
                kind: RankKind::parse(kind)?,
                k,
            }));
        }
        Some(match lower.as_str() {
            "auc" => Metric::Auc,
            "logloss" | "binary_crossentropy" => Metric::Logloss,
            "gauc" => Metric::Gauc,
            "acc" | "accuracy" => Metric::Acc,
            "rmse" => Metric::Rmse,
            "mae" => Metric::Mae,
            _ => return None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Metric::Auc => "auc".into(),
            Metric::Logloss => "logloss".into(),
            Metric::Gauc => "gauc".into(),
            Metric::Acc => "acc".into(),
            Metric::Rmse => "rmse".into(),
            Metric::Mae => "mae".into(),
            Metric::Rank(r) => r.name(),
        }
    }

    /// Whether early stopping should look for a larger value.
    pub fn higher_is_better(&self) -> bool {
        !matches!(self, Metric::Logloss | Metric::Rmse | Metric::Mae)
    }
}

/// A config's metric list: each entry a full name (`recall@20`, `AUC`), or a ranking metric
/// without cut-off (`Recall`, RecBole style) expanded over every `topk` value.
pub fn expand(names: &[String], topk: &[usize]) -> Result<Vec<Metric>, String> {
    let mut out = Vec::new();
    for name in names {
        let found = match Metric::parse(name) {
            Some(m) => vec![m],
            None => match RankKind::parse(name.trim()) {
                Some(kind) if !topk.is_empty() => topk
                    .iter()
                    .map(|&k| Metric::Rank(RankMetric { kind, k }))
                    .collect(),
                Some(_) => {
                    return Err(format!(
                        "metric `{name}` needs a cut-off: `{name}@K` or `topk`"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown metric `{name}` (auc, logloss, gauc, acc, rmse, mae, \
                         recall@K, ndcg@K, hit@K, mrr@K, precision@K)"
                    ))
                }
            },
        };
        for m in found {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively_and_expand_over_topk() {
        assert_eq!(Metric::parse("AUC"), Some(Metric::Auc));
        assert_eq!(
            Metric::parse("NDCG@10").map(|m| m.name()),
            Some("ndcg@10".into())
        );
        assert_eq!(Metric::parse("recall@0"), None);
        assert_eq!(Metric::parse("recal@5"), None);
        let m = expand(&["Recall".into(), "NDCG".into(), "hit@5".into()], &[10, 20]).unwrap();
        let names: Vec<String> = m.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@5"]
        );
        assert!(expand(&["Recall".into()], &[]).is_err());
        assert!(expand(&["F1".into()], &[10]).is_err());
        assert!(!Metric::Logloss.higher_is_better());
    }
}
