use crate::engine::Engine;
use crate::error::ServeError;
use crate::mcp::Tool;
use crate::recommend::RecommendRequest;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A user id the model was trained with (string or number).
    #[serde(default)]
    pub user: Option<Value>,
    /// Or the items a (new) user has interacted with.
    #[serde(default)]
    pub history: Option<Vec<Value>>,
    /// How many items to return (default 10).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub top_k: Option<usize>,
    /// Items never to return.
    #[serde(default)]
    pub exclude: Vec<Value>,
    /// Leave out items already in the user's history (default true).
    #[serde(default)]
    pub exclude_seen: Option<bool>,
}

pub struct RecommendItems;

impl Tool for RecommendItems {
    type Args = Args;
    const NAME: &'static str = "recommend_items";
    const DESCRIPTION: &'static str = "Recommend the top-K items for a known user, or for a \
        history of items (oldest first), with the served top-K or sequential model; returns item ids \
        with scores, best first.";

    fn offered(engine: &Engine) -> bool {
        engine.model().recommends()
    }

    async fn call(engine: Arc<Engine>, args: Args) -> Result<Value, ServeError> {
        if args.top_k == Some(0) {
            return Err(ServeError::invalid("top_k", "must be at least 1"));
        }
        let r = engine.recommend(&RecommendRequest {
            user: args.user,
            history: args.history,
            top_k: args.top_k,
            exclude: args.exclude,
            exclude_seen: args.exclude_seen,
        })?;
        serde_json::to_value(r).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
