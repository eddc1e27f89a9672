//! Verifying a snapshot without stopping at the first problem: the entry list's checksum
//! and structure, then every chunk of every file — present in its pack (the default), or
//! read back, decompressed and hashed against its id (`--read-data`, and always before a
//! restore, which reads everything anyway). Every pack a snapshot lists is read once per
//! verify run ([`PackRun`]) and its SHA-256 checked against the one its metadata records;
//! with `--read-data` its chunks are served from that one read, and a chunk another
//! snapshot of the run already checked is not read again. A missing or damaged pack fails
//! the check with the files it affects named, so the operator knows what a lost pack cost.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use super::damage::{ChunkError, Damage};
use super::ids::PackId;
use super::keys::Opening;
use super::read::{check_tree, open_tree, safe_entry};
use super::trailer::PackedChunk;
use crate::engine::entry_tree::EntryTree;
use crate::engine::{Cancel, Progress};
use crate::error::{Error, Result};

/// How deep a snapshot check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every chunk's pack is there and long enough.
    Presence,
    /// Every chunk is read back and hashed.
    ReadData,
}

/// What a passing check saw.
#[derive(Debug, Default)]
pub struct Checked {
    pub entries: u64,
    pub files: u64,
    pub non_dir_entries: u64,
    pub chunks: u64,
    /// Bytes read: the entry list, plus the chunks with [`Depth::ReadData`].
    pub bytes_read: u64,
}

/// Names at most this many affected files in the failure (and counts the rest).
const NAMED: usize = 10;

/// What one verify run learned about packs and chunks, so a pack many snapshots list is
/// read (and its checksum checked) once, and a chunk they share is read back once.
#[derive(Debug, Default)]
pub struct PackRun {
    packs: RefCell<HashMap<PackId, std::result::Result<(), Damage>>>,
    chunks: RefCell<HashMap<(PackId, u64), std::result::Result<(), Damage>>>,
    /// Each pack's trailer, by offset (`None`: it has none, or it was not opened).
    trailers: RefCell<HashMap<PackId, TrailerByOffset>>,
}

impl PackRun {
    /// Packs read whole so far.
    pub fn packs_read(&self) -> usize {
        self.packs.borrow().len()
    }

    /// Where the store's index disagrees with the trailers of the packs this run read: an
    /// index entry no trailer lists as it says (a new snapshot would point at the wrong
    /// bytes through it), or an index file that cannot be read. An index that only lacks
    /// packs is not a problem: the next backup's upkeep indexes them.
    pub fn index_disagreements(&self, root: &Path, opening: &Opening) -> Vec<String> {
        let files = match super::index::files(root) {
            Ok(f) => f,
            Err(e) => return vec![crate::error_chain(&e)],
        };
        let trailers = self.trailers.borrow();
        let mut problems = Vec::new();
        for file in files {
            let mut wrong = Vec::new();
            let read = super::index::read(&file, opening, &mut |_| true, &mut |p| {
                let Some(Ok(Some(listed))) = trailers.get(&p.id) else {
                    return;
                };
                let agrees = p.chunks.len() == listed.len()
                    && p.chunks.iter().all(|c| listed.get(&c.offset) == Some(c));
                if !agrees {
                    wrong.push(p.id.to_hex());
                }
            });
            match read {
                Err(e) => problems.push(crate::error_chain(&e)),
                Ok(_) if !wrong.is_empty() => problems.push(format!(
                    "{} lists chunks of pack(s) {} that their trailers do not",
                    file.display(),
                    wrong.join(", ")
                )),
                Ok(_) => {}
            }
        }
        problems
    }
}

/// A pack's trailer as a verify run keeps it: chunks by offset.
type TrailerByOffset = std::result::Result<Option<HashMap<u64, PackedChunk>>, Damage>;

/// The snapshot's packs as its metadata records them: id → SHA-256 of the pack file.
pub type RecordedPacks = HashMap<String, String>;

pub fn check_snapshot(
    tree: &Path,
    (expected, identity): (Option<&str>, Option<&Path>),
    (depth, recorded, run): (Depth, &RecordedPacks, &PackRun),
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<Checked> {
    let (_, size) = check_tree(tree, expected)?;
    let mut opened = open_tree(tree, identity)?;
    let (reader, mut packs) = opened.split();
    let top = reader.header().root.clone();
    let mut judged = EntryTree::default();
    let mut checked = Checked {
        bytes_read: size,
        ..Checked::default()
    };
    let mut affected: Vec<String> = Vec::new();
    let mut affected_count = 0usize;
    let mut first_problem = None;
    let mut buf = Vec::new();
    progress.begin("check snapshot", None, None);
    while let Some(node) = reader.next_node()? {
        cancel.check()?;
        let safe = safe_entry(tree, &top, &node)?;
        judged.admit(tree, &safe)?;
        checked.entries += 1;
        let mut problem = None;
        let mut total = 0u64;
        for chunk in &node.chunks {
            checked.chunks += 1;
            total += u64::from(chunk.raw);
            let pack = pack_verdict(&mut packs, chunk, depth, recorded, run, &mut checked)
                .map_err(|e| e.into_error(tree, String::new()))?;
            let pack = pack.and_then(|()| listed_in_trailer(chunk, run));
            let result = match (pack, depth) {
                (Err(why), _) => Err(why),
                (Ok(()), Depth::Presence) => packs.check_present(chunk).map_err(Damage::from),
                (Ok(()), Depth::ReadData) => {
                    let key = (chunk.pack, chunk.offset);
                    let known = run.chunks.borrow().get(&key).cloned();
                    match known {
                        Some(verdict) => verdict,
                        None => {
                            let verdict = match packs.read_chunk(chunk, &mut buf) {
                                Err(e @ ChunkError::Key(..)) => {
                                    return Err(e.into_error(tree, String::new()));
                                }
                                other => other.map_err(Damage::from),
                            };
                            run.chunks.borrow_mut().insert(key, verdict.clone());
                            verdict
                        }
                    }
                }
            };
            if let Err(why) = result {
                problem = Some(why);
                break;
            }
        }
        if problem.is_none() && node.kind == super::tree::NodeKind::File && total != node.size {
            problem = Some(Damage::Size {
                held: total,
                size: node.size,
            });
        }
        if let Some(p) = problem {
            affected_count += 1;
            if affected.len() < NAMED {
                affected.push(crate::names::shown(&node.path).to_string());
            }
            first_problem.get_or_insert(p);
        }
        if node.kind == super::tree::NodeKind::File {
            checked.files += 1;
        }
        progress.advance(node.size, 1);
    }
    // The parts of the list read back right (each against its id) as it was read; their
    // packs are judged as any other (checksum, trailer), and named once each.
    let mut bad_part_packs: Vec<String> = Vec::new();
    let mut bad_parts = 0u64;
    for part in reader.take_parts() {
        let verdict = pack_verdict(&mut packs, &part, depth, recorded, run, &mut checked)
            .map_err(|e| e.into_error(tree, String::new()))?
            .and_then(|()| listed_in_trailer(&part, run));
        if let Err(p) = verdict {
            bad_parts += 1;
            let pack = part.pack.to_hex();
            if !bad_part_packs.contains(&pack) {
                bad_part_packs.push(pack);
            }
            first_problem.get_or_insert(p);
        }
    }
    progress.end();
    checked.non_dir_entries = judged.non_dir_entries;
    if let Some(p) = first_problem {
        let more = affected_count.saturating_sub(affected.len());
        let mut said = Vec::new();
        if affected_count > 0 {
            let mut files = format!(
                "{affected_count} file(s) cannot be restored: {}",
                affected.join(", ")
            );
            if more > 0 {
                files.push_str(&format!(" and {more} more"));
            }
            said.push(files);
        }
        if bad_parts > 0 {
            said.push(format!(
                "{bad_parts} part(s) of the entry list lie in damaged pack(s) {} (`repair` writes the list anew, its entries inline)",
                bad_part_packs.join(", ")
            ));
        }
        let mut detail = said.join("; ");
        detail.push_str(&format!(" ({p})"));
        return Err(Error::verify(tree, "contents", detail));
    }
    Ok(checked)
}

/// Whether `chunk` is where its pack's trailer says a chunk with its id and lengths lies
/// (a pack without a trailer, or a sealed one read without a key, is not judged by it).
/// The trailer came with the one read of the pack in this run.
fn listed_in_trailer(
    chunk: &super::tree::ChunkRef,
    run: &PackRun,
) -> std::result::Result<(), Damage> {
    let trailers = run.trailers.borrow();
    let listed = match trailers.get(&chunk.pack) {
        Some(Ok(Some(listed))) => listed,
        Some(Err(why)) => return Err(why.clone()),
        Some(Ok(None)) | None => return Ok(()),
    };
    match listed.get(&chunk.offset) {
        Some(c)
            if c.id == chunk.id
                && c.stored == chunk.stored
                && c.raw == chunk.raw
                && c.zstd == chunk.zstd =>
        {
            Ok(())
        }
        _ => Err(Damage::NotInTrailer {
            pack: chunk.pack,
            chunk: chunk.id,
            stored: chunk.stored,
            offset: chunk.offset,
        }),
    }
}

/// The verdict on `chunk`'s pack: read whole the first time the run meets it (its SHA-256
/// against the recorded one; with `--read-data` its plaintext kept for the chunks), then
/// remembered. `Err` of the outer result: the key's problem, not the pack's.
fn pack_verdict(
    packs: &mut super::pack::PackReader<'_>,
    chunk: &super::tree::ChunkRef,
    depth: Depth,
    recorded: &RecordedPacks,
    run: &PackRun,
    checked: &mut Checked,
) -> std::result::Result<std::result::Result<(), Damage>, ChunkError> {
    if let Some(known) = run.packs.borrow().get(&chunk.pack) {
        return Ok(known.clone());
    }
    let verdict = match packs.load_pack(chunk.pack, depth == Depth::ReadData) {
        Err(e @ ChunkError::Key(..)) => return Err(e),
        Err(e) => Err(Damage::from(e)),
        Ok((len, sha)) => {
            checked.bytes_read += len;
            match recorded.get(&chunk.pack.to_hex()) {
                Some(want) if !want.eq_ignore_ascii_case(&sha) => Err(Damage::Checksum {
                    pack: chunk.pack,
                    found: sha,
                    recorded: want.clone(),
                }),
                _ => Ok(()),
            }
        }
    };
    run.packs.borrow_mut().insert(chunk.pack, verdict.clone());
    if let Some(t) = packs.take_trailer(chunk.pack) {
        let by_offset = t.map(|t| t.map(|t| t.into_iter().map(|c| (c.offset, c)).collect()));
        run.trailers.borrow_mut().insert(chunk.pack, by_offset);
    }
    Ok(verdict)
}
