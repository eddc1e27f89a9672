//! Writing a repaired backup: its mended (or copied) members under a new name in its
//! original's second, committed as any backup (data, then metadata; a full backup's
//! manifest last), then the original set aside in `damaged/NAME/`.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::{Local, SecondsFormat};

use super::{Context, DAMAGED_DIR, Unit, listed_name};
use crate::catalog::{
    BackupEntry, BackupMetadata, PackRef, PartRef, PartialFile, RepairNote, sync_dir, write_atomic,
};
use crate::encryption::Recipients;
use crate::engine::backup::{PendingPart, commit_part, parts_checksum};
use crate::engine::snapshot::keys::{Sealing, StoreKey};
use crate::engine::snapshot::mend::Mended;
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

impl<'a> Context<'a> {
    pub(super) fn write_unit(&self, unit: &Unit, plans: &[Mended]) -> Result<String> {
        let catalog = self.catalog;
        let base: String = unit.head.metadata.timestamp.chars().take(15).collect();
        let ts = catalog.allocate_in_second(unit.head.kind, &base);
        let full_stem = (unit.head.kind == BackupKind::Full)
            .then(|| format!("{}{ts}", BackupKind::Full.prefix()));
        let note = |lost: u64, relocated: u64| RepairNote {
            from: listed_name(unit.head),
            at: Local::now().to_rfc3339_opts(SecondsFormat::Secs, false),
            lost_files: lost,
            relocated_chunks: relocated,
        };
        let mut written = Vec::new();
        for (m, plan) in unit.members.iter().zip(plans) {
            let (mut meta, partial) = self.write_member(m, plan, &ts)?;
            meta.part_of = full_stem.clone();
            meta.repaired = Some(note(plan.lost_count(), plan.relocated));
            if plan.lost_anything() {
                let unnamed = plan.lost_count() - plan.lost.len() as u64;
                meta.warnings.push(format!(
                    "repaired from {}: {} file(s) left out, their data was gone{}",
                    m.stem,
                    plan.lost.len(),
                    if unnamed > 0 {
                        format!("; {unnamed} more entries with a lost part of the entry list")
                    } else {
                        String::new()
                    }
                ));
            }
            written.push((meta, partial));
        }
        let mut reports = Vec::new();
        for (meta, partial) in written {
            reports.push(commit_part(
                catalog,
                PendingPart {
                    data: partial,
                    metadata: meta,
                },
            )?);
        }
        if full_stem.is_none() {
            return Ok(reports.first().map(|r| r.file_name()).unwrap_or_default());
        }
        let mut m = unit.head.metadata.clone();
        let path = catalog.meta_path(BackupKind::Full, &ts);
        m.timestamp = ts.clone();
        m.backup_path = path.display().to_string();
        let parts: Vec<PartRef> = reports.iter().map(|r| r.part_ref()).collect();
        m.file_size = reports.iter().map(|r| r.metadata.file_size).sum();
        m.file_count = reports.iter().map(|r| r.metadata.file_count).sum();
        m.uncompressed_size = reports.iter().map(|r| r.metadata.uncompressed_size).sum();
        if let Some(st) = reports.iter().find(|r| r.kind == BackupKind::Storage) {
            m.content_size = st.metadata.content_size;
        }
        m.checksum = parts_checksum(&parts);
        m.parts = parts;
        let lost: u64 = plans.iter().map(Mended::lost_count).sum();
        m.repaired = Some(note(lost, plans.iter().map(|p| p.relocated).sum()));
        let json = serde_json::to_vec_pretty(&m)
            .map_err(|e| Error::Internal(format!("serialize the manifest: {e}")))?;
        write_atomic(&path, &json, catalog.file_mode())?;
        Ok(path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }

    /// Member `m` written under `ts` (mended when `plan` changed it, else copied), durable
    /// under its `.partial` name; returns its metadata and the file to commit.
    fn write_member(
        &self,
        m: &BackupEntry,
        plan: &Mended,
        ts: &str,
    ) -> Result<(BackupMetadata, PartialFile)> {
        let catalog = self.catalog;
        let sealed_tree = m.data_path.extension().is_some_and(|e| e == "age");
        let path = catalog.snapshot_tree_path(m.kind, ts, sealed_tree);
        let (partial, file) = PartialFile::create(&path, catalog.file_mode())?;
        let mut meta = m.metadata.clone();
        let (file, checksum, size) = if plan.changed() {
            let seal = if sealed_tree {
                Some(self.reseal(m)?)
            } else {
                None
            };
            let (mended, file, salvaged) =
                self.mend_member(m, Some((&partial, file, seal.as_ref())))?;
            let file =
                file.ok_or_else(|| Error::Internal("the mended list was not written".into()))?;
            let info = meta.snapshot.get_or_insert_with(Default::default);
            info.packs = mended
                .packs
                .iter()
                .map(|id| id.to_hex())
                .filter_map(|id| {
                    salvaged
                        .iter()
                        .find(|w| w.pack.id == id)
                        .map(|w| w.pack.clone())
                        .or_else(|| self.listing_pack(&id))
                })
                .collect();
            info.chunks = mended.chunks;
            meta.file_count = mended.file_count;
            if meta.content_size > 0 {
                meta.content_size = mended.content_size;
            }
            // A storage snapshot's uncompressed size is its files' bytes: what it holds
            // now. (A database snapshot is never mended by leaving its file out.)
            if m.kind == BackupKind::Storage {
                meta.uncompressed_size = mended.content_size;
            }
            (file, mended.checksum, mended.size)
        } else {
            let mut file = file;
            let mut from = File::open(&m.data_path).ctx("open", &m.data_path)?;
            let size = io::copy(&mut from, &mut file).ctx("copy", &m.data_path)?;
            (file, m.metadata.checksum.clone(), size)
        };
        partial.sync(&file)?;
        meta.timestamp = ts.to_string();
        meta.backup_path = path.display().to_string();
        meta.checksum = checksum;
        meta.file_size = size;
        Ok((meta, partial))
    }

    /// What a pack's kept snapshots record of it.
    fn listing_pack(&self, id: &str) -> Option<PackRef> {
        self.listing
            .backups
            .iter()
            .filter_map(|b| b.metadata.snapshot.as_ref())
            .flat_map(|s| s.packs.iter())
            .find(|p| p.id == id)
            .cloned()
    }

    /// The keys a mended encrypted entry list is sealed to: the original's, which must be
    /// `[encryption]`'s recipients now (and the store key).
    fn reseal(&self, m: &BackupEntry) -> Result<Recipients> {
        let now = self.matching_recipients(m)?;
        let store = StoreKey::load_or_create(self.catalog.root())?;
        Ok(Sealing::new(now, &store)?.trees)
    }

    /// `[encryption]`'s recipients, when they are the ones encrypted snapshot `m` was
    /// sealed to (what salvaged packs and a mended entry list are sealed to).
    pub(super) fn matching_recipients(&self, m: &BackupEntry) -> Result<&'a Recipients> {
        let recorded = crate::engine::snapshot::index::sealed_to(m);
        let Some(now) = self.opts.recipients else {
            return Err(Error::verify(
                &m.data_path,
                "entry list",
                "it is encrypted and [encryption] names no recipients to seal the repaired one to",
            ));
        };
        let mut have = now.fingerprints();
        let mut want = recorded.unwrap_or_default();
        have.sort();
        want.sort();
        if have != want {
            return Err(Error::verify(
                &m.data_path,
                "entry list",
                "it is encrypted to other keys than [encryption]'s recipients now: repair it with the config it was made with",
            ));
        }
        Ok(now)
    }

    /// Move the unit's metadata (its commit point: first) and entry lists into
    /// `damaged/NAME/`; returns that directory.
    pub(super) fn set_aside(&self, unit: &Unit) -> Result<PathBuf> {
        let dir = self.catalog.root().join(DAMAGED_DIR).join(&unit.head.stem);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(self.catalog.dir_mode())
            .create(&dir)
            .ctx("create", &dir)?;
        // Data before metadata, the full backup's manifest last: a kill part-way leaves
        // the original listed (incomplete), never an entry list nothing lists (which the
        // next cleaning would delete instead of keeping it here).
        let mut files: Vec<&Path> = Vec::new();
        for m in &unit.members {
            files.push(m.data_path.as_path());
            if m.meta_path != unit.head.meta_path {
                files.push(m.meta_path.as_path());
            }
        }
        files.push(unit.head.meta_path.as_path());
        files.dedup();
        for f in files {
            let Some(name) = f.file_name() else { continue };
            match fs::rename(f, dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("move aside", f, e)),
            }
            if let Some(parent) = f.parent() {
                sync_dir(parent)?;
            }
        }
        sync_dir(&dir)?;
        Ok(dir)
    }
}
