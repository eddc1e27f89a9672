//! The replication part of `status`: the current generation and why it began, the
//! point-in-time window, and per target its lag, the newest transaction it holds, the
//! requests of the last hour and the last error — as the daemon's last step wrote them
//! (`replication/status.json`), with how old that record is.

use chrono::{DateTime, Utc};
use serde::Serialize;
use vertex_backup::Config;
use vertex_backup::replication::service::{ReplicationStatus, TargetStatus};
use vertex_backup::replication::store::ReplicaStore;
use vertex_backup::units::format_duration;

#[derive(Serialize)]
pub(super) struct ReplicationView {
    pub interval_seconds: f64,
    pub max_lag_seconds: f64,
    pub retain_seconds: u64,
    /// The daemon's last record; `None` when it has not run with replication yet.
    pub last: Option<ReplicationStatus>,
    /// Seconds since that record was written (a stopped daemon's record ages).
    pub record_age_seconds: Option<i64>,
    /// A target past `max_lag`, the database unreadable, or no fresh record.
    pub behind: bool,
}

pub(super) fn view(config: &Config, now: DateTime<Utc>) -> Option<ReplicationView> {
    let settings = config.replication.as_ref()?;
    let store = ReplicaStore::new(
        &config.paths.backup_dir,
        config.backup.file_mode.0,
        config.backup.dir_mode.0,
    );
    let last = ReplicationStatus::read(&store).ok().flatten();
    let age = last
        .as_ref()
        .and_then(|l| l.updated)
        .map(|u| (now - u).num_seconds());
    // The record is rewritten at least every minute while the daemon runs.
    let fresh = age.is_some_and(|a| a <= 60 + settings.max_lag.as_secs() as i64);
    let behind = !fresh
        || last
            .as_ref()
            .is_some_and(|l| l.error.is_some() || l.worst_lag() > settings.max_lag.as_secs_f64());
    Some(ReplicationView {
        interval_seconds: settings.interval.as_secs_f64(),
        max_lag_seconds: settings.max_lag.as_secs_f64(),
        retain_seconds: settings.retain.as_secs(),
        last,
        record_age_seconds: age,
        behind,
    })
}

pub(super) fn print(v: &ReplicationView) {
    let secs = |s: f64| format_duration(std::time::Duration::from_secs_f64(s.max(0.0)));
    out!(
        "\nreplication (every {}, max_lag {}, window {}):",
        secs(v.interval_seconds),
        secs(v.max_lag_seconds),
        secs(v.retain_seconds as f64)
    );
    let Some(last) = &v.last else {
        out!("  no record yet: the daemon has not replicated with this configuration");
        return;
    };
    let when = |t: Option<DateTime<Utc>>| t.map_or("-".into(), |t| t.to_rfc3339());
    out!(
        "  record written {} ago{}",
        secs(v.record_age_seconds.unwrap_or(0) as f64),
        if v.behind && v.record_age_seconds.unwrap_or(i64::MAX) > 60 {
            "  STALE: is the daemon running?"
        } else {
            ""
        }
    );
    if let Some(e) = &last.error {
        out!("  FAILING: {e}");
    }
    out!(
        "  generation {} since {} ({})",
        last.generation.as_deref().unwrap_or("-"),
        when(last.generation_started),
        last.generation_reason.as_deref().unwrap_or("-")
    );
    out!(
        "  restore to any time from {} to {} (restore --at TIME --type database)",
        when(last.window_start),
        when(last.newest)
    );
    for t in &last.targets {
        print_target(t, v.max_lag_seconds);
    }
}

fn print_target(t: &TargetStatus, max_lag: f64) {
    out!(
        "  {:<12} lag {:.1} s{}  newest {}  {} requests, {} in the last hour",
        t.name,
        t.lag_seconds,
        if t.lag_seconds > max_lag {
            " BEHIND"
        } else {
            ""
        },
        t.newest.map_or("-".into(), |n| n.to_rfc3339()),
        t.requests_last_hour,
        vertex_backup::units::format_bytes(t.bytes_last_hour)
    );
    if let Some(e) = &t.error {
        out!("               last error: {e}");
    }
}
