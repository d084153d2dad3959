//! Serving trained models: an HTTP ranking service (`recforge serve`) and an MCP tool server
//! (`recforge mcp`, and `/mcp` on the HTTP port), both over one [`Engine`].

pub mod batcher;
pub mod engine;
pub mod error;
pub mod http;
pub mod kt;
pub mod mcp;
pub mod metrics;
pub mod recommend;

pub use batcher::BatcherConfig;
pub use engine::{Engine, Limits};
pub use error::ServeError;

pub mod conn;

pub use mcp::http::McpHttpOptions;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub admin_token: Option<String>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub body_limit: usize,
    /// Serve the MCP tools at `/mcp`.
    pub mcp: bool,
    /// How `/mcp` is exposed (its `token` and `body_limit` are set from the fields above).
    pub mcp_http: McpHttpOptions,
    /// Require the bearer token (`admin_token`) on `/mcp` as well.
    pub mcp_require_token: bool,
    /// Connection timeouts.
    pub timeouts: conn::Timeouts,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            admin_token: None,
            body_limit: 16 << 20,
            mcp: true,
            mcp_http: McpHttpOptions::default(),
            mcp_require_token: false,
            timeouts: conn::Timeouts::default(),
        }
    }
}

/// Builds the full router for an engine bound at `bound`.
pub fn app(engine: Arc<Engine>, opts: &ServeOptions, bound: SocketAddr) -> axum::Router {
    build(engine, opts, bound, CancellationToken::new())
}

/// The router; cancelling `cancel` ends the MCP sessions (and their event streams).
fn build(
    engine: Arc<Engine>,
    opts: &ServeOptions,
    bound: SocketAddr,
    cancel: CancellationToken,
) -> axum::Router {
    let token: Option<Arc<str>> = opts.admin_token.as_deref().map(Arc::from);
    let state = http::AppState {
        engine: engine.clone(),
        admin_token: token.clone(),
        body_limit: opts.body_limit,
    };
    let mcp_opts = McpHttpOptions {
        token: if opts.mcp_require_token { token } else { None },
        body_limit: opts.body_limit,
        ..opts.mcp_http.clone()
    };
    let mcp = opts
        .mcp
        .then(|| mcp::http::router(engine, bound, &mcp_opts, cancel));
    http::router(state, mcp)
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets the requests in
/// flight finish (at most `opts.timeouts.drain`), and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if opts.mcp_require_token && opts.admin_token.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "requiring the bearer token on /mcp needs an admin token",
        ));
    }
    let bound = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let router = build(engine, &opts, bound, cancel.clone());
    let shutdown = async move {
        shutdown.await;
        // ends the MCP event streams, which would otherwise hold their connections open
        cancel.cancel();
    };
    conn::serve_router(listener, router, opts.timeouts, shutdown).await
}

/// Serves the MCP tools over standard input/output until the client disconnects.
pub async fn serve_mcp_stdio(engine: Arc<Engine>) -> Result<(), ServeError> {
    mcp::stdio::serve_lines(engine, tokio::io::stdin(), tokio::io::stdout()).await
}
