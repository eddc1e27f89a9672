//! A restored storage tree from extraction to the live path: extracted into a temporary
//! directory beside its target (recorded in the backup directory, so a killed restore is
//! found and repaired — see [`RestoreStaging`]), flushed to disk, then swapped in. The
//! swap is one `renameat2(RENAME_EXCHANGE)` where the filesystem has it, so the live path
//! always names a whole tree; elsewhere two renames, whose gap the repair closes.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::archive::{ArchiveStats, EntrySink};
use super::extract::{Extractor, fresh_dir};
use super::path_selection::{PathSelection, SelectiveSink, SpillSink};
use super::restore::StorageStep;
use super::verify::{ArchiveExpectation, read_storage_archive};
use super::{Cancel, Progress};
use crate::catalog::{Catalog, RestoreStaging, sync_dir};
use crate::error::{Error, IoContext, Result};

/// A restored tree waiting in a temporary directory beside its target.
pub struct StagedTree {
    root: PathBuf,
    temp: PathBuf,
    tree: PathBuf,
    record: RestoreStaging,
    pub stats: ArchiveStats,
}

/// Temporary directories of interrupted restores: `.NAME.restore-*` beside the target.
fn staging_prefix(target: &Path) -> String {
    format!(
        ".{}.restore-",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Is `path` the root of a mount (its own disk, a bind mount)? Renaming it fails with
/// EBUSY, and a tree staged beside it would be on another filesystem anyway.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statx is a valid value for the kernel to fill in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and stx is a valid, writable statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if rc == 0 && stx.stx_attributes_mask & mount_root != 0 {
        return stx.stx_attributes & mount_root != 0;
    }
    // Kernels before 5.8: another device than the parent's is a mount.
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| fs::symlink_metadata(p).map(|m| m.dev()).ok();
    match (dev(path), path.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Flush every file of the filesystem holding `dir` (the restored tree's): one
/// `syncfs(2)` rather than an fsync per file of a tree of many thousands.
fn sync_filesystem(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx("open", dir)?;
    // SAFETY: the fd is valid for the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io(
            "flush the restored tree to disk (syncfs)",
            dir,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Swap two paths atomically; `Ok(false)` when the filesystem cannot.
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| Error::io("rename", p, e.into()))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => Ok(false),
        _ => Err(Error::io("swap the restored tree into", b, e)),
    }
}

impl Drop for StagedTree {
    /// However the restore ends (done, failed, cancelled, a panic), the record brings the
    /// tree to the right end: the same repair the next holder of the lock would make.
    fn drop(&mut self) {
        if let Err(e) = RestoreStaging::settle_own(&self.root) {
            tracing::warn!("restore: {}", crate::error_chain(&e));
        }
    }
}

/// Extract the storage archive of `s` beside its target, checked as `verify` checks it.
pub fn stage_storage(
    s: &StorageStep,
    catalog: &Catalog,
    verify: bool,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<StagedTree> {
    let parent = s
        .target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&parent).ctx("create", &parent)?;
    // We hold the lock: a recorded restore was killed; older ones left only their prefix.
    RestoreStaging::repair(catalog.root())?;
    let prefix = staging_prefix(&s.target);
    if let Ok(rd) = fs::read_dir(&parent) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let available = crate::sys::available_space(&parent).ctx("measure free space on", &parent)?;
    if available < s.uncompressed_size {
        return Err(Error::NoSpaceToRestore {
            dir: parent,
            needed: s.uncompressed_size,
            available,
        });
    }
    let temp = parent.join(format!("{prefix}{}", std::process::id()));
    let record = RestoreStaging::new(&temp, &s.target, s.previous_tree.as_deref());
    record.save(catalog.root())?;
    let mut staged = StagedTree {
        root: catalog.root().to_path_buf(),
        tree: temp.clone(),
        temp,
        record,
        stats: ArchiveStats::default(),
    };
    staged.extract(s, verify, progress, cancel)?;
    Ok(staged)
}

impl StagedTree {
    fn extract(
        &mut self,
        s: &StorageStep,
        verify: bool,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<()> {
        fresh_dir(&self.temp)?;
        // The archive's names live under a directory of their own, so no entry can take
        // a name the restore itself needs.
        let root = self.temp.join("root");
        fresh_dir(&root)?;
        let mut extractor = Extractor::new(&root, &s.source);
        let expect = ArchiveExpectation {
            checksum: verify.then_some(s.checksum.as_str()),
            file_count: s.file_count,
        };
        // One read of the whole archive, checked as `verify` checks it, into `sink`.
        let read = |sink: &mut dyn EntrySink| {
            read_storage_archive(&s.source, s.reading(), expect, progress, cancel, sink)
        };
        if s.paths.is_empty() {
            self.stats = read(&mut extractor)?;
        } else {
            self.extract_selected(s, &read, &mut extractor)?;
        }
        extractor.finish()?;
        // Our archives hold one top-level directory (the storage directory's name); take
        // its contents. An archive without one is taken as the tree itself.
        let top: Vec<PathBuf> = fs::read_dir(&root)
            .ctx("read", &root)?
            .flatten()
            .map(|e| e.path())
            .collect();
        self.tree = match top.as_slice() {
            [only] if only.is_dir() && !only.is_symlink() => only.clone(),
            _ => root,
        };
        cancel.check()?;
        // Durable before the live path changes: a crash after the swap must not leave a
        // live tree of empty or missing files.
        sync_filesystem(&self.temp)?;
        self.record.ready(&self.tree)?;
        self.record.save(&self.root)
    }

    /// Extract only `s.paths`: one pass, plus a second for the data of selected hard
    /// links whose data file is outside the selection (see [`super::path_selection`]).
    fn extract_selected(
        &mut self,
        s: &StorageStep,
        read: &dyn Fn(&mut dyn EntrySink) -> Result<ArchiveStats>,
        extractor: &mut Extractor,
    ) -> Result<()> {
        let selection = PathSelection::new(&s.paths)?;
        let mut sink = SelectiveSink::new(extractor, &selection);
        self.stats = read(&mut sink)?;
        sink.check_all_matched(&s.source)?;
        let (orphans, selected) = (std::mem::take(&mut sink.orphan_links), sink.stats);
        if !orphans.is_empty() {
            let spill = self.temp.join("spill");
            fresh_dir(&spill)?;
            let mut spill_extractor = Extractor::new(&spill, &s.source);
            read(&mut SpillSink::new(&mut spill_extractor, &orphans))?;
            spill_extractor.finish()?;
            for (link, data_file) in &orphans {
                extractor.link_to(&spill.join(data_file), link)?;
            }
            fs::remove_dir_all(&spill).ctx("delete", &spill)?;
        }
        self.stats.entries = selected.entries;
        self.stats.files = selected.files;
        self.stats.content_bytes = selected.bytes;
        Ok(())
    }

    /// Put each of `paths` of the staged tree in place under the live `target`, one
    /// atomic swap each (a killed restore is finished or undone path by path, by the same
    /// record); what each replaces goes to the same relative place under `previous`.
    /// Nothing else under `target` is touched. Returns `previous` if anything went there.
    pub fn swap_paths(
        self,
        target: &Path,
        previous: &Path,
        paths: &[PathBuf],
    ) -> Result<Option<PathBuf>> {
        let mut kept_aside = false;
        for rel in paths {
            let (staged, live, aside) = (self.tree.join(rel), target.join(rel), previous.join(rel));
            let replaces = fs::symlink_metadata(&live).is_ok();
            let mut record =
                RestoreStaging::new(&self.temp, &live, replaces.then_some(aside.as_path()));
            record.ready(&staged)?;
            record.save(&self.root)?;
            for dir in [live.parent(), replaces.then(|| aside.parent()).flatten()]
                .into_iter()
                .flatten()
            {
                fs::create_dir_all(dir).ctx("create", dir)?;
            }
            if replaces {
                if exchange(&staged, &live)? {
                    // The replaced version now sits where the staged one was.
                    fs::rename(&staged, &aside).ctx("move the replaced version to", &aside)?;
                } else {
                    fs::rename(&live, &aside).ctx("move the current version aside to", &aside)?;
                    fs::rename(&staged, &live).ctx("move the restored path to", &live)?;
                }
                kept_aside = true;
            } else {
                fs::rename(&staged, &live).ctx("move the restored path to", &live)?;
            }
            if let Some(parent) = live.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(kept_aside.then(|| previous.to_path_buf()))
    }

    /// Drop the staged tree (the live one was never touched).
    pub fn discard(self) {
        drop(self);
    }

    /// Put the staged tree at `target`; the live tree there (in-place) goes to `previous`.
    /// On failure, whatever the swap got to, dropping `self` finishes or undoes it.
    pub fn swap_into(self, target: &Path, previous: Option<&Path>) -> Result<()> {
        self.swap(target, previous)
    }

    fn swap(&self, target: &Path, previous: Option<&Path>) -> Result<()> {
        match previous {
            Some(prev) if target.exists() => {
                if exchange(&self.tree, target)? {
                    // The replaced tree now sits where the staged one was.
                    fs::rename(&self.tree, prev).ctx("move the replaced tree to", prev)?;
                } else {
                    fs::rename(target, prev).ctx("move the current tree aside to", prev)?;
                    fs::rename(&self.tree, target).ctx("move the restored tree to", target)?;
                }
            }
            _ => {
                if target.is_dir() {
                    // An empty directory given as --target (checked by the plan).
                    fs::remove_dir(target).ctx("replace the empty directory", target)?;
                }
                fs::rename(&self.tree, target).ctx("move the restored tree to", target)?;
            }
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}
