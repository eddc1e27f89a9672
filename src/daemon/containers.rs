//! The daemon's care for containers a run left stopped: at its start (a backup killed
//! with the app stopped, a power cut) and then every minute while the journal of stopped
//! containers exists (the engine was unreachable when a job ended), it starts them again,
//! under the backup directory's lock so that it never races a job that stopped them on
//! purpose. The first failure is alerted (the app is down); the start that finally works
//! is told as a recovery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::docker::{AppContainers, ContainerReport, journal_path};
use crate::engine::backup::catalog_for;
use crate::engine::live_app::LiveApp;
use crate::events::{Event, EventSender};
use crate::jobs::live::container_events;

/// How often a journal left behind is looked at again.
const RETRY_EVERY: Duration = Duration::from_secs(60);

/// Until `stop`: start what the journal names, at once and then every minute.
pub async fn watch(
    config: watch::Receiver<Arc<Config>>,
    events: EventSender,
    stop: CancellationToken,
) {
    let mut alerted = false;
    loop {
        let cfg = config.borrow().clone();
        if cfg.docker.is_some() && journal_path(&cfg.paths.backup_dir).exists() {
            let report = super::blocking(move || recover(&cfg)).await.ok().flatten();
            if let Some(report) = report {
                let down = report.not_started.is_some();
                for event in container_events("daemon's check of stopped containers", &report) {
                    // A failure is said once until it mends; the recovery always.
                    let repeat = matches!(event, Event::ContainersNotStarted { .. }) && alerted;
                    if !repeat {
                        events.send(event);
                    }
                }
                alerted = down;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// One pass, when the backup directory is free (a job holding it recovers by itself).
fn recover(config: &Config) -> Option<ContainerReport> {
    let settings = config.docker.as_ref()?;
    let catalog = catalog_for(config);
    let _lock = catalog.lock("start stopped containers").ok()?;
    let containers = AppContainers::new(
        settings,
        config.paths.backup_dir.clone(),
        config.backup.file_mode.0,
    )
    .ok()?;
    for warning in containers.recover() {
        catalog.log().warn(&format!("containers: {warning}"));
    }
    Some(containers.finish())
}
