//! Keeping the index whole and small: run after each cleaning (when a backup starts and
//! after rotation), under the backup directory's lock. It
//! - folds the index into one file per tag when it names packs no snapshot lists any more
//!   (rotated away, swept), when a file of it cannot be read, or when it has grown to more
//!   than [`FOLD_AT`] files; the new file is durable before the old ones go, so a kill at
//!   any moment leaves an index that covers at least what it covered;
//! - indexes the packs kept snapshots list that no index file covers (a store written
//!   before the index existed, or an index lost), from the entry lists that point into
//!   them: the store key opens an encrypted one, and only the chunks snapshots reference
//!   are what a new snapshot could reuse anyway.
//!
//! Nothing here deletes a pack or changes a snapshot: the worst an index can be is
//! incomplete, which costs deduplication, never data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::index::{self, IndexWriter, IndexedPack};
use super::keys::{Opening, StoreKey};
use super::trailer::PackedChunk;
use super::tree::{ChunkRef, TreeReader};
use crate::catalog::{BackupEntry, Catalog, Listing, PackRef};
use crate::encryption::Recipients;
use crate::error::Result;

/// More index files than this are folded into one (each snapshot adds one).
pub const FOLD_AT: usize = 16;

/// What the upkeep did.
#[derive(Debug, Default)]
pub struct IndexUpkeep {
    /// Packs indexed from entry lists (none covered them).
    pub indexed: usize,
    /// Index files folded away.
    pub folded: usize,
    /// What could not be done, for the run to report (never an error of the backup).
    pub warnings: Vec<String>,
}

/// A pack some kept snapshot lists, with what its metadata records.
struct Live<'a> {
    pack: &'a PackRef,
}

/// The packs the snapshots of `listing` list; `None` when a snapshot's metadata could
/// not be read (its packs cannot be told apart, so nothing is called dead).
fn live_packs(listing: &Listing) -> Option<HashMap<&str, Live<'_>>> {
    let mut live = HashMap::new();
    for b in &listing.backups {
        let named = b
            .kind
            .snapshot_prefix()
            .is_some_and(|p| b.stem.starts_with(p));
        match &b.metadata.snapshot {
            Some(s) => {
                for p in &s.packs {
                    live.entry(p.id.as_str()).or_insert(Live { pack: p });
                }
            }
            None if named => return None,
            None => {}
        }
    }
    Some(live)
}

/// Keep the index of `catalog`'s store whole and small (see the module's comment).
pub fn upkeep(catalog: &Catalog, listing: &Listing) -> IndexUpkeep {
    let mut done = IndexUpkeep::default();
    if let Err(e) = run(catalog, listing, &mut done) {
        done.warnings.push(format!(
            "the store's index could not be kept up ({}): only deduplication suffers; `vertex-backup repair` writes it anew",
            crate::error_chain(&e)
        ));
    }
    done
}

/// [`upkeep`] over the backup directory as it is now.
pub fn upkeep_now(catalog: &Catalog) -> IndexUpkeep {
    match catalog.list() {
        Ok(listing) => upkeep(catalog, &listing),
        Err(e) => IndexUpkeep {
            warnings: vec![format!(
                "the store's index was not kept up: the backup directory could not be listed ({})",
                crate::error_chain(&e)
            )],
            ..Default::default()
        },
    }
}

fn run(catalog: &Catalog, listing: &Listing, done: &mut IndexUpkeep) -> Result<()> {
    let root = catalog.root();
    index::remove(root, &index::leftovers(root))?;
    let files = index::files(root)?;
    let Some(live) = live_packs(listing) else {
        return Ok(());
    };
    if live.is_empty() && files.is_empty() {
        return Ok(());
    }
    let opening = Opening::new(None, root)?;
    let seal = match StoreKey::load(root)? {
        Some(key) => Some(key.recipient()?),
        None => None,
    };
    let modes = (catalog.file_mode(), catalog.dir_mode());
    // Pass 1: what each file covers, and whether the index needs folding.
    let mut covered: HashSet<String> = HashSet::new();
    let mut fold = files.len() > FOLD_AT;
    let mut readable = Vec::new();
    for file in &files {
        let mut ids = Vec::new();
        let read = index::read(file, &opening, &mut |_| true, &mut |p| {
            ids.push((p.id.to_hex(), p.size));
        });
        match read {
            Ok(_) => {
                for (id, size) in ids {
                    let current = live.get(id.as_str()).is_some_and(|l| l.pack.size == size);
                    fold |= !current || !covered.insert(id);
                }
                readable.push(file.clone());
            }
            Err(e) => {
                fold = true;
                done.warnings.push(format!(
                    "an index file was set aside and is written anew: {}",
                    crate::error_chain(&e)
                ));
            }
        }
    }
    if fold {
        covered = fold_files(root, &readable, &live, (&opening, seal.as_ref()), modes)?;
        index::remove(root, &files)?;
        done.folded = files.len();
    }
    let uncovered: HashSet<&str> = live
        .keys()
        .copied()
        .filter(|id| !covered.contains(*id))
        .collect();
    if !uncovered.is_empty() {
        let keys = (&opening, seal.as_ref());
        done.indexed = index_from_lists(root, listing, &live, &uncovered, keys, modes, done)?;
    }
    Ok(())
}

/// Write one file per tag holding every live pack the `files` cover, each once; returns
/// the packs written. The old files are the caller's to delete once this returned.
fn fold_files(
    root: &Path,
    files: &[PathBuf],
    live: &HashMap<&str, Live<'_>>,
    (opening, seal): (&Opening, Option<&Recipients>),
    modes: (u32, u32),
) -> Result<HashSet<String>> {
    let mut writers: BTreeMap<String, IndexWriter> = BTreeMap::new();
    let mut written = HashSet::new();
    let mut failed = None;
    for file in files {
        let tag = std::cell::RefCell::new(String::new());
        let read = index::read(
            file,
            opening,
            &mut |t| {
                *tag.borrow_mut() = t.to_string();
                true
            },
            &mut |p| {
                let id = p.id.to_hex();
                let current = live.get(id.as_str()).is_some_and(|l| l.pack.size == p.size);
                if failed.is_some() || !current || written.contains(&id) {
                    return;
                }
                let tag = tag.borrow();
                let writer = match writers.get_mut(tag.as_str()) {
                    Some(w) => w,
                    None => match IndexWriter::create(root, &tag, seal, modes) {
                        Ok(w) => writers.entry(tag.clone()).or_insert(w),
                        Err(e) => return failed = Some(e),
                    },
                };
                match writer.add(&p) {
                    Ok(()) => {
                        written.insert(id);
                    }
                    Err(e) => failed = Some(e),
                }
            },
        );
        if let Some(e) = failed.take() {
            return Err(e);
        }
        read?;
    }
    for w in writers.into_values() {
        w.finish()?;
    }
    Ok(written)
}

/// Index the `uncovered` live packs from the entry lists of the snapshots listing them.
/// Returns how many were indexed; an entry list that cannot be read is a warning.
fn index_from_lists(
    root: &Path,
    listing: &Listing,
    live: &HashMap<&str, Live<'_>>,
    uncovered: &HashSet<&str>,
    (opening, seal): (&Opening, Option<&Recipients>),
    modes: (u32, u32),
    done: &mut IndexUpkeep,
) -> Result<usize> {
    // Every snapshot listing an uncovered pack: each may reference other chunks of it.
    let by = listing.backups.iter().filter(|b| {
        b.metadata
            .snapshot
            .as_ref()
            .is_some_and(|s| s.packs.iter().any(|p| uncovered.contains(p.id.as_str())))
    });
    // Tag → pack → its chunks by offset.
    let mut found: BTreeMap<String, BTreeMap<String, BTreeMap<u64, PackedChunk>>> = BTreeMap::new();
    for snapshot in by {
        if let Err(e) = chunks_of(snapshot, uncovered, opening, &mut found) {
            done.warnings.push(format!(
                "the packs of {} could not be indexed from its entry list ({}): only deduplication suffers",
                snapshot.stem,
                crate::error_chain(&e)
            ));
        }
    }
    let mut count = 0;
    for (tag, packs) in found {
        let mut writer = None;
        for (id, chunks) in packs {
            let Some(l) = live.get(id.as_str()) else {
                continue;
            };
            let chunks: Vec<PackedChunk> = chunks.into_values().collect();
            let Some(p) = IndexedPack::of(l.pack, chunks) else {
                continue;
            };
            if super::trailer::validate(&p.chunks, p.size).is_err() {
                done.warnings.push(format!(
                    "the entry lists pointing into pack {id} describe overlapping chunks: it was left out of the index"
                ));
                continue;
            }
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(IndexWriter::create(root, &tag, seal, modes)?),
            };
            w.add(&p)?;
            count += 1;
        }
        if let Some(w) = writer {
            w.finish()?;
        }
    }
    Ok(count)
}

/// The chunks `snapshot`'s entry list places in the `wanted` packs, into `found` under
/// the snapshot's tag.
fn chunks_of(
    snapshot: &BackupEntry,
    wanted: &HashSet<&str>,
    opening: &Opening,
    found: &mut BTreeMap<String, BTreeMap<String, BTreeMap<u64, PackedChunk>>>,
) -> Result<()> {
    let mut reader = TreeReader::open(&snapshot.data_path, opening)?;
    let tag = index::tag_of(snapshot, reader.header().chunk_key.as_deref())?;
    let packs = found.entry(tag).or_default();
    let mut add = |c: ChunkRef| {
        let pack = c.pack.to_hex();
        if wanted.contains(pack.as_str()) {
            packs.entry(pack).or_default().insert(c.offset, c.packed());
        }
    };
    while let Some(node) = reader.next_node()? {
        node.chunks.into_iter().for_each(&mut add);
    }
    // The parts of the list are chunks in the packs too.
    reader.take_parts().into_iter().for_each(add);
    Ok(())
}
