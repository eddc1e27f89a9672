//! What the API answers with: one type per response body. The handlers serialize these
//! and the OpenAPI document describes them from the same definitions, so a field added to
//! an answer is a field added to the document.

use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{ToResponse, ToSchema};

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

/// The 401 every authenticated route can answer, one component referring to `Error`.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        let error = Ref::from_schema_name(<ErrorBody as utoipa::ToSchema>::name());
        let response = ResponseBuilder::new()
            .description("Missing or wrong token")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(error)).build(),
            )
            .build();
        ("Unauthorized", response.into())
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
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// Why the daemon is unhealthy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}
