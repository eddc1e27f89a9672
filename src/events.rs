//! One event type for everything worth telling an operator, carrying the facts; sinks
//! (the log now, Telegram and metrics later) consume the same events. Jobs never wait for
//! a sink: events go through a bounded queue drained by its own task, and a full queue
//! drops the event with a warning rather than hold a backup back.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::config::NotifyOn;
use crate::kind::{BackupKind, JobName};
use crate::units::{format_bytes, format_duration};

/// Free and total bytes of the backup filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSpace {
    pub free: u64,
    pub total: u64,
}

impl DiskSpace {
    pub fn measure(path: &std::path::Path) -> Option<DiskSpace> {
        Some(DiskSpace {
            free: crate::sys::available_space(path).ok()?,
            total: crate::sys::total_space(path).unwrap_or(0),
        })
    }
}

/// One part a restore put back: the database or the storage tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredPart {
    /// "database" or "storage".
    pub what: &'static str,
    pub target: String,
    /// The previous version, kept aside; `None` when there was none to keep.
    pub safety_copy: Option<String>,
}

impl RestoredPart {
    /// The parts of a finished restore.
    pub fn of(report: &crate::engine::restore::RestoreReport) -> Vec<RestoredPart> {
        let db = report.database.as_ref().map(|d| RestoredPart {
            what: "database",
            target: d.target.display().to_string(),
            safety_copy: d.safety_copy.as_ref().map(|p| p.display().to_string()),
        });
        let storage = report.storage.as_ref().map(|s| RestoredPart {
            what: "storage",
            target: s.target.display().to_string(),
            safety_copy: s.previous_tree.as_ref().map(|p| p.display().to_string()),
        });
        db.into_iter().chain(storage).collect()
    }

    /// "database → /srv/app.db (safety copy: /srv/app.db.pre-restore-…)".
    pub fn describe(&self) -> String {
        format!(
            "{} → {} ({})",
            self.what,
            self.target,
            match &self.safety_copy {
                Some(p) => format!("safety copy: {p}"),
                None => "nothing was there to keep".into(),
            }
        )
    }
}

/// The facts of a backup that landed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupFacts {
    pub kind: BackupKind,
    pub file_name: String,
    /// What it holds for a snapshot (its files' bytes), else its file's size.
    pub size: u64,
    /// Snapshots: what it added to the content store.
    pub added_to_store: Option<u64>,
    pub file_count: u64,
    pub duration: Duration,
    pub checksum: String,
    pub integrity_check: Option<String>,
    pub warnings: Vec<String>,
    pub disk: Option<DiskSpace>,
    /// Containers stopped while the storage directory was read (and started again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
}

impl BackupFacts {
    /// Its size as messages say it: `68.0 MiB`, or for a snapshot `284.0 MiB, 1.2 MiB
    /// added` (what it holds, and what it cost the store).
    pub fn size_text(&self) -> String {
        match self.added_to_store {
            Some(added) => format!("{}, {} added", format_bytes(self.size), format_bytes(added)),
            None => format_bytes(self.size),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The worker began a job (for dead-man pings' `/start`; the worker logs it itself).
    JobStarted {
        job: JobName,
    },
    BackupSucceeded {
        facts: BackupFacts,
        next_run: Option<DateTime<FixedOffset>>,
    },
    BackupFailed {
        job: JobName,
        step: String,
        error: String,
        hint: Option<String>,
        disk: Option<DiskSpace>,
        last_success: Option<String>,
        next_run: Option<DateTime<FixedOffset>>,
        /// Stopped by a shutdown, not broken: reported as cancelled, with no "next try".
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cancelled: bool,
    },
    RotationDone {
        deleted: usize,
        kept: usize,
        freed: u64,
    },
    RotationFailed {
        error: String,
    },
    /// Backups dated after now: kept, but not counted as the newest (README.md, Retention).
    FutureDated {
        backups: Vec<String>,
    },
    VerifyPassed {
        checked: usize,
    },
    VerifyFailed {
        failures: Vec<String>,
    },
    RestoreDone {
        backup: String,
        /// What was put back, where, and where the previous version was kept.
        restored: Vec<RestoredPart>,
        /// Containers stopped while the live data was replaced (and started again).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stopped: Vec<String>,
    },
    RestoreFailed {
        backup: String,
        error: String,
    },
    Stale {
        kind: BackupKind,
        age: Option<Duration>,
        max_age: Duration,
        last_success: Option<String>,
        last_failure: Option<String>,
    },
    Recovered {
        kind: BackupKind,
        backup: String,
    },
    JobSkipped {
        job: JobName,
        reason: String,
    },
    ConfigReloaded {
        next_runs: Vec<(String, String)>,
    },
    ConfigRejected {
        error: String,
    },
    /// A state file did not parse; it was moved aside and starts afresh.
    StateFileCorrupt {
        file: String,
        moved_to: String,
        error: String,
    },
    /// Backups uploaded to an offsite target (and its retention applied).
    OffsiteUploaded {
        target: String,
        backups: Vec<String>,
        bytes: u64,
        /// Remote backups deleted by the target's retention.
        pruned: usize,
    },
    /// An upload job failed for a target (after its retries); the backups stay pending.
    OffsiteUploadFailed {
        target: String,
        error: String,
        hint: Option<String>,
        pending: Vec<String>,
        pending_bytes: u64,
        /// When the current run of failures began (RFC 3339).
        failing_since: Option<String>,
    },
    /// A target that had failed took an upload again.
    OffsiteRecovered {
        target: String,
        failed_for: Option<Duration>,
    },
    OffsiteVerifyPassed {
        target: String,
        checked: usize,
        sampled_bytes: u64,
        /// Bad remote copies uploaded again from local ones.
        repaired: Vec<String>,
    },
    OffsiteVerifyFailed {
        target: String,
        /// `backup: what is wrong` for each bad copy that could not be repaired.
        problems: Vec<String>,
        repaired: Vec<String>,
    },
    /// No complete copy of a type on a target newer than its max_age.
    OffsiteStale {
        target: String,
        kind: BackupKind,
        age: Option<Duration>,
        max_age: Duration,
        pending: usize,
    },
    /// The app's containers stayed stopped after a job: their start failed (after
    /// retries). The app is down until they start; the next run, or the daemon within a
    /// minute, tries again.
    ContainersNotStarted {
        job: String,
        containers: Vec<String>,
        error: String,
    },
    /// A container would not stop, so the job did not run (its own failure event alerts;
    /// this one is counted by /metrics).
    ContainerStopFailed {
        job: String,
        container: String,
        error: String,
    },
    /// Containers left stopped (by a run that died, or a start that failed) are running
    /// again.
    ContainersStarted {
        containers: Vec<String>,
    },
    /// Continuous replication cannot read the database (missing, not in WAL mode,
    /// unreadable): transactions are not being protected until it can.
    ReplicationFailed {
        error: String,
    },
    /// A target holds no transaction newer than `lag` ago while newer ones exist: past
    /// `max_lag`. `error`: why the last attempt to ship failed, if it did.
    ReplicationBehind {
        target: String,
        lag: Duration,
        max_lag: Duration,
        error: Option<String>,
    },
    /// Replication works again: locally (`target` `None`) or to `target`.
    ReplicationRecovered {
        target: Option<String>,
        after: Duration,
    },
    /// A new generation began (a fresh base), and why: the start of replication, the
    /// daily base, or a gap in the log (a checkpoint while the daemon was down, the
    /// database file replaced…).
    ReplicationGeneration {
        generation: String,
        reason: String,
        kind: GenerationKind,
    },
    DaemonStarted {
        version: String,
    },
    DaemonStopping {
        reason: String,
    },
}

/// Why a replication generation began, as alerts tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationKind {
    /// Replication's first pass on this server.
    First,
    /// The daily base: routine, never alerted.
    Daily,
    /// The chain could not go on (a gap).
    Gap,
}

/// How serious an event is, which `notify_on` names it, and a one-line summary.
impl Event {
    /// The `notify_on` category; `None` for a job's start (worth a ping, not a message).
    pub fn category(&self) -> Option<NotifyOn> {
        use NotifyOn::*;
        Some(match self {
            Event::BackupSucceeded { facts, .. } if !facts.warnings.is_empty() => Warning,
            Event::BackupSucceeded { .. }
            | Event::VerifyPassed { .. }
            | Event::OffsiteUploaded { .. } => Success,
            Event::OffsiteVerifyPassed { repaired, .. } if !repaired.is_empty() => Warning,
            Event::OffsiteVerifyPassed { .. } => Success,
            Event::OffsiteUploadFailed { .. } | Event::OffsiteVerifyFailed { .. } => Failure,
            Event::OffsiteStale { .. } | Event::ReplicationBehind { .. } => Stale,
            Event::ReplicationFailed { .. } => Failure,
            Event::ReplicationRecovered { .. } => Recovered,
            Event::ReplicationGeneration { kind, .. } => match kind {
                GenerationKind::First => Lifecycle,
                GenerationKind::Gap => Warning,
                GenerationKind::Daily => return None,
            },
            Event::OffsiteRecovered { .. } | Event::ContainersStarted { .. } => Recovered,
            Event::ContainersNotStarted { .. } => Failure,
            Event::BackupFailed { .. }
            | Event::RotationFailed { .. }
            | Event::RestoreFailed { .. }
            | Event::VerifyFailed { .. } => Failure,
            Event::JobSkipped { .. }
            | Event::StateFileCorrupt { .. }
            | Event::FutureDated { .. } => Warning,
            Event::Stale { .. } => Stale,
            Event::Recovered { .. } => Recovered,
            Event::ConfigReloaded { .. } | Event::ConfigRejected { .. } => Config,
            Event::RestoreDone { .. } => Restore,
            Event::RotationDone { .. } => Rotate,
            Event::DaemonStarted { .. } | Event::DaemonStopping { .. } => Lifecycle,
            Event::JobStarted { .. } | Event::ContainerStopFailed { .. } => return None,
        })
    }

    /// Whether `notify_on` asks for this event.
    pub fn chosen_by(&self, notify_on: &[NotifyOn]) -> bool {
        self.category().is_some_and(|c| notify_on.contains(&c))
    }

    pub fn summary(&self) -> String {
        match self {
            Event::JobStarted { job } => format!("{job} job started"),
            Event::BackupSucceeded { facts, .. } => format!(
                "{} backup {} ({}, {}, {}){}{}",
                facts.kind,
                facts.file_name,
                facts.size_text(),
                crate::units::plural(facts.file_count, "file"),
                format_duration(facts.duration),
                if facts.warnings.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with {}",
                        crate::units::plural(facts.warnings.len() as u64, "warning")
                    )
                },
                stopped_text(&facts.stopped)
            ),
            Event::BackupFailed {
                job,
                cancelled: true,
                ..
            } => format!("{job} backup cancelled by the shutdown; nothing partial was kept"),
            Event::BackupFailed {
                job, step, error, ..
            } => format!("{job} backup FAILED at \"{step}\": {error}"),
            Event::RotationDone {
                deleted,
                kept,
                freed,
            } => format!(
                "rotation: {deleted} deleted, {kept} kept, {} freed",
                format_bytes(*freed)
            ),
            Event::RotationFailed { error } => format!("rotation FAILED: {error}"),
            Event::FutureDated { backups } => format!(
                "backups dated in the future (the clock ran ahead?), kept but not counted as the newest: {}",
                backups.join(", ")
            ),
            Event::VerifyPassed { checked } => format!(
                "restore drill: {} verified",
                crate::units::plural(*checked as u64, "backup")
            ),
            Event::VerifyFailed { failures } => {
                format!("restore drill FAILED: {}", failures.join("; "))
            }
            Event::RestoreDone {
                backup,
                restored,
                stopped,
            } => {
                let parts: Vec<String> = restored.iter().map(RestoredPart::describe).collect();
                format!(
                    "restored {backup}: {}{}",
                    parts.join("; "),
                    stopped_text(stopped)
                )
            }
            Event::RestoreFailed { backup, error } => {
                format!("restore of {backup} FAILED: {error}")
            }
            Event::Stale {
                kind, age, max_age, ..
            } => format!(
                "no successful {kind} backup for {} (max_age {})",
                age.map(format_duration).unwrap_or_else(|| "ever".into()),
                format_duration(*max_age)
            ),
            Event::Recovered { kind, backup } => format!("{kind} backups recovered: {backup}"),
            Event::OffsiteUploaded {
                target,
                backups,
                bytes,
                pruned,
            } => format!(
                "offsite {target}: uploaded {} ({}){}",
                crate::units::plural(backups.len() as u64, "backup"),
                format_bytes(*bytes),
                if *pruned > 0 {
                    format!(", {pruned} old remote deleted by its retention")
                } else {
                    String::new()
                }
            ),
            Event::OffsiteUploadFailed {
                target,
                error,
                pending,
                pending_bytes,
                ..
            } => format!(
                "offsite {target}: upload FAILED: {error}; pending: {} ({})",
                crate::units::plural(pending.len() as u64, "backup"),
                format_bytes(*pending_bytes)
            ),
            Event::OffsiteRecovered { target, failed_for } => format!(
                "offsite {target}: uploads work again{}",
                failed_for
                    .map(|d| format!(" after failing for {}", format_duration(d)))
                    .unwrap_or_default()
            ),
            Event::OffsiteVerifyPassed {
                target,
                checked,
                sampled_bytes,
                repaired,
            } => format!(
                "offsite {target}: {} checked, {} read back{}",
                crate::units::plural(*checked as u64, "backup"),
                format_bytes(*sampled_bytes),
                if repaired.is_empty() {
                    String::new()
                } else {
                    format!("; repaired from local copies: {}", repaired.join(", "))
                }
            ),
            Event::OffsiteVerifyFailed {
                target, problems, ..
            } => format!(
                "offsite {target}: verification FAILED: {}",
                problems.join("; ")
            ),
            Event::OffsiteStale {
                target,
                kind,
                age,
                max_age,
                pending,
            } => format!(
                "offsite {target}: no complete {kind} copy for {} (max_age {}); {pending} pending",
                age.map(format_duration).unwrap_or_else(|| "ever".into()),
                format_duration(*max_age)
            ),
            Event::JobSkipped { job, reason } => format!("{job} job skipped: {reason}"),
            Event::ConfigReloaded { next_runs } => format!(
                "configuration reloaded; next runs: {}",
                next_runs
                    .iter()
                    .map(|(j, t)| format!("{j} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::ConfigRejected { error } => {
                format!("configuration change REJECTED, the previous one stays: {error}")
            }
            Event::StateFileCorrupt {
                file,
                moved_to,
                error,
            } => format!(
                "state file {file} was corrupt ({error}); moved aside as {moved_to}, starting afresh"
            ),
            Event::ContainersNotStarted {
                job,
                containers,
                error,
            } => format!(
                "after the {job}, the containers {} could NOT be started again (the app is down): {error}",
                containers.join(", ")
            ),
            Event::ContainerStopFailed {
                job,
                container,
                error,
            } => format!("{job}: the container {container} would not stop: {error}"),
            Event::ContainersStarted { containers } => format!(
                "the containers {} left stopped are running again",
                containers.join(", ")
            ),
            Event::ReplicationFailed { error } => {
                format!("replication FAILED: {error}; transactions are not protected")
            }
            Event::ReplicationBehind {
                target,
                lag,
                max_lag,
                error,
            } => format!(
                "replication to {target} is {} behind (max_lag {}){}",
                format_duration(*lag),
                format_duration(*max_lag),
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            Event::ReplicationRecovered { target, after } => format!(
                "replication{} works again after {}",
                target
                    .as_ref()
                    .map(|t| format!(" to {t}"))
                    .unwrap_or_default(),
                format_duration(*after)
            ),
            Event::ReplicationGeneration {
                generation, reason, ..
            } => format!("replication: new generation {generation}: {reason}"),
            Event::DaemonStarted { version } => format!("daemon {version} started"),
            Event::DaemonStopping { reason } => format!("daemon stopping: {reason}"),
        }
    }

    fn is_bad(&self) -> bool {
        matches!(
            self.category(),
            Some(NotifyOn::Failure | NotifyOn::Stale | NotifyOn::Warning)
        ) || matches!(self, Event::ConfigRejected { .. })
    }
}

/// Something that consumes events. Called from the dispatcher task, never from a job.
pub trait Sink: Send + Sync {
    fn handle(&self, event: &Event);
}

/// Events to `tracing` (stderr → journald) and to `backup.log`.
pub struct LogSink {
    pub log: Option<crate::catalog::OperationLog>,
}

impl Sink for LogSink {
    fn handle(&self, event: &Event) {
        if matches!(event, Event::JobStarted { .. }) {
            return; // the worker's own "job started" line says it, with the trigger
        }
        let line = event.summary();
        let category = event.category().map_or("started", NotifyOn::as_str);
        if event.is_bad() {
            tracing::warn!(category, "{line}");
        } else {
            tracing::info!(category, "{line}");
        }
        // Backup, rotation and restore results are already journaled (by the engine, or
        // by the worker for a job that panicked); record the daemon's own.
        if let Some(log) = &self.log {
            match event {
                Event::BackupSucceeded { .. }
                | Event::BackupFailed { .. }
                | Event::RotationDone { .. }
                | Event::RotationFailed { .. }
                | Event::RestoreFailed { .. } => {}
                e if e.is_bad() => log.warn(&format!("daemon: {line}")),
                _ => log.info(&format!("daemon: {line}")),
            }
        }
    }
}

/// Where jobs send events: a bounded queue to the sinks.
#[derive(Clone)]
pub struct EventSender {
    tx: tokio::sync::mpsc::Sender<Event>,
}

impl EventSender {
    /// Never blocks: a full queue drops the event (with a warning) instead.
    pub fn send(&self, event: Event) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(
                "event dropped, the notification queue is full or closed: {}",
                e.into_inner().summary()
            );
        }
    }
}

/// Start the dispatcher; it ends when every sender is dropped, after draining. Sinks are
/// synchronous and some write files (`backup.log`), so it runs on the blocking pool, never
/// on the runtime's threads.
pub fn dispatcher(
    sinks: Vec<Arc<dyn Sink>>,
    capacity: usize,
) -> (EventSender, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(capacity);
    let handle = tokio::task::spawn_blocking(move || {
        while let Some(event) = rx.blocking_recv() {
            for sink in &sinks {
                sink.handle(&event);
            }
        }
    });
    (EventSender { tx }, handle)
}

/// `; app stopped meanwhile: a, b` when containers were stopped for the job.
pub fn stopped_text(stopped: &[String]) -> String {
    match stopped.is_empty() {
        true => String::new(),
        false => format!(
            "; stopped meanwhile and started again: {}",
            stopped.join(", ")
        ),
    }
}

/// The event for a backup's outcome (the daemon's jobs and the CLI's `create` alike).
pub fn backup_event(
    config: &crate::Config,
    kind: BackupKind,
    result: &Result<crate::engine::backup::BackupReport, crate::engine::backup::BackupFailure>,
    next_run: Option<DateTime<FixedOffset>>,
) -> Event {
    let dir = &config.paths.backup_dir;
    match result {
        Ok(r) => Event::BackupSucceeded {
            facts: BackupFacts {
                kind: r.kind,
                file_name: r.file_name(),
                size: r.metadata.shown_size(),
                added_to_store: r.added_to_store(),
                file_count: r.metadata.file_count,
                duration: Duration::from_millis(r.metadata.duration_ms),
                checksum: r.metadata.checksum.clone(),
                integrity_check: r.metadata.integrity_check.clone(),
                warnings: r.warnings(),
                disk: DiskSpace::measure(dir),
                stopped: r.stopped.clone(),
            },
            next_run,
        },
        Err(f) => {
            let catalog = crate::engine::backup::catalog_for(config);
            let last_success = catalog
                .load_state()
                .get(kind.as_str())
                .and_then(|r| r.last_success.as_ref().map(|o| o.at.clone()));
            Event::BackupFailed {
                job: JobName::creating(kind),
                step: f.step.to_string(),
                error: crate::error_chain(&f.error),
                hint: f.error.hint(),
                disk: DiskSpace::measure(dir),
                last_success,
                next_run,
                cancelled: matches!(*f.error, crate::error::Error::Cancelled),
            }
        }
    }
}
