//! The engine as MCP tools (rmcp), over stdio (`recforge mcp`) and streamable HTTP (`/mcp`).
//! A tool is one small file in `tools/`: an argument struct (its JSON Schema is derived) and
//! an async `call`; [`registry`] lists them.

pub mod http;
pub mod jsonrpc;
pub mod stdio;
pub mod tools;

use crate::engine::Engine;
use crate::error::ServeError;
use rmcp::handler::server::common::schema_for_type;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One MCP tool over the engine.
pub trait Tool: 'static {
    type Args: DeserializeOwned + JsonSchema + Send + 'static;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// Whether the served model supports the tool (it is listed only then).
    fn offered(_engine: &Engine) -> bool {
        true
    }
    fn call(
        engine: Arc<Engine>,
        args: Self::Args,
    ) -> impl Future<Output = Result<Value, ServeError>> + Send;
}

type BoxedCall = Box<
    dyn Fn(
            Arc<Engine>,
            JsonObject,
        ) -> Pin<Box<dyn Future<Output = Result<Value, ServeError>> + Send>>
        + Send
        + Sync,
>;

struct Entry {
    def: rmcp::model::Tool,
    offered: fn(&Engine) -> bool,
    call: BoxedCall,
}

/// The tools a server offers, by name.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    pub fn with<T: Tool>(mut self) -> Self {
        let call: BoxedCall = Box::new(|engine, args| {
            Box::pin(async move {
                let args: T::Args = crate::http::parse_json(
                    &serde_json::to_vec(&args).map_err(|e| ServeError::Internal(e.to_string()))?,
                )?;
                T::call(engine, args).await
            })
        });
        self.entries.push(Entry {
            def: rmcp::model::Tool::new(T::NAME, T::DESCRIPTION, schema_for_type::<T::Args>()),
            offered: T::offered,
            call,
        });
        self
    }

    /// Every tool, whatever the model.
    pub fn definitions(&self) -> Vec<rmcp::model::Tool> {
        self.entries.iter().map(|e| e.def.clone()).collect()
    }

    /// The tools the served model supports.
    pub fn offered(&self, engine: &Engine) -> Vec<rmcp::model::Tool> {
        self.entries
            .iter()
            .filter(|e| (e.offered)(engine))
            .map(|e| e.def.clone())
            .collect()
    }

    fn get(&self, name: &str, engine: &Engine) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.def.name == name && (e.offered)(engine))
    }
}

/// Every tool recforge serves.
pub fn registry() -> Registry {
    Registry::default()
        .with::<tools::predict_ctr::PredictCtr>()
        .with::<tools::rank_candidates::RankCandidates>()
        .with::<tools::model_info::ModelInfoTool>()
        .with::<tools::recommend_items::RecommendItems>()
        .with::<tools::similar_items::SimilarItems>()
        .with::<tools::diagnose_student::DiagnoseStudent>()
}

#[derive(Clone)]
pub struct McpServer {
    engine: Arc<Engine>,
    tools: Arc<Registry>,
}

impl McpServer {
    pub fn new(engine: Arc<Engine>) -> Self {
        McpServer {
            engine,
            tools: Arc::new(registry()),
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("recforge", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Scoring with a trained recforge model: click-through rates (CTR models) or \
                 top-K recommendations (top-K models). Call model_info first to see the model's \
                 family and the fields an instance takes.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.tools.offered(&self.engine),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let metrics = &self.engine.metrics;
        let Some(entry) = self.tools.get(&request.name, &self.engine) else {
            metrics.tool_call("", "unknown_tool");
            return Err(McpError::invalid_params(
                format!("unknown tool `{}` (for the served model)", request.name),
                None,
            ));
        };
        let args = request.arguments.unwrap_or_default();
        // A bad argument is the caller's to read and fix: a tool error, not a protocol error.
        let result = (entry.call)(self.engine.clone(), args).await;
        metrics.tool_call(&entry.def.name, if result.is_ok() { "ok" } else { "error" });
        Ok(match result {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        }
        .into())
    }
}
