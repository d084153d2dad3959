//! The HTTP API (axum): typed handlers over the [`Engine`], errors as values mapped to 4xx/5xx
//! JSON bodies that name the field, Prometheus metrics, an OpenAPI document, and the MCP tools
//! over streamable HTTP at `/mcp`.

use crate::engine::{Engine, Instance, ModelInfo, Predictions, RankedCandidate, Ranking};
use crate::error::ServeError;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Bearer token for `/v1/admin/*`; the admin routes exist only when it is set.
    pub admin_token: Option<Arc<str>>,
    pub body_limit: usize,
}

// ---- request and response bodies -------------------------------------------------------

/// Instances to score; each is an object of field name → value (string, number, or an array
/// for sequence fields). Missing fields and unseen values are treated as in training.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<Instance>,
}

/// Candidates to rank for one context (user and context fields shared by all candidates;
/// a candidate's own fields take precedence).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Instance,
    #[schema(value_type = Vec<Object>)]
    pub candidates: Vec<Instance>,
    /// Return only the best `top_k` (default: all, sorted).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// Which checkpoint to load; the one the server started with when absent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// The request field the error is about (JSON path), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelInfo>,
}

// ---- errors ----------------------------------------------------------------------------

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::Invalid { .. } | ServeError::Load { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ServeError::Malformed(_) => StatusCode::BAD_REQUEST,
            ServeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let field = match &self {
            ServeError::Invalid { field, .. } if !field.is_empty() => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            field,
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        resp
    }
}

/// Parses a JSON body, naming the path of a value of the wrong type.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ServeError::Malformed(format!("malformed JSON: {inner}"))
        } else {
            // serde says "missing field `x`" or "invalid type …": keep its words, add where
            let field = if path == "." { String::new() } else { path };
            ServeError::Invalid {
                field,
                msg: inner.to_string(),
            }
        }
    })?;
    de.end()
        .map_err(|e| ServeError::Malformed(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// A JSON body parsed with [`parse_json`], with the body limit reported as 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ServeError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ServeError::TooLarge { limit }
            } else {
                ServeError::Malformed(e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

#[derive(Clone, Copy)]
struct BodyLimit(usize);

// ---- handlers --------------------------------------------------------------------------

/// Click probabilities for a list of instances.
#[utoipa::path(post, path = "/v1/predict", request_body = PredictRequest,
    responses((status = 200, body = Predictions), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn predict(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<Predictions>, ServeError> {
    let _ticket = app.engine.begin();
    let JsonBody(body) = JsonBody::<PredictRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.predict(&body.instances).await?))
}

/// Candidates sorted by click probability for one context.
#[utoipa::path(post, path = "/v1/rank", request_body = RankRequest,
    responses((status = 200, body = Ranking), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn rank(State(app): State<AppState>, req: Request) -> Result<Json<Ranking>, ServeError> {
    let _ticket = app.engine.begin();
    let JsonBody(body) = JsonBody::<RankRequest>::from_request(req, &()).await?;
    let ranking = app
        .engine
        .rank(&body.context, &body.candidates, body.top_k)
        .await?;
    Ok(Json(ranking))
}

/// The model being served.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelsResponse)))]
async fn models(State(app): State<AppState>) -> Json<ModelsResponse> {
    Json(ModelsResponse {
        models: vec![app.engine.info()],
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: a model is loaded and the scoring thread is running.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
async fn readyz(State(app): State<AppState>) -> (StatusCode, &'static str) {
    if app.engine.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "scoring thread stopped")
    }
}

/// Prometheus metrics, text exposition format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "metrics")))]
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.engine.metrics.render(),
    )
}

/// Loads a checkpoint and swaps it in; requests in flight finish on the old model. A broken
/// checkpoint is refused (422) and the old model keeps serving.
#[utoipa::path(post, path = "/v1/admin/reload", request_body(content = ReloadRequest, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = ModelInfo), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn reload(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ModelInfo>, ServeError> {
    let expected = app.admin_token.as_deref().ok_or(ServeError::Unauthorized)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ServeError::Unauthorized);
    }
    let req: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        parse_json(&body)?
    };
    let info = app.engine.reload(req.model.map(Into::into)).await?;
    Ok(Json(info))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn track(
    State(app): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    req.extensions_mut().insert(BodyLimit(app.body_limit));
    let start = Instant::now();
    let resp = next.run(req).await;
    app.engine.metrics.observe_request(
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "recforge serving API", description = "Click-through-rate scoring and ranking with a trained recforge model. MCP tools are served at /mcp (streamable HTTP)."),
    paths(predict, rank, models, healthz, readyz, metrics, reload),
    components(schemas(RankedCandidate)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// The whole service: API, metrics, OpenAPI, and (when given) the MCP endpoint.
pub fn router(app: AppState, mcp: Option<Router>) -> Router {
    let mut r = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/rank", post(rank))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    if app.admin_token.is_some() {
        r = r.route("/v1/admin/reload", post(reload));
    }
    let mut r = r
        .route_layer(middleware::from_fn_with_state(app.clone(), track))
        .layer(DefaultBodyLimit::max(app.body_limit))
        .with_state(app);
    if let Some(mcp) = mcp {
        r = r.merge(mcp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (StatusCode, Option<String>) {
        match parse_json::<RankRequest>(body.as_bytes()) {
            Ok(_) => (StatusCode::OK, None),
            Err(e) => {
                let field = match &e {
                    ServeError::Invalid { field, .. } => Some(field.clone()),
                    _ => None,
                };
                (e.status(), field)
            }
        }
    }

    #[test]
    fn bodies_are_checked_and_errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"candidates": [{}], "top_k": 3}"#).0,
            StatusCode::OK
        );
        assert_eq!(
            field_of(r#"{"candidates": [{}], "top_k": "3"}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("top_k".into()))
        );
        assert_eq!(
            field_of(r#"{"candidates": [{}, 7]}"#),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("candidates[1]".into())
            )
        );
        assert_eq!(
            field_of(r#"{"context": {}}"#).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            field_of(r#"{"candidates": [{}]} trailing"#).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(field_of(r#"{"candidates": [{"#).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
