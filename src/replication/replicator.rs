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
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::segment::{Shipped, write_segment};
use super::store::{BASE_FILE, FileStamp, GenerationInfo, LogPosition, Position, ReplicaStore};
use super::wal::{
    Transaction, WAL_HEADER_LEN, WalCursor, WalHeader, WalRead, index_max_frame, read_committed,
};
use crate::catalog::PartialFile;
use crate::engine::hashing::HashingWriter;
use crate::error::{Error, IoContext, Result};

mod checkpoint;
pub use checkpoint::{CheckpointMode, CheckpointReport};

/// Bytes of frames one pass reads at most (a larger transaction is still read whole).
const PASS_BYTES: u64 = 64 << 20;

/// Why the first generation on a server began.
pub const FIRST_PASS: &str = "the first pass";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Transactions kept in new segments.
    pub transactions: u64,
    /// The last segment written, if any.
    pub segment: Option<PathBuf>,
    /// A new generation began in this pass, and why.
    pub new_generation: Option<String>,
    /// The pass read to the log's end.
    pub complete: bool,
}

pub struct Replicator {
    db: PathBuf,
    wal: PathBuf,
    store: ReplicaStore,
    /// Holds the read transaction (and runs the checkpoints).
    reader: Connection,
    /// The database file: the base is read through it. Never a descriptor opened and
    /// closed: closing any descriptor of the file drops every POSIX lock this process
    /// holds on it, SQLite's too, and the app's last connection could then delete the log
    /// under us ([`super::held`] keeps it for the life of the process).
    db_file: Arc<File>,
    /// The `-shm` index, held for the same reason (SQLite's read marks are locks on it):
    /// the commit point is read through it.
    shm_file: Option<Arc<File>>,
    /// Whether `reader` is inside its read transaction.
    reading: bool,
    /// Whether the read transaction was held since a pass read the log to its end (or
    /// since the generation's base was taken): only then can a restart of the log be
    /// known to follow what was shipped. Cleared whenever the transaction is let go.
    held: bool,
    /// Why a restart of the log could not be trusted to follow what was shipped, when a
    /// check found so (the next restart then starts a generation naming it).
    doubt: Option<String>,
    position: Option<Position>,
    /// Whether the position's generation finished its start (its base's log shipped).
    generation_ready: bool,
    /// Why the saved position cannot be shipped on from (found at open): the first
    /// pass starts a new generation.
    stale_position: Option<String>,
    /// The generation a position that could not be read stood in: the next generation
    /// ends it.
    unended: Option<String>,
    page_size: u32,
    busy_timeout: Duration,
    /// Bytes of frames one pass reads at most ([`PASS_BYTES`]; smaller in tests).
    pass_bytes: u64,
}

/// SQLite's commit point as its index publishes it.
enum IndexPoint {
    /// The last committed frame, and the salts of the log it belongs to.
    At(u32, [u32; 2]),
    /// Being written, or not set up yet: read again next time.
    Unsettled,
    /// No `-shm` file (an app in exclusive locking mode keeps its index in memory).
    NoIndex,
}

/// What the log holds after the position.
enum Next {
    /// Transactions to ship, where the log stands after them, whether it was read to
    /// its end.
    Ship {
        txs: Vec<Transaction>,
        log: LogPosition,
        complete: bool,
    },
    Gap(String),
}

impl Replicator {
    /// Opens the database at `db` for replication into `store`. The database must be in
    /// WAL mode (the app's choice; replication does not change it).
    pub fn open(db: &Path, store: ReplicaStore, busy_timeout: Duration) -> Result<Replicator> {
        let OpenedDatabase {
            reader,
            db_file,
            shm_file,
            page_size,
        } = open_reader(db, busy_timeout)?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        // A position that does not parse is what a power cut leaves on a file system that
        // does not keep a rename after the data it names (it is not flushed): the chain
        // cannot be trusted to go on from it, so a new generation begins and says why.
        // The chain it stood in is then the newest one not ended: the new generation
        // ends it where its segments do (they were flushed before any position).
        let (position, unreadable, unended) = match store.position() {
            Ok(position) => (position, None, None),
            Err(e @ Error::Verify { .. }) => (
                None,
                Some(format!("the position record could not be read ({e})")),
                store
                    .generations()?
                    .into_iter()
                    .rev()
                    .find(|(_, g)| g.end_tx.is_none() && g.base_through.is_some())
                    .map(|(name, _)| name),
            ),
            Err(e) => return Err(e),
        };
        let generation_ready = match &position {
            Some(p) => store
                .generation(&p.generation)?
                .is_some_and(|g| g.base_through.is_some()),
            None => false,
        };
        // The position is not flushed each pass: after a power cut it may be older than
        // the segments written (and flushed) before it. Shipping on from it would write
        // those transactions again beside what compaction made of them: a new
        // generation instead.
        let doubt = match &position {
            Some(p) => {
                let end = chain_end(&store, &p.generation)?;
                if end > p.next_tx {
                    Some(format!(
                        "the position was older than its segments (transaction {} of {end}): a power cut lost its last write",
                        p.next_tx
                    ))
                } else if end < p.next_tx {
                    // A file system that does not keep renames in order (the segment's
                    // name lost, the position's kept): the chain has a hole.
                    Some(format!(
                        "the position was past its segments (transaction {} of {end}): a power cut lost a segment",
                        p.next_tx
                    ))
                } else {
                    None
                }
            }
            None => unreadable,
        };
        Ok(Replicator {
            db: db.to_path_buf(),
            wal: PathBuf::from(wal),
            position,
            generation_ready,
            store,
            reader,
            db_file,
            shm_file,
            reading: false,
            held: false,
            doubt: None,
            stale_position: doubt,
            unended,
            page_size,
            busy_timeout,
            pass_bytes: PASS_BYTES,
        })
    }

    #[cfg(test)]
    fn set_pass_bytes(&mut self, bytes: u64) {
        self.pass_bytes = bytes;
    }

    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Bytes of the log up to its last commit read (what a checkpoint would copy): the
    /// log's content, not its file, which keeps its largest size across restarts.
    pub fn log_bytes(&self) -> u64 {
        match self.position.as_ref().map(|p| p.log) {
            Some(LogPosition::At { cursor }) => cursor.offset,
            _ => 0,
        }
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
        self.held = false;
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
        let (report, gap) = self.pass_with(now, true)?;
        debug_assert!(gap.is_none());
        Ok(report)
    }

    /// A pass; a gap starts a new generation if `may_start`, else it is returned.
    fn pass_with(
        &mut self,
        now: DateTime<Utc>,
        may_start: bool,
    ) -> Result<(PassReport, Option<String>)> {
        self.begin_read()?;
        let identity = file_identity(&self.db)?;
        let mut report = PassReport::default();
        let gap = match &self.position {
            None => Some(
                self.stale_position
                    .take()
                    .unwrap_or_else(|| FIRST_PASS.to_string()),
            ),
            Some(p) if p.db_file != identity => {
                // Our connection still reads the old file: open the one now at the path.
                self.end_read()?;
                let opened = open_reader(&self.db, self.busy_timeout)?;
                self.reader = opened.reader;
                self.db_file = opened.db_file;
                self.shm_file = opened.shm_file;
                self.page_size = opened.page_size;
                self.begin_read()?;
                Some("the database file was replaced (another inode)".to_string())
            }
            Some(_) if !self.generation_ready => {
                Some("the last generation's start was interrupted".to_string())
            }
            Some(_) if self.stale_position.is_some() => self.stale_position.take(),
            Some(_) => None,
        };
        let gap = match gap {
            Some(g) => Some(g),
            None => match self.read_next()? {
                Next::Ship { txs, log, complete } => {
                    self.ship(txs, log, complete, now, &mut report)?;
                    None
                }
                Next::Gap(reason) => Some(reason),
            },
        };
        match gap {
            Some(reason) if may_start => {
                self.new_generation(&reason, now, identity, &mut report)?;
                report.new_generation = Some(reason);
                Ok((report, None))
            }
            gap => Ok((report, gap)),
        }
    }

    /// What the log holds after the position.
    ///
    /// A log restarted once after the cursor's (or a log appearing after an empty one)
    /// continues the chain if the read transaction was held since a pass read the log to
    /// its end: held with a read mark in the log, SQLite cannot restart the log at all;
    /// held with mark 0 (the log was wholly copied into the database file when it began),
    /// no frame can be copied meanwhile, so the one restart (or truncation) that may come
    /// follows frames all shipped. Any other change is a gap.
    fn read_next(&mut self) -> Result<Next> {
        let Some(position) = self.position.clone() else {
            return Ok(Next::Gap("no position".into()));
        };
        let cursor = match position.log {
            LogPosition::At { cursor } => Some(cursor),
            LogPosition::Empty => None,
        };
        let unchanged = |complete| Next::Ship {
            txs: Vec::new(),
            log: position.log,
            complete,
        };
        let trusted = self.held || self.unchanged_since_held(&position)?;
        let mut wal = match File::open(&self.wal) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(match cursor {
                    None if trusted => unchanged(true),
                    // Removed by the app's last connection closing, with nothing left to
                    // copy into the file (it is as it was when all was read): all read.
                    Some(_) if trusted && !self.held => Next::Ship {
                        txs: Vec::new(),
                        log: LogPosition::Empty,
                        complete: true,
                    },
                    _ => Next::Gap(self.gap_reason("the write-ahead log was deleted")),
                });
            }
            Err(e) => return Err(Error::io("open", &self.wal, e)),
        };
        let now_header = self.header_now(&mut wal)?;
        let from = match (cursor, now_header) {
            (Some(c), Some(h)) if h == c.header => Some(c),
            (Some(c), Some(h)) if trusted && c.restarted_once_as(&h) => None,
            (None, Some(_)) if trusted => None,
            // Truncated by a checkpoint (or being created) while held: empty, all read.
            (_, None) if trusted => {
                return Ok(Next::Ship {
                    txs: Vec::new(),
                    log: LogPosition::Empty,
                    complete: true,
                });
            }
            _ => return Ok(Next::Gap(self.gap_reason(""))),
        };
        // Only frames SQLite's index has published as committed: one written past it may
        // be a commit the app died before publishing, written over at its next commit.
        let max_frame = match (self.index_commit_point()?, now_header) {
            (IndexPoint::At(frame, salt), Some(h)) if salt == h.salt => Some(frame),
            // Restarted in the index, its file header not written yet: nothing of the
            // new log is committed, and the old one was wholly copied (SQLite restarts
            // only then) — all read if trusted as a restart would be, else a gap.
            (IndexPoint::At(0, _), _) if trusted => return Ok(unchanged(true)),
            (IndexPoint::At(0, _), _) => return Ok(Next::Gap(self.gap_reason(""))),
            // The index and the file disagree (a restart under way): the next pass reads.
            (IndexPoint::At(..) | IndexPoint::Unsettled, _) => return Ok(unchanged(false)),
            (IndexPoint::NoIndex, _) => None,
        };
        let read = read_committed(&mut wal, from.as_ref(), self.pass_bytes, max_frame)
            .map_err(|e| Error::verify(self.wal.clone(), "write-ahead log", e.to_string()))?;
        Ok(match read {
            WalRead::Continued {
                transactions,
                cursor,
                complete,
            } if cursor.header.page_size == self.page_size => Next::Ship {
                txs: transactions,
                log: LogPosition::At { cursor },
                complete,
            },
            WalRead::Continued { .. } => Next::Gap("the page size changed".into()),
            WalRead::Rewritten => Next::Gap(
                "frames of the write-ahead log that were read were written again (the app \
                 lost writes in a crash or a power cut)"
                    .into(),
            ),
            // The header changed between the two reads: the next pass decides.
            WalRead::Restarted(_) | WalRead::Empty => unchanged(false),
        })
    }

    /// Whether the database file is as it was when the log had last been read to its end
    /// under the held read transaction (the daemon stopped or crashed since). Then no
    /// frame was copied into it since: a log restarted once, emptied or removed since
    /// held no frame we did not read — SQLite restarts, truncates or removes a log only
    /// once every frame of it is in the file, and frames appended after our read could
    /// not be copied while we held it, nor later without writing the file.
    fn unchanged_since_held(&self, position: &Position) -> Result<bool> {
        let Some(stamp) = position.held_stamp else {
            return Ok(false);
        };
        if self.doubt.is_some() {
            return Ok(false);
        }
        let now = FileStamp::of(&self.db_file.metadata().ctx("stat", &self.db)?);
        Ok(stamp.unchanged_in(&now))
    }

    /// The database file's stamp now.
    fn stamp(&self) -> Result<FileStamp> {
        Ok(FileStamp::of(
            &self.db_file.metadata().ctx("stat", &self.db)?,
        ))
    }

    /// Why the chain cannot go on: a doubt found earlier, else `what` or what not
    /// holding the read transaction means.
    fn gap_reason(&mut self, what: &str) -> String {
        if let Some(doubt) = self.doubt.take() {
            return doubt;
        }
        match (what.is_empty(), self.held) {
            (false, _) => what.to_string(),
            (true, true) => {
                "the write-ahead log restarted in a way that does not follow what was shipped"
                    .into()
            }
            (true, false) => {
                "the write-ahead log was checkpointed and restarted while nothing replicated it"
                    .into()
            }
        }
    }

    /// SQLite's published commit point, read from the `-shm` index through the
    /// descriptor kept with the connection.
    fn index_commit_point(&self) -> Result<IndexPoint> {
        use std::os::unix::fs::FileExt;
        let Some(shm) = &self.shm_file else {
            return Ok(IndexPoint::NoIndex);
        };
        let mut raw = [0u8; 96];
        let n = shm.read_at(&mut raw, 0).ctx("read", &self.db)?;
        Ok(match index_max_frame(&raw[..n]) {
            Some((frame, salt)) => IndexPoint::At(frame, salt),
            None => IndexPoint::Unsettled,
        })
    }

    fn header_now(&self, wal: &mut File) -> Result<Option<WalHeader>> {
        let mut raw = [0u8; WAL_HEADER_LEN];
        wal.seek(SeekFrom::Start(0)).ctx("read", &self.wal)?;
        match wal.read_exact(&mut raw) {
            // An invalid header is no log: SQLite itself ignores such a file.
            Ok(()) => Ok(WalHeader::parse(&raw).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io("read", &self.wal, e)),
        }
    }

    /// Keeps `txs` as one segment, then the position after them.
    fn ship(
        &mut self,
        txs: Vec<Transaction>,
        log: LogPosition,
        complete: bool,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<()> {
        let Some(mut position) = self.position.clone() else {
            return Err(Error::Internal("a pass with no position".into()));
        };
        if !txs.is_empty() {
            let count = txs.len() as u64;
            let shipped: Vec<Shipped> = txs
                .into_iter()
                .map(|tx| Shipped {
                    commit_ms: now.timestamp_millis(),
                    covers: 1,
                    tx,
                })
                .collect();
            let path = self.write_segment(&position, &shipped)?;
            position.next_tx += count;
            report.transactions += count;
            report.segment = Some(path);
        }
        self.held = self.reading && self.doubt.is_none() && (self.held || complete);
        // A new stamp only when the file changed (or none was trusted yet): a stamp
        // whose file has not changed since keeps the time it was taken.
        let stamp = match (self.held && complete, position.held_stamp) {
            (true, Some(old)) => {
                let now = self.stamp()?;
                if old.unchanged_in(&now) {
                    Some(old)
                } else {
                    Some(now)
                }
            }
            (true, None) => Some(self.stamp()?),
            (false, old) => old,
        };
        if report.transactions > 0 || log != position.log || stamp != position.held_stamp {
            position.log = log;
            position.held_stamp = stamp;
            self.store.save_position(&position)?;
        }
        self.position = Some(position);
        report.complete = complete;
        Ok(())
    }

    /// One segment, written whole (`.partial`, fsync, rename).
    fn write_segment(&self, position: &Position, shipped: &[Shipped]) -> Result<PathBuf> {
        let path = self
            .store
            .segment_path(&position.generation, position.next_tx);
        let mut generation = [0u8; 16];
        hex::decode_to_slice(&position.generation, &mut generation)
            .map_err(|e| Error::Internal(format!("generation {}: {e}", position.generation)))?;
        let (partial, file) = PartialFile::create(&path, self.store.file_mode())?;
        let mut out = std::io::BufWriter::new(&file);
        write_segment(
            &mut out,
            self.page_size,
            generation,
            position.next_tx,
            shipped,
        )
        .map_err(|e| match e {
            super::segment::SegmentError::Io(io) => Error::io("write", partial.temp_path(), io),
            other => Error::Internal(format!("write {}: {other}", path.display())),
        })?;
        out.flush().ctx("write", partial.temp_path())?;
        drop(out);
        partial.sync(&file)?;
        // One forced journal commit a pass, not two: see `rename_ordered`.
        partial.rename_ordered()?;
        Ok(path)
    }

    /// Starts a chain: a base copy of the database file taken under the read
    /// transaction, then the whole log shipped from its first frame (replaying every
    /// frame of it onto the copy gives the database as of its last commit, whatever a
    /// checkpoint copied into the file while it was read). The generation is usable
    /// (`base_through` set) only once that is done: a restore never replays part of it.
    fn new_generation(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
        identity: (u64, u64),
        report: &mut PassReport,
    ) -> Result<()> {
        self.begin_read()?;
        // The chain ending here: its record says how far it went, so a restore into it
        // never passes over a lost last segment.
        if let Some(old) = self.position.as_ref()
            && let Some(mut ended) = self.store.generation(&old.generation)?
            && ended.end_tx.is_none()
        {
            ended.end_tx = Some(old.next_tx);
            self.store.save_generation(&old.generation, &ended)?;
        } else if let Some(name) = self.unended.take()
            && let Some(mut ended) = self.store.generation(&name)?
            && ended.end_tx.is_none()
        {
            // Its position is lost: it ends where its segments do (a damaged one leaves
            // the end unset, as for a generation written before ends were recorded).
            match chain_end(&self.store, &name) {
                Ok(end) => {
                    ended.end_tx = Some(end.max(ended.base_through.unwrap_or(0)));
                    self.store.save_generation(&name, &ended)?;
                }
                Err(e) => {
                    tracing::warn!("replication: generation {name} left without its end: {e}")
                }
            }
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Error::Internal(format!("no random bytes for a generation: {e}")))?;
        let generation = hex::encode(id);
        let dir = self.store.generation_dir(&generation);
        self.store.make_dir(&dir)?;
        let (base_sha256, base_bytes) = self.copy_base(&dir.join(BASE_FILE))?;
        let mut info = GenerationInfo {
            started: now,
            reason: reason.to_string(),
            page_size: self.page_size,
            base_sha256,
            base_bytes: Some(base_bytes),
            base_through: None,
            end_tx: None,
        };
        self.store.save_generation(&generation, &info)?;
        let mut wal = match File::open(&self.wal) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &self.wal, e)),
        };
        let log = match wal.as_mut().map(|f| self.header_now(f)).transpose()? {
            Some(Some(header)) => LogPosition::At {
                cursor: WalCursor::start(header),
            },
            _ => LogPosition::Empty,
        };
        let position = Position {
            generation: generation.clone(),
            next_tx: 0,
            log,
            db_file: identity,
            held_stamp: None,
        };
        self.store.save_position(&position)?;
        self.position = Some(position);
        self.generation_ready = false;
        self.held = self.reading;
        self.doubt = None;
        loop {
            match self.read_next()? {
                Next::Ship { txs, log, complete } => {
                    self.ship(txs, log, complete, now, report)?;
                    if complete {
                        break;
                    }
                }
                // The next pass starts another generation (this one stays unusable).
                Next::Gap(_) => return Ok(()),
            }
        }
        info.base_through = self.position.as_ref().map(|p| p.next_tx);
        self.store.save_generation(&generation, &info)?;
        self.generation_ready = true;
        Ok(())
    }

    /// The database file, zstd-compressed, written whole; its SHA-256 and the bytes it
    /// holds decompressed.
    fn copy_base(&self, path: &Path) -> Result<(String, u64)> {
        let (partial, file) = PartialFile::create(path, self.store.file_mode())?;
        // Positioned reads: the descriptor is shared (see `held`), its offset too.
        let mut src = PositionedReader {
            file: &self.db_file,
            offset: 0,
        };
        let mut hashing = HashingWriter::new(std::io::BufWriter::new(&file));
        let mut enc = zstd::Encoder::new(&mut hashing, 3).ctx("compress", path)?;
        let bytes = std::io::copy(&mut src, &mut enc).ctx("copy", &self.db)?;
        enc.finish().ctx("compress", path)?;
        let (mut out, digest, _) = hashing.finish();
        out.flush().ctx("write", partial.temp_path())?;
        drop(out);
        partial.sync(&file)?;
        partial.rename()?;
        Ok((digest, bytes))
    }

    /// Ends the current generation and starts a new one from a fresh base (the daily
    /// base, which bounds what a restore replays), after a pass that ships what the log
    /// holds into the old one.
    pub fn start_generation(&mut self, now: DateTime<Utc>, reason: &str) -> Result<PassReport> {
        let mut report = self.pass(now)?;
        if report.new_generation.is_some() {
            return Ok(report);
        }
        let identity = file_identity(&self.db)?;
        self.new_generation(reason, now, identity, &mut report)?;
        report.new_generation = Some(reason.to_string());
        Ok(report)
    }
}

/// Reads a file from `offset` with `pread`, leaving the descriptor's own offset alone.
struct PositionedReader<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// What [`open_reader`] opens: the connection, the held descriptors of the database file
/// and its index, the page size.
struct OpenedDatabase {
    reader: Connection,
    db_file: Arc<File>,
    shm_file: Option<Arc<File>>,
    page_size: u32,
}

/// The transaction after the last one of `generation`'s segments (0 without any).
fn chain_end(store: &ReplicaStore, generation: &str) -> Result<u64> {
    let (chain, _) = super::compact::chain_of(store.segments(generation)?)?;
    Ok(chain
        .last()
        .map_or(0, |(f, _, h)| f + u64::from(h.transactions)))
}

/// A connection to `db` that checks WAL mode, the file itself (see `db_file`), and the
/// database's page size.
fn open_reader(db: &Path, busy_timeout: Duration) -> Result<OpenedDatabase> {
    let reader = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open", db, e))?;
    reader
        .busy_timeout(busy_timeout)
        .map_err(|e| Error::sqlite("set busy_timeout on", db, e))?;
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
    let file = super::held::hold(db).ctx("open", db)?;
    // The connection has read the database, so its index exists (unless the app keeps it
    // in memory: exclusive locking mode).
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let shm_file = match super::held::hold(Path::new(&shm)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", Path::new(&shm), e)),
    };
    Ok(OpenedDatabase {
        reader,
        db_file: file,
        shm_file,
        page_size,
    })
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

#[cfg(test)]
#[path = "replicator_tests.rs"]
mod tests;
