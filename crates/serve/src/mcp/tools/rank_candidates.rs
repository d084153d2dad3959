use crate::engine::{Engine, Instance};
use crate::error::ServeError;
use crate::mcp::Tool;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// User and context fields shared by every candidate.
    #[serde(default)]
    pub context: Instance,
    /// Candidate items: objects of item field → value; their fields override the context's.
    #[schemars(length(min = 1))]
    pub candidates: Vec<Instance>,
    /// How many of the best candidates to return (default: all).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub top_k: Option<usize>,
}

pub struct RankCandidates;

impl Tool for RankCandidates {
    type Args = Args;
    const NAME: &'static str = "rank_candidates";
    const DESCRIPTION: &'static str = "Rank candidate items for one user/context by predicted \
        click probability; returns candidate indexes with scores, best first.";

    fn offered(engine: &Engine) -> bool {
        engine.model().ctr().is_ok()
    }

    async fn call(engine: Arc<Engine>, args: Args) -> Result<Value, ServeError> {
        let r = engine
            .rank(&args.context, &args.candidates, args.top_k)
            .await?;
        serde_json::to_value(r).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
