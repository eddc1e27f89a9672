//! Copying the used chunks of the packs being rewritten into new packs: each old pack is
//! read once (a sealed one decrypted with the operator's identity), checked against the
//! SHA-256 its snapshots record, and every used chunk checked against its id before any
//! of them is copied — a pack that fails keeps all its chunks where they are. Chunks go
//! over as stored (no recompression), into packs sealed to the same keys, which are
//! indexed before this returns: every copy is durable and findable before any entry list
//! points at it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::usage::PackUse;
use crate::catalog::Catalog;
use crate::encryption::{Identities, Recipients};
use crate::engine::Cancel;
use crate::engine::snapshot::damage::Damage;
use crate::engine::snapshot::ids::PackId;
use crate::engine::snapshot::index::{self, IndexedPack};
use crate::engine::snapshot::keys::{ChunkIds, StoreKey};
use crate::engine::snapshot::mend::Relocations;
use crate::engine::snapshot::pack::{PackReader, PackWriter, WrittenPack};
use crate::engine::snapshot::trailer::PackedChunk;
use crate::engine::snapshot::tree::ChunkRef;
use crate::error::Result;

/// The keys repacking may use.
pub(super) struct Keys<'a> {
    /// Opens sealed packs.
    pub(super) identity: Option<&'a Identities>,
    /// Seals the new packs: must be the keys the old ones were sealed to.
    pub(super) recipients: Option<&'a Recipients>,
}

/// What copying did.
#[derive(Default)]
pub(super) struct Copied {
    /// Per index tag: where each moved chunk lies now.
    pub(super) relocations: HashMap<String, Relocations>,
    /// Packs every used chunk of which now has a durable, indexed copy.
    pub(super) moved: BTreeSet<PackId>,
    pub(super) written: Vec<WrittenPack>,
    /// Packs left as they were, and why.
    pub(super) left: Vec<String>,
}

/// What copying needs beside the packs: the store, the keys, how much free space to
/// leave (`min_free_space`), and when to stop.
pub(super) struct Copier<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) keys: Keys<'a>,
    pub(super) reserve: u64,
    pub(super) cancel: &'a Cancel,
}

impl Copier<'_> {
    /// Copy the used chunks of `chosen` (grouped by tag: each group's packs go into packs
    /// of its own, indexed under its tag).
    pub(super) fn copy_packs(
        &self,
        chosen: &[PackId],
        uses: &BTreeMap<PackId, PackUse>,
    ) -> Result<Copied> {
        let mut by_tag: BTreeMap<&str, Vec<(PackId, &PackUse)>> = BTreeMap::new();
        for id in chosen {
            if let Some(u) = uses.get(id) {
                by_tag.entry(u.tag.as_str()).or_default().push((*id, u));
            }
        }
        let mut copied = Copied::default();
        for (tag, packs) in by_tag {
            let Some((_, first)) = packs.first() else {
                continue;
            };
            match group_sealing(self.catalog, first, &self.keys)? {
                Ok(sealing) => self.copy_group(tag, &packs, sealing, &mut copied)?,
                Err(why) => copied
                    .left
                    .extend(packs.iter().map(|(id, _)| format!("pack {id}: {why}"))),
            }
        }
        Ok(copied)
    }

    fn copy_group(
        &self,
        tag: &str,
        packs: &[(PackId, &PackUse)],
        sealing: GroupSealing,
        copied: &mut Copied,
    ) -> Result<()> {
        let catalog = self.catalog;
        let sealed = sealing.packs.is_some();
        let mut writer = PackWriter::new(
            catalog.root(),
            catalog.file_mode(),
            catalog.dir_mode(),
            sealing.packs,
        )
        .with_reserve(self.reserve);
        let mut reader = PackReader::new(catalog.root(), sealing.ids, sealed, self.keys.identity);
        let mut relocations = Relocations::new();
        let mut moved = Vec::new();
        for (id, u) in packs {
            self.cancel.check()?;
            let chunks = match read_used(&mut reader, *id, u) {
                Ok(c) => c,
                Err(why) => {
                    copied.left.push(format!(
                        "pack {id}: {why}; it stays as it is (`verify --read-data`, then `repair`)"
                    ));
                    continue;
                }
            };
            for (c, stored) in chunks {
                if u.parts.contains(&c.offset) || relocations.contains_key(&c.id) {
                    continue; // the same chunk from another pack: copied once
                }
                let (pack, offset) = writer.append(c.id, &stored, (c.raw, c.zstd))?;
                relocations.insert(c.id, (pack, PackedChunk { offset, ..c }));
            }
            moved.push(*id);
        }
        let written = writer.finish()?;
        let indexed: Vec<IndexedPack> = written
            .iter()
            .filter_map(|w| IndexedPack::of(&w.pack, w.chunks.clone()))
            .collect();
        index::write(
            catalog.root(),
            tag,
            &indexed,
            sealing.index.as_ref(),
            (catalog.file_mode(), catalog.dir_mode()),
        )?;
        copied.moved.extend(moved);
        copied.written.extend(written);
        copied
            .relocations
            .entry(tag.to_string())
            .or_default()
            .extend(relocations);
        Ok(())
    }
}

/// Why this run cannot repack a group of sealed packs.
#[derive(Debug, thiserror::Error)]
enum Unsealable {
    #[error("encrypted: give --identity to repack it (the server cannot read its chunks)")]
    NoIdentity,
    #[error("encrypted, and [encryption] names no recipients to seal its copy to")]
    NoRecipients,
    #[error("encrypted to other keys than [encryption]'s recipients now")]
    OtherKeys,
}

/// How a group's packs are made: chunk ids, and the keys new packs and their index are
/// sealed to. Inner `Err`: why the group cannot be repacked by this run.
struct GroupSealing {
    ids: ChunkIds,
    packs: Option<Recipients>,
    index: Option<Recipients>,
}

fn group_sealing(
    catalog: &Catalog,
    u: &PackUse,
    keys: &Keys,
) -> Result<std::result::Result<GroupSealing, Unsealable>> {
    let ids = ChunkIds::from_header(u.chunk_key.as_deref(), catalog.root())?;
    if !u.sealed {
        return Ok(Ok(GroupSealing {
            ids,
            packs: None,
            index: None,
        }));
    }
    if keys.identity.is_none() {
        return Ok(Err(Unsealable::NoIdentity));
    }
    let Some(recipients) = keys.recipients else {
        return Ok(Err(Unsealable::NoRecipients));
    };
    if index::tag(&ids, Some(&recipients.fingerprints())) != u.tag {
        return Ok(Err(Unsealable::OtherKeys));
    }
    // (Sealed like every index file of an encrypted store, as the stager seals entry
    // lists: to the store key, made if it is missing.)
    let store = Some(StoreKey::load_or_create(catalog.root())?.recipient()?);
    Ok(Ok(GroupSealing {
        ids,
        packs: Some(recipients.clone()),
        index: store,
    }))
}

/// Pack `id` read once, as recorded, with each used chunk's stored bytes checked against
/// its id. `Err`: why it cannot be copied.
fn read_used(
    reader: &mut PackReader,
    id: PackId,
    u: &PackUse,
) -> std::result::Result<Vec<(PackedChunk, Vec<u8>)>, Damage> {
    let (len, sha) = reader.load_pack(id, true)?;
    if len != u.recorded.size || sha != u.recorded.checksum {
        return Err(Damage::Checksum {
            pack: id,
            found: format!("{sha} ({len} bytes)"),
            recorded: format!("{} ({} bytes)", u.recorded.checksum, u.recorded.size),
        });
    }
    let mut plain = Vec::new();
    let mut out = Vec::with_capacity(u.live.len());
    for c in u.live.values() {
        let chunk = ChunkRef::at(id, c);
        reader.read_chunk(&chunk, &mut plain)?;
        out.push((*c, reader.last_stored().to_vec()));
    }
    Ok(out)
}
