//! The database as of a time, from the replicated stream in the backup directory: the
//! generation that covers the time, its base laid down, its segments replayed up to the
//! last transaction read at or before the time, and SQLite's `integrity_check` on the
//! result. Written to a private file; a caller moves it into place through the same
//! safety copy and swap as any database restore.
//!
//! The chain is checked by the segments' headers before anything is laid down (each
//! first transaction following the one before, up to every transaction shipped), and
//! every segment used is read to its end and its SHA-256 trailer checked; what was
//! replayed goes to a private file that is removed on any failure, so a damaged or
//! missing segment stops the restore with its name, never a database that silently
//! lacks the transactions after it or holds a damaged page.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};

use super::apply::Replica;
use super::segment::{SegmentHeader, SegmentReader, read_header};
use super::store::{BASE_FILE, GENERATION_FILE, GenerationInfo, ReplicaStore};
use crate::config::IntegrityCheck;
use crate::engine::database::integrity_check;
use crate::engine::hashing::HashingReader;
use crate::error::{Error, IoContext, Result};

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredReplica {
    pub generation: String,
    /// Transactions replayed onto the base.
    pub transactions: u64,
    /// When the last replayed transaction was read from the log.
    pub as_of: DateTime<Utc>,
}

/// Writes the database as of `at` (the newest state when `None`) to `out`, which must
/// not exist; on failure nothing is left at `out`.
pub fn restore_to(
    store: &ReplicaStore,
    at: Option<DateTime<Utc>>,
    out: &Path,
) -> Result<RestoredReplica> {
    let result = restore_inner(store, at, out);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn restore_inner(
    store: &ReplicaStore,
    at: Option<DateTime<Utc>>,
    out: &Path,
) -> Result<RestoredReplica> {
    let generations: Vec<_> = store
        .generations()?
        .into_iter()
        .filter(|(_, info)| info.base_through.is_some())
        .collect();
    let chosen = generations
        .iter()
        .rev()
        .find(|(_, info)| at.is_none_or(|t| info.started <= t));
    let Some((generation, info)) = chosen else {
        return Err(no_stream(store, at, generations.first().map(|g| &g.1)));
    };
    // The position first: a segment is written before the position that follows it,
    // so every transaction the position counts is in the listing that comes after.
    // One that does not parse (a power cut before the daemon rewrote it) bounds nothing:
    // the chain is still checked against its record, and the restore says so.
    let position = match store.position() {
        Ok(position) => position,
        Err(e @ Error::Verify { .. }) => {
            tracing::warn!(
                "{e}: restoring without the replicator's position to check the chain's end against"
            );
            None
        }
        Err(e) => return Err(e),
    };
    let shipped = position
        .filter(|p| &p.generation == generation)
        .map(|p| p.next_tx);
    let chain = check_chain(
        store,
        generation,
        info,
        shipped,
        &store.segments(generation)?,
    )?;
    lay_base(store, generation, info, out)?;
    let mut replica = Replica::open(out, info.page_size).map_err(|e| invalid(out, e))?;
    let mut replay = Replay {
        replica: &mut replica,
        at_ms: at.map(|t| t.timestamp_millis()),
        base_through: info.base_through.unwrap_or(0),
        applied: 0,
        as_of: info.started,
        stopped: false,
    };
    for (first_tx, path) in &chain {
        replay_segment(&mut replay, path, generation, *first_tx, info.page_size)?;
    }
    let (applied, as_of) = (replay.applied, replay.as_of);
    replica.sync().map_err(|e| invalid(out, e))?;
    drop(replica);
    integrity_check(out, IntegrityCheck::Full)?;
    Ok(RestoredReplica {
        generation: generation.clone(),
        transactions: applied,
        as_of,
    })
}

/// Where a replay stands.
struct Replay<'r> {
    replica: &'r mut Replica,
    at_ms: Option<i64>,
    base_through: u64,
    applied: u64,
    as_of: DateTime<Utc>,
    /// A record past the time was met: the rest is only checked.
    stopped: bool,
}

/// One segment replayed as far as the time allows, and always read to its end and
/// checked: a record applied from a segment whose checksum fails fails the restore
/// (whose output is then removed), never a database built on damage.
fn replay_segment(
    replay: &mut Replay,
    path: &Path,
    generation: &str,
    first_tx: u64,
    page_size: u32,
) -> Result<()> {
    let file = std::fs::File::open(path).ctx("open", path)?;
    let mut reader = SegmentReader::open(std::io::BufReader::new(file))
        .map_err(|e| damaged(path, e.to_string()))?;
    let header = *reader.header();
    let theirs = hex::encode(header.generation);
    if theirs != generation || header.first_tx != first_tx || header.page_size != page_size {
        return Err(damaged(
            path,
            format!(
                "it belongs to generation {theirs}, transaction {}",
                header.first_tx
            ),
        ));
    }
    // One page in memory at a time, whatever a record's size: a record's pages go
    // straight to the private output (removed whole if anything fails later).
    let mut page = vec![0u8; page_size as usize];
    let bad = |e: super::segment::SegmentError| damaged(path, e.to_string());
    while let Some(head) = reader.next_record().map_err(bad)? {
        // The base's own log is replayed whole: the base may hold any of its pages.
        let late = replay.applied >= replay.base_through
            && replay.at_ms.is_some_and(|t| head.commit_ms > t);
        replay.stopped |= late;
        for _ in 0..head.pages {
            let number = reader.next_page(&mut page).map_err(bad)?;
            if !replay.stopped {
                replay
                    .replica
                    .write_page(number, &page, head.db_pages)
                    .map_err(|e| invalid(path, e))?;
            }
        }
        if replay.stopped {
            continue;
        }
        replay
            .replica
            .set_pages(head.db_pages)
            .map_err(|e| invalid(path, e))?;
        replay.applied += u64::from(head.covers);
        replay.as_of = Utc
            .timestamp_millis_opt(head.commit_ms)
            .single()
            .unwrap_or(replay.as_of);
    }
    reader.finish().map_err(|e| damaged(path, e.to_string()))?;
    Ok(())
}

/// The segments to replay: they follow each other from transaction 0 (by their
/// headers), reach past the base's log, and reach every transaction the position says
/// was shipped: a missing segment — in the middle or at the end — is never passed over.
/// A segment that a compacted one before it covers whole (left by a compaction
/// interrupted before it removed what it merged) is passed over.
pub(super) fn check_chain(
    store: &ReplicaStore,
    generation: &str,
    info: &GenerationInfo,
    shipped: Option<u64>,
    segments: &[(u64, PathBuf)],
) -> Result<Vec<(u64, PathBuf)>> {
    let mut next = 0u64;
    let mut chain = Vec::new();
    for (first_tx, path) in segments {
        if *first_tx < next {
            let header = open_header(path)?;
            if first_tx + u64::from(header.transactions) <= next {
                continue;
            }
            return Err(damaged(
                path,
                format!("it overlaps the segment before it (transaction {next})"),
            ));
        }
        if *first_tx != next {
            return Err(missing(path, next));
        }
        let header = open_header(path)?;
        if header.first_tx != *first_tx || header.page_size != info.page_size {
            return Err(damaged(
                path,
                format!(
                    "its header says transaction {} with {}-byte pages",
                    header.first_tx, header.page_size
                ),
            ));
        }
        next = first_tx + u64::from(header.transactions);
        chain.push((*first_tx, path.clone()));
    }
    let needed = shipped
        .unwrap_or(0)
        .max(info.base_through.unwrap_or(0))
        .max(info.end_tx.unwrap_or(0));
    if next < needed {
        return Err(missing(&store.generation_dir(generation), next));
    }
    Ok(chain)
}

fn open_header(path: &Path) -> Result<SegmentHeader> {
    let file = std::fs::File::open(path).ctx("open", path)?;
    read_header(file).map_err(|e| damaged(path, e.to_string()))
}

fn no_stream(
    store: &ReplicaStore,
    at: Option<DateTime<Utc>>,
    first: Option<&GenerationInfo>,
) -> Error {
    Error::NoSuchBackup {
        wanted: match at {
            Some(t) => format!("the database as of {}", t.to_rfc3339()),
            None => "the replicated database".into(),
        },
        reason: match first {
            Some(first) => format!("replication began at {}", first.started.to_rfc3339()),
            None => format!("{} holds no replicated stream", store.root().display()),
        },
    }
}

fn missing(path: &Path, tx: u64) -> Error {
    Error::verify(
        path,
        "replication chain",
        format!(
            "transaction {tx} is missing (a segment is gone): the stream cannot be replayed \
             past it; restore from a backup instead (restore --latest database)"
        ),
    )
}

fn damaged(path: &Path, detail: String) -> Error {
    Error::verify(path, "segment", detail)
}

/// The generation's base, decompressed into `out` and checked against its SHA-256.
///
/// The SHA-256 can only be known at the end, so what is written is bounded first: no
/// more than the generation records (refused up front when that is more than the free
/// space; a record that does not say is refused), or a small file that decompresses
/// without end — from a damaged or hostile copy — would fill the disk before the check.
fn lay_base(
    store: &ReplicaStore,
    generation: &str,
    info: &GenerationInfo,
    out: &Path,
) -> Result<()> {
    let base = store.generation_dir(generation).join(BASE_FILE);
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(limit) = info.base_bytes else {
        return Err(Error::verify(
            store.generation_dir(generation).join(GENERATION_FILE),
            "record",
            "it does not say how many bytes the base holds (a record from an older build, \
             or altered): restore from a backup instead (restore --latest database)",
        ));
    };
    let free = crate::sys::available_space(dir).ctx("measure the free space of", dir)?;
    if limit > free {
        return Err(Error::Refused(format!(
            "the base of generation {generation} holds {limit} bytes and {} has {free} \
             free: make room there and run the restore again",
            dir.display()
        )));
    }
    let file = std::fs::File::open(&base).ctx("open", &base)?;
    let mut hashing = HashingReader::new(std::io::BufReader::new(file));
    let mut dest = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .ctx("create", out)?;
    // Every byte of the file passes `hashing` once: what the decoder read ahead, and
    // the rest read by `finish`.
    let mut dec = zstd::Decoder::new(&mut hashing).ctx("decompress", &base)?;
    let written = std::io::copy(&mut (&mut dec).take(limit), &mut dest).ctx("decompress", &base)?;
    let mut more = [0u8; 1];
    let past = dec.read(&mut more).ctx("decompress", &base)?;
    drop(dec);
    if past != 0 || written != limit {
        return Err(Error::verify(
            base,
            "size",
            if past == 0 {
                format!("the base holds {written} bytes, recorded {limit}")
            } else {
                format!("the base holds more than the {limit} bytes recorded")
            },
        ));
    }
    let (digest, _) = hashing.finish().ctx("read", &base)?;
    if digest != info.base_sha256 {
        return Err(Error::verify(
            base,
            "SHA-256",
            format!("the base reads as {digest}, recorded {}", info.base_sha256),
        ));
    }
    dest.sync_all().ctx("fsync", out)
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::verify(path, "replication replay", e.to_string())
}
