use crate::engine::Engine;
use crate::error::ServeError;
use crate::mcp::Tool;
use crate::recommend::SimilarItemsRequest;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// An item id the model knows (string or number).
    pub item: Value,
    /// How many items to return (default 10).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub top_k: Option<usize>,
}

pub struct SimilarItems;

impl Tool for SimilarItems {
    type Args = Args;
    const NAME: &'static str = "similar_items";
    const DESCRIPTION: &'static str = "The items most similar to an item (cosine of the served \
        model's item vectors), most similar first.";

    fn offered(engine: &Engine) -> bool {
        engine.has_item_vectors()
    }

    async fn call(engine: Arc<Engine>, args: Args) -> Result<Value, ServeError> {
        if args.top_k == Some(0) {
            return Err(ServeError::invalid("top_k", "must be at least 1"));
        }
        let r = engine.similar_items(&SimilarItemsRequest {
            item: args.item,
            top_k: args.top_k,
        })?;
        serde_json::to_value(r).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
