//! A backup with the live app around it, for the daemon's jobs and the CLI alike: the
//! volume paths resolved through the container engine, the labelled containers handed to
//! the engine to stop and start, and afterwards the events that say what happened to
//! them. A volume that cannot be resolved fails the backup like any other step: recorded,
//! alerted, exit 1.

use crate::docker::{ContainerReport, for_job};
use crate::engine::backup::{
    BackupFailure, BackupJob, BackupReport, catalog_for, create_backup, record_outcome,
};
use crate::engine::{Cancel, Progress};
use crate::events::Event;
use crate::{BackupKind, Config};

/// Take a backup of `kind` with the live app around it.
pub fn take_backup(
    config: &Config,
    kind: BackupKind,
    progress: &dyn Progress,
    cancel: Cancel,
) -> (Result<BackupReport, BackupFailure>, ContainerReport) {
    match for_job(config) {
        Ok(live) => {
            let result = create_backup(&BackupJob {
                config: &live.config,
                kind,
                reason: None,
                progress,
                cancel,
                app: live.app(),
            });
            (result, live.finish())
        }
        Err(e) => {
            // A resolved path that breaks a rule (the backup directory inside the storage
            // volume) is the config's error: nothing is written, not even the record.
            let recorded = !e.is_usage();
            let result = Err(BackupFailure::new(kind, "resolve volumes", e));
            let catalog = catalog_for(config);
            // Else recorded like a failure at any later step (the directory may be new).
            if recorded && catalog.prepare().is_ok() {
                record_outcome(&catalog, kind.as_str(), &result);
            }
            (result, ContainerReport::default())
        }
    }
}

/// The events of what happened to the app's containers during `job` (a failure to start
/// them again is an alert of its own: the app is down).
pub fn container_events(job: &str, report: &ContainerReport) -> Vec<Event> {
    let mut events = Vec::new();
    if !report.recovered.is_empty() {
        events.push(Event::ContainersStarted {
            containers: report.recovered.clone(),
        });
    }
    if let Some((container, error)) = &report.stop_failed {
        events.push(Event::ContainerStopFailed {
            job: job.to_string(),
            container: container.clone(),
            error: error.clone(),
        });
    }
    if let Some((containers, error)) = &report.not_started {
        events.push(Event::ContainersNotStarted {
            job: job.to_string(),
            containers: containers.clone(),
            error: error.clone(),
        });
    }
    events
}
