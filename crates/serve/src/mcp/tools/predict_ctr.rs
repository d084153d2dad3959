use crate::engine::{Engine, Instance};
use crate::error::ServeError;
use crate::mcp::Tool;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Instances to score: objects of field name → value (see model_info for the fields).
    /// Missing fields and unseen values are handled as in training.
    #[schemars(length(min = 1))]
    pub instances: Vec<Instance>,
}

pub struct PredictCtr;

impl Tool for PredictCtr {
    type Args = Args;
    const NAME: &'static str = "predict_ctr";
    const DESCRIPTION: &'static str =
        "Predict click probabilities for a list of instances with the served CTR model.";

    fn offered(engine: &Engine) -> bool {
        engine.model().ctr().is_ok()
    }

    async fn call(engine: Arc<Engine>, args: Args) -> Result<Value, ServeError> {
        let p = engine.predict(&args.instances).await?;
        serde_json::to_value(p).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
