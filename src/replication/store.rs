//! Where the replicated stream lives in the backup directory, and the replicator's own
//! position in it:
//!
//! ```text
//! replication/
//!   position.json                 where the next pass starts (written .partial + fsync + rename)
//!   GENERATION/                   32 hex digits: one unbroken chain from one base
//!     generation.json             when and why it began, the page size, the base's SHA-256
//!     base.db.zst                 the database file as the chain starts from it
//!     segments/NNNNNNNNNNNNNNNN.seg   transactions from number N on (segment format)
//! ```
//!
//! A segment is written whole (`.partial`, fsync, rename) before the position that
//! follows it, so a kill between the two leaves a segment the position does not know:
//! the next pass writes the same transactions again under the same name.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::wal::WalCursor;
use crate::catalog::write_atomic;
use crate::error::{Error, IoContext, Result};

pub const DIR: &str = "replication";
const POSITION: &str = "position.json";
pub const GENERATION_FILE: &str = "generation.json";
pub const BASE_FILE: &str = "base.db.zst";
pub const SEGMENTS: &str = "segments";
pub const SEGMENT_EXT: &str = "seg";

/// Where the log stands relative to what was shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "log", rename_all = "snake_case")]
pub enum LogPosition {
    /// Shipped up to the cursor; the log must still carry the cursor's header.
    At { cursor: WalCursor },
    /// The log was empty (or absent) when the base was taken: the first log that
    /// appears continues the chain if the read transaction was held since.
    Empty,
}

/// What `position.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The generation being written (32 hex digits).
    pub generation: String,
    /// The number the next shipped transaction gets.
    pub next_tx: u64,
    pub log: LogPosition,
    /// The database file's identity (device, inode): another file under the same name
    /// starts a new generation.
    pub db_file: (u64, u64),
    /// The database file as it was when the log had last been read to its end under a
    /// held read transaction (`None`: not since this position's generation began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_stamp: Option<FileStamp>,
}

/// A file's change time, modification time and size: any write to it changes them —
/// provided the write falls in a later tick of the file system's clock than the last
/// one did, which `taken_ns` (when the stamp was taken) lets a reader require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub ctime_ns: i128,
    pub mtime_ns: i128,
    pub size: u64,
    #[serde(default)]
    pub taken_ns: i128,
}

impl FileStamp {
    /// Whether `now` (the file's stamp now) is this one, and this one was taken long
    /// enough after the file's last change that a later change could not share its
    /// clock tick (file system timestamps advance in ticks of a few milliseconds).
    pub fn unchanged_in(&self, now: &FileStamp) -> bool {
        const TICK_MARGIN_NS: i128 = 50_000_000;
        self.ctime_ns == now.ctime_ns
            && self.mtime_ns == now.mtime_ns
            && self.size == now.size
            && self.taken_ns - self.ctime_ns.max(self.mtime_ns) > TICK_MARGIN_NS
    }
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        let taken_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        FileStamp {
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            size: meta.len(),
            taken_ns,
        }
    }
}

/// What `generation.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub started: DateTime<Utc>,
    /// Why a new chain began (the first start, a log restarted while we were away, …).
    pub reason: String,
    pub page_size: u32,
    /// SHA-256 of `base.db.zst` as written.
    pub base_sha256: String,
    /// Bytes of the base decompressed: a restore writes no more (a small file that
    /// decompresses without end fills nothing). Absent in generations written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_bytes: Option<u64>,
    /// The transactions a restore must replay onto the base at the least: the log as it
    /// stood when the base was taken (the base may hold any of its pages). `None` while
    /// the generation's start is not finished: such a generation is never restored.
    #[serde(default)]
    pub base_through: Option<u64>,
    /// The transactions of the chain when a newer generation began: a restore into this
    /// one must reach them all (a lost last segment is named, never passed over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_tx: Option<u64>,
}

/// The `replication/` directory of one backup directory.
#[derive(Debug, Clone)]
pub struct ReplicaStore {
    root: PathBuf,
    file_mode: u32,
    dir_mode: u32,
}

impl ReplicaStore {
    pub fn new(backup_dir: &Path, file_mode: u32, dir_mode: u32) -> ReplicaStore {
        ReplicaStore {
            root: backup_dir.join(DIR),
            file_mode,
            dir_mode,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn generation_dir(&self, generation: &str) -> PathBuf {
        self.root.join(generation)
    }

    pub fn segment_path(&self, generation: &str, first_tx: u64) -> PathBuf {
        self.generation_dir(generation)
            .join(SEGMENTS)
            .join(format!("{first_tx:016x}.{SEGMENT_EXT}"))
    }

    /// Makes `dir` (and its parents below the backup directory) with the directory mode.
    pub fn make_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(self.dir_mode)
            .create(dir)
            .ctx("create", dir)
    }

    pub fn file_mode(&self) -> u32 {
        self.file_mode
    }

    /// The saved position, if any.
    pub fn position(&self) -> Result<Option<Position>> {
        read_json(&self.root.join(POSITION))
    }

    /// Written whole (renamed into place) but not flushed to disk: it is written every
    /// pass, after the segment it follows was flushed, so a power cut can only leave an
    /// older position — which the next start notices (segments past it) and answers
    /// with a new generation ([`super::replicator::Replicator::open`]).
    pub fn save_position(&self, position: &Position) -> Result<()> {
        self.make_dir(&self.root)?;
        write_json_unsynced(&self.root.join(POSITION), position, self.file_mode)
    }

    pub fn generation(&self, generation: &str) -> Result<Option<GenerationInfo>> {
        read_json(&self.generation_dir(generation).join(GENERATION_FILE))
    }

    pub fn save_generation(&self, generation: &str, info: &GenerationInfo) -> Result<()> {
        let dir = self.generation_dir(generation);
        self.make_dir(&dir.join(SEGMENTS))?;
        write_json(&dir.join(GENERATION_FILE), info, self.file_mode)
    }

    /// Every generation with its record, oldest first; directories that are not ours
    /// (another name, no record) are left out.
    pub fn generations(&self) -> Result<Vec<(String, GenerationInfo)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", &self.root, e)),
        };
        for entry in entries {
            let entry = entry.ctx("read", &self.root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_generation_name(&name) {
                continue;
            }
            if let Some(info) = self.generation(&name)? {
                out.push((name, info));
            }
        }
        out.sort_by(|a, b| a.1.started.cmp(&b.1.started).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Removes a generation: its record first (it stops being one at once), then the rest.
    pub fn remove_generation(&self, generation: &str) -> Result<()> {
        let dir = self.generation_dir(generation);
        match std::fs::remove_file(dir.join(GENERATION_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", dir.join(GENERATION_FILE), e)),
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &dir, e)),
        }
    }

    /// Removes what a generation's interrupted start left: a directory named as one but
    /// without its record (the base copied, the record not written yet), other than
    /// `current`'s and at least an hour old (a start under way is never that old).
    pub fn remove_unfinished(&self, current: Option<&str>) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = older_than(&entry, 3600);
            let unfinished = is_generation_name(&name)
                && Some(name.as_str()) != current
                && !entry.path().join(GENERATION_FILE).exists();
            if unfinished && old {
                let path = entry.path();
                std::fs::remove_dir_all(&path).ctx("remove", &path)?;
            }
        }
        Ok(())
    }

    /// A generation's segments by their first transaction number, in order.
    pub fn segments(&self, generation: &str) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.generation_dir(generation).join(SEGMENTS);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", &dir, e)),
        };
        for entry in entries {
            let entry = entry.ctx("read", &dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(&format!(".{SEGMENT_EXT}")) else {
                continue;
            };
            if stem.len() != 16 {
                continue;
            }
            if let Ok(n) = u64::from_str_radix(stem, 16) {
                out.push((n, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Whether the directory entry was last modified `secs` seconds ago or longer.
pub(super) fn older_than(entry: &std::fs::DirEntry, secs: u64) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() >= secs)
}

/// 32 lowercase hex digits.
pub fn is_generation_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::verify(path, "replication record", e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// A record that can be rebuilt or is only informative (a position, what was sent to a
/// target, the status): written whole and renamed into place, without the fsyncs that,
/// every second, would stall the app's own writes on the same filesystem.
pub(super) fn write_json_unsynced<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    let (partial, mut file) = crate::catalog::PartialFile::create(path, mode)?;
    file.write_all(&bytes).ctx("write", partial.temp_path())?;
    partial.rename_ordered()?;
    Ok(())
}

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    write_atomic(path, &bytes, mode)
}
