//! The replicator's own checkpoints, taken so that no frame is ever backfilled and dropped
//! before it was read: under the app's write lock the log is read to its fixed end, the
//! read transaction let go, the log backfilled (PASSIVE) and the next read transaction
//! begun before the writers go on; TRUNCATE, which SQLite runs under its own lock, is
//! checked afterwards by `data_version`. And the stamp that lets a restarted daemon
//! trust a log restarted once while it was down.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::{Replicator, is_busy};
use crate::error::{Error, Result};
use crate::replication::store::LogPosition;

/// How a checkpoint ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Copies what it can into the database file, waiting on nobody; the log restarts
    /// from its beginning at the app's next write once all of it was copied.
    Passive,
    /// Also truncates the log file to nothing (when it grew large), waiting for the app's
    /// readers up to `busy_timeout` (the app's writers wait meanwhile).
    Truncate,
}

/// What a checkpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointReport {
    /// The app held the write lock longer than `busy_timeout`: tried again later.
    Busy,
    /// A gap was found under the lock: the next pass starts a new generation, with the
    /// app's writers free.
    Deferred,
    /// Frames in the log, frames copied into the database file.
    Done { log: i64, backfilled: i64 },
}

impl Replicator {
    /// Reads the log to its end under the write lock, backfills it (PASSIVE: never
    /// waiting on the app's readers) and begins the next read transaction before the
    /// writers may go on, so the read transaction is never let go while a frame could be
    /// copied and dropped unseen. `Busy` when the app held the write lock past
    /// `busy_timeout`.
    ///
    /// [`CheckpointMode::Truncate`] cannot run under our own write lock (SQLite takes it
    /// itself), so the lock is let go just before it: SQLite's `data_version`, read
    /// before and inside the next read transaction, tells whether the app committed in
    /// that moment — frames the truncation may have dropped unread — and if so the next
    /// restart of the log is a gap (a new generation), never a silent loss.
    pub fn checkpoint(
        &mut self,
        now: DateTime<Utc>,
        mode: CheckpointMode,
    ) -> Result<CheckpointReport> {
        // The bulk first, with the app's writers free: under the lock only the rest.
        self.pass(now)?;
        let writer = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| Error::sqlite("open", &self.db, e))?;
        writer
            .busy_timeout(self.busy_timeout)
            .map_err(|e| Error::sqlite("set busy_timeout on", &self.db, e))?;
        match writer.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(e) if is_busy(&e) => return Ok(CheckpointReport::Busy),
            Err(e) => return Err(Error::sqlite("take the write lock of", &self.db, e)),
        }
        let result = match mode {
            CheckpointMode::Passive => self.checkpoint_locked(now),
            CheckpointMode::Truncate => self.truncate_locked(now, &writer),
        };
        // Already let go by a truncation: then this fails, and nothing is held.
        let _ = writer.execute_batch("ROLLBACK");
        result
    }

    /// Everything up to the log's fixed end, in as many passes as it takes; `false`: a
    /// gap was found (left to the next pass).
    fn read_to_end_locked(&mut self, now: DateTime<Utc>) -> Result<bool> {
        loop {
            let (report, gap) = self.pass_with(now, false)?;
            if gap.is_some() {
                return Ok(false);
            }
            if report.complete {
                return Ok(true);
            }
            // A pass that read nothing and did not reach the end cannot be helped by
            // another under the lock (the index is unsettled): the checkpoint waits.
            if report.transactions == 0 {
                return Ok(false);
            }
        }
    }

    fn truncate_locked(
        &mut self,
        now: DateTime<Utc>,
        writer: &Connection,
    ) -> Result<CheckpointReport> {
        if !self.read_to_end_locked(now)? {
            return Ok(CheckpointReport::Deferred);
        }
        self.end_read()?;
        let db = self.db.clone();
        let version = move |c: &Connection| {
            c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                .map_err(|e| Error::sqlite("read the data version of", &db, e))
        };
        let before = version(&self.reader)?;
        writer
            .execute_batch("ROLLBACK")
            .map_err(|e| Error::sqlite("let go of the write lock of", &self.db, e))?;
        let checkpointed = self
            .reader
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        self.begin_read()?;
        let (busy, log, backfilled) =
            checkpointed.map_err(|e| Error::sqlite("checkpoint", &self.db, e))?;
        if version(&self.reader)? != before {
            self.forget_stamp()?;
            self.doubt = Some(
                "the app committed while the log was being truncated: frames may have gone \
                 unread"
                    .into(),
            );
        } else if busy == 0
            && let Some(position) = self.position.as_mut()
        {
            // Truncated with nothing committed since we read it all: the log starts
            // afresh, and the next pass reads it from its first frame.
            position.log = LogPosition::Empty;
            self.store.save_position(position)?;
        }
        self.held = self.doubt.is_none();
        Ok(CheckpointReport::Done { log, backfilled })
    }

    fn checkpoint_locked(&mut self, now: DateTime<Utc>) -> Result<CheckpointReport> {
        if !self.read_to_end_locked(now)? {
            return Ok(CheckpointReport::Deferred);
        }
        // Under the lock our cursor stands at the log's last frame: the checkpoint's count
        // must say the same, or frames went by unread and a restart of this log would be
        // a gap (never trusted as one that follows).
        let ours = match self.position.as_ref().map(|p| p.log) {
            Some(LogPosition::At { cursor }) => cursor.next_frame() - 1,
            _ => 0,
        };
        self.end_read()?;
        let (log, backfilled): (i64, i64) = self
            .reader
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| Error::sqlite("checkpoint", &self.db, e))?;
        self.begin_read()?;
        let agrees = log < 0 || u64::try_from(log).is_ok_and(|l| l == ours);
        if !agrees {
            self.doubt = Some(format!(
                "the log held {log} frames at a checkpoint, {ours} of them shipped"
            ));
            self.forget_stamp()?;
        }
        self.held = agrees && self.doubt.is_none();
        // Still under the lock, everything read: the file as the checkpoint left it.
        if self.held {
            self.record_stamp()?;
        }
        Ok(CheckpointReport::Done { log, backfilled })
    }

    /// A doubt outlives the daemon only if the stamp that would vouch for the log goes.
    fn forget_stamp(&mut self) -> Result<()> {
        if let Some(position) = self.position.as_mut()
            && position.held_stamp.is_some()
        {
            position.held_stamp = None;
            self.store.save_position(position)?;
        }
        Ok(())
    }

    fn record_stamp(&mut self) -> Result<()> {
        let stamp = self.stamp()?;
        if let Some(position) = self.position.as_mut()
            && !position
                .held_stamp
                .is_some_and(|old| old.unchanged_in(&stamp))
        {
            position.held_stamp = Some(stamp);
            self.store.save_position(position)?;
        }
        Ok(())
    }
}
