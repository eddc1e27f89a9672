//! The scheduler loop (docs/design.md §7): it wakes for the next slot, a finished job, a reload
//! (SIGHUP, or a saved edit after its debounce) or a staleness deadline — whichever comes
//! first, never sleeping past [`MAX_SLEEP`] so clock jumps are noticed — and submits due
//! jobs to the one queue. Its file work (the run history, the staleness scan, the config
//! read) goes to the blocking pool; the loop itself only decides.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::reload::Reloader;
use super::runs::{JobRun, JobRuns};
use super::staleness::{OffsiteStaleTracker, StaleTracker};
use super::timetable::{Timetable, catch_up};
use super::{Control, DEBOUNCE, MAX_SLEEP, Services, blocking, systemd, watch as config_watch};
use crate::catalog::Listing;
use crate::config::Config;
use crate::engine::backup::catalog_for;
use crate::error::Result;
use crate::events::{Event, EventSender};
use crate::jobs::{Finished, Queue, Rejected, Request, Trigger, Work};
use crate::kind::{BackupKind, JobName};
use crate::offsite::{OffsiteState, OffsiteStore};
use crate::status::Health;

/// What the loop keeps between wake-ups.
pub(super) struct Scheduler {
    config: watch::Receiver<Arc<Config>>,
    queue: Queue,
    health: Arc<Health>,
    events: EventSender,
    reloader: Reloader,
    finished: mpsc::UnboundedReceiver<Finished>,
    timetable: Timetable,
    stale: StaleTracker,
    offsite_stale: OffsiteStaleTracker,
    stale_check_at: Option<DateTime<Utc>>,
    /// A saved edit reloads at this deadline (the debounce), not at once.
    reload_at: Option<Instant>,
    edits: mpsc::Receiver<()>,
    /// What a new watch sends on (one is made after every reload).
    edit_tx: mpsc::Sender<()>,
    /// Keeps the inotify watch alive.
    watcher: Option<config_watch::ConfigWatch>,
}

impl Scheduler {
    /// Steps 5–7 of the startup: the run history and catch-up, the config watch, the
    /// timetable, READY=1.
    pub async fn begin(
        services: Services,
        reloader: Reloader,
        events: EventSender,
        finished: mpsc::UnboundedReceiver<Finished>,
    ) -> Scheduler {
        let Services {
            config,
            queue,
            health,
            metrics: _,
        } = services;
        let now = Utc::now();
        let cfg = config.borrow().clone();
        let due_now = {
            let cfg = cfg.clone();
            blocking(move || start_history(&cfg, now))
                .await
                .unwrap_or_default()
        };
        let timetable = Timetable::new(&cfg, now);
        for (job, slot) in due_now {
            tracing::info!(
                "{job}: its {slot} run was missed while the daemon was down; running it now"
            );
            submit(&queue, &events, job, Trigger::CatchUp, slot);
        }
        let (edit_tx, edits) = mpsc::channel::<()>(1);
        let watcher = start_watch(&cfg, &edit_tx);
        systemd::ready(&status_line(&timetable, &queue));
        log_schedule(&timetable, &cfg);
        Scheduler {
            config,
            queue,
            health,
            events,
            reloader,
            finished,
            timetable,
            stale: StaleTracker::new(now),
            offsite_stale: OffsiteStaleTracker::new(now),
            stale_check_at: Some(now),
            reload_at: None,
            edits,
            edit_tx,
            watcher,
        }
    }

    /// Step 8: run until `control.shutdown`; says why it stopped.
    pub async fn run_until(&mut self, control: &Control) -> &'static str {
        loop {
            let now = Utc::now();
            self.health.tick(now);
            let until = [self.timetable.next_wake(), self.stale_check_at]
                .into_iter()
                .flatten()
                .min()
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let debounce_over = self.reload_at.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = control.shutdown.cancelled() => return "shutdown requested",
                _ = control.reload.notified() => self.reload(true).await,
                Some(()) = self.edits.recv() => {
                    // The first event of a save starts the debounce; later ones join it.
                    self.reload_at.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                _ = tokio::time::sleep_until(debounce_over), if self.reload_at.is_some() => {
                    self.reload_at = None;
                    while self.edits.try_recv().is_ok() {}
                    self.reload(false).await;
                }
                Some(done) = self.finished.recv() => self.on_finished(done).await,
                _ = tokio::time::sleep(until) => self.on_timer().await,
            }
        }
    }

    async fn reload(&mut self, forced: bool) {
        // Watched anew (a switched symlink may point into another directory now), and
        // before the file is read: an edit saved while it is read is seen by the new
        // watch, not lost between the two.
        let before = self.config.borrow().clone();
        let fresh = start_watch(&before, &self.edit_tx);
        self.reloader
            .reload(&mut self.timetable, &self.events, &self.queue, forced)
            .await;
        // The reload may have turned `watch_config` on or off.
        let cfg = self.config.borrow().clone();
        self.watcher = match (cfg.schedule.watch_config, fresh) {
            (false, _) => None,
            (true, Some(watch)) => Some(watch),
            (true, None) => start_watch(&cfg, &self.edit_tx),
        };
        self.stale_check_at = Some(Utc::now());
    }

    /// A job ended: a scheduled run goes into the history (for catch-up), and staleness
    /// is looked at again.
    async fn on_finished(&mut self, done: Finished) {
        if let (Work::Job(job), Trigger::Schedule | Trigger::CatchUp) = (&done.work, done.trigger) {
            let run = JobRun {
                slot: done.slot,
                finished: Some(Utc::now()),
                ok: Some(done.ok),
            };
            let (cfg, job) = (self.config.borrow().clone(), *job);
            let _ = blocking(move || record_run(&cfg, job, run)).await;
        }
        // Every good backup goes offsite next, through the same queue (so an upload never
        // races a rotation). One already queued will take this backup too.
        let cfg = self.config.borrow().clone();
        if done.ok
            && !cfg.offsite.is_empty()
            && matches!(&done.work, Work::Job(j) if j.backup_kind().is_some())
        {
            let queued = self.queue.submit(Request {
                work: Work::Job(JobName::Offsite),
                trigger: Trigger::AfterBackup,
                slot: Utc::now(),
                reply: None,
            });
            if let Err(Rejected::AlreadyQueued(_)) = queued {
                tracing::debug!("offsite upload already queued; it takes the new backup too");
            }
        }
        self.stale_check_at = Some(Utc::now());
        systemd::status(&status_line(&self.timetable, &self.queue));
    }

    /// The timer fired: submit what is due, check staleness when its deadline passed.
    async fn on_timer(&mut self) {
        let now = Utc::now();
        for (job, slot) in self.timetable.take_due(now) {
            submit(&self.queue, &self.events, job, Trigger::Schedule, slot);
        }
        if self.stale_check_at.is_some_and(|t| t <= now) {
            let cfg = self.config.borrow().clone();
            let trackers = (&mut self.stale, &mut self.offsite_stale);
            self.stale_check_at = check_staleness(cfg, trackers, &self.events, now).await;
            for kind in BackupKind::ALL {
                self.health.set_stale(kind, self.stale.is_stale(kind));
            }
            self.health
                .set_offsite_stale(self.offsite_stale.stale().clone());
        }
        systemd::status(&status_line(&self.timetable, &self.queue));
    }
}

/// The watch of the config file (and of the file its symlink points to now), when the
/// config asks for one.
fn start_watch(cfg: &Config, edit_tx: &mpsc::Sender<()>) -> Option<config_watch::ConfigWatch> {
    let file = cfg.file.clone().filter(|_| cfg.schedule.watch_config)?;
    config_watch::watch_config(&file, edit_tx.clone())
        .inspect_err(|e| {
            tracing::warn!(
                "not watching {} for changes ({e}); use SIGHUP to reload",
                file.display()
            );
        })
        .ok()
}

/// Queue a scheduled (or reload-rescued) run; a job still queued or running is skipped
/// with a warning event, never run twice.
pub(super) fn submit(
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

/// Compare the newest backups, local and on each offsite target, with their `max_age`, and
/// say when to look again. The listing and the state files are read on the blocking
/// pool; the judgement is pure.
async fn check_staleness(
    cfg: Arc<Config>,
    (stale, offsite_stale): (&mut StaleTracker, &mut OffsiteStaleTracker),
    events: &EventSender,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let scan_cfg = cfg.clone();
    let scanned = blocking(move || scan_backups(&scan_cfg)).await;
    let (listing, failures, offsite) = match scanned.and_then(|r| r) {
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
    for e in offsite_stale.check(&cfg, &offsite, now) {
        events.send(e);
    }
    let local = stale.next_deadline(&cfg, &listing, now);
    let remote = offsite_stale.next_deadline(&cfg, &offsite, now);
    local.into_iter().chain(remote).min()
}

/// What the staleness scan reads: the backups on disk, the last failure of each type
/// ("at (error)"), and what the offsite state file records about the targets.
type Scanned = (Listing, BTreeMap<BackupKind, String>, OffsiteState);

fn scan_backups(cfg: &Config) -> Result<Scanned> {
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
    let offsite = if cfg.offsite.is_empty() {
        OffsiteState::default()
    } else {
        OffsiteStore::new(&cfg.paths.backup_dir, cfg.backup.file_mode.0).load()
    };
    Ok((listing, failures, offsite))
}

fn log_schedule(timetable: &Timetable, cfg: &Config) {
    for job in JobName::ALL {
        match timetable.next_of(job) {
            Some(t) => tracing::info!(
                "{job}: `{}`, next run {}",
                cfg.schedule_of(job).expression(),
                cfg.schedule.timezone.format(&t)
            ),
            None => tracing::info!("{job}: off"),
        }
    }
}

/// "next: database at 12:00:00 UTC; running: full".
pub(super) fn status_line(timetable: &Timetable, queue: &Queue) -> String {
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
