//! Compaction: the segments of a minute that is over merged into one, and those of an
//! hour that is over into one, so that a restore reads a bounded number of files (per
//! generation, which lasts at most a day: 24 hourly, 60 minute and the current minute's
//! segments) and a target holds a bounded number of keys.
//!
//! Merging keeps every point a restore can reach: a segment's records all carry the time
//! of the pass that read them, so records with one time collapse into one (the last image
//! of each page, the chain's transactions it covers added up) and records with different
//! times stay apart — a restore to any second lands where it did before. Records are
//! never merged across a shrink of the database (a VACUUM): replaying the last images
//! then equals replaying them in order.
//!
//! The merged segment replaces the first of its run under the same name (written whole,
//! then renamed over it) before the others are removed: a kill between the two leaves
//! segments the merged one covers whole, which [`remove_covered`] and the restore's chain
//! check pass over.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::segment::{SegmentHeader, SegmentReader, SegmentWriter, Shipped, read_header};
use super::store::ReplicaStore;
use super::wal::{PageWrite, Transaction};
use crate::catalog::PartialFile;
use crate::error::{Error, IoContext, Result};

/// The spans merged into once they are over, widest first.
const SPANS_MS: [i64; 2] = [3_600_000, 60_000];

/// One merge done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub first_tx: u64,
    /// The first transactions of the segments it replaced (its own first included).
    pub replaced: Vec<u64>,
}

/// Which runs of segments to merge (indexes into `headers`, in chain order): at least two
/// consecutive segments that follow each other and all lie in one span that is over by
/// `now_ms` — their hour if it is over, else their minute.
pub fn plan(headers: &[SegmentHeader], now_ms: i64) -> Vec<Range<usize>> {
    let bucket = |h: &SegmentHeader| {
        SPANS_MS.iter().find_map(|&span| {
            let b = h.first_commit_ms.div_euclid(span);
            (h.last_commit_ms.div_euclid(span) == b && (b + 1) * span <= now_ms)
                .then_some((span, b))
        })
    };
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=headers.len() {
        let continues = i < headers.len()
            && bucket(&headers[i]).is_some()
            && bucket(&headers[i]) == bucket(&headers[i - 1])
            && headers[i - 1].first_tx + u64::from(headers[i - 1].transactions)
                == headers[i].first_tx;
        if !continues {
            if i - start >= 2 && bucket(&headers[start]).is_some() {
                runs.push(start..i);
            }
            start = i;
        }
    }
    runs
}

/// A generation's segments with their headers, split into the chain and the segments a
/// compacted one before them covers whole (an interrupted compaction's leftovers).
/// The covered ones come with the segment that covers them.
pub fn chain_of(segments: Vec<(u64, PathBuf)>) -> Result<(Vec<ChainSegment>, Vec<Covered>)> {
    let mut kept: Vec<ChainSegment> = Vec::new();
    let mut covered = Vec::new();
    for (first_tx, path) in segments {
        let header = header_of(&path)?;
        let inside = kept.last().is_some_and(|(f, _, h)| {
            *f < first_tx
                && first_tx + u64::from(header.transactions) <= f + u64::from(h.transactions)
        });
        if inside {
            let by = kept.last().map(|k| k.1.clone()).unwrap_or_default();
            covered.push((path, by));
        } else {
            kept.push((first_tx, path, header));
        }
    }
    Ok((kept, covered))
}

/// A segment of the chain: its first transaction, its file, its header.
pub type ChainSegment = (u64, PathBuf, SegmentHeader);
/// A leftover segment and the segment that covers it.
pub type Covered = (PathBuf, PathBuf);

/// [`chain_of`], the leftovers removed — each only once the segment covering it reads
/// whole (its header alone is no proof: a damaged count would cover anything).
pub fn remove_covered(segments: Vec<(u64, PathBuf)>) -> Result<Vec<ChainSegment>> {
    let (kept, covered) = chain_of(segments)?;
    let mut verified: Vec<PathBuf> = Vec::new();
    for (path, by) in covered {
        if !verified.contains(&by) {
            verify_segment(&by)?;
            verified.push(by);
        }
        std::fs::remove_file(&path).ctx("remove", &path)?;
    }
    Ok(kept)
}

/// Reads the segment at `path` to its end and checks its trailer.
pub fn verify_segment(path: &Path) -> Result<()> {
    let damaged = |e: super::segment::SegmentError| Error::verify(path, "segment", e.to_string());
    let file = std::fs::File::open(path).ctx("open", path)?;
    let mut reader = SegmentReader::open(std::io::BufReader::new(file)).map_err(damaged)?;
    let mut page = vec![0u8; reader.header().page_size as usize];
    while let Some(head) = reader.next_record().map_err(damaged)? {
        for _ in 0..head.pages {
            reader.next_page(&mut page).map_err(damaged)?;
        }
    }
    reader.finish().map_err(damaged)?;
    Ok(())
}

/// Merges what [`plan`] finds in `generation`'s segments.
pub fn compact_generation(
    store: &ReplicaStore,
    generation: &str,
    now_ms: i64,
) -> Result<Vec<Merged>> {
    let segments = remove_covered(store.segments(generation)?)?;
    let headers: Vec<SegmentHeader> = segments.iter().map(|s| s.2).collect();
    let mut done = Vec::new();
    for run in plan(&headers, now_ms) {
        let members = &segments[run];
        let paths: Vec<&Path> = members.iter().map(|m| m.1.as_path()).collect();
        merge(store, &paths, &headers_of(members))?;
        for (_, path, _) in &members[1..] {
            std::fs::remove_file(path).ctx("remove", path)?;
        }
        done.push(Merged {
            first_tx: members[0].0,
            replaced: members.iter().map(|m| m.0).collect(),
        });
    }
    Ok(done)
}

fn headers_of(members: &[ChainSegment]) -> Vec<SegmentHeader> {
    members.iter().map(|m| m.2).collect()
}

fn header_of(path: &Path) -> Result<SegmentHeader> {
    let file = std::fs::File::open(path).ctx("open", path)?;
    read_header(file).map_err(|e| Error::verify(path, "segment", e.to_string()))
}

/// Writes the merge of `paths` (consecutive, headers `headers`) over the first of them.
fn merge(store: &ReplicaStore, paths: &[&Path], headers: &[SegmentHeader]) -> Result<()> {
    let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
        return Ok(());
    };
    let covered: u64 = headers.iter().map(|h| u64::from(h.transactions)).sum();
    let header = SegmentHeader {
        transactions: u32::try_from(covered)
            .map_err(|_| Error::Internal("too many transactions to merge".into()))?,
        last_commit_ms: last.last_commit_ms,
        ..*first
    };
    let target = paths[0];
    let (partial, file) = PartialFile::create(target, store.file_mode())?;
    let damaged =
        |p: &Path, e: super::segment::SegmentError| Error::verify(p, "segment", e.to_string());
    let mut writer = SegmentWriter::new(std::io::BufWriter::new(&file), header)
        .map_err(|e| damaged(partial.temp_path(), e))?;
    let mut pending: Option<Folding> = None;
    for path in paths {
        let input = std::fs::File::open(path).ctx("open", path)?;
        let mut reader =
            SegmentReader::open(std::io::BufReader::new(input)).map_err(|e| damaged(path, e))?;
        while let Some(next) = reader.next_transaction().map_err(|e| damaged(path, e))? {
            match &mut pending {
                Some(f) if f.takes(&next) => f.fold(next),
                _ => {
                    if let Some(done) = pending.replace(Folding::new(next)) {
                        writer
                            .write(&done.finish())
                            .map_err(|e| damaged(partial.temp_path(), e))?;
                    }
                }
            }
        }
        // Every record merged is checked whole before the merge may replace it.
        reader.finish().map_err(|e| damaged(path, e))?;
    }
    if let Some(done) = pending {
        writer
            .write(&done.finish())
            .map_err(|e| damaged(partial.temp_path(), e))?;
    }
    let mut out = writer
        .finish()
        .map_err(|e| damaged(partial.temp_path(), e))?;
    out.flush().ctx("write", partial.temp_path())?;
    drop(out);
    partial.sync(&file)?;
    partial.rename()?;
    Ok(())
}

/// Records of one time being folded into one: the last image of each page.
struct Folding {
    commit_ms: i64,
    covers: u32,
    db_pages: u32,
    pages: BTreeMap<u32, Vec<u8>>,
}

impl Folding {
    fn new(s: Shipped) -> Folding {
        let mut f = Folding {
            commit_ms: s.commit_ms,
            covers: 0,
            db_pages: s.tx.db_pages,
            pages: BTreeMap::new(),
        };
        f.fold(s);
        f
    }

    /// Whether `next` folds in: the same time, and the database not shrinking.
    fn takes(&self, next: &Shipped) -> bool {
        next.commit_ms == self.commit_ms
            && next.tx.db_pages >= self.db_pages
            && self.covers.checked_add(next.covers).is_some()
    }

    fn fold(&mut self, s: Shipped) {
        self.covers += s.covers;
        self.db_pages = s.tx.db_pages;
        for p in s.tx.pages {
            self.pages.insert(p.page, p.data);
        }
    }

    fn finish(self) -> Shipped {
        Shipped {
            commit_ms: self.commit_ms,
            covers: self.covers,
            tx: Transaction {
                pages: self
                    .pages
                    .into_iter()
                    .map(|(page, data)| PageWrite { page, data })
                    .collect(),
                db_pages: self.db_pages,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first_tx: u64, transactions: u32, first_s: i64, last_s: i64) -> SegmentHeader {
        SegmentHeader {
            page_size: 4096,
            generation: [1; 16],
            first_tx,
            transactions,
            first_commit_ms: first_s * 1000,
            last_commit_ms: last_s * 1000,
        }
    }

    #[test]
    fn only_spans_that_are_over_merge_and_never_across_a_gap_or_a_span() {
        let h = [
            header(0, 2, 0, 0),      // minute 0
            header(2, 1, 30, 30),    // minute 0
            header(3, 1, 59, 61),    // crosses into minute 1: stays alone
            header(4, 1, 70, 70),    // minute 1
            header(5, 1, 75, 75),    // minute 1
            header(9, 1, 80, 80),    // minute 1, but transactions 6..9 are missing
            header(10, 1, 130, 130), // minute 2: not over at 150 s
            header(11, 1, 140, 140),
        ];
        assert_eq!(plan(&h, 150_000), vec![0..2, 3..5]);
        // Once the hour is over, its whole run merges at once (the crossing one too).
        assert_eq!(plan(&h[..5], 3_600_000), vec![0..5]);
    }
}
