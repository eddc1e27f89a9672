//! Mending one snapshot's entry list (what `repair` does to a damaged snapshot): every
//! chunk whose data is gone is looked up elsewhere in the store (the same chunk in another
//! pack, as the index knows it) and pointed there; a file with a chunk found nowhere is
//! copied out of a damaged pack into a new one when it still reads back right there, or
//! else left out, and so is every hard link to it — each named, so the operator knows
//! what is lost and the next backup reads those files again. A part of the entry list
//! that cannot be read loses its entries, which are unknown: they are counted and placed
//! between the names around them (a hard link into that range is lost with them).
//! Everything else is copied as it was, inline (a mended list has no parts: the next
//! backup cuts and stores them again).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::ids::{ChunkId, PackId};
use super::keys::{MaybeSealed, Opening};
use super::trailer::PackedChunk;
use super::tree::{ChunkRef, NodeKind, TreeReader, TreeWriter};
use crate::catalog::PartialFile;
use crate::encryption::Recipients;
use crate::engine::hashing::HashingWriter;
use crate::error::{Error, IoContext, Result};

/// Whether a chunk can be read where its entry says, and if not, whether it can be saved.
pub trait ChunkHealth {
    /// Its pack is as recorded and holds it.
    fn usable(&mut self, chunk: &ChunkRef) -> bool;
    /// Its pack is not as recorded but the chunk still reads back right: a copy of it in
    /// a new pack (when only planning, the chunk itself stands for that copy).
    fn salvage(&mut self, chunk: &ChunkRef) -> Option<ChunkRef>;
}

/// Where chunks lie in packs known good: chunk id → (pack, where in it).
pub type Relocations = HashMap<ChunkId, (PackId, PackedChunk)>;

/// Entries lost with a part of the entry list that cannot be read: how many, the names
/// they lay between (theirs are unknown), and why the part could not be read.
#[derive(Debug, Clone, Default)]
pub struct LostRun {
    pub entries: u64,
    pub after: Option<PathBuf>,
    pub before: Option<PathBuf>,
    pub why: String,
}

impl LostRun {
    /// Whether `path` would lie in the run (a hard link's target there is lost with it).
    fn holds(&self, path: &Path) -> bool {
        self.after.as_deref().is_none_or(|a| a < path)
            && self.before.as_deref().is_none_or(|b| path < b)
    }

    /// The run as a line of a report.
    pub fn describe(&self) -> String {
        let shown = |p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| crate::names::shown(p).to_string())
                .unwrap_or_default()
        };
        let place = match (&self.after, &self.before) {
            (Some(_), Some(_)) => {
                format!("between {} and {}", shown(&self.after), shown(&self.before))
            }
            (Some(_), None) => format!("after {}", shown(&self.after)),
            (None, Some(_)) => format!("before {}", shown(&self.before)),
            (None, None) => "anywhere".to_string(),
        };
        format!(
            "{} entries {place} (their part of the entry list is gone: {})",
            self.entries, self.why
        )
    }
}

/// What mending a snapshot found (and, unless it was only planned, wrote).
#[derive(Debug, Default)]
pub struct Mended {
    /// Files (and hard links to them) left out: their data is gone.
    pub lost: Vec<PathBuf>,
    /// Entries lost with parts of the entry list that cannot be read.
    pub lost_runs: Vec<LostRun>,
    /// Chunks pointed at another copy of themselves.
    pub relocated: u64,
    /// Chunks copied out of a damaged pack into a new one.
    pub salvaged: u64,
    /// Parts of the list read out of a pack not as recorded (they read back right; the
    /// mended list holds their entries inline, no longer pointing at that pack).
    pub parts_rewritten: u64,
    /// Packs the mended list references.
    pub packs: BTreeSet<PackId>,
    pub chunks: u64,
    /// Non-directory entries, and the bytes of the files, kept.
    pub file_count: u64,
    pub content_size: u64,
    /// The written entry list's SHA-256 and size (nothing written: empty).
    pub checksum: String,
    pub size: u64,
}

impl Mended {
    /// Whether the snapshot needs a mended entry list at all.
    pub fn changed(&self) -> bool {
        self.lost_anything() || self.relocated > 0 || self.salvaged > 0 || self.parts_rewritten > 0
    }

    pub fn lost_anything(&self) -> bool {
        !self.lost.is_empty() || !self.lost_runs.is_empty()
    }

    /// Entries left out, named or not.
    pub fn lost_count(&self) -> u64 {
        self.lost.len() as u64 + self.lost_runs.iter().map(|r| r.entries).sum::<u64>()
    }
}

/// Read the entry list `tree` and mend it: into `out` (sealed to `seal`) when given, else
/// only to say what mending would do.
pub fn mend(
    tree: &Path,
    opening: &Opening,
    health: &mut dyn ChunkHealth,
    elsewhere: &Relocations,
    out: Option<(&PartialFile, File, Option<&Recipients>)>,
) -> Result<(Mended, Option<File>)> {
    let mut reader = TreeReader::open(tree, opening)?;
    let mut writer = match out {
        Some((partial, file, seal)) => {
            let hashed = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
            let sealed = MaybeSealed::new(hashed, seal).ctx("encrypt", partial.temp_path())?;
            let w = TreeWriter::new(sealed, reader.header().clone())
                .ctx("write", partial.temp_path())?;
            Some((w, partial.temp_path().to_path_buf()))
        }
        None => None,
    };
    let mut m = Mended::default();
    let mut lost_files: HashSet<PathBuf> = HashSet::new();
    reader.tolerate_lost_parts();
    let mut last: Option<PathBuf> = None;
    while let Some(mut node) = reader.next_node()? {
        note_lost_runs(&reader, &mut m.lost_runs, &last, Some(&node.path));
        last = Some(node.path.clone());
        let gone = match node.kind {
            NodeKind::File => !mend_chunks(&mut node.chunks, health, elsewhere, &mut m),
            // A hard link to a lost file is lost with it (the walk lists the file first).
            NodeKind::Hardlink => node
                .target
                .as_ref()
                .is_some_and(|t| lost_files.contains(t) || m.lost_runs.iter().any(|r| r.holds(t))),
            _ => false,
        };
        if gone {
            lost_files.insert(node.path.clone());
            m.lost.push(node.path);
            continue;
        }
        if node.kind != NodeKind::Dir {
            m.file_count += 1;
        }
        m.content_size += node.size;
        m.chunks += node.chunks.len() as u64;
        m.packs.extend(node.chunks.iter().map(|c| c.pack));
        if let Some((w, path)) = &mut writer {
            w.push(node).ctx("write", &*path)?;
        }
    }
    note_lost_runs(&reader, &mut m.lost_runs, &last, None);
    m.parts_rewritten = reader
        .take_parts()
        .iter()
        .filter(|p| !health.usable(p))
        .count() as u64;
    let Some((w, path)) = writer else {
        return Ok((m, None));
    };
    let hashed = w
        .finish()
        .and_then(MaybeSealed::finish)
        .ctx("write", &path)?;
    let (buffered, checksum, size) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| Error::io("write", &path, e.into_error()))?;
    m.checksum = checksum;
    m.size = size;
    Ok((m, Some(file)))
}

/// Record the parts `reader` passed over since the last call (they lay after `last` and
/// before `next`).
fn note_lost_runs<R: std::io::Read>(
    reader: &TreeReader<R>,
    runs: &mut Vec<LostRun>,
    last: &Option<PathBuf>,
    next: Option<&Path>,
) {
    for lost in reader.lost_parts().iter().skip(runs.len()) {
        runs.push(LostRun {
            entries: lost.entries,
            after: last.clone(),
            before: next.map(Path::to_path_buf),
            why: lost.why.clone(),
        });
    }
}

/// Point each unusable chunk at another copy, or at a salvaged one; false when one has
/// neither (the file is lost).
fn mend_chunks(
    chunks: &mut [ChunkRef],
    health: &mut dyn ChunkHealth,
    elsewhere: &Relocations,
    m: &mut Mended,
) -> bool {
    let (mut relocated, mut salvaged) = (0, 0);
    for c in chunks.iter_mut() {
        if health.usable(c) {
            continue;
        }
        let other = elsewhere
            .get(&c.id)
            .map(|(pack, at)| ChunkRef::at(*pack, at))
            .filter(|moved| moved.raw == c.raw && health.usable(moved));
        if let Some(moved) = other {
            *c = moved;
            relocated += 1;
        } else if let Some(copy) = health.salvage(c) {
            *c = copy;
            salvaged += 1;
        } else {
            return false;
        }
    }
    m.relocated += relocated;
    m.salvaged += salvaged;
    true
}
