//! Top-K serving: the best items for a known user or for an ad-hoc history, and the items
//! nearest an item. Ids are the data's own tokens (numbers for `.npy` data), sent as JSON
//! strings or numbers. A sequential model reads the history in the order sent (oldest
//! first) and a known user's whole sequence, and predicts what comes next.
//!
//! Cold start: an unknown user is a 422 naming it (send its `history` instead); unknown items
//! in a history are a 422 naming their position; an empty history is ranked by training
//! popularity.

use crate::engine::{Engine, Served};
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
    fn of(model_version: u64, token: impl Fn(u32) -> String, top: &[u32], scores: &[f32]) -> Self {
        Recommendation {
            model_version,
            items: top
                .iter()
                .map(|&i| ScoredItem {
                    item: token(i),
                    score: scores[i as usize],
                })
                .collect(),
        }
    }
}

/// The best `top_k` ids of `scores`, leaving out `always` (padding), the request's `exclude`
/// and, unless `exclude_seen` is false, `seen`; non-finite scores are a 500.
fn best_items(
    req: &RecommendRequest,
    scores: &[f32],
    always: &[u32],
    seen: Vec<u32>,
    n_items: usize,
    item: impl Fn(&Value, String) -> Result<u32, ServeError>,
) -> Result<Vec<u32>, ServeError> {
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
    excluded.extend_from_slice(always);
    if req.exclude_seen.unwrap_or(true) {
        excluded.extend(seen);
    }
    excluded.sort_unstable();
    excluded.dedup();
    let k = req.top_k.unwrap_or(10).min(n_items);
    Ok(recforge_metrics::top_k(scores, k, &excluded))
}

/// A request names a `user` or a `history`, not both.
fn one_source(req: &RecommendRequest) -> Result<(), ServeError> {
    if req.user.is_some() && req.history.is_some() {
        return Err(ServeError::invalid(
            "",
            "send `user` or `history`, not both",
        ));
    }
    Ok(())
}

fn unknown_user(t: &str) -> ServeError {
    ServeError::invalid(
        "user",
        format!("unknown user `{t}`: send the user's `history` instead"),
    )
}

fn no_source() -> ServeError {
    ServeError::invalid("", "send a `user` or a `history`")
}

/// The next items for a sequential model: after a known user's whole sequence, or after the
/// `history` as sent (oldest first); an empty history ranks by popularity.
fn recommend_next(
    version: u64,
    m: &recforge_train::seq::LoadedSeq,
    req: &RecommendRequest,
) -> Result<Recommendation, ServeError> {
    one_source(req)?;
    let item = |v: &Value, field: String| -> Result<u32, ServeError> {
        let t = token(v, &field)?;
        m.item_id(&t)
            .ok_or_else(|| ServeError::invalid(field, format!("unknown item `{t}`")))
    };
    let history: Vec<u32> = match (&req.user, &req.history) {
        (Some(u), _) => {
            let t = token(u, "user")?;
            let id = m.user_id(&t).ok_or_else(|| unknown_user(&t))?;
            m.meta.sequences[id as usize].clone()
        }
        (None, Some(h)) => h
            .iter()
            .enumerate()
            .map(|(i, v)| item(v, format!("history[{i}]")))
            .collect::<Result<_, _>>()?,
        (None, None) => return Err(no_source()),
    };
    let scores = if history.is_empty() {
        let mut counts = vec![0f32; m.meta.shape.n_items + 1];
        for &i in m.meta.sequences.iter().flatten() {
            counts[i as usize] += 1.0;
        }
        counts
    } else {
        m.score_history(&history)
    };
    let top = best_items(req, &scores, &[0], history, m.meta.shape.n_items, item)?;
    Ok(Recommendation::of(
        version,
        |i| m.item_token(i),
        &top,
        &scores,
    ))
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
        if let Served::Seq(m) = &served.loaded {
            return recommend_next(served.version, m, req);
        }
        let m = served.topk()?;
        one_source(req)?;
        let n = m.meta.shape.n_items;
        let item = |v: &Value, field: String| -> Result<u32, ServeError> {
            let t = token(v, &field)?;
            m.item_id(&t)
                .ok_or_else(|| ServeError::invalid(field, format!("unknown item `{t}`")))
        };
        let mut scores = vec![0f32; n];
        let seen: Vec<u32> = match (&req.user, &req.history) {
            (Some(u), _) => {
                let t = token(u, "user")?;
                let id = m.user_id(&t).ok_or_else(|| unknown_user(&t))?;
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
            (None, None) => return Err(no_source()),
        };
        let top = best_items(req, &scores, &[], seen, n, item)?;
        Ok(Recommendation::of(
            served.version,
            |i| m.item_token(i),
            &top,
            &scores,
        ))
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
        Ok(Recommendation::of(
            served.version,
            |i| m.item_token(i),
            &top,
            &scores,
        ))
    }

    /// Whether the served model has item vectors (`similar_items`).
    pub fn has_item_vectors(&self) -> bool {
        self.model()
            .topk()
            .is_ok_and(|m| m.model.item_vectors().is_some())
    }
}
