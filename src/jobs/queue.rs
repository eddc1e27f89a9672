//! The one queue every job goes through (docs/design.md §7): scheduled runs, catch-up runs, API
//! requests and (later) chat commands. One worker runs them one at a time on the blocking
//! pool; a job that comes due while the same job is queued or running is skipped with a
//! warning — never run twice or in parallel. The running job's [`Cancel`] is exposed so shutdown can abort it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::engine::Cancel;
use crate::events::EventSender;
use crate::kind::JobName;

use super::run::{JobOutcome, crashed, run_job};

/// What the worker calls to run one job: [`run_job`], or a stand-in in tests.
type Runner = fn(&Config, &Work, &Cancel, &EventSender) -> JobOutcome;

/// Why a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    /// `POST /backups/…` on the REST API.
    Api,
    /// A chat command (`/backup`, `/verify`) in Telegram.
    Telegram,
    /// The offsite upload the daemon queues after a good backup.
    AfterBackup,
}

/// What to run: a scheduled job, or work an operator asked for through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Job(JobName),
    /// Restore a backup in place (the API's `POST /backups/restore`).
    Restore {
        path: std::path::PathBuf,
        verify: bool,
    },
    /// Rotate, optionally with `keep_last` overridden (`POST /backups/rotate?max_backups=N`).
    Rotate {
        keep_last: Option<u32>,
    },
}

impl Work {
    /// Work with the same key never runs twice or in parallel.
    pub fn key(&self) -> &'static str {
        match self {
            Work::Job(j) => j.as_str(),
            Work::Restore { .. } => "restore",
            Work::Rotate { .. } => JobName::Rotate.as_str(),
        }
    }
}

pub struct Request {
    pub work: Work,
    pub trigger: Trigger,
    /// The slot a scheduled run is for; recorded for catch-up.
    pub slot: DateTime<Utc>,
    pub reply: Option<oneshot::Sender<JobOutcome>>,
}

/// Handle to submit jobs.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Request>,
    busy: Arc<Mutex<BTreeSet<&'static str>>>,
    current: Arc<Mutex<Option<(&'static str, Cancel)>>>,
}

/// Sent back when a job could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    AlreadyQueued(&'static str),
    ShuttingDown,
}

impl Queue {
    /// Queue `req` unless the same job is queued or running.
    pub fn submit(&self, req: Request) -> Result<(), Rejected> {
        let job = req.work.key();
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            if !busy.insert(job) {
                return Err(Rejected::AlreadyQueued(job));
            }
        }
        self.tx.send(req).map_err(|_| {
            self.busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job);
            Rejected::ShuttingDown
        })
    }

    /// Queue `work` that a client asked for (`trigger`: the API, a chat command): its
    /// outcome arrives on the returned receiver once it has run.
    pub fn request(
        &self,
        work: Work,
        trigger: Trigger,
    ) -> Result<oneshot::Receiver<JobOutcome>, Rejected> {
        let (tx, rx) = oneshot::channel();
        self.submit(Request {
            work,
            trigger,
            slot: Utc::now(),
            reply: Some(tx),
        })?;
        Ok(rx)
    }

    /// Work queued or running, by key.
    pub fn busy(&self) -> Vec<&'static str> {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Ask the running job, if any, to stop (it removes what it wrote).
    pub fn cancel_current(&self) -> Option<&'static str> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|(job, cancel)| {
            cancel.cancel();
            *job
        })
    }
}

/// What the worker tells the daemon after each job.
pub struct Finished {
    pub work: Work,
    pub trigger: Trigger,
    pub slot: DateTime<Utc>,
    pub ok: bool,
}

/// Start the worker. It runs until the queue's senders are all dropped and the queue is
/// drained, or `stop` is set (then queued jobs are dropped, the running one finishes).
pub fn start(
    config: watch::Receiver<Arc<Config>>,
    events: EventSender,
    finished: mpsc::UnboundedSender<Finished>,
    stop: tokio_util::sync::CancellationToken,
) -> (Queue, tokio::task::JoinHandle<()>) {
    start_with(config, events, finished, stop, run_job)
}

fn start_with(
    config: watch::Receiver<Arc<Config>>,
    events: EventSender,
    finished: mpsc::UnboundedSender<Finished>,
    stop: tokio_util::sync::CancellationToken,
    runner: Runner,
) -> (Queue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    let queue = Queue {
        tx,
        busy: Arc::default(),
        current: Arc::default(),
    };
    let q = queue.clone();
    let handle = tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = rx.recv() => match r { Some(r) => r, None => break },
            };
            let cancel = Cancel::new();
            let key = req.work.key();
            *q.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, cancel.clone()));
            let cfg = config.borrow().clone();
            // One line when a job starts and one when it ends: journald then shows when
            // each job actually ran (a scheduled one with the slot it fired for), which is
            // what an operator needs to tell a delayed run from a double one.
            let began = std::time::Instant::now();
            tracing::info!("{key}: job started ({})", describe(&req, &cfg));
            let ev = events.clone();
            let work = req.work.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                // `[backup] nice` / `io_class` for this job only: the pooled thread (and the
                // hooks and workers it spawns) run at it until the guard drops.
                let (_priority, problems) =
                    crate::priority::JobPriority::apply((&cfg.backup).into());
                for p in problems {
                    tracing::warn!("{}: {p}", work.key());
                }
                // A panic is caught here, on the blocking thread, so that it is journaled
                // and alerted like any failure (file writes stay off the runtime).
                let run = std::panic::AssertUnwindSafe(|| runner(&cfg, &work, &cancel, &ev));
                std::panic::catch_unwind(run)
                    .unwrap_or_else(|p| crashed(&cfg, &work, &panic_message(p.as_ref()), &ev))
            })
            .await;
            *q.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
            q.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => JobOutcome::Crashed(e.to_string()),
            };
            tracing::info!(
                "{key}: job finished ({}) after {:.3} s",
                if outcome.ok() { "ok" } else { "FAILED" },
                began.elapsed().as_secs_f64()
            );
            let _ = finished.send(Finished {
                work: req.work,
                trigger: req.trigger,
                slot: req.slot,
                ok: outcome.ok(),
            });
            if let Some(reply) = req.reply {
                let _ = reply.send(outcome);
            }
        }
    });
    (queue, handle)
}

/// The text a panic was raised with (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Why a job runs, for its start line: "schedule, slot 2026-11-27 06:00:00 +03:00".
fn describe(req: &Request, cfg: &Config) -> String {
    let slot = || cfg.schedule.timezone.format(&req.slot);
    match req.trigger {
        Trigger::Schedule => format!("schedule, slot {}", slot()),
        Trigger::CatchUp => format!("catch-up, slot {}", slot()),
        Trigger::Api => "requested through the API".to_string(),
        Trigger::Telegram => "requested from Telegram".to_string(),
        Trigger::AfterBackup => "after a good backup".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Sink, dispatcher};
    use crate::kind::JobName;

    struct Collect(Arc<Mutex<Vec<Event>>>);
    impl Sink for Collect {
        fn handle(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    fn panics(_: &Config, _: &Work, _: &Cancel, _: &EventSender) -> JobOutcome {
        panic!("boom inside the engine")
    }

    /// Issue 13, item 7: a panic used to become `Crashed` silently — no event, no
    /// `backup.log` line, no state.
    #[test]
    fn a_job_that_panics_is_journaled_and_alerted_like_any_failure() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let text = format!("[paths]\nbackup_dir = \"{}\"\n", backups.display());
        let cfg = Config::parse(&text, None, dir.path(), &|_| None).unwrap();
        let catalog = crate::engine::backup::catalog_for(&cfg);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let sink: Arc<dyn Sink> = Arc::new(Collect(seen.clone()));
            let (events, dispatched) = dispatcher(vec![sink], 16);
            let (_config_tx, config_rx) = watch::channel(Arc::new(cfg));
            let (finished_tx, _finished_rx) = mpsc::unbounded_channel();
            let stop = tokio_util::sync::CancellationToken::new();
            let (queue, worker) = start_with(config_rx, events, finished_tx, stop.clone(), panics);
            for work in [
                Work::Job(JobName::Database),
                Work::Rotate { keep_last: None },
                Work::Restore {
                    path: dir.path().join("db_backup_20260101_000000.db"),
                    verify: true,
                },
                Work::Job(JobName::Verify),
            ] {
                let (reply, outcome) = oneshot::channel();
                let req = Request {
                    work,
                    trigger: Trigger::Api,
                    slot: Utc::now(),
                    reply: Some(reply),
                };
                queue.submit(req).unwrap();
                let outcome = outcome.await.unwrap();
                assert!(matches!(&outcome, JobOutcome::Crashed(m) if m.contains("boom")));
            }
            stop.cancel();
            worker.await.unwrap();
            drop(queue);
            dispatched.await.unwrap();
        });

        let events = seen.lock().unwrap();
        let failed = |pred: &dyn Fn(&Event) -> bool| events.iter().any(pred);
        assert!(
            failed(
                &|e| matches!(e, Event::BackupFailed { job: JobName::Database, error, .. } if error.contains("boom"))
            ),
            "{events:#?}"
        );
        assert!(
            failed(&|e| matches!(e, Event::RotationFailed { error } if error.contains("boom"))),
            "{events:#?}"
        );
        assert!(
            failed(&|e| matches!(e, Event::RestoreFailed { error, .. } if error.contains("boom"))),
            "{events:#?}"
        );
        assert!(
            failed(
                &|e| matches!(e, Event::VerifyFailed { failures } if failures[0].contains("boom"))
            ),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .all(|e| e.category() == Some(crate::config::NotifyOn::Failure)),
            "{events:#?}"
        );

        let log = std::fs::read_to_string(backups.join("backup.log")).unwrap();
        for prefix in ["create database: failed", "rotate: failed", "restore "] {
            assert!(
                log.lines()
                    .any(|l| l.contains("ERROR") && l.contains(prefix) && l.contains("boom")),
                "no ERROR line {prefix:?} in backup.log:\n{log}"
            );
        }
        let state = catalog.load_state();
        let failure = state
            .get("database")
            .and_then(|r| r.last_failure.clone())
            .expect("no last_failure");
        assert_eq!(failure.step.as_deref(), Some("internal error"));
        assert!(failure.error.unwrap_or_default().contains("boom"));
    }
}
