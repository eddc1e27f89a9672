//! The REST API inside the daemon (SPEC §9): the seed's `/backups/*` endpoints for the
//! admin panel, `/health`, Prometheus `/metrics`, and `/openapi.json`. Long work (create,
//! restore, rotate) goes through the daemon's one queue. Auth is the admin panel's
//! `authToken` cookie or `Authorization: Bearer`, compared in constant time; errors are
//! FastAPI-style `{"detail": "..."}` JSON.

mod bodies;
mod handlers;
mod jobs;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::jobs::Queue;
use crate::status::{Health, Metrics};
pub use jobs::JobRegistry;

/// Largest request body accepted (the API takes small JSON objects only).
const BODY_LIMIT: usize = 64 * 1024;
/// Non-job requests that take longer than this are answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
pub struct ApiContext {
    pub config: watch::Receiver<Arc<Config>>,
    pub queue: Queue,
    pub jobs: JobRegistry,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    token: String,
}

/// An error answered as `{"detail": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, m.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(bodies::ErrorBody { detail: self.1 })).into_response()
    }
}

/// The token the API requires, from `[api] token`, `token_file` or the environment.
pub fn api_token(config: &Config) -> Result<String, String> {
    if let Some(t) = &config.api.token {
        return Ok(t.expose().trim().to_string()).and_then(non_empty);
    }
    if let Some(f) = &config.api.token_file {
        return std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read [api] token_file {}: {e}", f.display()))
            .map(|t| t.trim().to_string())
            .and_then(non_empty);
    }
    Err("no API token: set [api] token_file (or token, or $VERTEX_BACKUP_API_TOKEN), or [api] enabled = false".into())
}

fn non_empty(t: String) -> Result<String, String> {
    if t.len() < 16 {
        Err("the API token is shorter than 16 characters; use a long random one (e.g. `openssl rand -hex 32`)".into())
    } else {
        Ok(t)
    }
}

/// Compare without an early exit, so response time does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// The token a request carries: `Authorization: Bearer …` or the `authToken` cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == "authToken").then(|| v.trim().to_string())
        })
}

async fn require_auth(State(ctx): State<Arc<ApiContext>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public =
        path == "/health" || (path == "/metrics" && ctx.config.borrow().api.metrics_public);
    if !public {
        let ok = presented_token(req.headers())
            .is_some_and(|t| constant_time_eq(t.as_bytes(), ctx.token.as_bytes()));
        if !ok {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "not authenticated: send the API token as `Authorization: Bearer TOKEN` or the authToken cookie".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Bound the time of everything but the job endpoints (which wait for their job).
async fn limit_time(req: Request, next: Next) -> Response {
    let waits_for_job = req.method() == axum::http::Method::POST;
    if waits_for_job {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long".into(),
        )
        .into_response(),
    }
}

/// Every route with its handler: the router serves these and the OpenAPI document is
/// generated from them, so a route cannot be served undocumented.
fn routes() -> OpenApiRouter<Arc<ApiContext>> {
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(handlers::create))
        .routes(routes!(handlers::list))
        .routes(routes!(handlers::stats))
        .routes(routes!(handlers::restore))
        .routes(routes!(handlers::rotate))
        .routes(routes!(handlers::job))
        .routes(routes!(handlers::health))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::openapi))
}

pub fn router(ctx: Arc<ApiContext>) -> Router {
    let (routes, _document) = routes().split_for_parts();
    routes
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /openapi.json".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed for this endpoint; see /openapi.json".into(),
            )
        })
        .layer(middleware::from_fn(limit_time))
        .layer(middleware::from_fn_with_state(ctx.clone(), require_auth))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

/// Bind and serve until `shutdown`. Returns the bound address once listening, or why the
/// API is not started (no token, address in use) — the daemon keeps running either way.
pub async fn start(
    config: watch::Receiver<Arc<Config>>,
    queue: Queue,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let cfg = config.borrow().clone();
    let listen = cfg.api.listen;
    // `token_file` is read on the blocking pool, like every file the daemon reads.
    let token = tokio::task::spawn_blocking(move || api_token(&cfg))
        .await
        .map_err(|e| format!("reading the API token failed: {e}"))??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ctx = Arc::new(ApiContext {
        config,
        queue,
        jobs: JobRegistry::default(),
        health,
        metrics,
        token,
    });
    let app = router(ctx);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("the REST API stopped: {e}");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path) of every operation in an OpenAPI document, sorted.
    fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        documented
    }

    #[test]
    fn openapi_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(openapi::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let documented = operations(&doc);
        // What the router registered, from its own list.
        let routed = serde_json::to_value(routes().get_openapi()).unwrap();
        assert_eq!(documented, operations(&routed));
        let mut routes: Vec<(String, String)> = [
            ("post", "/backups/create"),
            ("get", "/backups/list"),
            ("get", "/backups/stats"),
            ("post", "/backups/restore"),
            ("post", "/backups/rotate"),
            ("get", "/backups/jobs/{id}"),
            ("get", "/health"),
            ("get", "/metrics"),
            ("get", "/openapi.json"),
        ]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn tokens_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "theme=dark; authToken=s3cret; x=y".parse().unwrap(),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("tok"));
    }
}
