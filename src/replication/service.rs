//! One step of continuous replication, as the daemon runs it every `interval`: a pass
//! over the log (a new generation where the chain breaks, and once a day for a fresh
//! base), a checkpoint when the log grew, compaction and retention of the stream in the
//! backup directory, and each target brought up to date. Synchronous like the rest of
//! the engine; the daemon's task owns the timer, the cancellation and the alerts, and
//! hands each step's [`StepReport`] on.
//!
//! A target that fails is left alone for a while (doubling from the interval up to a
//! minute) so an outage costs few requests and never delays the local stream: the
//! backup directory keeps every transaction, and the target catches up when it answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compact::compact_generation;
use super::replicator::{CheckpointMode, Replicator};
use super::retain::{expired, window_start};
use super::ship::{Mirror, ShipError, standing};
use super::store::{ReplicaStore, read_json, write_json_unsynced};
use crate::config::{Config, OffsiteTarget, Replication};
use crate::encryption::Recipients;
use crate::error::Result;
use crate::offsite::{Remote, Target};

/// A new base this often: a restore replays at most a day of segments.
const BASE_EVERY: chrono::Duration = chrono::Duration::hours(24);
/// Why a generation began for the daily base.
pub const DAILY_BASE: &str = "the daily base (a restore replays at most a day)";
/// A PASSIVE checkpoint once the log holds this many bytes of frames (SQLite's own
/// automatic checkpoint is at 1000 pages).
const PASSIVE_AT: u64 = 4 << 20;
/// A TRUNCATE checkpoint once the log's file is this large (PASSIVE checkpoints could not
/// keep it short: the app's readers held old snapshots, or one transaction was huge).
const TRUNCATE_AT: u64 = 64 << 20;
/// A PASSIVE checkpoint at least this often while the log is not empty.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Compaction and retention this often.
const TIDY_EVERY: Duration = Duration::from_secs(10);
/// The longest a failing target is left alone.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const STATUS_FILE: &str = "status.json";

/// Where the stream and each target stand, as `status`, `/metrics` and `/health` show it
/// (written to `replication/status.json` after every step that changed it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicationStatus {
    pub updated: Option<DateTime<Utc>>,
    pub generation: Option<String>,
    pub generation_started: Option<DateTime<Utc>>,
    pub generation_reason: Option<String>,
    /// The oldest time a restore can reach, and the newest transaction read.
    pub window_start: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// Why the last step could not read the database, if it could not.
    pub error: Option<String>,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetStatus {
    pub name: String,
    /// Seconds the target is behind (the age of the oldest transaction it lacks); 0 when
    /// it holds everything.
    pub lag_seconds: f64,
    pub newest: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Requests (uploads and deletes) and bytes sent in the last hour.
    pub requests_last_hour: u64,
    pub bytes_last_hour: u64,
}

impl ReplicationStatus {
    pub fn read(store: &ReplicaStore) -> Result<Option<ReplicationStatus>> {
        read_json(&store.root().join(STATUS_FILE))
    }

    /// The worst lag over the targets (0 without targets).
    pub fn worst_lag(&self) -> f64 {
        self.targets
            .iter()
            .map(|t| t.lag_seconds)
            .fold(0.0, f64::max)
    }
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    pub status: ReplicationStatus,
    /// A generation began in this step: its name and why.
    pub new_generation: Option<(String, String)>,
    pub transactions: u64,
}

/// A target, opened once and kept.
struct TargetSlot {
    config: OffsiteTarget,
    target: Option<Arc<dyn Target>>,
    seal: Option<Recipients>,
    failing: Option<(String, Duration, Instant)>,
    /// (when, requests, bytes) per round in the last hour.
    sent: std::collections::VecDeque<(Instant, u64, u64)>,
}

pub struct ReplicationService {
    settings: Replication,
    config: Config,
    store: ReplicaStore,
    db: PathBuf,
    replicator: Option<Replicator>,
    targets: Vec<TargetSlot>,
    last_checkpoint: Instant,
    last_truncate: Option<Instant>,
    /// The log's bytes when the last checkpoint ended.
    checkpointed_at: u64,
    last_tidy: Option<Instant>,
    last_status: Option<ReplicationStatus>,
}

impl ReplicationService {
    /// The service for `config` (which must enable replication); nothing is opened yet.
    pub fn new(config: &Config) -> Option<ReplicationService> {
        let settings = config.replication.clone()?;
        let store = ReplicaStore::new(
            &config.paths.backup_dir,
            config.backup.file_mode.0,
            config.backup.dir_mode.0,
        );
        let targets = config
            .offsite
            .iter()
            .filter(|t| settings.targets.contains(&t.name))
            .map(|t| TargetSlot {
                config: t.clone(),
                target: None,
                seal: None,
                failing: None,
                sent: Default::default(),
            })
            .collect();
        Some(ReplicationService {
            settings,
            config: config.clone(),
            store,
            db: config.paths.database.clone(),
            replicator: None,
            targets,
            last_checkpoint: Instant::now(),
            last_truncate: None,
            checkpointed_at: 0,
            last_tidy: None,
            last_status: None,
        })
    }

    pub fn settings(&self) -> &Replication {
        &self.settings
    }

    /// The first step before anything else runs: the pass only (no target is contacted),
    /// so the read transaction is held before the daemon says it is ready — a log the
    /// app restarts in the moment before would be a gap, and a needless new generation.
    pub fn begin(&mut self, now: DateTime<Utc>) -> StepReport {
        let mut report = StepReport::default();
        if let Err(e) = self.local_step(now, &mut report) {
            self.replicator = None;
            report.status.error = Some(crate::error_chain(&e));
        }
        report
    }

    /// One step at `now`.
    pub fn step(&mut self, now: DateTime<Utc>) -> StepReport {
        let mut report = StepReport::default();
        let local = self.local_step(now, &mut report);
        if let Err(e) = &local {
            // Opened again next time: the file may have been replaced or repaired.
            self.replicator = None;
            report.status.error = Some(crate::error_chain(e));
        }
        if self.last_tidy.is_none_or(|t| t.elapsed() >= TIDY_EVERY) {
            self.last_tidy = Some(Instant::now());
            if let Err(e) = self.tidy(now) {
                tracing::warn!(
                    "replication: tidying the stream failed: {}",
                    crate::error_chain(&e)
                );
            }
        }
        for i in 0..self.targets.len() {
            let status = self.ship_to(i, now);
            report.status.targets.push(status);
        }
        self.fill_status(&mut report.status, now);
        self.save_status(&report.status);
        report
    }

    fn local_step(&mut self, now: DateTime<Utc>, report: &mut StepReport) -> Result<()> {
        if self.replicator.is_none() {
            let busy = self.config.backup.busy_timeout.0;
            self.replicator = Some(Replicator::open(&self.db, self.store.clone(), busy)?);
        }
        let Some(rep) = self.replicator.as_mut() else {
            return Ok(());
        };
        let base_due = rep
            .position()
            .and_then(|p| self.store.generation(&p.generation).ok().flatten())
            .is_some_and(|g| now - g.started >= BASE_EVERY);
        let pass = if base_due {
            rep.start_generation(now, DAILY_BASE)?
        } else {
            rep.pass(now)?
        };
        report.transactions = pass.transactions;
        if let (Some(reason), Some(p)) = (pass.new_generation, rep.position()) {
            report.new_generation = Some((p.generation.clone(), reason));
        }
        // The log's content decides a PASSIVE checkpoint (its file keeps its largest size
        // across restarts); the file's size a TRUNCATE, at most once a minute (it waits
        // for the app's readers, and the app's writers wait meanwhile).
        let file_bytes = std::fs::metadata(wal_path(&self.db)).map_or(0, |m| m.len());
        let log_bytes = rep.log_bytes();
        let truncate_due = self
            .last_truncate
            .is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY);
        // Only a log that grew since the last checkpoint: an idle app costs nothing.
        let grew = log_bytes != self.checkpointed_at;
        let mode = if file_bytes >= TRUNCATE_AT && truncate_due {
            self.last_truncate = Some(Instant::now());
            Some(CheckpointMode::Truncate)
        } else if grew
            && (log_bytes >= PASSIVE_AT
                || (log_bytes > 0 && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY))
        {
            Some(CheckpointMode::Passive)
        } else {
            None
        };
        if let Some(mode) = mode {
            rep.checkpoint(now, mode)?;
            self.last_checkpoint = Instant::now();
            self.checkpointed_at = rep.log_bytes();
        }
        Ok(())
    }

    /// Compaction of every generation, retention, and leftovers of interrupted starts.
    fn tidy(&mut self, now: DateTime<Utc>) -> Result<()> {
        let generations = self.store.generations()?;
        // The saved position only when the replicator has none (an unreadable one then
        // stops the tidying: nothing is removed that may be the current chain).
        let current = match self.replicator.as_ref().and_then(|r| r.position()) {
            Some(p) => Some(p.generation.clone()),
            None => self.store.position()?.map(|p| p.generation),
        };
        for name in expired(&generations, current.as_deref(), self.settings.retain, now) {
            tracing::info!("replication: generation {name} left the point-in-time window");
            self.store.remove_generation(&name)?;
        }
        for (name, _) in self.store.generations()? {
            compact_generation(&self.store, &name, now.timestamp_millis())?;
        }
        super::point::remove_stale_work(&self.store);
        self.store.remove_unfinished(current.as_deref())?;
        Ok(())
    }

    fn ship_to(&mut self, i: usize, now: DateTime<Utc>) -> TargetStatus {
        let slot = &mut self.targets[i];
        let mut status = TargetStatus {
            name: slot.config.name.clone(),
            ..Default::default()
        };
        let waiting = slot
            .failing
            .as_ref()
            .is_some_and(|(_, wait, since)| since.elapsed() < *wait);
        if !waiting {
            match ship_once(slot, &self.config, &self.store, now) {
                Ok((requests, bytes)) => {
                    slot.failing = None;
                    if requests > 0 {
                        slot.sent.push_back((Instant::now(), requests, bytes));
                    }
                }
                Err(why) => {
                    let wait = slot
                        .failing
                        .as_ref()
                        .map_or(self.settings.interval, |(_, w, _)| {
                            (*w * 2).min(MAX_BACKOFF)
                        });
                    slot.failing = Some((why, wait, Instant::now()));
                }
            }
        }
        while slot
            .sent
            .front()
            .is_some_and(|(t, _, _)| t.elapsed() > Duration::from_secs(3600))
        {
            slot.sent.pop_front();
        }
        status.requests_last_hour = slot.sent.iter().map(|s| s.1).sum();
        status.bytes_last_hour = slot.sent.iter().map(|s| s.2).sum();
        status.error = slot.failing.as_ref().map(|f| f.0.clone());
        let sealed = self.config.encryption.is_some();
        match standing(&self.store, &slot.config.name, sealed) {
            Ok(standing) => {
                status.newest = standing.newest;
                status.lag_seconds = standing
                    .behind_since
                    .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
            }
            // Not knowing is not "caught up": behind since the window began, and why.
            Err(e) => {
                status.lag_seconds = f64::MAX;
                status.error = Some(format!(
                    "cannot tell what it holds: {}",
                    crate::error_chain(&e)
                ));
            }
        }
        status
    }

    fn fill_status(&self, status: &mut ReplicationStatus, now: DateTime<Utc>) {
        status.updated = Some(now);
        let generations = self.store.generations().unwrap_or_default();
        status.window_start = window_start(&generations);
        let position = self.replicator.as_ref().and_then(|r| r.position()).cloned();
        if let Some(p) = position {
            if let Some((_, info)) = generations.iter().find(|(n, _)| *n == p.generation) {
                status.generation_started = Some(info.started);
                status.generation_reason = Some(info.reason.clone());
            }
            status.generation = Some(p.generation);
        }
        status.newest = self.newest_local(&generations);
    }

    fn newest_local(
        &self,
        generations: &[(String, super::store::GenerationInfo)],
    ) -> Option<DateTime<Utc>> {
        let (name, info) = generations.last()?;
        let last = self.store.segments(name).ok()?.pop();
        match last {
            Some((_, path)) => {
                let file = std::fs::File::open(path).ok()?;
                let h = super::segment::read_header(file).ok()?;
                DateTime::from_timestamp_millis(h.last_commit_ms)
            }
            None => Some(info.started),
        }
    }

    /// Written when something other than its time changed, or every minute.
    fn save_status(&mut self, status: &ReplicationStatus) {
        let same = self.last_status.as_ref().is_some_and(|last| {
            let mut a = last.clone();
            a.updated = status.updated;
            // A lag that moved a little is not news; caught up (0) or not always is.
            for (x, y) in a.targets.iter_mut().zip(&status.targets) {
                let both_behind = x.lag_seconds > 0.0 && y.lag_seconds > 0.0;
                if both_behind && (x.lag_seconds - y.lag_seconds).abs() < 5.0 {
                    x.lag_seconds = y.lag_seconds;
                }
            }
            a == *status
                && last
                    .updated
                    .zip(status.updated)
                    .is_some_and(|(l, n)| (n - l).num_seconds() < 60)
        });
        if same {
            return;
        }
        let path = self.store.root().join(STATUS_FILE);
        if let Err(e) = self
            .store
            .make_dir(self.store.root())
            .and_then(|()| write_json_unsynced(&path, status, self.store.file_mode()))
        {
            tracing::warn!(
                "replication: could not save its status: {}",
                crate::error_chain(&e)
            );
        }
        self.last_status = Some(status.clone());
    }
}

/// One round for a target: opened if it is not yet; (requests, bytes) sent, or why not.
fn ship_once(
    slot: &mut TargetSlot,
    config: &Config,
    store: &ReplicaStore,
    now: DateTime<Utc>,
) -> std::result::Result<(u64, u64), String> {
    if slot.target.is_none() {
        let remote = Remote::open(config, &slot.config).map_err(|e| crate::error_chain(&e))?;
        slot.seal = remote.seal.clone();
        slot.target = Some(remote.target.clone());
    }
    let Some(target) = slot.target.as_ref() else {
        return Err("not opened".into());
    };
    let mirror = Mirror {
        name: &slot.config.name,
        target: target.as_ref(),
        seal: slot.seal.as_ref(),
        store,
    };
    match mirror.ship(now) {
        Ok(r) => Ok((r.uploads + r.deletes, r.bytes)),
        Err(ShipError::Remote(e)) => Err(crate::error_chain(&crate::offsite::error(
            &slot.config,
            "replicate",
            e,
        ))),
        Err(ShipError::Local(e)) => Err(crate::error_chain(&e)),
    }
}

fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
