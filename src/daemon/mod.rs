//! The long-running service (docs/design.md §7): the schedule from the TOML config, one job queue,
//! catch-up after downtime, live reload (SIGHUP or a saved edit), staleness alerts, a clean
//! stop, and systemd notification. [`Daemon::start`] sets up the backup directory, the
//! events and the worker, and hands out the [`Services`] that clients (the REST API, chat
//! commands) use — the daemon imports none of them; [`Daemon::run`] is the scheduler loop
//! until `control.shutdown`. The startup order is written out in one place below. Nothing
//! here does blocking I/O on the runtime's threads: file reads, parses, scans and fsyncs
//! go to the blocking pool.

mod containers;
mod reload;
mod replication;
mod runs;
mod scheduler;
mod staleness;
mod systemd;
mod timetable;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use runs::{JobRun, JobRuns, SCHEDULE_FILE};
pub use staleness::{StaleTracker, max_age};
pub use timetable::{Timetable, catch_up};

use crate::catalog::BackupDirLock;
use crate::config::Config;
use crate::engine::backup::catalog_for;
use crate::error::{Error, Result};
use crate::events::{self, Event, EventSender, LogSink, Sink};
use crate::healthchecks::HealthchecksSink;
use crate::jobs::{self, Finished, Queue};
use crate::status::{Health, Metrics};
use crate::telegram::TelegramSink;
use reload::Reloader;
use scheduler::Scheduler;

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
    pings_task: JoinHandle<()>,
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
        let (pings, pings_task) = HealthchecksSink::start(cfg_rx.clone());
        let health = Arc::new(Health::default());
        health.tick(Utc::now());
        let metrics = Arc::new(Metrics::default());
        let mut sinks: Vec<Arc<dyn Sink>> = vec![
            Arc::new(LogSink { log: Some(log) }),
            telegram,
            metrics.clone(),
            pings,
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
            pings_task,
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
            reloader,
            events,
            set_aside_reports,
            finished,
            stop_worker,
            mut worker,
            dispatcher,
            telegram_task,
            pings_task,
            _daemon_lock,
        } = self;
        let queue = services.queue.clone();
        let cfg_rx = services.config.clone();
        let services_health = services.health.clone();

        // Replication's read transaction is held before anything else: a log the app
        // restarts before it would be a gap (a needless new generation).
        let first_replication = replication::begin(cfg_rx.borrow().clone()).await;

        // 5.–7. Catch-up, the config watch, staleness, READY=1.
        let mut scheduler = Scheduler::begin(services, reloader, events.clone(), finished).await;
        let watchdog = systemd::spawn_watchdog();
        // Containers a run left stopped: started now, and retried while any stay down.
        let container_watch = tokio::spawn(containers::watch(
            cfg_rx.clone(),
            events.clone(),
            control.shutdown.clone(),
        ));

        // Continuous replication, beside the schedule (it stops on the same shutdown).
        let replication = tokio::spawn(replication::run(
            first_replication,
            cfg_rx.clone(),
            events.clone(),
            services_health.clone(),
            control.shutdown.clone(),
        ));

        // 8. The loop.
        let reason = scheduler.run_until(&control).await;

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
        // They end on the shutdown; they hold event senders the flush below waits for.
        let _ = container_watch.await;
        let _ = replication.await;
        drop((queue, scheduler, events));
        // The reporter holds an event sender too: the dispatcher drains only when all are gone.
        drop(set_aside_reports);
        // Deliver what is queued, bounded: the dispatcher drains into the sinks, then the
        // Telegram and ping tasks send what they hold (their retries are cut short by the bound).
        let flush = async {
            let _ = dispatcher.await;
            let _ = tokio::join!(telegram_task, pings_task);
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
