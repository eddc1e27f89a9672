//! The index, written anew by `repair`: from the trailers of the packs that are as
//! recorded, then (by the upkeep) from the entry lists for the rest; the old index files
//! go once the new ones are durable.

use std::collections::BTreeMap;

use super::IndexRebuild;
use super::packs::{PackState, Trailers};
use crate::catalog::{Catalog, PackRef};
use crate::engine::snapshot::index::{self, IndexWriter, IndexedPack};
use crate::engine::snapshot::keys::{Opening, StoreKey};
use crate::engine::snapshot::tree::TreeReader;
use crate::engine::snapshot::upkeep;
use crate::error::Result;

/// Write the index anew from the good packs' trailers, then let the upkeep index the
/// rest from entry lists; the old files go once the new ones are durable.
pub(super) fn rebuild_index(
    catalog: &Catalog,
    opening: &Opening,
    (states, trailers): (&BTreeMap<String, PackState>, &Trailers),
    dry_run: bool,
) -> IndexRebuild {
    let mut out = IndexRebuild::default();
    let with_trailer = trailers.values().filter(|t| t.is_some()).count();
    if dry_run {
        out.from_trailers = with_trailer;
        out.from_entry_lists = states.len().saturating_sub(with_trailer);
        return out;
    }
    if let Err(e) = write_from_trailers(catalog, opening, states, trailers, &mut out) {
        out.warnings.push(format!(
            "the index could not be written from the packs' trailers ({}): it is written from the entry lists",
            crate::error_chain(&e)
        ));
    }
    let up = upkeep::upkeep_now(catalog);
    out.from_entry_lists = up.indexed;
    out.warnings.extend(up.warnings);
    out
}

fn write_from_trailers(
    catalog: &Catalog,
    opening: &Opening,
    states: &BTreeMap<String, PackState>,
    trailers: &Trailers,
    out: &mut IndexRebuild,
) -> Result<()> {
    let root = catalog.root();
    let old = index::files(root)?;
    // After the repairs: the snapshots kept now, each pack under its first one's tag.
    let listing = catalog.list()?;
    let mut tag_of: BTreeMap<String, (String, PackRef)> = BTreeMap::new();
    for b in &listing.backups {
        let Some(s) = &b.metadata.snapshot else {
            continue;
        };
        let Ok(reader) = TreeReader::open(&b.data_path, opening) else {
            continue;
        };
        let Ok(tag) = index::tag_of(b, reader.header().chunk_key.as_deref()) else {
            continue;
        };
        for p in &s.packs {
            tag_of
                .entry(p.id.clone())
                .or_insert((tag.clone(), p.clone()));
        }
    }
    let seal = match StoreKey::load(root)? {
        Some(k) => Some(k.recipient()?),
        None => None,
    };
    let modes = (catalog.file_mode(), catalog.dir_mode());
    let mut writers: BTreeMap<String, IndexWriter> = BTreeMap::new();
    for (id, chunks) in trailers {
        let (Some(chunks), Some((tag, pack)), Some(PackState::Good { .. })) =
            (chunks, tag_of.get(id), states.get(id))
        else {
            continue;
        };
        let Some(indexed) = IndexedPack::of(pack, chunks.clone()) else {
            continue;
        };
        let w = match writers.get_mut(tag) {
            Some(w) => w,
            None => writers.entry(tag.clone()).or_insert(IndexWriter::create(
                root,
                tag,
                seal.as_ref(),
                modes,
            )?),
        };
        w.add(&indexed)?;
        out.from_trailers += 1;
    }
    for w in writers.into_values() {
        w.finish()?;
    }
    index::remove(root, &old)?;
    out.replaced_files = old.len();
    Ok(())
}
