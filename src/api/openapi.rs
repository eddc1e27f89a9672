//! The OpenAPI document served at `/openapi.json`, generated: its paths come from the
//! `#[utoipa::path]` annotations of the handlers the router registers (one `routes!` list
//! builds both), its schemas from the types the handlers answer with. This module owns the
//! rest — title, server, the two ways to authenticate, the shared 401 and 503.

use std::sync::LazyLock;

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::bodies::{Accepted, ErrorBody, Unauthorized, Unavailable};

/// Name of the `Authorization: Bearer` scheme in the document.
pub const BEARER: &str = "bearer";
/// Name of the admin panel's `authToken` cookie scheme in the document.
pub const COOKIE: &str = "cookie";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vertex-backup",
        description = "REST API of the vertex-backup daemon: the Vertex AR admin panel's /backups endpoints, health and Prometheus metrics. Errors are {\"detail\": \"...\"}.",
    ),
    servers((url = "http://127.0.0.1:8787")),
    // Either scheme is enough: two requirements, not one requiring both.
    security(("bearer" = []), ("cookie" = [])),
    // Accepted is named by JobAnswers, which (unlike a body = …) does not register it.
    components(schemas(ErrorBody, Accepted), responses(Unauthorized, Unavailable)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("authToken"))),
        );
    }
}

/// The document as JSON, built once from the same route list the router serves.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let (_, doc) = super::routes().split_for_parts();
        // Serializing a document of plain strings and numbers cannot fail; if it ever
        // did, an empty object is still valid JSON and the fuzzing script would say so.
        doc.to_pretty_json().unwrap_or_else(|_| "{}".into())
    });
    &DOCUMENT
}
