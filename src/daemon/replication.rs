//! Continuous replication in the daemon: a cancellable task that runs one replication
//! step (src/replication/service.rs, on the blocking pool) every `interval` — a timer,
//! not a poll — turns what each step reports into alerts (a target behind past
//! `max_lag`, the database unreadable, a generation started and why, each recovery) and
//! into what `/health` and `/metrics` show. A config reload that changes replication,
//! the live paths or the targets starts the service afresh; on shutdown a last step
//! ships what the log holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Replication};
use crate::events::{Event, EventSender, GenerationKind};
use crate::replication::replicator::FIRST_PASS;
use crate::replication::service::{DAILY_BASE, ReplicationService, StepReport};
use crate::status::Health;

/// How long the last step on shutdown may take.
const LAST_STEP: Duration = Duration::from_secs(10);
/// The pause after a step that panicked, before the service starts afresh.
const PANIC_PAUSE: Duration = Duration::from_secs(60);

/// The service for `config` with its first step taken (the read transaction held), and
/// that step's report; `None` when replication is off.
pub(super) async fn begin(config: Arc<Config>) -> Option<Started> {
    let mut service = ReplicationService::new(&config)?;
    let done = tokio::task::spawn_blocking(move || {
        let report = service.begin(Utc::now());
        (service, report)
    })
    .await;
    match done {
        Ok((service, report)) => Some(Started {
            config,
            service,
            report,
        }),
        Err(e) => {
            tracing::error!("replication: its first step failed: {e}");
            None
        }
    }
}

/// A service whose first step was taken.
pub(super) struct Started {
    config: Arc<Config>,
    service: ReplicationService,
    report: StepReport,
}

pub(super) async fn run(
    mut started: Option<Started>,
    mut config: watch::Receiver<Arc<Config>>,
    events: EventSender,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        let current = config.borrow_and_update().clone();
        let mut alerts = Alerts::default();
        let begun = started
            .take()
            .filter(|s| relevant(&s.config) == relevant(&current));
        let service = match begun {
            Some(s) => {
                let settings = s.service.settings().clone();
                for event in alerts.observe(&s.report, &settings, Instant::now()) {
                    events.send(event);
                }
                Some(s.service)
            }
            None => ReplicationService::new(&current),
        };
        let Some(service) = service else {
            health.set_replication(None);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = config.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let settings = service.settings().clone();
        tracing::info!(
            "replication: every {} to {}",
            crate::units::format_duration(settings.interval),
            if settings.targets.is_empty() {
                "the backup directory only".to_string()
            } else {
                format!("the backup directory and {}", settings.targets.join(", "))
            }
        );
        let mut service = Some(service);
        let mut timer = tokio::time::interval(settings.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Some(s) = service.take() {
                        let _ = tokio::time::timeout(LAST_STEP, step(s)).await;
                    }
                    return;
                }
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if relevant(&current) != relevant(&config.borrow()) {
                        break;
                    }
                }
                _ = timer.tick() => {
                    let Some(s) = service.take() else { break };
                    let Some((s, report)) = step(s).await else {
                        // A step that panicked: told once, then a pause before the service
                        // starts afresh, so a fault that repeats cannot spin.
                        events.send(Event::ReplicationFailed {
                            error: "a replication step failed unexpectedly (see the log); retrying in a minute".into(),
                        });
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(PANIC_PAUSE) => {}
                        }
                        break;
                    };
                    service = Some(s);
                    for event in alerts.observe(&report, &settings, Instant::now()) {
                        events.send(event);
                    }
                    health.set_replication(Some((report.status, settings.max_lag)));
                }
            }
        }
    }
}

/// One step on the blocking pool; `None` if it panicked (the service starts afresh).
async fn step(mut service: ReplicationService) -> Option<(ReplicationService, StepReport)> {
    match tokio::task::spawn_blocking(move || {
        let report = service.step(Utc::now());
        (service, report)
    })
    .await
    {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!("replication: a step failed: {e}; starting afresh");
            None
        }
    }
}

/// What, in a config, the service is built from.
fn relevant(config: &Config) -> String {
    format!(
        "{:?}{:?}{:?}{:?}{:?}",
        config.replication,
        config.paths.database,
        config.paths.backup_dir,
        config.offsite,
        config
            .encryption
            .as_ref()
            .map(|e| e.recipients.fingerprints())
    )
}

/// What has been alerted: the local failure and the targets behind, since when.
#[derive(Default)]
struct Alerts {
    local_failing: Option<Instant>,
    behind: BTreeMap<String, Instant>,
}

impl Alerts {
    /// The events a step's report calls for: each change of state alerted once.
    fn observe(&mut self, report: &StepReport, settings: &Replication, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        match (&report.status.error, self.local_failing) {
            (Some(error), None) => {
                self.local_failing = Some(now);
                out.push(Event::ReplicationFailed {
                    error: error.clone(),
                });
            }
            (None, Some(since)) => {
                self.local_failing = None;
                out.push(Event::ReplicationRecovered {
                    target: None,
                    after: now - since,
                });
            }
            _ => {}
        }
        if let Some((generation, reason)) = &report.new_generation {
            let kind = if reason == FIRST_PASS {
                GenerationKind::First
            } else if reason == DAILY_BASE {
                GenerationKind::Daily
            } else {
                GenerationKind::Gap
            };
            out.push(Event::ReplicationGeneration {
                generation: generation.clone(),
                reason: reason.clone(),
                kind,
            });
        }
        for t in &report.status.targets {
            let lag = Duration::from_secs_f64(t.lag_seconds.max(0.0));
            match self.behind.get(&t.name).copied() {
                None if lag > settings.max_lag => {
                    self.behind.insert(t.name.clone(), now);
                    out.push(Event::ReplicationBehind {
                        target: t.name.clone(),
                        lag,
                        max_lag: settings.max_lag,
                        error: t.error.clone(),
                    });
                }
                // Caught up: it holds every transaction read.
                Some(since) if t.lag_seconds == 0.0 => {
                    self.behind.remove(&t.name);
                    out.push(Event::ReplicationRecovered {
                        target: Some(t.name.clone()),
                        after: now - since,
                    });
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::service::{ReplicationStatus, TargetStatus};

    fn settings() -> Replication {
        Replication {
            interval: Duration::from_secs(1),
            targets: vec!["s3".into()],
            retain: Duration::from_secs(7 * 86400),
            max_lag: Duration::from_secs(60),
        }
    }

    fn report(lag: f64, error: Option<&str>) -> StepReport {
        StepReport {
            status: ReplicationStatus {
                error: error.map(String::from),
                targets: vec![TargetStatus {
                    name: "s3".into(),
                    lag_seconds: lag,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn each_change_of_state_is_alerted_once() {
        let mut alerts = Alerts::default();
        let t0 = Instant::now();
        assert!(
            alerts
                .observe(&report(0.0, None), &settings(), t0)
                .is_empty()
        );
        assert!(
            alerts
                .observe(&report(30.0, None), &settings(), t0)
                .is_empty()
        );
        let behind = alerts.observe(&report(61.0, None), &settings(), t0);
        assert!(matches!(&behind[..], [Event::ReplicationBehind { target, .. }] if target == "s3"));
        assert!(
            alerts
                .observe(&report(90.0, None), &settings(), t0)
                .is_empty()
        );
        // Still catching up: no recovery until it holds everything.
        assert!(
            alerts
                .observe(&report(3.0, None), &settings(), t0)
                .is_empty()
        );
        let back = alerts.observe(
            &report(0.0, None),
            &settings(),
            t0 + Duration::from_secs(100),
        );
        assert!(matches!(
            &back[..],
            [Event::ReplicationRecovered { target: Some(t), after }] if t == "s3" && after.as_secs() == 100
        ));
        let failed = alerts.observe(&report(0.0, Some("no such file")), &settings(), t0);
        assert!(matches!(&failed[..], [Event::ReplicationFailed { .. }]));
        assert!(
            alerts
                .observe(&report(0.0, Some("no such file")), &settings(), t0)
                .is_empty()
        );
        let ok = alerts.observe(&report(0.0, None), &settings(), t0);
        assert!(matches!(
            &ok[..],
            [Event::ReplicationRecovered { target: None, .. }]
        ));
    }
}
