//! Continuous replication in `/metrics` and `/health`: per target the lag, the newest
//! transaction it holds and the requests of the last hour; for the stream the newest
//! transaction read, the point-in-time window and the current generation's start.

use std::time::Duration;

use crate::replication::service::ReplicationStatus;

type Samples = Vec<(String, f64)>;

/// Write the replication families through `family` (name, type, help, samples).
pub(super) fn render(
    family: &mut impl FnMut(&str, &str, &str, Samples),
    status: &ReplicationStatus,
) {
    let per_target = |f: &dyn Fn(&crate::replication::service::TargetStatus) -> Option<f64>| {
        status
            .targets
            .iter()
            .filter_map(|t| f(t).map(|v| (format!("{{target=\"{}\"}}", t.name), v)))
            .collect::<Samples>()
    };
    let seconds = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp() as f64);
    family(
        "vertex_backup_replication_lag_seconds",
        "gauge",
        "Age of the oldest replicated transaction this target lacks (0: it holds all).",
        per_target(&|t| Some(t.lag_seconds)),
    );
    family(
        "vertex_backup_replication_target_newest_timestamp_seconds",
        "gauge",
        "Unix time the newest transaction this target holds was read.",
        per_target(&|t| seconds(t.newest)),
    );
    family(
        "vertex_backup_replication_requests_last_hour",
        "gauge",
        "Requests (uploads and deletes) replication sent this target in the last hour.",
        per_target(&|t| Some(t.requests_last_hour as f64)),
    );
    family(
        "vertex_backup_replication_up",
        "gauge",
        "1 while replication reads the database, 0 while it cannot.",
        vec![(
            String::new(),
            if status.error.is_none() { 1.0 } else { 0.0 },
        )],
    );
    let single = |v: Option<f64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    family(
        "vertex_backup_replication_newest_timestamp_seconds",
        "gauge",
        "Unix time the newest replicated transaction was read from the log.",
        single(seconds(status.newest)),
    );
    family(
        "vertex_backup_replication_window_start_timestamp_seconds",
        "gauge",
        "The oldest time a restore to a time can reach.",
        single(seconds(status.window_start)),
    );
    family(
        "vertex_backup_replication_generation_start_timestamp_seconds",
        "gauge",
        "When the current generation (chain from one base) began.",
        single(seconds(status.generation_started)),
    );
}

/// Why replication degrades the daemon, if it does.
pub(super) fn degraded(status: &ReplicationStatus, max_lag: Duration) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &status.error {
        out.push(format!("replication cannot read the database: {e}"));
    }
    for t in &status.targets {
        if t.lag_seconds > max_lag.as_secs_f64() {
            out.push(format!(
                "replication to {} is {:.0} s behind (max_lag {} s)",
                t.name,
                t.lag_seconds,
                max_lag.as_secs()
            ));
        }
    }
    out
}
