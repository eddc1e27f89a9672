//! Running one job with the engine (blocking; called on the blocking pool) and turning its
//! result into events. The same code serves scheduled, catch-up and manual runs.

use chrono::{Local, SecondsFormat, Utc};

use super::live::{container_events, take_backup};
use super::queue::Work;
use crate::catalog::Outcome;
use crate::config::Config;
use crate::engine::backup::{BackupFailure, BackupReport, catalog_for, record_outcome};
use crate::engine::restore::{RestoreReport, apply, plan_restore};
use crate::engine::rotate::{RotateReport, rotate};
use crate::engine::verify::{Keys, Selection, VerifyReport, select, verify_entry};
use crate::engine::{Cancel, Silent};
use crate::error::Error;
use crate::events::{Event, EventSender, backup_event};
use crate::kind::JobName;
use crate::retention::RetentionPolicy;
use crate::schedule::next_runs;

pub enum JobOutcome {
    Backup(Box<Result<BackupReport, BackupFailure>>),
    Rotate(Result<RotateReport, Error>),
    Restore(Box<Result<RestoreReport, Error>>),
    Verify(Result<Vec<VerifyReport>, Error>),
    /// An upload job: per target, or why it could not start.
    Offsite(Result<Vec<crate::offsite::run::TargetUpload>, Error>),
    OffsiteVerify(Result<Vec<crate::offsite::run::TargetVerify>, Error>),
    /// The job panicked (a bug); the daemon carries on.
    Crashed(String),
}

impl JobOutcome {
    pub fn ok(&self) -> bool {
        match self {
            JobOutcome::Backup(r) => r.is_ok(),
            JobOutcome::Rotate(r) => r.is_ok(),
            JobOutcome::Restore(r) => r.is_ok(),
            JobOutcome::Verify(r) => r.as_ref().is_ok_and(|v| v.iter().all(|r| r.ok)),
            JobOutcome::Offsite(r) => r.as_ref().is_ok_and(|v| v.iter().all(|t| t.result.is_ok())),
            JobOutcome::OffsiteVerify(r) => r
                .as_ref()
                .is_ok_and(|v| v.iter().all(|t| t.result.as_ref().is_ok_and(|r| r.ok()))),
            JobOutcome::Crashed(_) => false,
        }
    }
}

pub fn run_job(config: &Config, work: &Work, cancel: &Cancel, events: &EventSender) -> JobOutcome {
    let job = match work {
        Work::Job(job) => *job,
        Work::Rotate { keep_last } => return rotate_job(config, *keep_last, events),
        Work::Restore { path, verify } => {
            return restore_job(config, path, *verify, cancel, events);
        }
    };
    events.send(Event::JobStarted { job });
    let next_run = || {
        next_runs(
            config.schedule_of(job),
            config.schedule.timezone,
            Utc::now(),
            1,
        )
        .first()
        .copied()
    };
    match job {
        JobName::Full | JobName::Database | JobName::Storage => {
            let kind = job.backup_kind().unwrap_or(crate::BackupKind::Full);
            let (result, containers) = take_backup(config, kind, &Silent, cancel.clone());
            events.send(backup_event(config, kind, &result, next_run()));
            for e in container_events(&format!("{kind} backup"), &containers) {
                events.send(e);
            }
            JobOutcome::Backup(Box::new(result))
        }
        JobName::Rotate => rotate_job(config, None, events),
        JobName::Verify => {
            let result = drill(config, cancel);
            match &result {
                Ok(reports) if reports.iter().all(|r| r.ok) => events.send(Event::VerifyPassed {
                    checked: reports.len(),
                }),
                Ok(reports) => events.send(Event::VerifyFailed {
                    failures: reports
                        .iter()
                        .filter(|r| !r.ok)
                        .map(|r| format!("{}: {}", r.name, r.failure().unwrap_or_default()))
                        .collect(),
                }),
                Err(e) => events.send(Event::VerifyFailed {
                    failures: vec![crate::error_chain(e)],
                }),
            }
            JobOutcome::Verify(result)
        }
        JobName::Offsite => {
            let result = crate::offsite::run::upload(config, None, cancel).map(|(runs, evs)| {
                evs.into_iter().for_each(|e| events.send(e));
                runs
            });
            JobOutcome::Offsite(result)
        }
        JobName::OffsiteVerify => {
            let result =
                crate::offsite::run::verify(config, None, None, cancel).map(|(runs, evs)| {
                    evs.into_iter().for_each(|e| events.send(e));
                    runs
                });
            JobOutcome::OffsiteVerify(result)
        }
    }
}

fn rotate_job(config: &Config, keep_last: Option<u32>, events: &EventSender) -> JobOutcome {
    let mut policy = RetentionPolicy::from(&config.retention);
    if let Some(n) = keep_last {
        policy.keep_last = n.max(1);
    }
    let result = rotate(config, &policy, false);
    match &result {
        Ok(r) => {
            let future: Vec<String> = r.plan.future_dated().map(|d| d.id.clone()).collect();
            if !future.is_empty() {
                events.send(Event::FutureDated { backups: future });
            }
            events.send(Event::RotationDone {
                deleted: r.plan.delete.len(),
                kept: r.plan.keep.len(),
                // Repacking gives back what the deleted snapshots shared with kept ones.
                freed: r.freed_bytes + r.repack.as_ref().map_or(0, |p| p.reclaimed_bytes),
            })
        }
        Err(e) => events.send(Event::RotationFailed {
            error: crate::error_chain(e),
        }),
    }
    JobOutcome::Rotate(result)
}

fn restore_job(
    config: &Config,
    path: &std::path::Path,
    verify: bool,
    cancel: &Cancel,
    events: &EventSender,
) -> JobOutcome {
    let (result, containers) = match crate::docker::for_job(config) {
        Ok(live) => {
            let result = plan_restore(&live.config, path, None, verify)
                .and_then(|plan| apply(&plan, &live.config, &Silent, cancel, live.app()));
            (result, live.finish())
        }
        Err(e) => (Err(e), Default::default()),
    };
    let backup = backup_name(path);
    events.send(match &result {
        Ok(report) => Event::RestoreDone {
            backup,
            restored: crate::events::RestoredPart::of(report),
            stopped: report.stopped.clone(),
        },
        Err(e) => Event::RestoreFailed {
            backup,
            error: crate::error_chain(e),
        },
    });
    for e in container_events("restore", &containers) {
        events.send(e);
    }
    JobOutcome::Restore(Box::new(result))
}

fn backup_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A job that panicked (a bug) is a failure like any other: its `backup.log` ERROR line,
/// its state record (for a backup, `last_failure` of its type) and its failure event,
/// which Telegram and the metrics see. The engine's own journaling never ran — the panic
/// unwound past it — so it is done here.
pub fn crashed(config: &Config, work: &Work, panic: &str, events: &EventSender) -> JobOutcome {
    let error = Error::Internal(format!("the job panicked: {panic}"));
    let chain = crate::error_chain(&error);
    let catalog = catalog_for(config);
    let failed = |key: &str, line: String| {
        let outcome = Outcome {
            step: Some("internal error".into()),
            error: Some(chain.clone()),
            ..Default::default()
        };
        catalog.journal(key, false, &line, outcome);
    };
    match work {
        Work::Job(job) => match job.backup_kind() {
            Some(kind) => {
                let result = Err(BackupFailure::new(kind, "internal error", error));
                record_outcome(&catalog, kind.as_str(), &result);
                let next = next_runs(
                    config.schedule_of(*job),
                    config.schedule.timezone,
                    Utc::now(),
                    1,
                );
                events.send(backup_event(config, kind, &result, next.first().copied()));
            }
            None if job.is_offsite() => {
                failed(job.as_str(), format!("{job}: failed: {chain}"));
            }
            None if *job == JobName::Rotate => {
                failed("rotate", format!("rotate: failed: {chain}"));
                events.send(Event::RotationFailed {
                    error: chain.clone(),
                });
            }
            // The drill journals nothing itself; its failure event is logged by LogSink.
            None => events.send(Event::VerifyFailed {
                failures: vec![chain.clone()],
            }),
        },
        Work::Rotate { .. } => {
            failed("rotate", format!("rotate: failed: {chain}"));
            events.send(Event::RotationFailed {
                error: chain.clone(),
            });
        }
        Work::Restore { path, .. } => {
            failed(
                "restore",
                format!("restore {}: failed: {chain}", path.display()),
            );
            events.send(Event::RestoreFailed {
                backup: backup_name(path),
                error: chain.clone(),
            });
        }
    }
    JobOutcome::Crashed(panic.to_string())
}

/// The restore drill: verify the newest backup of each type, remember the verdicts.
fn drill(config: &Config, cancel: &Cancel) -> Result<Vec<VerifyReport>, Error> {
    let catalog = catalog_for(config);
    let listing = catalog.list()?;
    // One record of the packs read for the whole drill: a pack the newest full and
    // storage snapshots share is read once.
    let packs = crate::engine::snapshot::check::PackRun::default();
    let keys = Keys {
        packs: Some(&packs),
        ..Keys::drill(config.identity.as_deref())
    };
    let mut reports: Vec<VerifyReport> = select(&listing, Selection::Latest)
        .into_iter()
        // On the production server (no identity) an encrypted backup is checked by its
        // stored bytes' checksum; on a restore-test host with an identity, in full.
        .map(|e| verify_entry(e, &listing, keys, &Silent, cancel))
        .collect();
    let at = Local::now().to_rfc3339_opts(SecondsFormat::Secs, false);
    let verdicts = reports
        .iter()
        .filter_map(|r| r.verdict(&at).map(|v| (r.id.clone(), v)));
    if let Err(e) = catalog.record_verdicts(verdicts) {
        tracing::warn!(
            "could not record verification verdicts: {}",
            crate::error_chain(&e)
        );
    }
    if config.replication.is_some() {
        reports.push(replica_drill(config));
    }
    Ok(reports)
}

/// The replicated database restored to its newest state in a private file, replayed
/// and checked by `integrity_check` as a restore would (no backup, so no verdict).
fn replica_drill(config: &Config) -> VerifyReport {
    use crate::engine::verify::Check;
    let store = crate::replication::store::ReplicaStore::new(
        &config.paths.backup_dir,
        config.backup.file_mode.0,
        config.backup.dir_mode.0,
    );
    let started = std::time::Instant::now();
    let replayed = crate::replication::point::prepare(
        &store,
        crate::replication::point::StreamSource::Local,
        None,
    );
    let (name, check, bytes_read) = match &replayed {
        Ok(f) => (
            format!(
                "replicated database as of {} (generation {})",
                f.restored.as_of.to_rfc3339(),
                f.restored.generation
            ),
            Check {
                name: "replay and integrity_check".into(),
                ok: true,
                detail: format!("{} transactions replayed", f.restored.transactions),
                not_checked: false,
            },
            std::fs::metadata(&f.path).map_or(0, |m| m.len()),
        ),
        Err(e) => (
            "replicated database".to_string(),
            Check {
                name: "replay and integrity_check".into(),
                ok: false,
                detail: crate::error_chain(e),
                not_checked: false,
            },
            0,
        ),
    };
    VerifyReport {
        id: "replication".into(),
        name,
        kind: crate::BackupKind::Database,
        path: store.root().to_path_buf(),
        ok: check.ok,
        checks: vec![check],
        bytes_read,
        duration_ms: started.elapsed().as_millis() as u64,
        fully_checked: true,
        checksum: String::new(),
    }
}
