//! Top-K serving: the best items for a known user or for an ad-hoc history, and the items
//! nearest an item. Ids are the data's own tokens (numbers for `.npy` data), sent as JSON
//! strings or numbers.
//!
//! Cold start: an unknown user is a 422 naming it (send its `history` instead); unknown items
//! in a history are a 422 naming their position; an empty history is ranked by training
//! popularity.

use crate::engine::Engine;
use crate::error::ServeError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whom to recommend for: a `user` the model was trained with, or a `history` of items.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub user: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub history: Option<Vec<Value>>,
    /// How many items (default 10).
    #[serde(default, deserialize_with = "crate::http::top_k_value")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub top_k: Option<usize>,
    /// Items never to return.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub exclude: Vec<Value>,
    /// Leave out the items the user (or history) already has (default true).
    #[serde(default)]
    pub exclude_seen: Option<bool>,
}

/// Items nearest `item` by the cosine of the model's item vectors.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarItemsRequest {
    #[schema(value_type = String)]
    pub item: Value,
    /// How many items (default 10).
    #[serde(default, deserialize_with = "crate::http::top_k_value")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub top_k: Option<usize>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScoredItem {
    pub item: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Recommendation {
    pub model_version: u64,
    /// Best first; ties by item id.
    pub items: Vec<ScoredItem>,
}

impl Recommendation {
    fn of(
        model_version: u64,
        m: &recforge_train::topk::LoadedTopk,
        top: &[u32],
        scores: &[f32],
    ) -> Self {
        Recommendation {
            model_version,
            items: top
                .iter()
                .map(|&i| ScoredItem {
                    item: m.item_token(i),
                    score: scores[i as usize],
                })
                .collect(),
        }
    }
}

/// A JSON id as the data's token.
fn token(v: &Value, field: &str) -> Result<String, ServeError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ServeError::invalid(
            field,
            format!("an id is a string or a number, got {other}"),
        )),
    }
}

impl Engine {
    pub fn recommend(&self, req: &RecommendRequest) -> Result<Recommendation, ServeError> {
        let served = self.model();
        let m = served.topk()?;
        let n = m.meta.shape.n_items;
        let item = |v: &Value, field: String| -> Result<u32, ServeError> {
            let t = token(v, &field)?;
            m.item_id(&t)
                .ok_or_else(|| ServeError::invalid(field, format!("unknown item `{t}`")))
        };
        let mut scores = vec![0f32; n];
        let seen: Vec<u32> = match (&req.user, &req.history) {
            (Some(_), Some(_)) => {
                return Err(ServeError::invalid(
                    "",
                    "send `user` or `history`, not both",
                ))
            }
            (None, None) => return Err(ServeError::invalid("", "send a `user` or a `history`")),
            (Some(u), None) => {
                let t = token(u, "user")?;
                let id = m.user_id(&t).ok_or_else(|| {
                    ServeError::invalid(
                        "user",
                        format!("unknown user `{t}`: send the user's `history` instead"),
                    )
                })?;
                m.model.score_users(&[id], &m.meta.history, &mut scores);
                m.meta.history.row(id).to_vec()
            }
            (None, Some(h)) => {
                let ids: Vec<u32> = h
                    .iter()
                    .enumerate()
                    .map(|(i, v)| item(v, format!("history[{i}]")))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    scores = m.popularity();
                } else {
                    m.model.score_history(&ids, &mut scores);
                }
                ids
            }
        };
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(ServeError::Internal(
                "the model produced a non-finite score".into(),
            ));
        }
        let mut excluded: Vec<u32> = req
            .exclude
            .iter()
            .enumerate()
            .map(|(i, v)| item(v, format!("exclude[{i}]")))
            .collect::<Result<_, _>>()?;
        if req.exclude_seen.unwrap_or(true) {
            excluded.extend(seen);
        }
        excluded.sort_unstable();
        excluded.dedup();
        let k = req.top_k.unwrap_or(10).min(n);
        let top = recforge_metrics::top_k(&scores, k, &excluded);
        Ok(Recommendation::of(served.version, m, &top, &scores))
    }

    pub fn similar_items(&self, req: &SimilarItemsRequest) -> Result<Recommendation, ServeError> {
        let served = self.model();
        let m = served.topk()?;
        let t = token(&req.item, "item")?;
        let id = m
            .item_id(&t)
            .ok_or_else(|| ServeError::invalid("item", format!("unknown item `{t}`")))?;
        let vectors = m.model.item_vectors().ok_or_else(|| {
            ServeError::invalid(
                "",
                format!("{} has no item vectors to compare", m.meta.model),
            )
        })?;
        let d = vectors.cols;
        let norm = |r: &[f32]| r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let q = vectors.row(id as usize);
        let qn = norm(q);
        let scores: Vec<f32> = vectors
            .data
            .chunks_exact(d.max(1))
            .map(|r| r.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() / (norm(r) * qn))
            .collect();
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(ServeError::Internal("non-finite item similarity".into()));
        }
        let k = req.top_k.unwrap_or(10).min(scores.len());
        let top = recforge_metrics::top_k(&scores, k, &[id]);
        Ok(Recommendation::of(served.version, m, &top, &scores))
    }

    /// Whether the served model has item vectors (`similar_items`).
    pub fn has_item_vectors(&self) -> bool {
        self.model()
            .topk()
            .is_ok_and(|m| m.model.item_vectors().is_some())
    }
}
