//! Replacing files of kept backups in place, all or none: what repacking the store does
//! to the entry lists and metadata of the snapshots whose chunks it moved. A backup is
//! several files (an entry list, its metadata, a full backup's manifest) that must
//! change together, and no rename changes two files at once, so:
//!
//! 1. every new file is written durable beside the one it replaces, as `NAME.rewrite`;
//! 2. the journal `store/rewrite.json` naming them is written durable (the commit point);
//! 3. each `NAME.rewrite` is renamed over `NAME`, then the journal is deleted.
//!
//! A run killed before step 2 left only `.rewrite` files: the next cleaning deletes them
//! and the backups are as they were. Killed after it, the next holder of the lock — or a
//! reader finding the lock free ([`Catalog::list`]) — finishes step 3: every staged file
//! is complete, so finishing only renames. Either way each backup is wholly the old or
//! wholly the new.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{partial_path, sync_dir, write_atomic};
use super::lock::BackupDirLock;
use super::{Catalog, STORE_DIR};
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

/// The journal's name under the backup directory.
pub const REWRITE_JOURNAL: &str = "rewrite.json";
/// What a replacement is staged as, beside the file it replaces.
pub const STAGED_SUFFIX: &str = ".rewrite";

/// `path` with [`STAGED_SUFFIX`]: where its replacement is written first.
pub fn staged_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(STAGED_SUFFIX);
    PathBuf::from(s)
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// The files to replace, relative to the backup directory, in the order they are
    /// replaced (entry lists, then their metadata, then manifests).
    files: Vec<PathBuf>,
}

impl Catalog {
    fn journal_path(&self) -> PathBuf {
        self.root().join(STORE_DIR).join(REWRITE_JOURNAL)
    }

    /// Replace each of `files` (inside the backup directory) by its staged
    /// [`staged_path`], every one of which must be durable already: the journal first,
    /// then the renames. Call while holding the lock.
    pub fn commit_rewrite(&self, files: &[PathBuf]) -> Result<()> {
        let mut relative = Vec::with_capacity(files.len());
        for f in files {
            let rel = f.strip_prefix(self.root()).map_err(|_| {
                Error::Internal(format!("{} is outside the backup directory", f.display()))
            })?;
            let staged = staged_path(f);
            if !staged.is_file() {
                return Err(Error::Internal(format!(
                    "{} was not staged before the rewrite's commit",
                    staged.display()
                )));
            }
            relative.push(rel.to_path_buf());
        }
        let journal = Journal { files: relative };
        let json = serde_json::to_vec_pretty(&journal)
            .map_err(|e| Error::Internal(format!("serialize the rewrite journal: {e}")))?;
        write_atomic(&self.journal_path(), &json, self.file_mode())?;
        self.apply_rewrite(&journal)
    }

    /// Whether a rewrite is committed and not yet finished: until it is, the packs the
    /// staged metadata lists are listed by no metadata in place, and no sweep may run.
    pub fn rewrite_in_flight(&self) -> bool {
        self.journal_path().exists()
    }

    /// Finish a rewrite whose journal is on disk (call while holding the lock). A journal
    /// that cannot be read is set aside (`rewrite.json.unreadable`, logged): the staged
    /// files are then debris, and each backup keeps whichever of its files were already
    /// put in place — `verify` names one left half new.
    pub(super) fn finish_committed_rewrite(&self) -> Result<()> {
        match self.read_journal() {
            Ok(None) => Ok(()),
            Ok(Some(journal)) => {
                self.log().info(&format!(
                    "store: finishing an interrupted repack ({} file(s) to put in place)",
                    journal.files.len()
                ));
                self.apply_rewrite(&journal)
            }
            Err(e) => {
                let path = self.journal_path();
                let aside = path.with_extension("json.unreadable");
                fs::rename(&path, &aside).ctx("set aside", &path)?;
                self.log().error(&format!(
                    "store: the repack journal could not be read ({}): set aside as {}; run `verify --all`",
                    crate::error_chain(&e),
                    aside.display()
                ));
                Ok(())
            }
        }
    }

    /// Finish a rewrite whose journal is on disk, then delete staged files no journal
    /// names (a run killed before its commit). Returns those deleted. Call while holding
    /// the lock.
    pub(super) fn finish_rewrite(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        // A journal still under its `.partial` name was never committed.
        super::remove_if_exists(&partial_path(&self.journal_path()), &mut removed)?;
        self.finish_committed_rewrite()?;
        for kind in BackupKind::ALL {
            let dir = self.kind_dir(kind);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(STAGED_SUFFIX) && kind.prefixes().any(|p| name.starts_with(p)) {
                    super::remove_if_exists(&e.path(), &mut removed)?;
                }
            }
        }
        Ok(removed)
    }

    /// For readers that do not take the lock: finish an interrupted rewrite when nobody
    /// holds the lock (whoever holds it finishes it before anything else).
    pub(super) fn finish_rewrite_if_unlocked(&self) {
        if !self.journal_path().exists() {
            return;
        }
        if let Ok(_lock) = BackupDirLock::acquire(self.root(), "finish an interrupted repack")
            && let Err(e) = self.finish_committed_rewrite()
        {
            self.log().error(&format!(
                "store: an interrupted repack could not be finished: {e}"
            ));
        }
    }

    fn read_journal(&self) -> Result<Option<Journal>> {
        let path = self.journal_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| {
            Error::verify(
                &path,
                "rewrite journal",
                format!(
                    "it does not parse ({e}): move it aside only after checking `verify --all`"
                ),
            )
        })?;
        // Ours, but on disk: every name must stay inside a backup type's directory.
        for f in &journal.files {
            let inside = f.components().all(|c| matches!(c, Component::Normal(_)))
                && BackupKind::ALL
                    .iter()
                    .any(|k| f.parent() == Some(Path::new(k.dir_name())));
            if !inside {
                return Err(Error::verify(
                    &path,
                    "rewrite journal",
                    format!("it names {} outside the backup directories", f.display()),
                ));
            }
        }
        Ok(Some(journal))
    }

    /// Rename each staged file into place (one already moved is skipped), make the
    /// renames durable, then delete the journal.
    fn apply_rewrite(&self, journal: &Journal) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for rel in &journal.files {
            let target = self.root().join(rel);
            let staged = staged_path(&target);
            match fs::rename(&staged, &target) {
                Ok(()) => {}
                // Renamed by an earlier attempt that was killed before the journal went.
                Err(e) if e.kind() == io::ErrorKind::NotFound && target.exists() => {}
                // Neither there: nothing to put in place (deleted by hand since).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.log().warn(&format!(
                        "store: {} named by the repack journal is gone, and so is its staged copy",
                        target.display()
                    ));
                }
                Err(e) => return Err(Error::io("put in place", &staged, e)),
            }
            if let Some(d) = target.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        let path = self.journal_path();
        fs::remove_file(&path).ctx("delete", &path)?;
        sync_dir(&self.root().join(STORE_DIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::new(dir.path().to_path_buf(), 0o600, 0o700);
        c.prepare().unwrap();
        fs::create_dir_all(dir.path().join(STORE_DIR)).unwrap();
        (dir, c)
    }

    #[test]
    fn a_committed_rewrite_interrupted_before_its_renames_is_finished() {
        let (dir, c) = catalog();
        let a = c
            .kind_dir(BackupKind::Storage)
            .join("storage_snapshot_1.tree.zst");
        let b = c
            .kind_dir(BackupKind::Storage)
            .join("storage_snapshot_1.json");
        for (f, old, new) in [(&a, "old list", "new list"), (&b, "old meta", "new meta")] {
            fs::write(f, old).unwrap();
            fs::write(staged_path(f), new).unwrap();
        }
        // The journal is durable but no rename happened: as if killed right after it.
        let journal = Journal {
            files: vec![
                a.strip_prefix(dir.path()).unwrap().into(),
                b.strip_prefix(dir.path()).unwrap().into(),
            ],
        };
        fs::write(c.journal_path(), serde_json::to_vec(&journal).unwrap()).unwrap();
        // One rename done already.
        fs::rename(staged_path(&a), &a).unwrap();
        c.finish_rewrite().unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "new list");
        assert_eq!(fs::read_to_string(&b).unwrap(), "new meta");
        assert!(!c.journal_path().exists());
    }

    #[test]
    fn staged_files_and_a_journal_without_its_commit_are_debris() {
        let (_dir, c) = catalog();
        let a = c
            .kind_dir(BackupKind::Storage)
            .join("storage_snapshot_1.tree.zst");
        fs::write(&a, "old").unwrap();
        fs::write(staged_path(&a), "new").unwrap();
        let journal = partial_path(&c.journal_path());
        fs::write(&journal, "{").unwrap();
        let removed = c.finish_rewrite().unwrap();
        assert_eq!(removed, vec![journal, staged_path(&a)]);
        assert_eq!(fs::read_to_string(&a).unwrap(), "old");
    }

    #[test]
    fn a_journal_naming_a_file_outside_the_backup_directories_is_set_aside_unused() {
        let (dir, c) = catalog();
        let victim = dir.path().join("victim");
        fs::write(&victim, "mine").unwrap();
        fs::write(staged_path(&victim), "theirs").unwrap();
        fs::write(c.journal_path(), r#"{"files":["../victim"]}"#).unwrap();
        c.finish_rewrite().unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "mine");
        assert!(!c.journal_path().exists());
        assert!(c.journal_path().with_extension("json.unreadable").exists());
        assert!(!c.rewrite_in_flight());
    }
}
