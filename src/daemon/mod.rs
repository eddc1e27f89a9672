//! The long-running service (SPEC §7): the schedule from the TOML config, one job queue,
//! catch-up after downtime, live reload (SIGHUP or a saved edit), staleness alerts, a clean
//! stop, and systemd notification. [`run`] is a library function — the binary wires
//! signals to a [`Control`], tests can do the same — and its startup order is written out
//! in one place below.

mod jobs;
mod runs;
mod staleness;
mod systemd;
mod timetable;
mod watch;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch as tokio_watch};
use tokio_util::sync::CancellationToken;

pub use jobs::JobOutcome;
pub use runs::{JobRun, JobRuns, SCHEDULE_FILE};
pub use staleness::{StaleTracker, max_age};
pub use timetable::{Timetable, catch_up, job_schedule};

use crate::api::{Health, Metrics};
use crate::catalog::BackupDirLock;
use crate::config::Config;
use crate::engine::backup::catalog_for;
use crate::error::Result;
use crate::events::{self, Event, EventSender, JobName, LogSink, Sink};
use crate::telegram::TelegramSink;
use worker::{Finished, Queue, Rejected, Request, Trigger, Work};

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

/// The longest the loop sleeps without looking at the wall clock again, so a clock jump
/// or a suspended VM is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Editors write a file in several steps; wait this long for the last one.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long a stopping daemon tries to deliver queued notifications.
const FLUSH_LIMIT: Duration = Duration::from_secs(15);

/// Run the daemon until `control.shutdown` is cancelled.
pub async fn run(
    initial: Config,
    load: ConfigLoader,
    control: Control,
    extra_sinks: Vec<Arc<dyn Sink>>,
) -> Result<()> {
    // 1. The backup directory, and the daemon's own lock: one daemon per directory.
    let catalog = catalog_for(&initial);
    catalog.prepare()?;
    let _daemon_lock = BackupDirLock::acquire_file(catalog.root(), DAEMON_LOCK_FILE, "daemon")?;

    // Leftovers of a crash are removed now if nobody is mid-operation.
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

    // 2. The config everyone reads; a reload replaces it for all readers at once.
    let file = initial.file.clone();
    // What the running config was parsed from: a reload that reads the same is a no-op.
    let mut last_text = file.as_ref().map(|_| initial.text().to_string());
    let (cfg_tx, cfg_rx) = tokio_watch::channel(Arc::new(initial));

    // 3. Events: the log, Telegram (from the live config), whatever the caller adds.
    let (telegram, telegram_task) = TelegramSink::start(cfg_rx.clone());
    let health = Arc::new(Health::default());
    health.tick(Utc::now());
    let metrics = Arc::new(Metrics::default());
    let mut sinks: Vec<Arc<dyn Sink>> = vec![
        Arc::new(LogSink {
            log: Some(catalog.log()),
        }),
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
    let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<Finished>();
    let (queue, mut worker) =
        worker::start(cfg_rx.clone(), events.clone(), fin_tx, stop_worker.clone());

    // The REST API, if enabled; without a token it stays off and says why.
    let api_stop = CancellationToken::new();
    let api_task = if cfg_rx.borrow().api.enabled {
        match crate::api::start(
            cfg_rx.clone(),
            queue.clone(),
            health.clone(),
            metrics.clone(),
            api_stop.clone(),
        )
        .await
        {
            Ok((addr, task)) => {
                tracing::info!("REST API listening on http://{addr}");
                Some(task)
            }
            Err(why) => {
                tracing::error!("the REST API is not started: {why}");
                None
            }
        }
    } else {
        None
    };

    // 5. The timetable, the run history and catch-up.
    let now = Utc::now();
    let cfg = cfg_rx.borrow().clone();
    let due_now = start_history(&cfg, now);
    let mut timetable = Timetable::new(&cfg, now);
    for (job, slot) in due_now {
        tracing::info!(
            "{job}: its {slot} run was missed while the daemon was down; running it now"
        );
        submit(&queue, &events, job, Trigger::CatchUp, slot);
    }

    // 6. Watch the config file.
    let (watch_tx, mut watch_rx) = mpsc::channel::<()>(1);
    let watching = cfg_rx.borrow().schedule.watch_config;
    let _watcher =
        file.as_ref()
            .filter(|_| watching)
            .and_then(|f| match watch::watch_config(f, watch_tx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        "not watching {} for changes ({e}); use SIGHUP to reload",
                        f.display()
                    );
                    None
                }
            });

    // 7. Staleness and systemd.
    let mut stale = StaleTracker::new(now);
    let mut stale_check_at = Some(now);
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
                reload(&load, &cfg_tx, &mut timetable, &events, &queue, &mut last_text, true);
                stale_check_at = Some(Utc::now());
            }
            Some(()) = watch_rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while watch_rx.try_recv().is_ok() {}
                reload(&load, &cfg_tx, &mut timetable, &events, &queue, &mut last_text, false);
                stale_check_at = Some(Utc::now());
            }
            Some(done) = fin_rx.recv() => {
                if let (Work::Job(job), Trigger::Schedule | Trigger::CatchUp) = (&done.work, done.trigger) {
                    record_run(&cfg_rx.borrow(), *job, JobRun { slot: done.slot, finished: Some(Utc::now()), ok: Some(done.ok) });
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
                    stale_check_at = check_staleness(&cfg, &mut stale, &events, now);
                    for kind in crate::BackupKind::ALL {
                        health.set_stale(kind, stale.is_stale(kind));
                    }
                }
                systemd::status(&status_line(&timetable, &queue));
            }
        }
    };

    // 9. Stop: no new requests or jobs; the running one gets the grace period, then is
    // cancelled.
    tracing::info!("stopping: {reason}");
    api_stop.cancel();
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
    if let Some(api) = api_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    }
    drop(queue);
    // The reporter holds an event sender too: the dispatcher drains only when all are gone.
    drop(set_aside_reports);
    drop(events);
    drop(cfg_tx);
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
/// (its first start), in one update of the history file.
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

fn record_run(cfg: &Config, job: JobName, run: JobRun) {
    let file = JobRuns::file(&cfg.paths.backup_dir, cfg.backup.file_mode.0);
    if let Err(e) = file.update(|history| history.record(job, run)) {
        tracing::warn!("could not save the run history: {}", crate::error_chain(&e));
    }
}

/// Re-read the config; a valid one replaces the schedule, an invalid one is rejected and
/// the old one keeps running. `forced` (SIGHUP) reloads even an unchanged file.
fn reload(
    load: &ConfigLoader,
    cfg_tx: &tokio_watch::Sender<Arc<Config>>,
    timetable: &mut Timetable,
    events: &EventSender,
    queue: &Queue,
    last_text: &mut Option<String>,
    forced: bool,
) {
    let current_file = cfg_tx.borrow().file.clone();
    let text = current_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok());
    if !forced && text.is_some() && text == *last_text {
        return;
    }
    systemd::reloading();
    // An empty file is valid TOML (all defaults), and it is what a reload sees when it
    // catches an editor or `cat > file` between truncating and writing (found by the
    // SIGHUP storm tests): swapping every setting for the defaults on a
    // running daemon is never what the operator meant, so it is refused like any error.
    let loaded = match (&current_file, &text) {
        (Some(f), Some(t)) if t.trim().is_empty() => Err(crate::Error::Config {
            file: Some(f.clone()),
            line: None,
            key: String::new(),
            message: "the file is empty (still being written?); the running configuration stays"
                .into(),
        }),
        _ => load(),
    };
    match loaded {
        Ok(new) => {
            let old_dir = cfg_tx.borrow().paths.backup_dir.clone();
            if new.paths.backup_dir != old_dir {
                tracing::warn!(
                    "backup_dir changed to {}; restart the daemon so its lock moves too",
                    new.paths.backup_dir.display()
                );
            }
            // Slots that came due under the old schedule but have not fired yet (the loop
            // was in the edit debounce, or took this reload before its timer) still run:
            // the new timetable starts after "now" and would otherwise drop them silently
            // (a save at 01:59:59.8 would cost the 02:00 backup). They are submitted once
            // the new config is published, so they run with it like every later job.
            let now = Utc::now();
            let due = timetable.take_due(now);
            *timetable = Timetable::new(&new, now);
            let next_runs = JobName::ALL
                .into_iter()
                .filter_map(|j| {
                    timetable
                        .next_of(j)
                        .map(|t| (j.to_string(), new.schedule.timezone.format(&t)))
                })
                .collect();
            // The text actually parsed, which is newer than `text` if the file changed
            // again between the two reads.
            *last_text = Some(new.text().to_string());
            cfg_tx.send_replace(Arc::new(new));
            for (job, slot) in due {
                submit(queue, events, job, Trigger::Schedule, slot);
            }
            events.send(Event::ConfigReloaded { next_runs });
        }
        Err(e) => {
            *last_text = text;
            events.send(Event::ConfigRejected {
                error: crate::error_chain(&e),
            });
        }
    }
    systemd::reloaded(&status_line(timetable, queue));
}

fn check_staleness(
    cfg: &Config,
    stale: &mut StaleTracker,
    events: &EventSender,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let catalog = catalog_for(cfg);
    let listing = match catalog.list() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "cannot list backups for the staleness check: {}",
                crate::error_chain(&e)
            );
            return Some(now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default());
        }
    };
    let state = catalog.load_state();
    let failures = crate::BackupKind::ALL
        .into_iter()
        .filter_map(|k| {
            let f = state.get(k.as_str())?.last_failure.as_ref()?;
            Some((
                k,
                format!("{} ({})", f.at, f.error.as_deref().unwrap_or("?")),
            ))
        })
        .collect();
    for e in stale.check(cfg, &listing, &failures, now) {
        events.send(e);
    }
    stale.next_deadline(cfg, &listing, now)
}

fn log_schedule(timetable: &Timetable, cfg: &Config) {
    for job in JobName::ALL {
        match timetable.next_of(job) {
            Some(t) => tracing::info!(
                "{job}: `{}`, next run {}",
                job_schedule(cfg, job).expression(),
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
