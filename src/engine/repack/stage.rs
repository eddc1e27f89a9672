//! Staging the rewritten backups: each snapshot that uses a moved pack gets an entry list
//! pointing at the new copies ([`crate::engine::snapshot::mend`], nothing left out) and
//! metadata listing the new packs, a full backup a manifest with its members' new
//! checksums — all durable as `NAME.rewrite` beside the files they replace, for
//! [`Catalog::commit_rewrite`] to put in place together.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::copy::Copied;
use super::usage::Unit;
use crate::catalog::{
    BackupEntry, BackupMetadata, Catalog, PackRef, PartialFile, staged_path, write_atomic,
};
use crate::encryption::Recipients;
use crate::engine::backup::parts_checksum;
use crate::engine::snapshot::ids::PackId;
use crate::engine::snapshot::index;
use crate::engine::snapshot::keys::{Opening, Sealing, StoreKey};
use crate::engine::snapshot::mend::{self, ChunkHealth, Relocations};
use crate::engine::snapshot::tree::{ChunkRef, TreeReader};
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// The files staged for one commit, in the order they are put in place: entry lists,
/// then their metadata, then manifests (a kill between two leaves each file either old
/// or new, and the commit's journal finishes the rest).
#[derive(Default)]
pub(super) struct Staged {
    pub(super) trees: Vec<PathBuf>,
    pub(super) metadata: Vec<PathBuf>,
    pub(super) manifests: Vec<PathBuf>,
    /// The backups rewritten, as `list` names them.
    pub(super) backups: Vec<String>,
}

impl Staged {
    /// Delete every staged file: the rewrite will not be committed.
    pub(super) fn discard(&self) {
        for f in self.files() {
            let _ = std::fs::remove_file(staged_path(&f));
        }
    }

    pub(super) fn files(&self) -> Vec<PathBuf> {
        let mut all = self.trees.clone();
        all.extend(self.metadata.iter().cloned());
        all.extend(self.manifests.iter().cloned());
        all
    }
}

/// A chunk is usable where it is unless its pack moved.
struct Moved<'a>(&'a BTreeSet<PackId>);

impl ChunkHealth for Moved<'_> {
    fn usable(&mut self, chunk: &ChunkRef) -> bool {
        !self.0.contains(&chunk.pack)
    }
    fn salvage(&mut self, _chunk: &ChunkRef) -> Option<ChunkRef> {
        None
    }
}

pub(super) struct Stager<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) opening: &'a Opening,
    pub(super) copied: &'a Copied,
    /// `[encryption]`'s recipients (a rewritten sealed entry list is sealed to them and
    /// the store key, as it was).
    pub(super) recipients: Option<&'a Recipients>,
    /// The packs just written, by id.
    pub(super) written: HashMap<String, PackRef>,
}

impl Stager<'_> {
    /// Stage `unit` if a member uses a moved pack (`Ok(false)`: none does). On an error
    /// nothing of the unit stays staged: it keeps its old files, which list the old packs,
    /// so the sweep keeps those too.
    pub(super) fn stage_unit(&self, unit: &Unit, staged: &mut Staged) -> Result<bool> {
        let mut mine = Staged::default();
        let result = self.stage_unit_into(unit, &mut mine);
        match result {
            Ok(true) => {
                staged.trees.append(&mut mine.trees);
                staged.metadata.append(&mut mine.metadata);
                staged.manifests.append(&mut mine.manifests);
                staged.backups.append(&mut mine.backups);
            }
            Ok(false) | Err(_) => mine.discard(),
        }
        result
    }

    fn stage_unit_into(&self, unit: &Unit, staged: &mut Staged) -> Result<bool> {
        let mut rewritten: Vec<(&BackupEntry, BackupMetadata)> = Vec::new();
        for m in &unit.members {
            let uses_moved = m.metadata.snapshot.as_ref().is_some_and(|s| {
                s.packs
                    .iter()
                    .any(|p| PackId::parse(&p.id).is_some_and(|id| self.copied.moved.contains(&id)))
            });
            if !uses_moved {
                continue;
            }
            // Listed before it is written: a failure part-way still cleans it up.
            staged.trees.push(m.data_path.clone());
            let meta = self.stage_member(m)?;
            rewritten.push((m, meta));
        }
        if rewritten.is_empty() {
            return Ok(false);
        }
        let listed = unit
            .head
            .data_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (m, meta) in &rewritten {
            staged.metadata.push(m.meta_path.clone());
            self.write_metadata(&m.meta_path, meta)?;
        }
        if unit.head.kind == BackupKind::Full {
            let manifest = manifest_after(&unit.head.metadata, &rewritten);
            staged.manifests.push(unit.head.meta_path.clone());
            self.write_metadata(&unit.head.meta_path, &manifest)?;
        }
        staged.backups.push(listed);
        Ok(true)
    }

    /// Member `m`'s entry list rewritten (durable as its staged name); returns its new
    /// metadata.
    fn stage_member(&self, m: &BackupEntry) -> Result<BackupMetadata> {
        let header = TreeReader::open(&m.data_path, self.opening)?
            .header()
            .clone();
        let tag = index::tag_of(m, header.chunk_key.as_deref())?;
        let empty = Relocations::new();
        let relocations = self.copied.relocations.get(&tag).unwrap_or(&empty);
        let seal = match index::sealed_to(m) {
            Some(_) => Some(self.reseal()?),
            None => None,
        };
        let target = staged_path(&m.data_path);
        let (partial, file) = PartialFile::create(&target, self.catalog.file_mode())?;
        let mut health = Moved(&self.copied.moved);
        let (mended, file) = mend::mend(
            &m.data_path,
            self.opening,
            &mut health,
            relocations,
            Some((&partial, file, seal.as_ref())),
        )?;
        if mended.lost_anything() {
            // Every chunk of a moved pack was copied: a chunk without a copy is a bug,
            // and a rewrite must never leave a file out.
            return Err(Error::Internal(format!(
                "repacking {} would leave out {} entries: nothing was changed",
                m.stem,
                mended.lost_count()
            )));
        }
        let file =
            file.ok_or_else(|| Error::Internal("the rewritten list was not written".into()))?;
        partial.sync(&file)?;
        partial.rename()?;
        let mut meta = m.metadata.clone();
        let info = meta.snapshot.get_or_insert_with(Default::default);
        // Its own record of each pack it kept, the writer's of each new one.
        let own: HashMap<&str, &PackRef> = m
            .metadata
            .snapshot
            .iter()
            .flat_map(|s| s.packs.iter())
            .map(|p| (p.id.as_str(), p))
            .collect();
        info.packs = mended
            .packs
            .iter()
            .map(|id| {
                let hex = id.to_hex();
                own.get(hex.as_str())
                    .map(|p| (*p).clone())
                    .or_else(|| self.written.get(&hex).cloned())
                    .ok_or_else(|| {
                        Error::Internal(format!("pack {id} of the rewritten {} is unknown", m.stem))
                    })
            })
            .collect::<Result<_>>()?;
        meta.earlier_checksums.push(m.metadata.checksum.clone());
        meta.checksum = mended.checksum;
        meta.file_size = mended.size;
        Ok(meta)
    }

    fn write_metadata(&self, path: &std::path::Path, meta: &BackupMetadata) -> Result<()> {
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::Internal(format!("serialize the metadata: {e}")))?;
        write_atomic(&staged_path(path), &json, self.catalog.file_mode())
    }

    /// The keys a rewritten encrypted entry list is sealed to: the operator's recipients
    /// (the units chosen were sealed to exactly these) and the store key.
    fn reseal(&self) -> Result<Recipients> {
        let recipients = self.recipients.ok_or_else(|| {
            Error::Internal("an encrypted snapshot was chosen without recipients".into())
        })?;
        let store = StoreKey::load_or_create(self.catalog.root())?;
        Ok(Sealing::new(recipients, &store)?.trees)
    }
}

/// A full backup's manifest once its `rewritten` members are: their checksums and sizes.
fn manifest_after(
    head: &BackupMetadata,
    rewritten: &[(&BackupEntry, BackupMetadata)],
) -> BackupMetadata {
    let mut manifest = head.clone();
    for part in &mut manifest.parts {
        let new = rewritten.iter().find(|(m, _)| {
            m.kind == part.kind
                && m.data_path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == part.file_name)
        });
        if let Some((_, meta)) = new {
            part.checksum = meta.checksum.clone();
            part.file_size = meta.file_size;
        }
    }
    manifest.earlier_checksums.push(head.checksum.clone());
    manifest.checksum = parts_checksum(&manifest.parts);
    manifest.file_size = manifest.parts.iter().map(|p| p.file_size).sum();
    manifest
}
