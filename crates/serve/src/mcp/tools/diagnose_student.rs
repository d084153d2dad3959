use crate::engine::Engine;
use crate::error::ServeError;
use crate::kt::{KtAnswer, KtDiagnoseRequest};
use crate::mcp::Tool;
use serde_json::Value;
use std::sync::Arc;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The student's answers, oldest first: each with its concept (skill) ids as in the
    /// training files, its problem id where the data has them, and whether it was correct.
    pub history: Vec<KtAnswer>,
}

pub struct DiagnoseStudent;

impl Tool for DiagnoseStudent {
    type Args = Args;
    const NAME: &'static str = "diagnose_student";
    const DESCRIPTION: &'static str = "Per-skill mastery of a student from their answers so far, \
        with the served knowledge-tracing model: for every concept, the predicted probability \
        of answering a question on it correctly next.";

    fn offered(engine: &Engine) -> bool {
        engine.model().traces_knowledge()
    }

    async fn call(engine: Arc<Engine>, args: Args) -> Result<Value, ServeError> {
        let d = engine.kt_diagnose(&KtDiagnoseRequest {
            history: args.history,
        })?;
        serde_json::to_value(d).map_err(|e| ServeError::Internal(e.to_string()))
    }
}
