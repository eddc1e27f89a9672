//! Who may call the API: the token of the live configuration (re-derived after every
//! reload, `token_file` read on the blocking pool), presented as `Authorization: Bearer`
//! or as the admin panel's `authToken` cookie and compared in constant time; and, for a
//! cookie, proof that a state-changing request comes from the API's own origin — a
//! browser attaches the cookie to a form another site posts, never a Bearer header.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, watch};

use super::{ApiContext, ApiError};
use crate::config::Config;

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

/// The token of the configuration the daemon runs with now. Every reload (SIGHUP or a
/// saved edit) publishes a new `Arc<Config>`, and the token is derived again from it the
/// first time a request needs it: an edited token or `token_file` applies from the first
/// request after "configuration reloaded", and the old token stops working then.
pub struct LiveToken {
    config: watch::Receiver<Arc<Config>>,
    /// The configuration the token was derived from, and what came of it. A `Mutex`
    /// held across the re-derivation, so a burst after a reload reads the file once.
    derived: Mutex<Derived>,
}

/// A token derived from one configuration, or why that configuration has none.
struct Derived {
    from: Arc<Config>,
    token: Result<Arc<str>, String>,
}

impl LiveToken {
    /// The token of the current configuration, or why the API cannot start.
    pub async fn start(config: watch::Receiver<Arc<Config>>) -> Result<LiveToken, String> {
        let current = config.borrow().clone();
        let token = derive(current.clone()).await?;
        Ok(LiveToken {
            config,
            derived: Mutex::new(Derived {
                from: current,
                token: Ok(token),
            }),
        })
    }

    /// The token requests must present now; `Err` says why none is usable (a reload
    /// brought a token that is too short or a `token_file` that cannot be read): then
    /// every authenticated request is refused until a reload fixes it.
    async fn current(&self) -> Result<Arc<str>, String> {
        let live = self.config.borrow().clone();
        let mut derived = self.derived.lock().await;
        if !Arc::ptr_eq(&derived.from, &live) {
            let token = derive(live.clone()).await;
            match &token {
                Ok(_) => {
                    tracing::info!("REST API: the token of the reloaded configuration applies")
                }
                Err(why) => tracing::error!(
                    "REST API: the reloaded configuration has no usable token ({why}); authenticated requests are refused until it is fixed and reloaded"
                ),
            }
            *derived = Derived { from: live, token };
        }
        derived.token.clone()
    }
}

/// `api_token` on the blocking pool: `token_file` is a file read, never done on the
/// runtime's two threads.
async fn derive(config: Arc<Config>) -> Result<Arc<str>, String> {
    tokio::task::spawn_blocking(move || api_token(&config))
        .await
        .map_err(|e| format!("reading the API token failed: {e}"))?
        .map(Arc::from)
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

/// A token as a request carries it.
#[derive(Debug, PartialEq, Eq)]
struct Presented {
    token: String,
    /// From the `authToken` cookie, which a browser also sends with other sites' forms.
    by_cookie: bool,
}

/// The token a request carries: `Authorization: Bearer …` or the `authToken` cookie.
fn presented_token(headers: &HeaderMap) -> Option<Presented> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        let token = t.trim().to_string();
        return Some(Presented {
            token,
            by_cookie: false,
        });
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == "authToken").then(|| Presented {
                token: v.trim().to_string(),
                by_cookie: true,
            })
        })
}

/// Why a request that changes state cannot be trusted to come from the API's own pages,
/// or `None`. Browsers send `Sec-Fetch-Site` (modern ones) and `Origin` (on every POST);
/// a client that sends neither is not a browser, so no other site can be behind it.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    let origin = text(header::ORIGIN)?;
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let same = authority
        .zip(text(header::HOST))
        .is_some_and(|(a, host)| a.eq_ignore_ascii_case(host));
    (!same).then(|| format!("Origin: {origin}"))
}

/// Methods that only read: a cross-site request with them changes nothing.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(super) async fn require_auth(
    State(ctx): State<Arc<ApiContext>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let public =
        path == "/health" || (path == "/metrics" && ctx.config.borrow().api.metrics_public);
    if public {
        return next.run(req).await;
    }
    let token = match ctx.token.current().await {
        Ok(t) => t,
        Err(why) => {
            return ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the API has no usable token since the last reload: {why}; fix it and reload (SIGHUP)"),
            )
            .into_response();
        }
    };
    let Some(presented) = presented_token(req.headers())
        .filter(|p| constant_time_eq(p.token.as_bytes(), token.as_bytes()))
    else {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "not authenticated: send the API token as `Authorization: Bearer TOKEN` or the authToken cookie".into(),
        )
        .into_response();
    };
    if presented.by_cookie
        && changes_state(req.method())
        && let Some(why) = cross_site(req.headers())
    {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("cross-site request refused ({why}): with the authToken cookie, requests that change something must come from the API's own origin; other clients send `Authorization: Bearer TOKEN`"),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn tokens_from_header_or_cookie() {
        let token = |h: &HeaderMap| presented_token(h).map(|p| p.token);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "theme=dark; authToken=s3cret; x=y".parse().unwrap(),
        );
        assert_eq!(token(&h).as_deref(), Some("s3cret"));
        assert!(presented_token(&h).unwrap().by_cookie);
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(token(&h).as_deref(), Some("tok"));
        assert!(!presented_token(&h).unwrap().by_cookie);
    }

    #[test]
    fn same_origin_is_told_from_cross_site() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let host = ("host", "127.0.0.1:8787");
        assert_eq!(cross_site(&headers(&[host])), None, "no browser headers");
        assert_eq!(
            cross_site(&headers(&[host, ("origin", "http://127.0.0.1:8787")])),
            None
        );
        assert_eq!(
            cross_site(&headers(&[host, ("sec-fetch-site", "same-origin")])),
            None
        );
        for foreign in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:8788"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert!(
                cross_site(&headers(&[host, foreign])).is_some(),
                "{foreign:?}"
            );
        }
        assert!(cross_site(&headers(&[("origin", "http://127.0.0.1:8787")])).is_some());
    }
}
