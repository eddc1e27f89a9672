//! The record of a storage restore in flight, kept in the backup directory
//! (`restore-staging.json`), and the repair of one that was killed. A restore extracts
//! into a temporary tree beside its target (`.NAME.restore-PID`, as big as the media),
//! which may be anywhere: the record is how `list` names it and how the next holder of
//! the lock (create, rotate, daemon start, the next restore) finds it.
//!
//! The record names the restored tree's inode once it is complete and flushed, before
//! the live path changes. From it the repair tells, whatever moment the kill came at,
//! which side of the swap the target is on: the restored tree live → finish (the tree it
//! replaced goes to its `NAME.pre-restore-…` name); the target gone between the two
//! renames of the fallback swap → put the restored tree in place; otherwise the live tree
//! was never touched → the temporary tree is deleted.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::atomic::{partial_path, sync_dir, write_atomic};
use crate::error::{Error, IoContext, Result};

/// The temporary tree of the restore this process is running, if any: its record is not
/// a leftover (a pre-restore safety copy cleans leftovers in the middle of the restore).
static IN_FLIGHT: Mutex<Option<Vec<u8>>> = Mutex::new(None);

fn in_flight() -> std::sync::MutexGuard<'static, Option<Vec<u8>>> {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The record's name in the backup directory.
pub const RESTORE_STAGING_FILE: &str = "restore-staging.json";

/// Paths are kept as their bytes: a storage directory's name need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStaging {
    temp: Vec<u8>,
    target: Vec<u8>,
    previous: Option<Vec<u8>>,
    /// The restored tree inside `temp`, and its (device, inode), once it is ready to swap.
    tree: Option<Vec<u8>>,
    tree_id: Option<(u64, u64)>,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// (device, inode) of `p` itself (not following a link), if it exists.
pub fn node_id(p: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl RestoreStaging {
    /// A restore about to extract into `temp` for `target`, moving the live tree to
    /// `previous` (in-place restores).
    pub fn new(temp: &Path, target: &Path, previous: Option<&Path>) -> Self {
        RestoreStaging {
            temp: bytes(temp),
            target: bytes(target),
            previous: previous.map(bytes),
            tree: None,
            tree_id: None,
        }
    }

    pub fn temp(&self) -> PathBuf {
        path(&self.temp)
    }

    /// The restored tree at `tree` is complete and durable: from now on a repair finishes
    /// the swap instead of discarding it.
    pub fn ready(&mut self, tree: &Path) -> Result<()> {
        self.tree_id = Some(node_id(tree).ok_or_else(|| {
            Error::io(
                "inspect",
                tree,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?);
        self.tree = Some(bytes(tree));
        Ok(())
    }

    /// Write the record (atomically, durably) into the backup directory `root`.
    pub fn save(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| {
            Error::io(
                "write",
                root.join(RESTORE_STAGING_FILE),
                std::io::Error::other(e),
            )
        })?;
        *in_flight() = Some(self.temp.clone());
        write_atomic(&root.join(RESTORE_STAGING_FILE), &json, 0o600)
    }

    /// The restore of this process is over, whichever way: bring its tree to the end the
    /// record says (see [`Self::repair`]) and forget it.
    pub fn settle_own(root: &Path) -> Result<Option<PathBuf>> {
        *in_flight() = None;
        Self::repair(root)
    }

    /// The record in `root`, if a restore left one.
    pub fn load(root: &Path) -> Option<RestoreStaging> {
        let text = fs::read(root.join(RESTORE_STAGING_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The restore is over (done or undone): forget it.
    pub fn clear(root: &Path) -> Result<()> {
        for p in [
            root.join(RESTORE_STAGING_FILE),
            partial_path(&root.join(RESTORE_STAGING_FILE)),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete", &p, e)),
            }
        }
        Ok(())
    }

    /// Bring a killed restore to one end or the other (see the module comment); returns
    /// the temporary tree it removed. Call only while holding the lock.
    pub fn repair(root: &Path) -> Result<Option<PathBuf>> {
        let Some(rec) = Self::load(root) else {
            Self::clear(root)?;
            return Ok(None);
        };
        if in_flight().as_ref() == Some(&rec.temp) {
            return Ok(None);
        }
        let temp = rec.temp();
        let target = path(&rec.target);
        if let (Some(tree), Some(id)) = (rec.tree.as_deref().map(path), rec.tree_id) {
            let target_now = node_id(&target);
            if target_now == Some(id) && tree.exists() {
                // Swapped: what sits at the tree's old place is the tree it replaced.
                match rec.previous.as_deref().map(path) {
                    Some(prev) if !prev.exists() => {
                        fs::rename(&tree, &prev).ctx("move the replaced tree to", &prev)?;
                    }
                    // Never delete a tree that may be the only copy of what was live:
                    // it stays listed as a leftover for the operator.
                    _ => return Ok(None),
                }
            } else if target_now.is_none() && node_id(&tree) == Some(id) {
                // Killed between the two renames of the fallback swap.
                fs::rename(&tree, &target).ctx("move the restored tree to", &target)?;
            }
            if let Some(parent) = target.parent() {
                sync_dir(parent)?;
            }
        }
        let removed = match fs::remove_dir_all(&temp) {
            Ok(()) => Some(temp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("delete the restore's temporary tree", &temp, e)),
        };
        Self::clear(root)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(dir: &Path, marker: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(marker), marker).unwrap();
    }

    /// A restore of `area/storage` staged in `area/.storage.restore-1/root/storage`.
    fn staged(area: &Path, ready: bool) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let _ = RestoreStaging::clear(area);
        let (target, prev) = (area.join("storage"), area.join("storage.pre-restore-x"));
        let temp = area.join(".storage.restore-1");
        let tree = temp.join("root/storage");
        tree_with(&target, "old");
        tree_with(&tree, "restored");
        let mut rec = RestoreStaging::new(&temp, &target, Some(&prev));
        if ready {
            rec.ready(&tree).unwrap();
        }
        rec.save(area).unwrap();
        (target, prev, temp, tree)
    }

    #[test]
    fn a_restore_killed_before_its_tree_was_ready_is_undone() {
        let area = tempfile::tempdir().unwrap();
        let (target, prev, temp, _) = staged(area.path(), false);
        assert_eq!(
            RestoreStaging::settle_own(area.path()).unwrap(),
            Some(temp.clone())
        );
        assert!(target.join("old").exists() && !prev.exists() && !temp.exists());
        assert!(RestoreStaging::load(area.path()).is_none());
    }

    #[test]
    fn a_restore_killed_after_the_exchange_is_finished() {
        let area = tempfile::tempdir().unwrap();
        let (target, prev, temp, tree) = staged(area.path(), true);
        let aside = area.path().join("swap");
        fs::rename(&target, &aside).unwrap();
        fs::rename(&tree, &target).unwrap();
        fs::rename(&aside, &tree).unwrap();
        RestoreStaging::settle_own(area.path()).unwrap();
        assert!(
            target.join("restored").exists(),
            "the restored tree is live"
        );
        assert!(prev.join("old").exists(), "the replaced tree is kept");
        assert!(!temp.exists());
    }

    #[test]
    fn a_restore_killed_between_the_fallback_renames_is_finished() {
        let area = tempfile::tempdir().unwrap();
        let (target, prev, temp, _) = staged(area.path(), true);
        fs::rename(&target, &prev).unwrap();
        RestoreStaging::settle_own(area.path()).unwrap();
        assert!(target.join("restored").exists() && prev.join("old").exists());
        assert!(!temp.exists());
    }

    #[test]
    fn a_ready_restore_killed_before_the_swap_leaves_the_live_tree() {
        let area = tempfile::tempdir().unwrap();
        let (target, prev, temp, _) = staged(area.path(), true);
        RestoreStaging::settle_own(area.path()).unwrap();
        assert!(target.join("old").exists() && !prev.exists() && !temp.exists());
    }
}
