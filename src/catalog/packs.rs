//! The content store's garbage: packs that no snapshot in the backup directory lists any
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

use super::{Catalog, Listing, PARTIAL_SUFFIX, STORE_DIR, remove_if_exists, sync_dir};
use crate::error::Result;

impl Catalog {
    /// Delete packs no snapshot of `listing` lists, and `.partial` packs. Returns what was
    /// deleted. With an unreadable snapshot metadata in `listing`, deletes only `.partial`
    /// packs and says why in the log.
    pub(super) fn sweep_store(&self, listing: &Listing) -> Result<Vec<PathBuf>> {
        let packs_dir = self.root.join(STORE_DIR).join("packs");
        let Ok(rd) = fs::read_dir(&packs_dir) else {
            return Ok(Vec::new());
        };
        let unreadable = listing.backups.iter().find(|b| {
            b.kind
                .snapshot_prefix()
                .is_some_and(|p| b.stem.starts_with(p))
                && b.metadata.snapshot.is_none()
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
                        && name.ends_with(".pack")
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
