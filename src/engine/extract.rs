//! Writing checked archive entries under a root directory without ever following a link:
//! every parent of an entry must be a real directory inside the root, files are created
//! fresh (`O_EXCL`), symlinks are created, never traversed. Modes, mtimes and (as root)
//! owners are restored; directory times last, after their contents.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::archive::{EntryKind, EntrySink, SafeEntry};
use crate::error::{Error, IoContext, Result};

pub struct Extractor {
    root: PathBuf,
    archive: PathBuf,
    dirs: Vec<(PathBuf, u32, u64)>,
    buf: Vec<u8>,
    as_root: bool,
}

impl Extractor {
    /// Extract under `root` (an existing, empty directory).
    pub fn new(root: &Path, archive: &Path) -> Self {
        Extractor {
            root: root.to_path_buf(),
            archive: archive.to_path_buf(),
            dirs: Vec::new(),
            buf: vec![0; 1 << 20],
            // SAFETY: geteuid has no preconditions.
            as_root: unsafe { libc::geteuid() } == 0,
        }
    }

    /// Give directories their modes and times, deepest first (writing into a directory
    /// changes its mtime, so this comes after everything else).
    pub fn finish(mut self) -> Result<()> {
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (path, mode, mtime) in &self.dirs {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .ctx("set permissions on", path)?;
            set_times(path, *mtime, false);
        }
        Ok(())
    }

    fn unsafe_entry(&self, entry: &Path, reason: &str) -> Error {
        Error::UnsafeEntry {
            archive: self.archive.clone(),
            entry: entry.display().to_string(),
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
                    return Err(self.unsafe_entry(
                        rel,
                        "a parent of it in the archive is a link or a file, not a directory",
                    ));
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
            Ok(m) if m.is_dir() => Err(self.unsafe_entry(dest, "it replaces a directory")),
            Ok(_) => fs::remove_file(dest).ctx("replace", dest),
            Err(_) => Ok(()),
        }
    }

    fn chown(&self, path: &Path, e: &SafeEntry) {
        if self.as_root {
            let _ = std::os::unix::fs::lchown(path, Some(e.uid as u32), Some(e.gid as u32));
        }
    }
}

impl EntrySink for Extractor {
    fn entry(&mut self, e: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        self.ensure_parents(&e.path)?;
        let dest = self.root.join(&e.path);
        match &e.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(self.unsafe_entry(
                            &e.path,
                            "a directory entry collides with a file or link",
                        ));
                    }
                    Err(_) => fs::create_dir(&dest).ctx("create directory", &dest)?,
                }
                self.chown(&dest, e);
                // Owner keeps rwx until finish(), so the contents can be written.
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))
                    .ctx("set permissions on", &dest)?;
                self.dirs.push((dest, e.mode, e.mtime));
            }
            EntryKind::File => {
                self.clear(&dest)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .ctx("create", &dest)?;
                loop {
                    let n = match data.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            return Err(Error::io("read the archive entry for", &dest, err));
                        }
                    };
                    f.write_all(&self.buf[..n]).ctx("write", &dest)?;
                }
                self.chown(&dest, e);
                // After chown: chown clears setuid bits, and the mode must be the archive's.
                f.set_permissions(fs::Permissions::from_mode(e.mode))
                    .ctx("set permissions on", &dest)?;
                let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(e.mtime));
            }
            EntryKind::Symlink(target) => {
                self.clear(&dest)?;
                std::os::unix::fs::symlink(target, &dest).ctx("create symlink", &dest)?;
                self.chown(&dest, e);
                set_times(&dest, e.mtime, true);
            }
            EntryKind::Hardlink(target) => {
                self.ensure_parents(target)?;
                let source = self.root.join(target);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => {
                        return Err(self.unsafe_entry(
                            &e.path,
                            "it is a hard link to something that is not a file extracted before it",
                        ));
                    }
                }
                self.clear(&dest)?;
                fs::hard_link(&source, &dest).ctx("create hard link", &dest)?;
            }
        }
        Ok(())
    }
}

/// Set atime and mtime (not following a symlink when `nofollow`); best effort.
fn set_times(path: &Path, mtime: u64, nofollow: bool) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
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

/// An empty, private directory to extract into.
pub fn fresh_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .ctx("create the restore directory", path)
}
