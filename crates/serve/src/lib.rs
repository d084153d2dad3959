//! Serving trained models: an HTTP ranking service (`recforge serve`) and an MCP tool server
//! (`recforge mcp`, and `/mcp` on the HTTP port), both over one [`Engine`].

pub mod batcher;
pub mod engine;
pub mod error;
pub mod http;
pub mod mcp;
pub mod metrics;

pub use batcher::BatcherConfig;
pub use engine::{Engine, Limits};
pub use error::ServeError;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub admin_token: Option<String>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub body_limit: usize,
    /// Serve the MCP tools at `/mcp`.
    pub mcp: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            admin_token: None,
            body_limit: 16 << 20,
            mcp: true,
        }
    }
}

/// The MCP tools over streamable HTTP, mounted at `/mcp`. Host headers are checked against
/// loopback names and the address the server is bound to (DNS-rebinding protection).
fn mcp_router(engine: Arc<Engine>, bound: SocketAddr) -> axum::Router {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    hosts.push(bound.ip().to_string());
    let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
    let service = StreamableHttpService::new(
        move || Ok(mcp::McpServer::new(engine.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().nest_service("/mcp", service)
}

/// Builds the full router for an engine bound at `bound`.
pub fn app(engine: Arc<Engine>, opts: &ServeOptions, bound: SocketAddr) -> axum::Router {
    let state = http::AppState {
        engine: engine.clone(),
        admin_token: opts.admin_token.as_deref().map(Arc::from),
        body_limit: opts.body_limit,
    };
    let mcp = opts.mcp.then(|| mcp_router(engine, bound));
    http::router(state, mcp)
}

/// Serves on `listener` until `shutdown` resolves; requests in flight are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let router = app(engine, &opts, bound);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the MCP tools over standard input/output until the client disconnects.
pub async fn serve_mcp_stdio(engine: Arc<Engine>) -> Result<(), ServeError> {
    use rmcp::ServiceExt;
    let running = mcp::McpServer::new(engine)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Internal(format!("MCP initialization failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Internal(format!("MCP session failed: {e}")))?;
    Ok(())
}
