//! The HTTP API (axum): typed handlers over the [`Engine`], errors as values mapped to 4xx/5xx
//! JSON bodies that name the field, Prometheus metrics, an OpenAPI document, and the MCP tools
//! over streamable HTTP at `/mcp`.

use crate::engine::{Engine, Instance, ModelInfo, Predictions, RankedCandidate, Ranking};
use crate::error::ServeError;
use crate::kt::{
    ConceptMastery, KtAnswer, KtDiagnoseRequest, KtDiagnosis, KtPredictRequest, KtPredictions,
    KtQuestion, KtRecommendRequest, KtRecommendation, KtScoredQuestion,
};
use crate::recommend::{RecommendRequest, Recommendation, ScoredItem, SimilarItemsRequest};
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
    #[schema(value_type = Vec<Object>, min_items = 1)]
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
    #[schema(value_type = Vec<Object>, min_items = 1)]
    pub candidates: Vec<Instance>,
    /// Return only the best `top_k` (default: all, sorted).
    #[serde(default, deserialize_with = "top_k_value")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub top_k: Option<usize>,
}

/// The largest `top_k` the document allows.
const TOP_K_MAX: f64 = 4_294_967_295.0;

/// `top_k` as JSON Schema reads an integer: any integral number (`3` or `3.0`) from 1 to
/// [`TOP_K_MAX`], as the document says.
pub(crate) fn top_k_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<usize>, D::Error> {
    use serde::de::Error;
    let Some(x) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    match x.as_f64() {
        Some(v) if v.fract() == 0.0 && (1.0..=TOP_K_MAX).contains(&v) => Ok(Some(v as usize)),
        _ => Err(D::Error::custom(format!(
            "top_k must be an integer from 1 to {TOP_K_MAX}, got {x}"
        ))),
    }
}

/// Which checkpoint to load. Without `model` (or without a body), the checkpoint being
/// served is read again from where it was loaded.
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
    responses((status = 200,
               description = "one click probability per instance, in order",
               body = Predictions),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "a value is unusable; `field` names it",
               body = ErrorBody),
              (status = 503,
               description = "the scoring queue is full: retry later",
               body = ErrorBody)))]
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
    responses((status = 200,
               description = "the best candidates, highest score first",
               body = Ranking),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "a value is unusable; `field` names it",
               body = ErrorBody),
              (status = 503,
               description = "the scoring queue is full: retry later",
               body = ErrorBody)))]
async fn rank(State(app): State<AppState>, req: Request) -> Result<Json<Ranking>, ServeError> {
    let _ticket = app.engine.begin();
    let JsonBody(body) = JsonBody::<RankRequest>::from_request(req, &()).await?;
    let ranking = app
        .engine
        .rank(&body.context, &body.candidates, body.top_k)
        .await?;
    Ok(Json(ranking))
}

/// The best items for a user the model knows, or for a history of items (top-K models).
#[utoipa::path(post, path = "/v1/recommend", request_body = RecommendRequest,
    responses((status = 200, description = "items, best first", body = Recommendation),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "an unknown user or item, or a CTR model served; `field` names it",
               body = ErrorBody)))]
async fn recommend(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<Recommendation>, ServeError> {
    let JsonBody(body) = JsonBody::<RecommendRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.recommend(&body)?))
}

/// The items nearest an item by the cosine of the model's item vectors (top-K models).
#[utoipa::path(post, path = "/v1/similar_items", request_body = SimilarItemsRequest,
    responses((status = 200, description = "items, most similar first", body = Recommendation),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "an unknown item, or a model without item vectors",
               body = ErrorBody)))]
async fn similar_items(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<Recommendation>, ServeError> {
    let JsonBody(body) = JsonBody::<SimilarItemsRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.similar_items(&body)?))
}

/// A student's probability of answering each question correctly (knowledge-tracing models).
#[utoipa::path(post, path = "/v1/kt/predict", request_body = KtPredictRequest,
    responses((status = 200, description = "one probability per question, in order",
               body = KtPredictions),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "an id beyond the model's, an empty history, or another family \
                   served; `field` names it",
               body = ErrorBody)))]
async fn kt_predict(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<KtPredictions>, ServeError> {
    let JsonBody(body) = JsonBody::<KtPredictRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.kt_predict(&body)?))
}

/// The questions whose predicted success is nearest a target (default 0.7): practice at a
/// set difficulty (knowledge-tracing models).
#[utoipa::path(post, path = "/v1/kt/recommend", request_body = KtRecommendRequest,
    responses((status = 200, description = "questions, nearest the target first",
               body = KtRecommendation),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "an id beyond the model's, a target outside [0, 1], or another \
                   family served; `field` names it",
               body = ErrorBody)))]
async fn kt_recommend(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<KtRecommendation>, ServeError> {
    let JsonBody(body) = JsonBody::<KtRecommendRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.kt_recommend(&body)?))
}

/// Per-concept mastery: the predicted success on a question of each concept (the MCP tool
/// `diagnose_student`).
#[utoipa::path(post, path = "/v1/kt/diagnose", request_body = KtDiagnoseRequest,
    responses((status = 200, description = "every concept's mastery", body = KtDiagnosis),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422,
               description = "an id beyond the model's, an empty history, or another family \
                   served; `field` names it",
               body = ErrorBody)))]
async fn kt_diagnose(
    State(app): State<AppState>,
    req: Request,
) -> Result<Json<KtDiagnosis>, ServeError> {
    let JsonBody(body) = JsonBody::<KtDiagnoseRequest>::from_request(req, &()).await?;
    Ok(Json(app.engine.kt_diagnose(&body)?))
}

/// The model being served.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, description = "the model being \
    served", body = ModelsResponse)))]
async fn models(State(app): State<AppState>) -> Json<ModelsResponse> {
    Json(ModelsResponse {
        models: vec![app.engine.info()],
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: a model is loaded and the scoring thread is running.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "ready", body = String, content_type = "text/plain"),
              (status = 503,
               description = "not ready",
               body = String, content_type = "text/plain")))]
async fn readyz(State(app): State<AppState>) -> (StatusCode, &'static str) {
    if app.engine.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "scoring thread stopped")
    }
}

/// Prometheus metrics: OpenMetrics text when the client accepts it (as Prometheus does),
/// else the classic text format (version 0.0.4), each under its own content type.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "metrics", content(
        (String = "application/openmetrics-text"), (String = "text/plain")))))]
async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let text = app.engine.metrics.render();
    if crate::metrics::wants_openmetrics(&headers) {
        (
            [(header::CONTENT_TYPE, crate::metrics::OPENMETRICS_TYPE)],
            text,
        )
    } else {
        (
            [(header::CONTENT_TYPE, crate::metrics::CLASSIC_TYPE)],
            crate::metrics::to_classic(&text),
        )
    }
}

/// Loads a checkpoint and swaps it in; requests in flight finish on the old model. A broken
/// checkpoint is refused (422) and the old model keeps serving.
#[utoipa::path(post, path = "/v1/admin/reload",
    request_body(content = ReloadRequest, description = "optional: without a body, the checkpoint \
        being served is read again"),
    security(("bearer" = [])),
    responses((status = 200, description = "the model now served", body = ModelInfo),
              (status = 400, description = "the body is not JSON", body = ErrorBody),
              (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
              (status = 413,
               description = "the body is larger than the server's limit",
               body = ErrorBody),
              (status = 422, description = "the checkpoint cannot be loaded or does not score; \
                  the old model keeps serving", body = ErrorBody)))]
async fn reload(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ModelInfo>, ServeError> {
    let expected = app.admin_token.as_deref().ok_or(ServeError::Unauthorized)?;
    if !bearer_matches(&headers, expected) {
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

/// Whether `Authorization` is `Bearer <token>` with exactly `token` (the scheme's case is
/// free, as RFC 9110 has it; the token is compared byte for byte, in constant time). HTTP/1
/// parsers drop whitespace around a header value (RFC 9110 §5.5), so what arrives here is
/// the value without it; anything else around or inside the token is refused.
pub(crate) fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let given = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
        _ => return false,
    };
    constant_time_eq(given, token.as_bytes())
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

/// utoipa marks a struct request body as required; the reload body is optional.
struct ReloadBodyOptional;

impl utoipa::Modify for ReloadBodyOptional {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let body = api
            .paths
            .paths
            .get_mut("/v1/admin/reload")
            .and_then(|p| p.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(utoipa::openapi::RefOr::T(body)) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "recforge serving API", description = "Click-through-rate scoring and ranking \
        (CTR models), top-K recommendation (top-K and sequential models) and knowledge tracing \
        (`/v1/kt/*`) with a trained recforge model. MCP tools are served at /mcp (streamable HTTP)."),
    paths(predict, rank, recommend, similar_items, kt_predict, kt_recommend, kt_diagnose, models,
        healthz, readyz, metrics, reload),
    components(schemas(RankedCandidate, ScoredItem, KtAnswer, KtQuestion, KtScoredQuestion,
        ConceptMastery)),
    modifiers(&BearerScheme, &ReloadBodyOptional)
)]
pub struct ApiDoc;

/// The whole service: API, metrics, OpenAPI, and (when given) the MCP endpoint.
pub fn router(app: AppState, mcp: Option<Router>) -> Router {
    let mut r = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/rank", post(rank))
        .route("/v1/recommend", post(recommend))
        .route("/v1/similar_items", post(similar_items))
        .route("/v1/kt/predict", post(kt_predict))
        .route("/v1/kt/recommend", post(kt_recommend))
        .route("/v1/kt/diagnose", post(kt_diagnose))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    if app.admin_token.is_some() {
        r = r.route("/v1/admin/reload", post(reload));
    }
    let mut r = r
        .layer(DefaultBodyLimit::max(app.body_limit))
        .with_state(app.clone());
    if let Some(mcp) = mcp {
        r = r.merge(mcp);
    }
    // outermost, so that `/mcp` and unmatched paths (404, as route `unmatched`) are counted
    r.layer(middleware::from_fn_with_state(app, track))
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
        // JSON Schema's integers: 3.0 is one; the documented maximum holds
        assert_eq!(
            field_of(r#"{"candidates": [{}], "top_k": 3.0}"#).0,
            StatusCode::OK
        );
        for bad in ["0", "2.5", "4294967296", "1e30"] {
            assert_eq!(
                field_of(&format!(r#"{{"candidates": [{{}}], "top_k": {bad}}}"#)),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("top_k".into())),
                "top_k {bad}"
            );
        }
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
    fn bearer_tokens_are_compared_exactly() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer_matches(&h, "s3cret")
        };
        assert!(with("Bearer s3cret"));
        assert!(with("bearer s3cret"));
        for wrong in [
            "Bearer s3cret ",
            "Bearer s3cret\t",
            "Bearer  s3cret",
            "Bearer s3cre",
            "Bearer s3cretx",
            "Basic s3cret",
            "Bearer",
            "s3cret",
        ] {
            assert!(!with(wrong), "{wrong:?} accepted");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }

    /// What openapi-spec-validator found in the served document: every response object needs a
    /// `description`, every `$ref` must resolve, every operation needs responses. (The
    /// complete check against the OpenAPI 3.1 schema runs in `bench/schemathesis.sh`.)
    #[test]
    fn the_openapi_document_is_valid() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let mut problems = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object();
                if responses.is_none_or(|r| r.is_empty()) {
                    problems.push(format!("{method} {path}: no responses"));
                }
                for (code, resp) in responses.into_iter().flatten() {
                    if !resp["description"].is_string() {
                        problems.push(format!("{method} {path} {code}: no description"));
                    }
                }
            }
        }
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
            if target.is_none() {
                problems.push(format!("dangling $ref {r}"));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
