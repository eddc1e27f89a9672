//! The database as of a time, from the replicated stream in the backup directory: the
//! generation that covers the time, its base laid down, its segments replayed up to the
//! last transaction read at or before the time, and SQLite's `integrity_check` on the
//! result. Written to a private file; a caller moves it into place through the same
//! safety copy and swap as any database restore.
//!
//! Every segment is read whole and checked (its SHA-256 trailer, its generation, its
//! first transaction following the one before) before any of its transactions is applied:
//! a damaged or missing segment stops the restore with its name, never a database that
//! silently lacks the transactions after it.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::apply::Replica;
use super::segment::{SegmentReader, Shipped};
use super::store::{BASE_FILE, GenerationInfo, ReplicaStore};
use crate::error::{Error, IoContext, Result};

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredReplica {
    pub generation: String,
    /// Transactions replayed onto the base.
    pub transactions: u64,
    /// When the last replayed transaction was read from the log (the base's time when
    /// none was).
    pub as_of: DateTime<Utc>,
}

/// Writes the database as of `at` (the newest state when `None`) to `out`, which must
/// not exist.
pub fn restore_to(
    store: &ReplicaStore,
    at: Option<DateTime<Utc>>,
    out: &Path,
) -> Result<RestoredReplica> {
    let generations = store.generations()?;
    let chosen = generations
        .iter()
        .rev()
        .find(|(_, info)| at.is_none_or(|t| info.started <= t));
    let Some((generation, info)) = chosen else {
        return Err(Error::NoSuchBackup {
            wanted: match at {
                Some(t) => format!("the database as of {}", t.to_rfc3339()),
                None => "the replicated database".into(),
            },
            reason: match generations.first() {
                Some((_, first)) => format!("replication began at {}", first.started.to_rfc3339()),
                None => format!("{} holds no replicated stream", store.root().display()),
            },
        });
    };
    lay_base(store, generation, info, out)?;
    let mut replica = Replica::open(out, info.page_size).map_err(|e| invalid(out, e))?;
    let mut applied = 0u64;
    let mut as_of = info.started;
    let at_ms = at.map(|t| t.timestamp_millis());
    'segments: for (first_tx, path) in store.segments(generation)? {
        if first_tx != applied {
            return Err(Error::Verify {
                path: path.clone(),
                check: "replication chain",
                detail: format!(
                    "transaction {applied} is missing (the next segment starts at {first_tx})"
                ),
            });
        }
        let txs = read_segment(&path, generation)?;
        for shipped in txs {
            if at_ms.is_some_and(|t| shipped.commit_ms > t) {
                break 'segments;
            }
            replica.apply(&shipped.tx).map_err(|e| invalid(&path, e))?;
            applied += 1;
            as_of = Utc
                .timestamp_millis_opt(shipped.commit_ms)
                .single()
                .unwrap_or(as_of);
        }
    }
    replica.sync().map_err(|e| invalid(out, e))?;
    drop(replica);
    check_integrity(out)?;
    Ok(RestoredReplica {
        generation: generation.clone(),
        transactions: applied,
        as_of,
    })
}

/// The generation's base, decompressed into `out` and checked against its SHA-256.
fn lay_base(
    store: &ReplicaStore,
    generation: &str,
    info: &GenerationInfo,
    out: &Path,
) -> Result<()> {
    let base = store.generation_dir(generation).join(BASE_FILE);
    let file = std::fs::File::open(&base).ctx("open", &base)?;
    let mut hashing = HashingReader {
        inner: std::io::BufReader::new(file),
        hash: Sha256::new(),
    };
    let mut dest = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .ctx("create", out)?;
    // Every byte of the file passes `hashing` once: what the decoder read ahead, and
    // the rest copied after it.
    let mut dec = zstd::Decoder::new(&mut hashing).ctx("decompress", &base)?;
    std::io::copy(&mut dec, &mut dest).ctx("decompress", &base)?;
    drop(dec);
    std::io::copy(&mut hashing, &mut std::io::sink()).ctx("read", &base)?;
    let digest: String = hashing
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != info.base_sha256 {
        return Err(Error::Verify {
            path: base,
            check: "SHA-256",
            detail: format!("the base reads as {digest}, recorded {}", info.base_sha256),
        });
    }
    dest.sync_all().ctx("fsync", out)
}

/// A segment read whole and checked before anything of it is used.
fn read_segment(path: &Path, generation: &str) -> Result<Vec<Shipped>> {
    let damaged = |detail: String| Error::Verify {
        path: path.to_path_buf(),
        check: "segment",
        detail,
    };
    let file = std::fs::File::open(path).ctx("open", path)?;
    let mut reader =
        SegmentReader::open(std::io::BufReader::new(file)).map_err(|e| damaged(e.to_string()))?;
    let hex: String = reader
        .header()
        .generation
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if hex != generation {
        return Err(damaged(format!("it belongs to generation {hex}")));
    }
    let mut txs = Vec::new();
    while let Some(t) = reader
        .next_transaction()
        .map_err(|e| damaged(e.to_string()))?
    {
        txs.push(t);
    }
    reader.finish().map_err(|e| damaged(e.to_string()))?;
    Ok(txs)
}

fn check_integrity(db: &Path) -> Result<()> {
    let conn = Connection::open(db).map_err(|e| Error::sqlite("open", db, e))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("check", db, e))?;
    if verdict != "ok" {
        return Err(Error::Verify {
            path: db.to_path_buf(),
            check: "integrity_check",
            detail: verdict,
        });
    }
    Ok(())
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Verify {
        path: PathBuf::from(path),
        check: "replication replay",
        detail: e.to_string(),
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
