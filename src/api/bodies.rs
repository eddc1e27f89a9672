//! What the API answers with: one type per response body. The handlers serialize these
//! and the OpenAPI document describes them from the same definitions, so a field added to
//! an answer is a field added to the document.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, ToResponse, ToSchema};

use crate::catalog::{BackupMetadata, ListRow};
use crate::engine::restore::RestoreReport;
use crate::kind::BackupKind;
use crate::retention::RetentionPlan;

/// Every error, FastAPI-style as the admin panel expects. Answers of a job that waited
/// also carry its `job_id`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub detail: String,
}

/// A JSON response whose body is the named schema.
fn json_response(description: &str, schema: &str) -> Response {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build()
}

/// The 401 every authenticated route can answer, one component referring to `Error`.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        let error = <ErrorBody as ToSchema>::name();
        let response = json_response("Missing or wrong token", &error);
        ("Unauthorized", response.into())
    }
}

/// The 503 every authenticated route can answer, one component referring to `Error`.
pub struct Unavailable;

impl<'r> ToResponse<'r> for Unavailable {
    fn response() -> (&'r str, RefOr<Response>) {
        let error = <ErrorBody as ToSchema>::name();
        let response = json_response(
            "The request took too long, or the reloaded configuration has no usable API token",
            &error,
        );
        ("Unavailable", response.into())
    }
}

/// What the job endpoints (create, restore, rotate) answer besides their own 200.
pub struct JobAnswers;

impl IntoResponses for JobAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let error = <ErrorBody as ToSchema>::name();
        let accepted = <Accepted as ToSchema>::name();
        let unauthorized = RefOr::Ref(Ref::from_response_name(Unauthorized::response().0));
        [
            (
                "202",
                json_response("Queued (wait=false): poll status_url", &accepted).into(),
            ),
            ("400", json_response("Bad input", &error).into()),
            ("401", unauthorized),
            (
                "403",
                json_response(
                    "Cross-site: authenticated by the authToken cookie, but Origin or Sec-Fetch-Site names another site",
                    &error,
                )
                .into(),
            ),
            (
                "408",
                json_response("The request body did not arrive in time", &error).into(),
            ),
            (
                "413",
                json_response("The request body is larger than 64 KiB", &error).into(),
            ),
            (
                "415",
                json_response("The request body is not JSON (Content-Type: application/json)", &error).into(),
            ),
            (
                "409",
                json_response("The same job is already queued or running", &error).into(),
            ),
            (
                "500",
                json_response("The job failed; detail names the failing step", &error).into(),
            ),
            (
                "503",
                json_response(
                    "The daemon is shutting down, or the reloaded configuration has no usable API token",
                    &error,
                )
                .into(),
            ),
        ]
        .into_iter()
        .map(|(code, response)| (code.to_string(), response))
        .collect()
    }
}

/// A job queued with `?wait=false`: poll `status_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub job_id: u64,
    /// Always `queued`.
    pub state: &'static str,
    /// `/backups/jobs/{job_id}`.
    pub status_url: String,
}

/// A backup that landed (`POST /backups/create`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Created<'a> {
    pub success: bool,
    pub message: &'static str,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    #[schema(value_type = String)]
    pub backup_path: &'a std::path::Path,
    /// The metadata written beside the backup (for a full backup: its manifest).
    pub backup: &'a BackupMetadata,
    /// A full backup's parts, each with its own metadata; empty otherwise.
    pub parts: Vec<&'a BackupMetadata>,
    pub warnings: Vec<String>,
    pub job_id: u64,
}

/// A restore that finished (`POST /backups/restore`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Restored<'a> {
    pub success: bool,
    pub message: &'static str,
    /// What was restored, the safety copy taken first, and the checks run.
    #[schema(value_type = Object)]
    pub restore: &'a RestoreReport,
    pub job_id: u64,
}

/// A rotation that finished (`POST /backups/rotate`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated<'a> {
    pub success: bool,
    pub removed: usize,
    pub kept: usize,
    pub freed_bytes: u64,
    /// The retention plan applied: what was kept and deleted, and why.
    #[schema(value_type = Object)]
    pub plan: &'a RetentionPlan,
    /// What repacking the snapshot store did after the deletions (snapshot stores only):
    /// used and unused bytes, packs rewritten, bytes reclaimed, backups rewritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub repack: Option<&'a crate::engine::repack::RepackReport>,
    pub job_id: u64,
}

/// `GET /backups/list`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listed<'a> {
    /// The filter applied: `all` or a backup type.
    pub backup_type: String,
    pub count: usize,
    /// Newest first.
    pub backups: Vec<ListRow<'a>>,
}

/// `GET /health`: `ok` with no reasons, or `unhealthy` with them.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, `degraded` (an offsite target is stale; HTTP 200) or `unhealthy` (HTTP 503).
    pub status: &'static str,
    /// Why the daemon is unhealthy or degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}
