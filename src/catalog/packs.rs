//! The content store's layout (where packs and snapshot files go) and its garbage: packs that no snapshot in the backup directory lists any
//! more (their last snapshot was rotated away, or a run died after writing them and
//! before its snapshot landed), and packs still under their `.partial` name. Rotation
//! deletes a snapshot's metadata first and its packs after, so a kill in between leaves
//! unreferenced packs, never a snapshot without its packs; this sweep, run with every
//! cleaning under the lock, finishes the job. A pack is deleted only when every snapshot
//! metadata in the directory was read and none lists it: one unreadable snapshot
//! metadata stops the sweep (its packs cannot be told apart).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Catalog, Listing, PARTIAL_SUFFIX, remove_if_exists, sync_dir};
use crate::error::Result;
use crate::kind::BackupKind;

/// The data file of a snapshot: its entry list, zstd-compressed JSON lines.
pub const SNAPSHOT_TREE_EXT: &str = ".tree.zst";
/// An encrypted snapshot's entry list.
pub const SNAPSHOT_TREE_SEALED_EXT: &str = ".tree.zst.age";

/// The content store's directory under the backup directory.
pub const STORE_DIR: &str = "store";

/// Whether `id` is a pack id as this build makes them: 32 lower-case hex digits (so no
/// name taken from metadata can lead outside `store/packs/`).
pub fn valid_pack_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `store/packs/ab/abcdef….pack` (encrypted: `….pack.age`): where a pack lives,
/// relative to the backup directory.
pub fn pack_name(id: &str, sealed: bool) -> String {
    let age = if sealed { ".age" } else { "" };
    format!(
        "{STORE_DIR}/packs/{}/{id}.pack{age}",
        id.get(..2).unwrap_or("00")
    )
}

impl Catalog {
    /// Path of the data file (its entry list) of a new snapshot, encrypted or not.
    pub fn snapshot_tree_path(&self, kind: BackupKind, timestamp: &str, sealed: bool) -> PathBuf {
        let prefix = kind.snapshot_prefix().unwrap_or(kind.prefix());
        let ext = if sealed {
            SNAPSHOT_TREE_SEALED_EXT
        } else {
            SNAPSHOT_TREE_EXT
        };
        self.kind_dir(kind)
            .join(format!("{prefix}{timestamp}{ext}"))
    }

    /// Path of the metadata of a new snapshot.
    pub fn snapshot_meta_path(&self, kind: BackupKind, timestamp: &str) -> PathBuf {
        let prefix = kind.snapshot_prefix().unwrap_or(kind.prefix());
        self.kind_dir(kind)
            .join(format!("{prefix}{timestamp}.json"))
    }

    /// The content store snapshots share.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// [`Self::sweep_store`] over the backup directory as it is now.
    pub fn sweep_store_now(&self) -> Result<Vec<PathBuf>> {
        let (listing, _) = self.list_with_orphans()?;
        self.sweep_store(&listing)
    }

    /// Delete packs no snapshot of `listing` lists, and `.partial` packs. Returns what was
    /// deleted. With an unreadable snapshot metadata in `listing`, deletes only `.partial`
    /// packs and says why in the log.
    pub(super) fn sweep_store(&self, listing: &Listing) -> Result<Vec<PathBuf>> {
        // A repack's rewrite half put in place: the new packs are listed only by staged
        // metadata the listing does not see. The run that finishes it sweeps.
        if self.rewrite_in_flight() {
            self.log().warn(
                "store: not deleting unreferenced packs while a repack's rewrite is unfinished",
            );
            return Ok(Vec::new());
        }
        let packs_dir = self.root.join(STORE_DIR).join("packs");
        let Ok(rd) = fs::read_dir(&packs_dir) else {
            return Ok(Vec::new());
        };
        // A snapshot whose packs were not all listed as its parts: its metadata did not
        // parse, names no packs, records no snapshot format, or names a pack badly.
        let unreadable = listing.backups.iter().find(|b| {
            let named = b
                .kind
                .snapshot_prefix()
                .is_some_and(|p| b.stem.starts_with(p));
            let listed = b.metadata.snapshot.as_ref().is_some_and(|s| {
                b.metadata.format().is_ok_and(|f| f.is_snapshot())
                    && s.packs.iter().all(|p| valid_pack_id(&p.id))
            });
            (named || b.metadata.snapshot.is_some()) && !listed
        });
        if let Some(b) = unreadable {
            self.log().warn(&format!(
                "store: not deleting unreferenced packs while the metadata of {} cannot be read ({}): fix or remove it",
                b.stem,
                b.problem.as_deref().unwrap_or("it lists no packs")
            ));
        }
        let listed: HashSet<&Path> = listing
            .backups
            .iter()
            .flat_map(|b| b.parts.iter())
            .filter(|p| p.shared)
            .map(|p| p.path.as_path())
            .collect();
        let mut removed = Vec::new();
        for sub in rd.flatten() {
            let dir = sub.path();
            let Ok(files) = fs::read_dir(&dir) else {
                continue;
            };
            let before = removed.len();
            for f in files.flatten() {
                let path = f.path();
                let name = f.file_name();
                let name = name.to_string_lossy();
                let garbage = name.ends_with(PARTIAL_SUFFIX)
                    || (unreadable.is_none()
                        && (name.ends_with(".pack") || name.ends_with(".pack.age"))
                        && !listed.contains(path.as_path()));
                if garbage {
                    remove_if_exists(&path, &mut removed)?;
                }
            }
            if removed.len() > before {
                sync_dir(&dir)?;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::catalog::pack_name;
    use crate::kind::BackupKind;

    fn pack_id(n: usize) -> String {
        format!("{n:02x}{}", "0".repeat(30))
    }

    /// A storage snapshot `ts` listing the packs `packs` (their files written too).
    fn write_snapshot(root: &Path, ts: &str, packs: &BTreeSet<usize>) {
        let dir = root.join("storage");
        fs::create_dir_all(&dir).unwrap();
        let stem = format!("storage_snapshot_{ts}");
        fs::write(dir.join(format!("{stem}.tree.zst")), b"tree").unwrap();
        let refs: Vec<serde_json::Value> = packs
            .iter()
            .map(|p| serde_json::json!({"id": pack_id(*p), "size": 4, "checksum": "00"}))
            .collect();
        let meta = serde_json::json!({
            "timestamp": ts, "type": "storage", "original_path": "/s",
            "backup_path": format!("/b/storage/{stem}.tree.zst"), "file_size": 4,
            "checksum": "00", "created_at": format!("2026-11-{}T00:00:00Z", &ts[6..8]),
            "file_count": 1, "format_version": 2,
            "format": {"kind": "snapshot", "compression": "zstd", "encryption": null},
            "snapshot": {"parent": null, "packs": refs, "added_bytes": 0, "chunks": 0,
                         "added_chunks": 0, "unchanged_files": 0, "read_files": 0},
        });
        fs::write(dir.join(format!("{stem}.json")), meta.to_string()).unwrap();
        for p in packs {
            let path = root.join(pack_name(&pack_id(*p), false));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"pack").unwrap();
        }
    }

    fn packs_on_disk(root: &Path) -> BTreeSet<PathBuf> {
        walkdir::WalkDir::new(root.join(STORE_DIR))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Over random histories of snapshots sharing packs, deleting some — each either
        /// whole or killed right after its metadata went (the first step) — and then
        /// cleaning: no pack a remaining snapshot lists is ever gone, and no pack that
        /// none lists is left.
        #[test]
        fn sweeping_never_removes_a_pack_a_kept_snapshot_lists(
            history in proptest::collection::vec(
                (proptest::collection::btree_set(0usize..10, 0..5), any::<bool>(), any::<bool>()),
                1..8,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let catalog = Catalog::new(root, 0o600, 0o700);
            for (i, (packs, _, _)) in history.iter().enumerate() {
                write_snapshot(root, &format!("202611{:02}_000000", i + 1), packs);
            }
            let listing = catalog.list().unwrap();
            for (i, (_, delete, killed)) in history.iter().enumerate() {
                if !delete {
                    continue;
                }
                let stem = format!("storage_snapshot_202611{:02}_000000", i + 1);
                let entry = listing.find_stem(&stem).unwrap();
                if *killed {
                    fs::remove_file(&entry.meta_path).unwrap();
                } else {
                    catalog.delete(entry, &listing).unwrap();
                }
            }
            catalog.clean_leftovers().unwrap();
            let after = catalog.list().unwrap();
            let listed: BTreeSet<PathBuf> = after
                .of_kind(BackupKind::Storage)
                .flat_map(|b| b.parts.iter().filter(|p| p.shared).map(|p| p.path.clone()))
                .collect();
            let on_disk = packs_on_disk(root);
            for p in &listed {
                prop_assert!(on_disk.contains(p), "{} is listed but gone", p.display());
            }
            prop_assert_eq!(on_disk, listed);
        }
    }

    #[test]
    fn an_unreadable_snapshot_metadata_stops_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let catalog = Catalog::new(root, 0o600, 0o700);
        write_snapshot(root, "20261101_000000", &BTreeSet::from([1, 2]));
        write_snapshot(root, "20261102_000000", &BTreeSet::from([3]));
        let broken = root.join("storage/storage_snapshot_20261102_000000.json");
        fs::write(&broken, b"{ not json").unwrap();
        let orphan = root.join(pack_name(&pack_id(7), false));
        fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"orphan").unwrap();
        catalog.clean_leftovers().unwrap();
        // Pack 3 (the broken snapshot's) and the orphan 7 both stay: nothing is swept.
        assert_eq!(packs_on_disk(root).len(), 4);
        let log = fs::read_to_string(root.join(crate::catalog::LOG_FILE)).unwrap();
        assert!(log.contains("not deleting unreferenced packs"), "{log}");
    }
}
