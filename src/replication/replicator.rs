//! The replicating pass over one live database: new committed transactions read from its
//! write-ahead log and kept as a segment in the backup directory, and the checkpoints
//! that keep the log short, taken so that no frame is ever backfilled and dropped before
//! it was read.
//!
//! SQLite restarts a log (new salts, frames written again from the start) only when every
//! frame has been copied into the database file and no reader still uses the log. So the
//! replicator holds a read transaction at all times (`reader`): while it does, a
//! checkpoint may copy frames into the database file but the log cannot restart, and the
//! frames stay readable in the `-wal` file. Its own checkpoint ([`Replicator::checkpoint`])
//! takes the write lock for a moment (the app's writers wait, within their
//! `busy_timeout`), reads the log to its now fixed end, lets go of the old read
//! transaction, backfills (PASSIVE), begins the new read transaction and only then lets
//! the writers go: the one restart that may follow comes after everything was read.
//!
//! A log restarted any other way (a checkpoint while the daemon was down, the database
//! file replaced, a header that does not follow) is a gap: a new generation starts from a
//! fresh base copy of the database, and the report says why.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::segment::{Shipped, write_segment};
use super::store::{BASE_FILE, GenerationInfo, LogPosition, Position, ReplicaStore};
use super::wal::{WalCursor, WalHeader, WalRead, read_committed};
use crate::catalog::PartialFile;
use crate::error::{Error, IoContext, Result};

/// Bytes of frames one pass reads at most (a larger transaction is still read whole).
const PASS_BYTES: u64 = 64 << 20;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Transactions kept in a new segment.
    pub transactions: u64,
    /// The segment written, if any.
    pub segment: Option<PathBuf>,
    /// A new generation began in this pass, and why.
    pub new_generation: Option<String>,
}

/// What a checkpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointReport {
    /// The app held the write lock longer than `busy_timeout`: tried again later.
    Busy,
    /// Frames in the log, frames copied into the database file.
    Done { log: i64, backfilled: i64 },
}

pub struct Replicator {
    db: PathBuf,
    wal: PathBuf,
    store: ReplicaStore,
    /// Holds the read transaction (and runs the checkpoints).
    reader: Connection,
    /// Whether `reader` is inside its read transaction.
    reading: bool,
    /// Whether this process has held the read transaction since `position` was saved:
    /// only then can a restart of the log be known to follow what was shipped.
    held: bool,
    position: Option<Position>,
    /// Why a restart of the log could not be trusted to follow what was shipped, when a
    /// check found so (the next restart then starts a generation naming it).
    doubt: Option<String>,
    page_size: u32,
    busy_timeout: Duration,
}

impl Replicator {
    /// Opens the database at `db` for replication into `store`. The database must be in
    /// WAL mode (the app's choice; replication does not change it).
    pub fn open(db: &Path, store: ReplicaStore, busy_timeout: Duration) -> Result<Replicator> {
        let reader = open_reader(db, busy_timeout)?;
        let mode: String = reader
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| Error::sqlite("read the journal mode of", db, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Refused(format!(
                "{} is in journal mode {mode}: continuous replication reads the write-ahead \
                 log; the app must open it with PRAGMA journal_mode = WAL",
                db.display()
            )));
        }
        let page_size: u32 = reader
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| Error::sqlite("read the page size of", db, e))?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Replicator {
            db: db.to_path_buf(),
            wal: PathBuf::from(wal),
            position: store.position()?,
            store,
            reader,
            reading: false,
            held: false,
            doubt: None,
            page_size,
            busy_timeout,
        })
    }

    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    pub fn store(&self) -> &ReplicaStore {
        &self.store
    }

    fn begin_read(&mut self) -> Result<()> {
        if self.reading {
            return Ok(());
        }
        self.reader
            .execute_batch("BEGIN")
            .and_then(|()| {
                self.reader
                    .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                        r.get::<_, i64>(0)
                    })
            })
            .map_err(|e| Error::sqlite("begin a read transaction on", &self.db, e))?;
        self.reading = true;
        Ok(())
    }

    fn end_read(&mut self) -> Result<()> {
        if self.reading {
            self.reading = false;
            self.reader
                .execute_batch("COMMIT")
                .map_err(|e| Error::sqlite("end the read transaction on", &self.db, e))?;
        }
        Ok(())
    }

    /// Ships what was committed since the last pass; starts a generation where the chain
    /// cannot go on.
    pub fn pass(&mut self, now: DateTime<Utc>) -> Result<PassReport> {
        self.begin_read()?;
        let identity = file_identity(&self.db)?;
        let mut report = PassReport::default();
        let gap = match &self.position {
            None => Some("the first pass".to_string()),
            Some(p) if p.db_file != identity => {
                // Our connection still reads the old file: open the one now at the path.
                self.end_read()?;
                self.reader = open_reader(&self.db, self.busy_timeout)?;
                self.begin_read()?;
                Some("the database file was replaced (another inode)".to_string())
            }
            Some(_) => None,
        };
        if let Some(reason) = gap {
            self.new_generation(&reason, now, identity)?;
            report.new_generation = Some(reason);
        }
        loop {
            match self.read_next()? {
                Next::Ship(txs, cursor) => {
                    self.ship(&txs, cursor, now, &mut report)?;
                    return Ok(report);
                }
                Next::Gap(reason) => {
                    if report.new_generation.is_some() {
                        // A log that restarts under a fresh base: try again next pass.
                        return Ok(report);
                    }
                    self.new_generation(&reason, now, identity)?;
                    report.new_generation = Some(reason);
                }
            }
        }
    }

    /// What the log holds after the position.
    ///
    /// A log restarted once after the cursor's continues the chain from its first frame
    /// if the read transaction was held since the position was set: while it is held with
    /// a read mark in the log, SQLite cannot restart the log at all; held with mark 0
    /// (the log was wholly copied into the database file when it began), no frame can be
    /// copied meanwhile, so the one restart that may come follows frames all shipped (or
    /// all in the generation's base). Any other restart is a gap.
    fn read_next(&mut self) -> Result<Next> {
        let Some(position) = self.position.clone() else {
            return Ok(Next::Gap("no position".into()));
        };
        let cursor = match position.log {
            LogPosition::At { cursor } => Some(cursor),
            LogPosition::Empty => None,
        };
        let mut wal = match File::open(&self.wal) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(if cursor.is_none() || self.held {
                    Next::Ship(Vec::new(), None)
                } else {
                    Next::Gap("the write-ahead log was deleted".into())
                });
            }
            Err(e) => return Err(Error::io("open", &self.wal, e)),
        };
        let mut from = cursor;
        match (cursor, self.header_now(&mut wal)?) {
            (Some(c), Some(h)) if h == c.header => {}
            (Some(c), Some(h)) if self.held && c.restarted_once_as(&h) => from = None,
            (_, None) if self.held => return Ok(Next::Ship(Vec::new(), None)),
            (None, Some(_)) if self.held => {}
            (None, None) => return Ok(Next::Ship(Vec::new(), None)),
            _ => {
                return Ok(Next::Gap(
                    self.doubt
                        .take()
                        .unwrap_or_else(|| restart_reason(self.held)),
                ));
            }
        }
        let read =
            read_committed(&mut wal, from.as_ref(), PASS_BYTES).map_err(|e| Error::Verify {
                path: self.wal.clone(),
                check: "write-ahead log",
                detail: e.to_string(),
            })?;
        Ok(match read {
            WalRead::Continued {
                transactions,
                cursor,
            } if cursor.header.page_size == self.page_size => {
                Next::Ship(transactions, Some(cursor))
            }
            WalRead::Continued { .. } => Next::Gap("the page size changed".into()),
            // Changed between the two reads of the header: the next pass decides.
            WalRead::Restarted(_) | WalRead::Empty => Next::Ship(Vec::new(), None),
        })
    }

    fn header_now(&self, wal: &mut File) -> Result<Option<WalHeader>> {
        let mut raw = [0u8; super::wal::WAL_HEADER_LEN];
        use std::io::{Read, Seek, SeekFrom};
        wal.seek(SeekFrom::Start(0)).ctx("read", &self.wal)?;
        match wal.read_exact(&mut raw) {
            Ok(()) => Ok(WalHeader::parse(&raw).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io("read", &self.wal, e)),
        }
    }

    /// Keeps `txs` as one segment, then the position after them.
    fn ship(
        &mut self,
        txs: &[super::wal::Transaction],
        cursor: Option<WalCursor>,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<()> {
        let Some(mut position) = self.position.clone() else {
            return Err(Error::Internal("a pass with no position".into()));
        };
        if !txs.is_empty() {
            let shipped: Vec<Shipped> = txs
                .iter()
                .map(|tx| Shipped {
                    commit_ms: now.timestamp_millis(),
                    tx: tx.clone(),
                })
                .collect();
            let path = self
                .store
                .segment_path(&position.generation, position.next_tx);
            let generation = generation_bytes(&position.generation)?;
            let (partial, file) = PartialFile::create(&path, self.store.file_mode())?;
            let mut out = std::io::BufWriter::new(&file);
            write_segment(
                &mut out,
                self.page_size,
                generation,
                position.next_tx,
                &shipped,
            )
            .map_err(|e| Error::Internal(format!("write {}: {e}", path.display())))?;
            out.flush().ctx("write", partial.temp_path())?;
            drop(out);
            partial.sync(&file)?;
            partial.rename()?;
            position.next_tx += txs.len() as u64;
            report.transactions += txs.len() as u64;
            report.segment = Some(path);
        }
        let log = match cursor {
            Some(cursor) => LogPosition::At { cursor },
            None => position.log,
        };
        if !txs.is_empty() || log != position.log {
            position.log = log;
            self.store.save_position(&position)?;
        }
        self.position = Some(position);
        self.held = self.reading && self.doubt.is_none();
        Ok(())
    }

    /// Starts a chain: a base copy of the database file taken under the read
    /// transaction, and the log to ship from its first frame (replaying every frame of
    /// the log onto the copy gives the database as of the log's last commit, whatever a
    /// checkpoint copied into the file while it was read).
    fn new_generation(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
        identity: (u64, u64),
    ) -> Result<()> {
        self.begin_read()?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Error::Internal(format!("no random bytes for a generation: {e}")))?;
        let generation: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.store.generation_dir(&generation);
        self.store.make_dir(&dir)?;
        let base_sha256 = self.copy_base(&dir.join(BASE_FILE))?;
        self.store.save_generation(
            &generation,
            &GenerationInfo {
                started: now,
                reason: reason.to_string(),
                page_size: self.page_size,
                base_sha256,
            },
        )?;
        let log = match File::open(&self.wal) {
            Ok(mut f) => match self.header_now(&mut f)? {
                Some(header) => LogPosition::At {
                    cursor: WalCursor::start(header),
                },
                None => LogPosition::Empty,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LogPosition::Empty,
            Err(e) => return Err(Error::io("open", &self.wal, e)),
        };
        let position = Position {
            generation,
            next_tx: 0,
            log,
            db_file: identity,
        };
        self.store.save_position(&position)?;
        self.position = Some(position);
        self.held = self.reading;
        self.doubt = None;
        Ok(())
    }

    /// The database file, zstd-compressed, written whole; its SHA-256.
    fn copy_base(&self, path: &Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        let (partial, file) = PartialFile::create(path, self.store.file_mode())?;
        let mut src = File::open(&self.db).ctx("open", &self.db)?;
        let mut hashing = HashingWriter {
            inner: std::io::BufWriter::new(&file),
            hash: Sha256::new(),
        };
        let mut enc = zstd::Encoder::new(&mut hashing, 3).ctx("compress", path)?;
        std::io::copy(&mut src, &mut enc).ctx("copy", &self.db)?;
        enc.finish().ctx("compress", path)?;
        hashing.inner.flush().ctx("write", partial.temp_path())?;
        let HashingWriter { hash, .. } = hashing;
        let digest = hash.finalize();
        partial.sync(&file)?;
        partial.rename()?;
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Reads the log to its end under the write lock, backfills it (PASSIVE: never
    /// waiting on the app's readers) and begins the next read transaction before the
    /// writers may go on, so the read transaction is never let go while a frame could be
    /// copied and dropped unseen. `Busy` when the app held the write lock past
    /// `busy_timeout`.
    pub fn checkpoint(&mut self, now: DateTime<Utc>) -> Result<CheckpointReport> {
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
        let result = self.checkpoint_locked(now);
        let _ = writer.execute_batch("ROLLBACK");
        result
    }

    fn checkpoint_locked(&mut self, now: DateTime<Utc>) -> Result<CheckpointReport> {
        // Everything up to the log's fixed end, in as many passes as it takes.
        loop {
            let report = self.pass(now)?;
            if report.transactions == 0 {
                break;
            }
        }
        self.end_read()?;
        let (log, backfilled): (i64, i64) = self
            .reader
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| Error::sqlite("checkpoint", &self.db, e))?;
        // Under the lock our cursor stands at the log's last frame: the checkpoint's count
        // must say the same, or frames went by unread and a restart of this log would be
        // a gap (never trusted as one that follows).
        let ours = match self.position.as_ref().map(|p| p.log) {
            Some(LogPosition::At { cursor }) => cursor.next_frame() - 1,
            _ => 0,
        };
        self.begin_read()?;
        self.held = log < 0 || u64::try_from(log).is_ok_and(|l| l == ours);
        if !self.held {
            self.doubt = Some(format!(
                "the log held {log} frames at a checkpoint, {ours} of them shipped"
            ));
        }
        Ok(CheckpointReport::Done { log, backfilled })
    }
}

enum Next {
    Ship(Vec<super::wal::Transaction>, Option<WalCursor>),
    Gap(String),
}

fn open_reader(db: &Path, busy_timeout: Duration) -> Result<Connection> {
    let reader = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open", db, e))?;
    reader
        .busy_timeout(busy_timeout)
        .map_err(|e| Error::sqlite("set busy_timeout on", db, e))?;
    Ok(reader)
}

fn restart_reason(held: bool) -> String {
    if held {
        "the write-ahead log restarted in a way that does not follow what was shipped".into()
    } else {
        "the write-ahead log was checkpointed and restarted while nothing replicated it".into()
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn file_identity(path: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).ctx("stat", path)?;
    Ok((m.dev(), m.ino()))
}

fn generation_bytes(name: &str) -> Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if !super::store::is_generation_name(name) {
        return Err(Error::Internal(format!("a generation named {name:?}")));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&name[2 * i..2 * i + 2], 16)
            .map_err(|e| Error::Internal(format!("generation {name}: {e}")))?;
    }
    Ok(out)
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[path = "replicator_tests.rs"]
mod tests;
