//! The REST API inside the daemon (docs/design.md §1): the seed's `/backups/*` endpoints for the
//! admin panel, `/health`, Prometheus `/metrics`, and `/openapi.json`. Long work (create,
//! restore, rotate) goes through the daemon's one queue. Auth (auth.rs) is the admin
//! panel's `authToken` cookie or `Authorization: Bearer`; request bodies are JSON, read in
//! full and bounded here; connections are bounded in serve.rs. Errors are FastAPI-style
//! `{"detail": "..."}` JSON.

mod auth;
mod bodies;
mod handlers;
mod jobs;
pub mod openapi;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::jobs::Queue;
use crate::status::{Health, Metrics};
pub use auth::api_token;
use auth::{LiveToken, require_auth};
pub use jobs::JobRegistry;

/// Largest request body accepted (the API takes small JSON objects only).
const BODY_LIMIT: usize = 64 * 1024;
/// How long a client may take to send a body once its request head is in: a half-sent
/// body must not hold a connection (and a descriptor) for ever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Non-job requests that take longer than this are answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
pub struct ApiContext {
    pub config: watch::Receiver<Arc<Config>>,
    pub queue: Queue,
    pub jobs: JobRegistry,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    token: LiveToken,
}

/// An error answered as `{"detail": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, m.into())
    }
}

/// Whether a `Content-Type` is JSON (`application/json` or `application/…+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Why a body was not read.
enum BodyRefused {
    TooLarge,
    Unreadable(axum::Error),
}

/// The whole body, refused as soon as it exceeds [`BODY_LIMIT`].
async fn collect_body(body: Body) -> Result<Bytes, BodyRefused> {
    let mut stream = body.into_data_stream();
    let mut collected = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyRefused::Unreadable)?;
        if collected.len() + chunk.len() > BODY_LIMIT {
            return Err(BodyRefused::TooLarge);
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.into())
}

/// Every request body read in full before a handler runs: at most [`BODY_LIMIT`] (413,
/// from `Content-Length` before reading when it says so), within [`BODY_READ_TIMEOUT`]
/// (408), and JSON (415) — the API takes nothing else, and a form another site posts
/// cannot be JSON without the browser asking first (CORS preflight).
async fn read_body(req: Request, next: Next) -> Response {
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
        )
        .into_response()
    };
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large();
    }
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, collect_body(body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyRefused::TooLarge)) => return too_large(),
        Ok(Err(BodyRefused::Unreadable(e))) => {
            return ApiError::bad_request(format!("the request body could not be read: {e}"))
                .into_response();
        }
        Err(_) => {
            return ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
            )
            .into_response();
        }
    };
    if !bytes.is_empty() && !is_json(&parts.headers) {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(bodies::ErrorBody { detail: self.1 })).into_response()
    }
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
        .layer(middleware::from_fn(read_body))
        .layer(middleware::from_fn_with_state(ctx.clone(), require_auth))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

/// Bind and serve until `shutdown`. Returns the bound address and the most connections
/// held at once, or why the API is not started (no token, address in use) — the daemon
/// keeps running either way.
pub async fn start(
    config: watch::Receiver<Arc<Config>>,
    queue: Queue,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, usize, tokio::task::JoinHandle<()>), String> {
    let listen = config.borrow().api.listen;
    let token = LiveToken::start(config.clone()).await?;
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
    let bound = serve::connection_bound();
    let task = tokio::spawn(serve::serve(listener, app, bound, shutdown));
    Ok((addr, bound, task))
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
}
