//! The long-running service (SPEC §7): the schedule from the TOML config, one job queue,
//! catch-up after downtime, live reload (SIGHUP or a saved edit), staleness alerts, a clean
//! stop, and systemd notification. [`Daemon::start`] sets up the backup directory, the
//! events and the worker, and hands out the [`Services`] that clients (the REST API, chat
//! commands) use — the daemon imports none of them; [`Daemon::run`] is the scheduler loop
//! until `control.shutdown`. The startup order is written out in one place below. Nothing
//! here does blocking I/O on the runtime's threads: file reads, parses, scans and fsyncs
//! go to the blocking pool.

mod reload;
mod runs;
mod staleness;
mod systemd;
mod timetable;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use runs::{JobRun, JobRuns, SCHEDULE_FILE};
pub use staleness::{StaleTracker, max_age};
pub use timetable::{Timetable, catch_up};

use crate::catalog::{BackupDirLock, Listing};
use crate::config::Config;
use crate::engine::backup::catalog_for;
use crate::error::{Error, Result};
use crate::events::{self, Event, EventSender, LogSink, Sink};
use crate::jobs::{self, Finished, Queue, Rejected, Request, Trigger, Work};
use crate::kind::{BackupKind, JobName};
use crate::status::{Health, Metrics};
use crate::telegram::TelegramSink;
use reload::Reloader;

/// Re-reads the configuration (same file, same command-line overrides).
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config> + Send + Sync>;

pub const DAEMON_LOCK_FILE: &str = ".vertex-backup.daemon.lock";

/// How the outside world steers a running daemon.
#[derive(Clone, Default)]
pub struct Control {
    /// Cancel to stop: no new jobs, the running one gets the grace period.
    pub shutdown: CancellationToken,
    /// Notify to re-read the config (SIGHUP).
    pub reload: Arc<Notify>,
}

/// What a started daemon offers its clients: the live config, the one job queue, and the
/// status sinks. Clients hold clones; the daemon stops them by `control.shutdown`.
#[derive(Clone)]
pub struct Services {
    pub config: tokio_watch::Receiver<Arc<Config>>,
    pub queue: Queue,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// The longest the loop sleeps without looking at the wall clock again, so a clock jump
/// or a suspended VM is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Editors write a file in several steps; wait this long for the last one.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long a stopping daemon tries to deliver queued notifications.
const FLUSH_LIMIT: Duration = Duration::from_secs(15);

/// A daemon that is set up (directory locked, events and worker running) but not yet
/// scheduling.
pub struct Daemon {
    services: Services,
    reloader: Reloader,
    events: EventSender,
    /// Turns a corrupt state file found by any job into an event while the daemon runs.
    set_aside_reports: crate::catalog::ReporterGuard,
    finished: mpsc::UnboundedReceiver<Finished>,
    stop_worker: CancellationToken,
    worker: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    telegram_task: JoinHandle<()>,
    _daemon_lock: BackupDirLock,
}

impl Daemon {
    /// Steps 1–4 of the startup: the backup directory and the daemon's lock, the live
    /// config, the event sinks, the worker and its queue.
    pub async fn start(
        initial: Config,
        load: ConfigLoader,
        extra_sinks: Vec<Arc<dyn Sink>>,
    ) -> Result<Daemon> {
        // 1. The backup directory, the daemon's own lock (one daemon per directory), the
        // leftovers of a crash.
        let daemon_lock = {
            let cfg = initial.clone();
            blocking(move || prepare_backup_dir(&cfg)).await??
        };

        // 2. The config everyone reads; a reload replaces it for all readers at once.
        let last_text = initial.file.as_ref().map(|_| initial.text().to_string());
        let log = catalog_for(&initial).log();
        let (cfg_tx, cfg_rx) = tokio_watch::channel(Arc::new(initial));

        // 3. Events: the log, Telegram (from the live config), metrics, whatever the
        // caller adds.
        let (telegram, telegram_task) = TelegramSink::start(cfg_rx.clone());
        let health = Arc::new(Health::default());
        health.tick(Utc::now());
        let metrics = Arc::new(Metrics::default());
        let mut sinks: Vec<Arc<dyn Sink>> = vec![
            Arc::new(LogSink { log: Some(log) }),
            telegram,
            metrics.clone(),
        ];
        sinks.extend(extra_sinks);
        let (events, dispatcher) = events::dispatcher(sinks, 256);
        // A corrupt state file found by any job, or by the daemon itself, becomes an event.
        let sender = events.clone();
        let set_aside_reports = crate::catalog::report_set_asides_to(move |s| {
            sender.send(Event::StateFileCorrupt {
                file: s.file.display().to_string(),
                moved_to: s.moved_to.display().to_string(),
                error: s.cause.clone(),
            })
        });
        events.send(Event::DaemonStarted {
            version: env!("CARGO_PKG_VERSION").into(),
        });

        // 4. The worker and its queue.
        let stop_worker = CancellationToken::new();
        let (fin_tx, finished) = mpsc::unbounded_channel::<Finished>();
        let (queue, worker) =
            jobs::start(cfg_rx.clone(), events.clone(), fin_tx, stop_worker.clone());
        Ok(Daemon {
            services: Services {
                config: cfg_rx,
                queue,
                health,
                metrics,
            },
            reloader: Reloader {
                load,
                config: cfg_tx,
                last_text,
            },
            events,
            set_aside_reports,
            finished,
            stop_worker,
            worker,
            dispatcher,
            telegram_task,
            _daemon_lock: daemon_lock,
        })
    }

    /// What clients of this daemon use.
    pub fn services(&self) -> Services {
        self.services.clone()
    }

    /// Steps 5–9: catch-up, the config watch, the scheduler loop until `control.shutdown`,
    /// then a clean stop.
    pub async fn run(self, control: Control) -> Result<()> {
        let Daemon {
            services,
            mut reloader,
            events,
            set_aside_reports,
            mut finished,
            stop_worker,
            mut worker,
            dispatcher,
            telegram_task,
            _daemon_lock,
        } = self;
        let Services {
            config: cfg_rx,
            queue,
            health,
            metrics: _,
        } = services;

        // 5. The timetable, the run history and catch-up.
        let now = Utc::now();
        let cfg = cfg_rx.borrow().clone();
        let due_now = {
            let cfg = cfg.clone();
            blocking(move || start_history(&cfg, now))
                .await
                .unwrap_or_default()
        };
        let mut timetable = Timetable::new(&cfg, now);
        for (job, slot) in due_now {
            tracing::info!(
                "{job}: its {slot} run was missed while the daemon was down; running it now"
            );
            submit(&queue, &events, job, Trigger::CatchUp, slot);
        }

        // 6. Watch the config file.
        let (watch_tx, mut watch_rx) = mpsc::channel::<()>(1);
        let watched = cfg.file.clone().filter(|_| cfg.schedule.watch_config);
        let _watcher = blocking(move || {
            let f = watched?;
            watch::watch_config(&f, watch_tx)
                .inspect_err(|e| {
                    tracing::warn!(
                        "not watching {} for changes ({e}); use SIGHUP to reload",
                        f.display()
                    );
                })
                .ok()
        })
        .await
        .ok()
        .flatten();

        // 7. Staleness and systemd.
        let mut stale = StaleTracker::new(now);
        let mut stale_check_at = Some(now);
        // A saved edit reloads at this deadline (the debounce), not at once.
        let mut reload_at: Option<Instant> = None;
        systemd::ready(&status_line(&timetable, &queue));
        let watchdog = systemd::spawn_watchdog();
        log_schedule(&timetable, &cfg);

        // 8. The loop.
        let reason = loop {
            let now = Utc::now();
            health.tick(now);
            let until = [timetable.next_wake(), stale_check_at]
                .into_iter()
                .flatten()
                .min()
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = control.shutdown.cancelled() => break "shutdown requested",
                _ = control.reload.notified() => {
                    reloader.reload(&mut timetable, &events, &queue, true).await;
                    stale_check_at = Some(Utc::now());
                }
                Some(()) = watch_rx.recv() => {
                    // The first event of a save starts the debounce; later ones join it.
                    reload_at.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                _ = tokio::time::sleep_until(reload_at.unwrap_or_else(Instant::now)), if reload_at.is_some() => {
                    reload_at = None;
                    while watch_rx.try_recv().is_ok() {}
                    reloader.reload(&mut timetable, &events, &queue, false).await;
                    stale_check_at = Some(Utc::now());
                }
                Some(done) = finished.recv() => {
                    if let (Work::Job(job), Trigger::Schedule | Trigger::CatchUp) = (&done.work, done.trigger) {
                        let run = JobRun { slot: done.slot, finished: Some(Utc::now()), ok: Some(done.ok) };
                        let (cfg, job) = (cfg_rx.borrow().clone(), *job);
                        let _ = blocking(move || record_run(&cfg, job, run)).await;
                    }
                    stale_check_at = Some(Utc::now());
                    systemd::status(&status_line(&timetable, &queue));
                }
                _ = tokio::time::sleep(until) => {
                    let now = Utc::now();
                    for (job, slot) in timetable.take_due(now) {
                        submit(&queue, &events, job, Trigger::Schedule, slot);
                    }
                    if stale_check_at.is_some_and(|t| t <= now) {
                        let cfg = cfg_rx.borrow().clone();
                        stale_check_at = check_staleness(cfg, &mut stale, &events, now).await;
                        for kind in BackupKind::ALL {
                            health.set_stale(kind, stale.is_stale(kind));
                        }
                    }
                    systemd::status(&status_line(&timetable, &queue));
                }
            }
        };

        // 9. Stop: no new jobs (clients stop on the same `control.shutdown`); the running
        // one gets the grace period, then is cancelled.
        tracing::info!("stopping: {reason}");
        systemd::stopping();
        events.send(Event::DaemonStopping {
            reason: reason.into(),
        });
        stop_worker.cancel();
        let grace = cfg_rx.borrow().schedule.shutdown_grace.0;
        if tokio::time::timeout(grace, &mut worker).await.is_err() {
            if let Some(job) = queue.cancel_current() {
                tracing::warn!(
                    "{job} did not finish within the grace period of {grace:?}; aborting it (nothing partial is kept)"
                );
            }
            let _ = worker.await;
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        drop(queue);
        // The reporter holds an event sender too: the dispatcher drains only when all are gone.
        drop(set_aside_reports);
        drop(events);
        drop(reloader);
        // Deliver what is queued, bounded: the dispatcher drains into the sinks, then the
        // Telegram task sends what it holds (its retries are cut short by the bound).
        let flush = async {
            let _ = dispatcher.await;
            let _ = telegram_task.await;
        };
        if tokio::time::timeout(FLUSH_LIMIT, flush).await.is_err() {
            tracing::warn!("gave up delivering queued notifications after {FLUSH_LIMIT:?}");
        }
        Ok(())
    }
}

/// Run blocking work on the blocking pool; a panic in it becomes an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}

/// The backup directory made ready: created, the daemon's lock held, and leftovers of a
/// crash removed if nobody is mid-operation.
fn prepare_backup_dir(cfg: &Config) -> Result<BackupDirLock> {
    let catalog = catalog_for(cfg);
    catalog.prepare()?;
    let daemon_lock = BackupDirLock::acquire_file(catalog.root(), DAEMON_LOCK_FILE, "daemon")?;
    if let Ok(lock) = catalog.lock("daemon start") {
        match catalog.clean_leftovers() {
            Ok(removed) if !removed.is_empty() => tracing::info!(
                "removed {} leftover file(s) of interrupted runs",
                removed.len()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not clean leftovers: {}", crate::error_chain(&e)),
        }
        drop(lock);
    }
    Ok(daemon_lock)
}

fn submit(
    queue: &Queue,
    events: &EventSender,
    job: JobName,
    trigger: Trigger,
    slot: DateTime<Utc>,
) {
    match queue.submit(Request {
        work: Work::Job(job),
        trigger,
        slot,
        reply: None,
    }) {
        Ok(()) => tracing::debug!("{job} queued ({trigger:?})"),
        Err(Rejected::AlreadyQueued(_)) => events.send(Event::JobSkipped {
            job,
            reason: "the previous run is still queued or running".into(),
        }),
        Err(Rejected::ShuttingDown) => {}
    }
}

/// Catch-up from the run history, and a baseline recorded for every job that has none
/// (its first start), in one update of the history file. Blocking.
fn start_history(cfg: &Config, now: DateTime<Utc>) -> Vec<(JobName, DateTime<Utc>)> {
    let file = JobRuns::file(&cfg.paths.backup_dir, cfg.backup.file_mode.0);
    let updated = file.update(|history| {
        let due = catch_up(cfg, &history.last_slots(), now);
        for job in JobName::ALL {
            history
                .jobs
                .entry(job.as_str().to_string())
                .or_insert(JobRun {
                    slot: now,
                    finished: None,
                    ok: None,
                });
        }
        due
    });
    match updated {
        Ok(u) => u.result,
        Err(e) => {
            tracing::warn!("could not save the run history: {}", crate::error_chain(&e));
            catch_up(cfg, &file.load_or_default().last_slots(), now)
        }
    }
}

/// Record a scheduled run in the history (an atomic write: two fsyncs). Blocking.
fn record_run(cfg: &Config, job: JobName, run: JobRun) {
    let file = JobRuns::file(&cfg.paths.backup_dir, cfg.backup.file_mode.0);
    if let Err(e) = file.update(|history| history.record(job, run)) {
        tracing::warn!("could not save the run history: {}", crate::error_chain(&e));
    }
}

/// Compare the newest backups with their `max_age`, and say when to look again. The
/// listing and the state file are read on the blocking pool; the judgement is pure.
async fn check_staleness(
    cfg: Arc<Config>,
    stale: &mut StaleTracker,
    events: &EventSender,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let scan_cfg = cfg.clone();
    let scanned = blocking(move || scan_backups(&scan_cfg)).await;
    let (listing, failures) = match scanned.and_then(|r| r) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(
                "cannot list backups for the staleness check: {}",
                crate::error_chain(&e)
            );
            return Some(now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default());
        }
    };
    for e in stale.check(&cfg, &listing, &failures, now) {
        events.send(e);
    }
    stale.next_deadline(&cfg, &listing, now)
}

/// The backups on disk and the last failure of each type ("at (error)").
fn scan_backups(cfg: &Config) -> Result<(Listing, std::collections::BTreeMap<BackupKind, String>)> {
    let catalog = catalog_for(cfg);
    let listing = catalog.list()?;
    let state = catalog.load_state();
    let failures = BackupKind::ALL
        .into_iter()
        .filter_map(|k| {
            let f = state.get(k.as_str())?.last_failure.as_ref()?;
            Some((
                k,
                format!("{} ({})", f.at, f.error.as_deref().unwrap_or("?")),
            ))
        })
        .collect();
    Ok((listing, failures))
}

fn log_schedule(timetable: &Timetable, cfg: &Config) {
    for job in JobName::ALL {
        match timetable.next_of(job) {
            Some(t) => tracing::info!(
                "{job}: `{}`, next run {}",
                cfg.schedule.of(job).expression(),
                cfg.schedule.timezone.format(&t)
            ),
            None => tracing::info!("{job}: off"),
        }
    }
}

/// "next: database at 12:00:00 UTC; running: full".
fn status_line(timetable: &Timetable, queue: &Queue) -> String {
    let next = JobName::ALL
        .into_iter()
        .filter_map(|j| timetable.next_of(j).map(|t| (t, j)))
        .min();
    let mut s = match next {
        Some((t, j)) => format!("next: {j} at {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
        None => "no jobs scheduled".to_string(),
    };
    let busy = queue.busy();
    if !busy.is_empty() {
        s.push_str(&format!("; busy: {}", busy.join(", ")));
    }
    s
}
