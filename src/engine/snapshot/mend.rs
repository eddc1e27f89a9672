//! Mending one snapshot's entry list (what `repair` does to a damaged snapshot): every
//! chunk whose data is gone is looked up elsewhere in the store (the same chunk in another
//! pack, as the index knows it) and pointed there; a file with a chunk found nowhere is
//! copied out of a damaged pack into a new one when it still reads back right there, or
//! else left out, and so is every hard link to it — each named, so the operator knows
//! what is lost and the next backup reads those files again. Everything else is copied
//! as it was.

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

/// What mending a snapshot found (and, unless it was only planned, wrote).
#[derive(Debug, Default)]
pub struct Mended {
    /// Files (and hard links to them) left out: their data is gone.
    pub lost: Vec<PathBuf>,
    /// Chunks pointed at another copy of themselves.
    pub relocated: u64,
    /// Chunks copied out of a damaged pack into a new one.
    pub salvaged: u64,
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
        !self.lost.is_empty() || self.relocated > 0 || self.salvaged > 0
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
    while let Some(mut node) = reader.next_node()? {
        let gone = match node.kind {
            NodeKind::File => !mend_chunks(&mut node.chunks, health, elsewhere, &mut m),
            // A hard link to a lost file is lost with it (the walk lists the file first).
            NodeKind::Hardlink => node.target.as_ref().is_some_and(|t| lost_files.contains(t)),
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
