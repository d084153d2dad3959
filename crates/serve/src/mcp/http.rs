//! The MCP tools over streamable HTTP at `/mcp`: rmcp's service, behind a guard that does
//! what rmcp 3.11 cannot be configured to do.
//!
//! * sessions are capped ([`CappedSessions`]); an `initialize` over the cap gets 503,
//! * the bearer token is required when so configured (401),
//! * a POST body is checked as JSON-RPC first ([`super::jsonrpc`]): malformed JSON is a
//!   `-32700` (400), not rmcp's 415, and an invalid request keeps its `id`,
//! * `DELETE` of a session answers 204, and 404 for a session that does not exist (rmcp
//!   answers 202 to both).
//!
//! Host and Origin are checked by rmcp itself (DNS-rebinding and cross-origin protection,
//! 403), configured in [`router`].

use super::jsonrpc::{check, Verdict, INVALID_PARAMS};
use crate::engine::Engine;
use crate::http::bearer_matches;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: &str = "mcp-session-id";

/// How `/mcp` is exposed.
#[derive(Clone, Debug)]
pub struct McpHttpOptions {
    /// Browser origins allowed besides loopback and the bound address (`scheme://host:port`,
    /// `:*` for any port).
    pub allowed_origins: Vec<String>,
    /// Most sessions open at once; an `initialize` beyond it gets 503.
    pub max_sessions: usize,
    /// A session unused for this long is closed.
    pub session_idle: Duration,
    /// Require `Authorization: Bearer <token>` on `/mcp` (the admin token).
    pub token: Option<Arc<str>>,
    /// Largest POST body (bytes).
    pub body_limit: usize,
}

impl Default for McpHttpOptions {
    fn default() -> Self {
        McpHttpOptions {
            allowed_origins: Vec::new(),
            max_sessions: 64,
            session_idle: Duration::from_secs(300),
            token: None,
            body_limit: 16 << 20,
        }
    }
}

/// Why a session could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SessionLimitError {
    #[error("too many MCP sessions open (at most {0})")]
    Full(usize),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// rmcp's in-memory session manager, with a cap on the sessions open at once. (A session's
/// worker closes its own entry when it ends, by DELETE or after `session_idle`.)
pub struct CappedSessions {
    inner: LocalSessionManager,
    max: usize,
}

impl CappedSessions {
    pub fn new(max: usize, idle: Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(idle);
        CappedSessions { inner, max }
    }

    pub async fn open(&self) -> usize {
        self.inner.sessions.read().await.len()
    }

    pub async fn is_full(&self) -> bool {
        self.open().await >= self.max
    }
}

impl SessionManager for CappedSessions {
    type Error = SessionLimitError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        // checked again here (the guard's check and this one are not atomic); rmcp answers
        // this error with a 500, the guard's with a 503
        if self.is_full().await {
            return Err(SessionLimitError::Full(self.max));
        }
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.inner.restore_session(id).await?)
    }
}

#[derive(Clone)]
struct Guard {
    sessions: Arc<CappedSessions>,
    token: Option<Arc<str>>,
    body_limit: usize,
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

fn json_reply(status: StatusCode, reply: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"))
}

async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(token) = &g.token {
        if !bearer_matches(req.headers(), token) {
            let mut resp = plain(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let session: Option<SessionId> = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_owned().into());
    match *req.method() {
        Method::DELETE => {
            let Some(id) = session else {
                return next.run(req).await;
            };
            if !g.sessions.has_session(&id).await.unwrap_or(false) {
                return plain(StatusCode::NOT_FOUND, "Not Found: Session not found");
            }
            let mut resp = next.run(req).await;
            if resp.status() == StatusCode::ACCEPTED {
                *resp.status_mut() = StatusCode::NO_CONTENT;
            }
            resp
        }
        Method::POST if is_json(&req) => {
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, g.body_limit).await {
                Ok(b) => b,
                Err(_) => {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body is larger than {} bytes", g.body_limit),
                    )
                }
            };
            let initialize = match check(&bytes) {
                Verdict::Forward => is_initialize(&bytes),
                // a request answered with an error: the answer is the response
                Verdict::Refuse(r) if r.code == INVALID_PARAMS => {
                    return json_reply(StatusCode::OK, &r.reply)
                }
                Verdict::Refuse(r) => return json_reply(StatusCode::BAD_REQUEST, &r.reply),
                Verdict::Drop => return StatusCode::ACCEPTED.into_response(),
            };
            if session.is_none() && initialize && g.sessions.is_full().await {
                let mut resp = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "too many MCP sessions open (at most {}); close one or retry later",
                        g.sessions.max
                    ),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return resp;
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => next.run(req).await,
    }
}

fn is_initialize(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Method>(bytes)
        .ok()
        .and_then(|m| m.method)
        .is_some_and(|m| m == "initialize")
}

/// Origins a browser page on this machine or on the bound address has.
fn origins(bound: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .flat_map(|h| [format!("http://{h}:*"), format!("https://{h}:*")])
        .collect();
    if !bound.ip().is_unspecified() {
        // `SocketAddr` displays IPv6 in brackets, as an origin writes it
        v.push(format!("http://{bound}"));
        v.push(format!("https://{bound}"));
    }
    v.extend(extra.iter().cloned());
    v
}

/// The MCP tools over streamable HTTP, mounted at `/mcp`. Host headers are checked against
/// loopback names and the address the server is bound to (DNS-rebinding protection), and
/// Origin headers against loopback, the bound address and `opts.allowed_origins`.
pub fn router(
    engine: Arc<Engine>,
    bound: SocketAddr,
    opts: &McpHttpOptions,
    cancel: CancellationToken,
) -> axum::Router {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    hosts.push(bound.ip().to_string());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins(bound, &opts.allowed_origins))
        .enforce_origin_validation()
        .with_max_request_body_bytes(opts.body_limit)
        .with_cancellation_token(cancel);
    let sessions = Arc::new(CappedSessions::new(
        opts.max_sessions.max(1),
        opts.session_idle,
    ));
    let service = StreamableHttpService::new(
        move || Ok(super::McpServer::new(engine.clone())),
        sessions.clone(),
        config,
    );
    let g = Guard {
        sessions: sessions.clone(),
        token: opts.token.clone(),
        body_limit: opts.body_limit,
    };
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(g, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_loopback_and_the_bound_address() {
        let o = origins(
            "10.1.2.3:8080".parse().unwrap(),
            &["https://app.test:443".into()],
        );
        assert!(o.contains(&"http://localhost:*".to_string()));
        assert!(o.contains(&"http://10.1.2.3:8080".to_string()));
        assert!(o.contains(&"https://app.test:443".to_string()));
        assert!(!o.iter().any(|x| x == "null"));
        let o = origins("[::1]:9000".parse().unwrap(), &[]);
        assert!(o.contains(&"http://[::1]:9000".to_string()));
        let o = origins("0.0.0.0:80".parse().unwrap(), &[]);
        assert!(!o.iter().any(|x| x.contains("0.0.0.0")));
    }

    #[test]
    fn initialize_is_recognised() {
        assert!(is_initialize(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#
        ));
        assert!(!is_initialize(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        ));
    }
}
