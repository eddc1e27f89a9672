//! Writing checked archive entries under a root directory without ever following a link:
//! every parent of an entry must be a real directory inside the root, files are created
//! fresh (`O_EXCL`), symlinks are created, never traversed. Modes, mtimes and (as root)
//! owners are restored; directory times last, after their contents.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::archive::{EntryKind, EntrySink, SafeEntry};
use super::direct_io::{DIRECT_MIN, DirectWriter, WriteBehind};
use super::entry_tree::{DIR_COLLIDES, HARDLINK_NOT_BEFORE, PARENT_NOT_DIR, REPLACES_DIR};
use crate::error::{Error, IoContext, Result};

pub struct Extractor {
    root: PathBuf,
    archive: PathBuf,
    dirs: Vec<(PathBuf, u32, (u64, u32))>,
    buf: Vec<u8>,
    as_root: bool,
    /// Files' bytes and metadata go to the disk on this thread's heels.
    behind: WriteBehind,
    /// Said once: the target's filesystem keeps no extended attributes.
    no_xattrs: Arc<AtomicBool>,
}

impl Extractor {
    /// Extract under `root` (an existing, empty directory).
    pub fn new(root: &Path, archive: &Path) -> Self {
        Extractor {
            root: root.to_path_buf(),
            archive: archive.to_path_buf(),
            dirs: Vec::new(),
            buf: vec![0; 1 << 20],
            behind: WriteBehind::start(),
            no_xattrs: Arc::new(AtomicBool::new(false)),
            // SAFETY: geteuid has no preconditions.
            as_root: unsafe { libc::geteuid() } == 0,
        }
    }

    /// Give directories their modes and times, deepest first (writing into a directory
    /// changes its mtime, so this comes after everything else).
    pub fn finish(self) -> Result<()> {
        let Extractor {
            mut dirs, behind, ..
        } = self;
        // Every file's data and metadata first: their writes change their directories.
        behind.finish()?;
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, mode, mtime) in &dirs {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .ctx("set permissions on", path)?;
            set_times(path, *mtime, false);
        }
        Ok(())
    }

    fn unsafe_entry(&self, entry: &Path, reason: &str) -> Error {
        Error::UnsafeEntry {
            archive: self.archive.clone(),
            entry: crate::names::shown(entry).to_string(),
            reason: reason.into(),
        }
    }

    /// Create the parents of `rel` as real directories; refuse to pass through anything
    /// that is not one (a symlink planted by an earlier entry, a file).
    fn ensure_parents(&self, rel: &Path) -> Result<()> {
        let mut cur = self.root.clone();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(self.unsafe_entry(rel, PARENT_NOT_DIR));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).ctx("create directory", &cur)?;
                }
                Err(e) => return Err(Error::io("inspect", &cur, e)),
            }
        }
        Ok(())
    }

    /// Remove whatever non-directory sits at `dest` (an archive may list a path twice).
    fn clear(&self, dest: &Path) -> Result<()> {
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => Err(self.unsafe_entry(dest, REPLACES_DIR)),
            Ok(_) => fs::remove_file(dest).ctx("replace", dest),
            Err(_) => Ok(()),
        }
    }

    /// Make `rel` a hard link to `outside`, a file extracted elsewhere on the same
    /// filesystem (a partial restore's link whose data file was not selected); the same
    /// parent checks as any entry.
    pub fn link_to(&self, outside: &Path, rel: &Path) -> Result<()> {
        self.ensure_parents(rel)?;
        let dest = self.root.join(rel);
        self.clear(&dest)?;
        fs::hard_link(outside, &dest).ctx("create hard link", &dest)
    }

    fn chown(&self, path: &Path, e: &SafeEntry) {
        if self.as_root {
            let _ = std::os::unix::fs::lchown(path, Some(e.uid as u32), Some(e.gid as u32));
        }
    }
}

impl EntrySink for Extractor {
    fn entry(&mut self, e: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        self.behind.check()?;
        self.ensure_parents(&e.path)?;
        let dest = self.root.join(&e.path);
        match &e.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(self.unsafe_entry(&e.path, DIR_COLLIDES));
                    }
                    Err(_) => fs::create_dir(&dest).ctx("create directory", &dest)?,
                }
                self.chown(&dest, e);
                // Owner keeps rwx until finish(), so the contents can be written.
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))
                    .ctx("set permissions on", &dest)?;
                let set = super::xattrs::apply_path(&dest, &e.xattrs);
                xattrs_set(set, &dest, &self.no_xattrs)?;
                self.dirs.push((dest, e.mode, (e.mtime, e.mtime_ns)));
            }
            EntryKind::File => {
                self.clear(&dest)?;
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .ctx("create", &dest)?;
                let direct = e.size >= DIRECT_MIN;
                let mut sparse =
                    SparseWriter::new(DirectWriter::new(f, &dest, direct, &self.behind));
                loop {
                    let n = match data.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            return Err(Error::io("read the archive entry for", &dest, err));
                        }
                    };
                    sparse.write(&self.buf[..n]).ctx("write", &dest)?;
                }
                let (out, length) = sparse.finish().ctx("write", &dest)?;
                // After the data, on the writer's thread: the length a trailing hole
                // leaves unset, the owner, then the mode (chown clears setuid bits), then
                // the times (a later write would change the mtime). Through futimens:
                // `e.mtime` of a time before 1970 is the wrapped u64 a tar header
                // holds, which `SystemTime` cannot add.
                let owner = self.as_root.then_some((e.uid as u32, e.gid as u32));
                let (mode, times) = (e.mode, (e.mtime, e.mtime_ns));
                let (xattrs, no_xattrs) = (e.xattrs.clone(), self.no_xattrs.clone());
                out.then(Box::new(move |f: &fs::File| {
                    if let Some(len) = length {
                        f.set_len(len).ctx("set the length of", &dest)?;
                    }
                    // Through the descriptor: by the time this runs, a later entry of
                    // the same name may have replaced the file at `dest`.
                    if let Some((uid, gid)) = owner {
                        let _ = std::os::unix::fs::fchown(f, Some(uid), Some(gid));
                    }
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .ctx("set permissions on", &dest)?;
                    // After the mode: an ACL's mask is the group bits chmod just set.
                    xattrs_set(super::xattrs::apply_fd(f, &xattrs), &dest, &no_xattrs)?;
                    set_file_times(f, times);
                    Ok(())
                }))?;
            }
            EntryKind::Symlink(target) => {
                self.clear(&dest)?;
                std::os::unix::fs::symlink(target, &dest).ctx("create symlink", &dest)?;
                self.chown(&dest, e);
                set_times(&dest, (e.mtime, e.mtime_ns), true);
            }
            EntryKind::Hardlink(target) => {
                self.ensure_parents(target)?;
                let source = self.root.join(target);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => {
                        return Err(self.unsafe_entry(&e.path, HARDLINK_NOT_BEFORE));
                    }
                }
                self.clear(&dest)?;
                fs::hard_link(&source, &dest).ctx("create hard link", &dest)?;
            }
        }
        Ok(())
    }
}

/// A restored entry's attributes set; a target filesystem that keeps none is said once
/// (the data is restored all the same), any other refusal fails the restore.
fn xattrs_set(result: std::io::Result<()>, dest: &Path, said: &AtomicBool) -> Result<()> {
    match result {
        Err(e) if super::xattrs::unsupported(&e) => {
            if !said.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{}: this filesystem keeps no extended attributes; the restored files have none",
                    crate::names::shown(dest)
                );
            }
            Ok(())
        }
        other => other.ctx("set the extended attributes of", dest),
    }
}

/// Block size for hole detection: the page and filesystem block size almost everywhere.
const SPARSE_BLOCK: usize = 4096;

/// Writes a file's data, leaving holes where whole blocks are zeros (as
/// `cp --sparse=always` does): a sparse file (a VM image, a preallocated video) restores
/// to the same content without taking its full apparent size on a disk that may be
/// nearly full. The archive itself stores such files as plain data.
struct SparseWriter<'w> {
    out: DirectWriter<'w>,
    /// The start of a block whose end has not been read yet (reads split blocks anywhere).
    partial: Vec<u8>,
    /// Zero bytes seen but not yet skipped over.
    pending_hole: u64,
    len: u64,
}

impl<'w> SparseWriter<'w> {
    fn new(out: DirectWriter<'w>) -> Self {
        SparseWriter {
            out,
            partial: Vec::with_capacity(SPARSE_BLOCK),
            pending_hole: 0,
            len: 0,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        // Blocks follow file offsets, not read sizes, so holes line up with the
        // filesystem's blocks however the decompressor happens to split its output.
        if !self.partial.is_empty() {
            let take = (SPARSE_BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < SPARSE_BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.block(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() - data.len() % SPARSE_BLOCK;
        self.block(&data[..whole])?;
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Blocks from a block boundary (the last may be short): each run of data blocks
    /// goes in one write — a 4 KiB write per block made a 2 GiB restore 500 000 system
    /// calls — and each zero block becomes part of a hole.
    fn block(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut run = 0;
        for (i, block) in data.chunks(SPARSE_BLOCK).enumerate() {
            if block.iter().all(|&b| b == 0) {
                let at = i * SPARSE_BLOCK;
                self.write_run(&data[run..at])?;
                self.pending_hole += block.len() as u64;
                run = at + block.len();
            }
        }
        self.write_run(&data[run..])?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Data after any pending hole.
    fn write_run(&mut self, run: &[u8]) -> std::io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if self.pending_hole > 0 {
            self.out.skip(self.pending_hole)?;
            self.pending_hole = 0;
        }
        self.out.write_all(run)
    }

    /// The last, short block; the writer, and the length to set once its writes are done
    /// when the file ends in a hole (one is not made by skipping: the length must be set).
    fn finish(mut self) -> std::io::Result<(DirectWriter<'w>, Option<u64>)> {
        let last = std::mem::take(&mut self.partial);
        self.block(&last)?;
        Ok((self.out, (self.pending_hole > 0).then_some(self.len)))
    }
}

/// Set atime and mtime (not following a symlink when `nofollow`); best effort.
fn set_times(path: &Path, (mtime, mtime_ns): (u64, u32), nofollow: bool) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let times = atime_and_mtime(mtime, mtime_ns);
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: c is a valid NUL-terminated path and times points to two timespecs.
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags);
    }
}

/// Set an open file's atime and mtime; best effort, as [`set_times`].
fn set_file_times(f: &fs::File, (mtime, mtime_ns): (u64, u32)) {
    use std::os::fd::AsRawFd;
    let times = atime_and_mtime(mtime, mtime_ns);
    // SAFETY: the descriptor is open for the call and times points to two timespecs.
    unsafe {
        libc::futimens(f.as_raw_fd(), times.as_ptr());
    }
}

/// Both times as `utimensat`/`futimens` take them: the recorded mtime for each.
fn atime_and_mtime(mtime: u64, mtime_ns: u32) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: libc::c_long::from(mtime_ns),
    };
    [ts, ts]
}

/// An empty, private directory to extract into.
pub fn fresh_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .ctx("create the restore directory", path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_the_content_is_unchanged() {
        // Odd read sizes, as a decompressor returns them, and reads far larger than a
        // block, whose zero blocks sit between runs of data written in one call each.
        for piece_size in [7_777, (1 << 20) + 3] {
            for direct in [false, true] {
                sparse_round_trip(piece_size, direct);
            }
        }
    }

    fn sparse_round_trip(piece_size: usize, direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        // 1 MiB of data, 8 MiB of zeros, a little data, then 4 MiB + 100 zeros at the end.
        let mut data = vec![0x5au8; 1 << 20];
        data.extend(std::iter::repeat_n(0u8, 8 << 20));
        data.extend_from_slice(b"middle");
        data.extend(std::iter::repeat_n(0u8, (4 << 20) + 100));
        let behind = WriteBehind::start();
        let f = fs::File::create(&path).unwrap();
        let mut w = SparseWriter::new(DirectWriter::new(f, &path, direct, &behind));
        for piece in data.chunks(piece_size) {
            w.write(piece).unwrap();
        }
        let (out, length) = w.finish().unwrap();
        out.then(Box::new(move |f: &fs::File| {
            if let Some(len) = length {
                f.set_len(len)
                    .ctx("set the length of", Path::new("sparse"))?;
            }
            Ok(())
        }))
        .unwrap();
        behind.finish().unwrap();
        let f = fs::File::open(&path).unwrap();
        // Allocation is settled once written back (delayed allocation reserves first).
        f.sync_all().unwrap();
        drop(f);
        assert_eq!(fs::read(&path).unwrap(), data);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        // st_blocks counts 512-byte units; the 12 MiB of zeros must not be allocated.
        assert!(
            meta.blocks() * 512 < 3 << 20,
            "{} bytes allocated for 1 MiB of data",
            meta.blocks() * 512
        );
    }
}
