//! One handler per route. Inputs are checked here, so the engine only ever sees a known
//! backup inside the backup directory; jobs are submitted to the daemon's queue.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::bodies::{
    Accepted, Created, ErrorBody, HealthBody, JobAnswers, Listed, Restored, Rotated, Unauthorized,
    Unavailable,
};
use super::jobs::JobRecord;
use super::{ApiContext, ApiError};
use crate::catalog::{ListRow, Stats};
use crate::engine::backup::catalog_for;
use crate::engine::restore::resolve_backup;
use crate::jobs::{JobOutcome, Rejected, Trigger, Work};
use crate::kind::BackupKind;
use crate::kind::JobName;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait for the job's result (default). With false, answer 202 with a job id to poll.
    #[param(default = true)]
    wait: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    /// The backup type.
    // Checked by the handler (not by serde), so a wrong type gets a message naming the
    // right ones.
    #[serde(rename = "type")]
    #[schema(value_type = Option<BackupKind>, default = "full")]
    kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RestoreBody {
    /// A backup inside the backup directory: absolute, or relative like
    /// backups/database/db_backup_X.db
    // Empty or with a NUL it cannot be a path: checked_backup_path refuses those with 400.
    #[schema(min_length = 1, pattern = r"^[^\x00]+$")]
    backup_path: String,
    #[serde(default = "yes")]
    #[schema(default = true)]
    verify_checksum: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RotateQuery {
    /// Override keep_last for this run
    // Documented as what a u32 takes: utoipa's int32 format would stop at 2^31 - 1.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    max_backups: Option<u32>,
    /// Wait for the job's result (default). With false, answer 202 with a job id to poll.
    #[param(default = true)]
    wait: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(schema_with = backup_type_filter)]
    backup_type: Option<String>,
    /// Also list the safety copies restores set aside (`reason: "pre-restore"`); they are
    /// not backups, so they are left out by default.
    #[param(default = false)]
    safety_copies: Option<bool>,
}

/// `all` or one backup type, as `backup_type` takes it.
fn backup_type_filter() -> utoipa::openapi::Object {
    let names = std::iter::once("all").chain(BackupKind::ALL.map(BackupKind::as_str));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .default(Some("all".into()))
        .build()
}

/// A body the `Json` extractor refused: 415 if it is not declared JSON, 413 if too large
/// (the status axum gives those), 400 for JSON that does not parse or fit.
fn bad_json(e: JsonRejection) -> ApiError {
    let status = match e.status() {
        s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError(status, format!("invalid JSON body: {}", e.body_text()))
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
}

/// Queue `work`; wait for its outcome or answer 202 with a job id.
async fn run_work(ctx: &Arc<ApiContext>, work: Work, wait: bool) -> Result<Response, ApiError> {
    let key = work.key();
    let id = ctx.jobs.add(key);
    let rx = match ctx.queue.request(work, Trigger::Api) {
        Ok(rx) => rx,
        Err(Rejected::AlreadyQueued(k)) => {
            ctx.jobs.forget(id);
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("a {k} job is already queued or running; try again when it has finished"),
            ));
        }
        Err(Rejected::ShuttingDown) => {
            ctx.jobs.forget(id);
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is shutting down".into(),
            ));
        }
    };
    let ctx2 = ctx.clone();
    let finished = async move {
        let (status, body) = match rx.await {
            Ok(outcome) => outcome_json(&outcome, id),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": "the job was dropped: the daemon is shutting down"}),
            ),
        };
        let ok = status.is_success();
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_string);
        ctx2.jobs.finish(id, ok, ok.then(|| body.clone()), detail);
        (status, body)
    };
    // The outcome is recorded by a task of its own: a client that hangs up while
    // waiting drops this handler, and the job's state must still leave "queued".
    let recorder = tokio::spawn(finished);
    if wait {
        let (status, mut body) = recorder.await.unwrap_or_else(|e| {
            let why = if e.is_panic() {
                "recording it failed unexpectedly; see the daemon's log"
            } else {
                "the daemon is shutting down"
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("the job's outcome was lost: {why}")}),
            )
        });
        if let Some(o) = body.as_object_mut() {
            o.insert("job_id".into(), json!(id));
        }
        Ok((status, Json(body)).into_response())
    } else {
        let accepted = Accepted {
            job_id: id,
            state: "queued",
            status_url: format!("/backups/jobs/{id}"),
        };
        Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
    }
}

/// A job's outcome as HTTP: 200 with the result, or 500 naming the failing step.
fn outcome_json(outcome: &JobOutcome, job_id: u64) -> (StatusCode, Value) {
    let fail = |detail: String| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!(ErrorBody { detail }),
        )
    };
    match outcome {
        JobOutcome::Backup(r) => match r.as_ref() {
            Ok(report) => succeeded(Created {
                success: true,
                message: "Backup completed successfully",
                kind: report.kind,
                backup_path: &report.path,
                backup: &report.metadata,
                parts: report.parts.iter().map(|p| &p.metadata).collect(),
                warnings: report.warnings(),
                job_id,
            }),
            Err(f) => fail(format!("{f}: {}", crate::error_chain(&f.error))),
        },
        JobOutcome::Restore(r) => match r.as_ref() {
            Ok(report) => succeeded(Restored {
                success: true,
                message: "Restore completed successfully",
                restore: report,
                job_id,
            }),
            Err(e) => fail(format!("restore failed: {}", crate::error_chain(e))),
        },
        JobOutcome::Rotate(r) => match r {
            Ok(report) => succeeded(Rotated {
                success: true,
                removed: report.plan.delete.len(),
                kept: report.plan.keep.len(),
                freed_bytes: report.freed_bytes,
                plan: &report.plan,
                repack: report.repack.as_ref(),
                job_id,
            }),
            Err(e) => fail(format!("rotation failed: {}", crate::error_chain(e))),
        },
        JobOutcome::Verify(_) | JobOutcome::Offsite(_) | JobOutcome::OffsiteVerify(_) => {
            fail("unexpected job".into())
        }
        JobOutcome::Crashed(why) => fail(format!("the job crashed: {why}")),
    }
}

/// 200 with `body`; 500 in the (unexpected) case it does not serialize.
fn succeeded(body: impl Serialize) -> (StatusCode, Value) {
    match serde_json::to_value(body) {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!(ErrorBody {
                detail: format!("the job succeeded but its report could not be encoded: {e}")
            }),
        ),
    }
}

/// Take a backup now (through the daemon's queue)
#[utoipa::path(
    post,
    path = "/backups/create",
    operation_id = "createBackup",
    params(WaitQuery),
    request_body = CreateBody,
    responses(
        (status = 200, description = "The backup landed", body = Created),
        JobAnswers,
    ),
)]
pub async fn create(
    State(ctx): State<Arc<ApiContext>>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let Json(body) = body.map_err(bad_json)?;
    let name = body.kind.as_deref().unwrap_or(BackupKind::Full.as_str());
    let job = BackupKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .map(JobName::creating)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown backup type `{name}`; use full, database or storage"
            ))
        })?;
    run_work(&ctx, Work::Job(job), q.wait.unwrap_or(true)).await
}

/// Backups, newest first
#[utoipa::path(
    get,
    path = "/backups/list",
    operation_id = "listBackups",
    params(ListQuery),
    responses(
        (status = 200, description = "The backups, with where they are and whether they are complete", body = Listed),
        (status = 400, description = "Unknown backup_type", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
        (status = 500, description = "The backup directory could not be listed", body = ErrorBody),
    ),
)]
pub async fn list(
    State(ctx): State<Arc<ApiContext>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let wanted = match q.backup_type.as_deref().unwrap_or("all") {
        "all" => None,
        t => Some(t.parse::<BackupKind>().map_err(ApiError::bad_request)?),
    };
    let with_safety_copies = q.safety_copies.unwrap_or(false);
    let cfg = ctx.config.borrow().clone();
    let listing = tokio::task::spawn_blocking(move || catalog_for(&cfg).list())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("listing failed: {}", crate::error_chain(&e)),
            )
        })?;
    let rows: Vec<ListRow> = listing
        .backups
        .iter()
        .filter(|b| wanted.is_none_or(|k| b.kind == k))
        .filter(|b| with_safety_copies || !b.metadata.is_pre_restore())
        .map(|b| ListRow::new(b, &listing))
        .collect();
    Ok(Json(Listed {
        backup_type: q.backup_type.unwrap_or_else(|| "all".into()),
        count: rows.len(),
        backups: rows,
    })
    .into_response())
}

/// Totals per type, newest/oldest, last failure, free space
#[utoipa::path(
    get,
    path = "/backups/stats",
    operation_id = "backupStats",
    responses(
        (status = 200, description = "Statistics (total_backups and total_size_mb as the seed's client reads them)", body = Stats),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
        (status = 500, description = "The backup directory could not be listed", body = ErrorBody),
    ),
)]
pub async fn stats(State(ctx): State<Arc<ApiContext>>) -> Result<Json<Stats>, ApiError> {
    let cfg = ctx.config.borrow().clone();
    tokio::task::spawn_blocking(move || {
        let catalog = catalog_for(&cfg);
        let listing = catalog.list()?;
        let free = crate::sys::available_space(catalog.root()).ok();
        Ok::<_, crate::Error>(Stats::compute(
            catalog.root(),
            &listing,
            &catalog.load_state(),
            &catalog.load_verdicts(),
            free,
        ))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(Json)
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stats failed: {}", crate::error_chain(&e)),
        )
    })
}

/// `backup_path` resolved (symlinks too); it must be a known backup inside the backup
/// directory. Relative paths are taken as the seed's (`backups/…`, relative to the app
/// directory holding backup_dir) or relative to backup_dir itself.
fn checked_backup_path(cfg: &crate::Config, raw: &str) -> Result<PathBuf, ApiError> {
    if raw.is_empty() || raw.contains('\0') {
        return Err(ApiError::bad_request("backup_path is empty or invalid"));
    }
    let root = std::fs::canonicalize(&cfg.paths.backup_dir).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the backup directory is not accessible: {e}"),
        )
    })?;
    let given = Path::new(raw);
    let candidates: Vec<PathBuf> = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        let base = cfg
            .paths
            .backup_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        vec![base.join(given), cfg.paths.backup_dir.join(given)]
    };
    let outside =
        || ApiError::bad_request("backup_path must name a backup inside the backup directory");
    let mut resolved = None;
    for c in &candidates {
        if let Ok(p) = std::fs::canonicalize(c) {
            resolved = Some(p);
            break;
        }
    }
    let Some(path) = resolved else {
        // Refuse to say whether a path outside exists.
        let inside = candidates.iter().any(|c| {
            c.starts_with(&cfg.paths.backup_dir)
                && !c.components().any(|x| x == std::path::Component::ParentDir)
        });
        return Err(if inside {
            ApiError(StatusCode::NOT_FOUND, "no such backup".into())
        } else {
            outside()
        });
    };
    if !path.starts_with(&root) {
        return Err(outside());
    }
    match resolve_backup(cfg, &path) {
        Ok((_, _, entry)) if entry.is_complete() => Ok(entry.data_path),
        Ok((_, _, entry)) => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "this backup is incomplete: {}",
                entry.problem.unwrap_or_default()
            ),
        )),
        Err(_) => Err(ApiError::bad_request(
            "backup_path is not a backup (a .db, .tar.* or full_backup_*.json listed by /backups/list)",
        )),
    }
}

/// Restore a backup in place (verified first; a safety copy is kept)
#[utoipa::path(
    post,
    path = "/backups/restore",
    operation_id = "restoreBackup",
    params(WaitQuery),
    request_body = RestoreBody,
    responses(
        (status = 200, description = "Restored", body = Restored),
        // After JobAnswers, so this 409 replaces its shorter one.
        JobAnswers,
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 409, description = "The same job is already queued or running, or the backup is incomplete", body = ErrorBody),
    ),
)]
pub async fn restore(
    State(ctx): State<Arc<ApiContext>>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<RestoreBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    let Json(body) = body.map_err(bad_json)?;
    let cfg = ctx.config.borrow().clone();
    let raw = body.backup_path.clone();
    let path = tokio::task::spawn_blocking(move || checked_backup_path(&cfg, &raw))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    run_work(
        &ctx,
        Work::Restore {
            path,
            verify: body.verify_checksum,
        },
        q.wait.unwrap_or(true),
    )
    .await
}

/// Apply the retention policy
#[utoipa::path(
    post,
    path = "/backups/rotate",
    operation_id = "rotateBackups",
    params(RotateQuery),
    responses(
        (status = 200, description = "Rotated", body = Rotated),
        JobAnswers,
    ),
)]
pub async fn rotate(
    State(ctx): State<Arc<ApiContext>>,
    query: Result<Query<RotateQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_query)?;
    if q.max_backups == Some(0) {
        return Err(ApiError::bad_request(
            "max_backups must be at least 1: the newest good backup is never deleted",
        ));
    }
    run_work(
        &ctx,
        Work::Rotate {
            keep_last: q.max_backups,
        },
        q.wait.unwrap_or(true),
    )
    .await
}

/// State of a job started through the API
#[utoipa::path(
    get,
    path = "/backups/jobs/{id}",
    operation_id = "getJob",
    params(("id" = u64, Path, description = "The job_id a POST answered with")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
        (status = 404, description = "Unknown job (only the last 200 are kept)", body = ErrorBody),
    ),
)]
pub async fn job(
    State(ctx): State<Arc<ApiContext>>,
    id: Result<UrlPath<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let UrlPath(id) = id.map_err(|_| ApiError::bad_request("the job id must be a number"))?;
    ctx.jobs
        .get(id)
        .map(|j| Json(j).into_response())
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no job {id} (only the last 200 are kept)"),
            )
        })
}

/// Liveness: scheduler running and nothing stale (no auth); degraded (still 200) when only an offsite target is stale
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    security(()),
    responses(
        (status = 200, description = "Healthy: status ok, or degraded (with reasons) when an offsite target has no recent complete copy", body = HealthBody),
        (status = 503, description = "Unhealthy: status unhealthy, with reasons", body = HealthBody),
    ),
)]
pub async fn health(State(ctx): State<Arc<ApiContext>>) -> Response {
    let mut problems = ctx.health.problems(Utc::now());
    let degraded = ctx.health.degraded();
    if problems.is_empty() {
        // A stale offsite target does not make the daemon unhealthy (a liveness probe
        // would restart a daemon that works), but it says so.
        let body = HealthBody {
            status: if degraded.is_empty() {
                "ok"
            } else {
                "degraded"
            },
            reasons: degraded,
        };
        (StatusCode::OK, Json(body)).into_response()
    } else {
        problems.extend(degraded);
        let unhealthy = HealthBody {
            status: "unhealthy",
            reasons: problems,
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(unhealthy)).into_response()
    }
}

/// Prometheus metrics (auth unless [api] metrics_public)
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
        (status = 500, description = "The metrics could not be gathered", body = ErrorBody),
    ),
)]
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Result<Response, ApiError> {
    let cfg = ctx.config.borrow().clone();
    let c = ctx.clone();
    let text = tokio::task::spawn_blocking(move || {
        let catalog = catalog_for(&cfg);
        let listing = catalog.list().unwrap_or_default();
        let free = crate::sys::available_space(catalog.root()).ok();
        let offsite_state = if cfg.offsite.is_empty() {
            crate::offsite::OffsiteState::default()
        } else {
            crate::offsite::OffsiteStore::new(&cfg.paths.backup_dir, cfg.backup.file_mode.0).load()
        };
        let offsite = crate::status::OffsiteView {
            targets: &cfg.offsite,
            state: &offsite_state,
        };
        c.metrics
            .render(&listing, &catalog.load_state(), &c.health, &offsite, free)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    responses(
        (status = 200, description = "OpenAPI 3 document", body = Object),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}
