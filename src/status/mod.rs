//! The daemon's status sinks: what `/health` and `/metrics` report, fed by the scheduler
//! loop and by events, read by the API (and any other client) without either importing the
//! other. The durable facts (last success and failure,
//! sizes, durations, counts) come from the backup directory at scrape time; the daemon's
//! own facts (failures since start, staleness, loop alive) from events and the loop.
//! [`offsite`] renders the offsite targets' families, [`replication`] continuous
//! replication's.

mod offsite;
mod replication;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::catalog::{CatalogState, Listing};
use crate::events::{Event, Sink};
use crate::kind::{BackupKind, JobName};
use crate::offsite::OffsiteState;
use crate::replication::service::ReplicationStatus;

/// What the metrics show about the offsite targets: the configured ones, and what the
/// state file records about them.
pub struct OffsiteView<'a> {
    pub targets: &'a [crate::config::OffsiteTarget],
    pub state: &'a OffsiteState,
}

/// The daemon's liveness, as `/health` judges it.
#[derive(Default)]
pub struct Health {
    inner: Mutex<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    last_tick: Option<DateTime<Utc>>,
    stale: BTreeSet<BackupKind>,
    /// (target, type) pairs with no complete remote copy within `max_age`.
    offsite_stale: BTreeSet<(String, BackupKind)>,
    /// Continuous replication as its last step left it, and its `max_lag`.
    replication: Option<(ReplicationStatus, std::time::Duration)>,
}

impl Health {
    /// The scheduler loop went round.
    pub fn tick(&self, now: DateTime<Utc>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_tick = Some(now);
    }

    pub fn set_stale(&self, kind: BackupKind, stale: bool) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if stale {
            h.stale.insert(kind);
        } else {
            h.stale.remove(&kind);
        }
    }

    /// The (target, type) pairs the scheduler's last scan found stale.
    pub fn set_offsite_stale(&self, stale: BTreeSet<(String, BackupKind)>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offsite_stale = stale;
    }

    pub fn is_offsite_stale(&self, target: &str, kind: BackupKind) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offsite_stale
            .contains(&(target.to_string(), kind))
    }

    /// Continuous replication's state after its last step (`None`: it is off).
    pub fn set_replication(&self, status: Option<(ReplicationStatus, std::time::Duration)>) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replication = status;
    }

    pub fn replication(&self) -> Option<(ReplicationStatus, std::time::Duration)> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replication
            .clone()
    }

    /// Why the daemon is degraded, if it is: it runs and keeps its local backups fresh,
    /// but some offsite target has no recent complete copy, or continuous replication
    /// cannot read the database or is behind on a target past `max_lag`. Not a reason to
    /// restart it (a liveness probe must not), but one to look.
    pub fn degraded(&self) -> Vec<String> {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = h
            .offsite_stale
            .iter()
            .map(|(t, k)| format!("offsite target {t}: no recent complete {k} copy (stale)"))
            .collect();
        if let Some((status, max_lag)) = &h.replication {
            out.extend(replication::degraded(status, *max_lag));
        }
        out
    }

    pub fn is_stale(&self, kind: BackupKind) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stale
            .contains(&kind)
    }

    /// Why the daemon is unhealthy, if it is: the loop has not run for two of its longest
    /// sleeps, or backups of some type are stale.
    pub fn problems(&self, now: DateTime<Utc>) -> Vec<String> {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = Vec::new();
        match h.last_tick {
            Some(t) if (now - t).num_seconds() <= 150 => {}
            Some(t) => p.push(format!(
                "the scheduler loop last ran {} s ago",
                (now - t).num_seconds()
            )),
            None => p.push("the scheduler has not started".into()),
        }
        for k in &h.stale {
            p.push(format!("no recent successful {k} backup (stale)"));
        }
        p
    }
}

/// Counters fed by events.
#[derive(Default)]
pub struct Metrics {
    failures: Mutex<BTreeMap<JobName, u64>>,
    /// Failed upload jobs per offsite target since the daemon started.
    offsite_failures: Mutex<BTreeMap<String, u64>>,
    /// Containers that would not stop, and starts that failed, since the daemon started.
    container_failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Sink for Metrics {
    fn handle(&self, event: &Event) {
        if let Event::OffsiteUploadFailed { target, .. } = event {
            *self
                .offsite_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(target.clone())
                .or_default() += 1;
        }
        let container_op = match event {
            Event::ContainerStopFailed { .. } => Some("stop"),
            Event::ContainersNotStarted { .. } => Some("start"),
            _ => None,
        };
        if let Some(op) = container_op {
            *self
                .container_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(op)
                .or_default() += 1;
        }
        let job = match event {
            Event::BackupFailed { job, .. } => *job,
            Event::RotationFailed { .. } => JobName::Rotate,
            Event::VerifyFailed { .. } => JobName::Verify,
            _ => return,
        };
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job)
            .or_default() += 1;
    }
}

fn ts(rfc3339: Option<&str>) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339?)
        .ok()
        .map(|t| t.timestamp())
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(
        &self,
        listing: &Listing,
        state: &CatalogState,
        health: &Health,
        offsite: &OffsiteView,
        free_bytes: Option<u64>,
    ) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            write_family(&mut out, name, kind, help, samples);
        };
        let per_type = |f: &dyn Fn(BackupKind) -> Option<f64>| -> Vec<(String, f64)> {
            BackupKind::ALL
                .iter()
                .filter_map(|k| f(*k).map(|v| (format!("{{type=\"{k}\"}}"), v)))
                .collect()
        };
        let record = |k: BackupKind| state.get(k.as_str()).cloned().unwrap_or_default();
        // A restore's safety copy is no backup: never the newest of its type.
        let newest = |k: BackupKind| {
            listing
                .of_kind(k)
                .find(|b| b.is_complete() && !b.metadata.is_pre_restore())
        };
        family(
            "vertex_backup_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful backup of this type.",
            per_type(&|k| {
                ts(record(k).last_success.as_ref().map(|o| o.at.as_str())).map(|t| t as f64)
            }),
        );
        family(
            "vertex_backup_last_failure_timestamp_seconds",
            "gauge",
            "Unix time of the last failed backup of this type.",
            per_type(&|k| {
                ts(record(k).last_failure.as_ref().map(|o| o.at.as_str())).map(|t| t as f64)
            }),
        );
        family(
            "vertex_backup_last_duration_seconds",
            "gauge",
            "How long the newest good backup of this type took.",
            per_type(&|k| newest(k).map(|b| b.metadata.duration_ms as f64 / 1000.0)),
        );
        family(
            "vertex_backup_last_size_bytes",
            "gauge",
            "Size of the newest good backup of this type (a snapshot's: the bytes it holds).",
            per_type(&|k| newest(k).map(|b| b.metadata.shown_size() as f64)),
        );
        family(
            "vertex_backup_last_added_bytes",
            "gauge",
            "Bytes the newest good snapshot of this type added to the content store.",
            per_type(&|k| {
                newest(k)
                    .and_then(|b| listing.added_to_store(b))
                    .map(|a| a as f64)
            }),
        );
        family(
            "vertex_backup_backups",
            "gauge",
            "Good backups of this type kept (parts of full backups included).",
            per_type(&|k| Some(listing.of_kind(k).filter(|b| b.is_complete()).count() as f64)),
        );
        family(
            "vertex_backup_backups_bytes",
            "gauge",
            "Bytes of the good backups of this type kept (full: 0, its parts count in their types).",
            per_type(&|k| {
                Some(if k == BackupKind::Full {
                    0.0
                } else {
                    listing
                        .of_kind(k)
                        .filter(|b| b.is_complete())
                        .map(|b| b.size())
                        .sum::<u64>() as f64
                })
            }),
        );
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            "vertex_backup_failures_total",
            "counter",
            "Failed jobs since the daemon started.",
            JobName::ALL
                .iter()
                .map(|j| {
                    (
                        format!("{{job=\"{j}\"}}"),
                        failures.get(j).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        );
        let container_failures = self
            .container_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            "vertex_backup_container_failures_total",
            "counter",
            "Containers that would not stop (op=stop) and starts that failed after retries (op=start) since the daemon started.",
            ["stop", "start"]
                .iter()
                .map(|op| {
                    (
                        format!("{{op=\"{op}\"}}"),
                        container_failures.get(op).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        );
        family(
            "vertex_backup_stale",
            "gauge",
            "1 when the newest good backup of this type is older than its max_age.",
            per_type(&|k| Some(if health.is_stale(k) { 1.0 } else { 0.0 })),
        );
        let offsite_failures = self
            .offsite_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        offsite::render(&mut family, offsite, &offsite_failures, health);
        if let Some((status, _)) = health.replication() {
            replication::render(&mut family, &status);
        }
        if let Some(free) = free_bytes {
            family(
                "vertex_backup_free_bytes",
                "gauge",
                "Free bytes on the backup filesystem.",
                vec![(String::new(), free as f64)],
            );
        }
        family(
            "vertex_backup_build_info",
            "gauge",
            "Build information.",
            vec![(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                1.0,
            )],
        );
        out
    }
}

/// One metric family: its HELP and TYPE lines and its samples (`labels` as written,
/// `{…}` or empty).
fn write_family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}
