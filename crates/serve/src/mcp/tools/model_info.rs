use crate::engine::Engine;
use crate::error::ServeError;
use crate::mcp::Tool;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {}

pub struct ModelInfoTool;

impl Tool for ModelInfoTool {
    type Args = Args;
    const NAME: &'static str = "model_info";
    const DESCRIPTION: &'static str = "Describe the served model: type, version, input fields \
        (name, kind, vocabulary size), training metrics and checksum.";

    async fn call(engine: Arc<Engine>, _args: Args) -> Result<Value, ServeError> {
        serde_json::to_value(engine.info()).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
