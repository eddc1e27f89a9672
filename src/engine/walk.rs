//! The storage source: the walk of the storage tree as a stream of entries, each file
//! already open, for whatever stores them (the tar writer today, a snapshot writer
//! later). It owns the walk's policy so every consumer archives the same tree the same
//! way: sorted, deterministic order; excludes; hard links yielded once as a file and then
//! as links to it; symlinks that leave the tree and special files skipped with a warning;
//! entries that vanish while walked skipped with a warning; files that change while read
//! reported once their reader is done. A file is opened without following links and
//! without blocking (so a symlink or a FIFO swapped in after the walk saw a file is never
//! followed or waited on), then checked to be the regular file the walk saw; anything else
//! is skipped with the "changed while being backed up" warning, as is an entry whose type
//! changed under the walk. Paths longer than [`MAX_PATH_BYTES`] (a tree nested thousands of
//! levels deep) are skipped with one short warning naming the top of that tree, so one
//! such tree cannot fail every backup and the archive never holds a name a restore
//! cannot create. A file's reader yields exactly the size it had
//! when opened (zero-padded if it shrinks, cut if it grows), so a consumer that wrote
//! that size up front stays valid. A file's data is read only as the consumer pulls it,
//! straight into the consumer's buffer (no buffer here), and nothing grows with the tree
//! except the table of multiply-linked files.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use super::Cancel;
use super::walk_ahead::{Listed, Listing, Pace};
use crate::error::{Error, Result};
use crate::names::shown;

/// The longest path on disk (storage root included) the walk archives. Below `PATH_MAX`
/// (4096 bytes with its NUL) by a margin, so a restore, which recreates the tree in a
/// temporary directory beside the live one (a longer prefix), can still create every
/// name; anything deeper is skipped with a warning.
pub const MAX_PATH_BYTES: usize = 4096 - 256;

/// The metadata of an entry, as `lstat` reported it (for a file: `fstat` of the open
/// handle, so it describes the file being read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, as `st_mtime` (may be negative).
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
    /// `st_size`; for a [`SourceKind::File`], the exact number of bytes its reader yields.
    pub size: u64,
}

impl EntryMeta {
    fn of(meta: &Metadata) -> Self {
        EntryMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
            size: meta.len(),
        }
    }
}

/// What an entry of the storage tree is.
#[derive(Debug)]
pub enum SourceKind {
    Dir,
    /// Target as the link holds it; checked to stay inside the tree.
    Symlink {
        target: PathBuf,
    },
    /// Another name of a file yielded earlier: `target` is that file's path relative to
    /// the storage root.
    HardLink {
        target: PathBuf,
    },
    /// A regular file, open for reading.
    File(SourceFile),
    /// A regular file the consumer said it need not read ([`StorageSource::next_entry`]:
    /// a snapshot's unchanged file), not opened; its metadata is the walk's `lstat`.
    Unopened,
}

/// One entry of the storage tree.
#[derive(Debug)]
pub struct SourceEntry {
    /// Where it is on disk, for messages.
    pub path: PathBuf,
    /// Relative to the storage root; empty for the root itself (always a [`SourceKind::Dir`],
    /// even when `[paths] storage` is a symlink to it).
    pub rel: PathBuf,
    pub meta: EntryMeta,
    pub kind: SourceKind,
}

impl SourceEntry {
    /// The root directory itself, not an entry under it.
    pub fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }
}

/// A regular file's data: exactly the size `fstat` gave when the file was opened. A file
/// that shrinks while read is padded with zeros, one that grows is cut; either way (or a
/// new mtime) [`StorageSource::finish`] warns that the copy may be inconsistent.
/// Reads go straight from the file into the caller's buffer: no copy of our own.
#[derive(Debug)]
pub struct SourceFile {
    file: File,
    remaining: u64,
    /// The file ended before `size` bytes: the rest is zeros.
    short: bool,
    /// The error that stopped a read of the file, kept so a consumer whose sink failed can
    /// tell a source error from its own (the caller gets a copy).
    error: Option<io::Error>,
    cancel: Cancel,
}

impl SourceFile {
    /// The error reading the file failed with, if it did (not a cancellation).
    pub fn take_read_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }
}

impl Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let n = if self.short {
            buf[..want].fill(0);
            want
        } else {
            match self.file.read(&mut buf[..want]) {
                Ok(0) => {
                    // Shrank while read: pad with zeros so the consumer gets the size it
                    // was promised.
                    self.short = true;
                    buf[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.error = Some(e);
                    return Err(copy);
                }
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The entries of a storage tree in sorted order (see the module comment). Iterate with
/// `while let Some(entry) = source.next()`, hand each entry back to [`Self::finish`]
/// once stored, and collect the warnings with [`Self::into_warnings`]. Stop at the first
/// error: it ends the walk.
pub struct StorageSource {
    root: PathBuf,
    /// The directory reads and `lstat`s, in a thread running ahead (`walk_ahead`).
    listing: Listing,
    /// Multiply-linked files seen so far, by (device, inode): their path relative to the root.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Top-level directories already warned about for holding a too-deep tree.
    too_deep: HashSet<PathBuf>,
    warnings: Vec<String>,
    cancel: Cancel,
}

impl StorageSource {
    /// Walk `root`, leaving out what matches the `exclude` globs (relative to `root`).
    pub fn new(root: &Path, exclude: &[String], cancel: Cancel) -> Result<Self> {
        Self::paced(root, exclude, cancel, Pace::Ahead)
    }

    /// A source that looks at each entry only when asked for it, for tests that change
    /// the tree between two steps.
    #[cfg(test)]
    pub(crate) fn stepwise(root: &Path, exclude: &[String], cancel: Cancel) -> Result<Self> {
        Self::paced(root, exclude, cancel, Pace::Stepwise)
    }

    fn paced(root: &Path, exclude: &[String], cancel: Cancel, pace: Pace) -> Result<Self> {
        Ok(StorageSource {
            root: root.to_path_buf(),
            listing: Listing::start(root, build_excludes(exclude)?, pace)?,
            hardlinks: HashMap::new(),
            too_deep: HashSet::new(),
            warnings: Vec::new(),
            cancel,
        })
    }

    /// Done with `entry`: for a file, warn if it changed while it was read.
    pub fn finish(&mut self, entry: SourceEntry) -> Result<()> {
        let SourceKind::File(file) = entry.kind else {
            return Ok(());
        };
        let after = file
            .file
            .metadata()
            .map_err(|e| Error::io("read", &entry.path, e))?;
        if file.short
            || after.len() != entry.meta.size
            || after.mtime() != entry.meta.mtime
            || after.mtime_nsec() != entry.meta.mtime_nsec
        {
            self.warnings.push(format!(
                "{} changed while being backed up; the archived copy may be inconsistent",
                shown(&entry.path)
            ));
        }
        Ok(())
    }

    /// The warnings of the walk, in the order they arose.
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }

    /// The entry a listed item becomes, or `None` when it is left out.
    fn admit(
        &mut self,
        item: Listed,
        read_file: &mut dyn FnMut(&Path, &EntryMeta) -> bool,
    ) -> Result<Option<SourceEntry>> {
        let (path, rel, ft, meta) = match item {
            Listed::Root => return self.root_entry().map(Some),
            Listed::Error(e) => return self.walk_error(e).map(|()| None),
            Listed::TooDeep { rel, depth } => {
                self.too_deep(&rel, depth);
                return Ok(None);
            }
            Listed::Entry {
                path,
                rel,
                file_type,
                meta,
            } => (path, rel, file_type, meta),
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(&path);
                return Ok(None);
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        // The walk's type came from the directory listing; `lstat` is later. A
        // different type now is an entry replaced under the walk (a directory the walk
        // did not descend into, a link it would read as a file).
        if meta.file_type() != ft {
            self.changed(&path, kind_name(meta.file_type()));
            return Ok(None);
        }
        let found = if ft.is_dir() {
            Some((SourceKind::Dir, meta))
        } else if ft.is_symlink() {
            self.symlink(&path, &rel)?
                .map(|target| (SourceKind::Symlink { target }, meta))
        } else if ft.is_file() {
            self.regular(&path, &rel, meta, read_file)?
        } else {
            self.special(&path, ft);
            None
        };
        Ok(found.map(|(kind, meta)| SourceEntry {
            path,
            rel,
            meta: EntryMeta::of(&meta),
            kind,
        }))
    }

    /// An unreadable part of the tree fails the walk, except what vanished meanwhile.
    fn walk_error(&mut self, e: walkdir::Error) -> Result<()> {
        let path = e
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let kind = e.io_error().map(io::Error::kind);
        if kind == Some(io::ErrorKind::NotFound) {
            self.warnings
                .push(format!("{} vanished while the tree was read", shown(&path)));
            return Ok(());
        }
        if kind == Some(io::ErrorKind::NotADirectory) {
            self.changed(&path, "no longer a directory");
            return Ok(());
        }
        if kind == Some(io::ErrorKind::InvalidFilename) {
            // ENAMETOOLONG: deeper than the path limit (caught here should the limit
            // above not be reached first, e.g. a name that jumps past it).
            let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
            self.too_deep(&rel, e.depth());
            return Ok(());
        }
        let cause = e
            .into_io_error()
            .unwrap_or_else(|| io::Error::other("filesystem loop"));
        Err(Error::io("read the storage tree at", path, cause))
    }

    /// The root is the directory behind `[paths] storage`, even when that path is a
    /// symlink (media on another disk): described as a directory, never as a link.
    fn root_entry(&self) -> Result<SourceEntry> {
        let meta = fs::metadata(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
        Ok(SourceEntry {
            path: self.root.clone(),
            rel: PathBuf::new(),
            meta: EntryMeta::of(&meta),
            kind: SourceKind::Dir,
        })
    }

    /// The target of the symlink at `path`, or `None` when it vanished or leaves the tree.
    fn symlink(&mut self, path: &Path, rel: &Path) -> Result<Option<PathBuf>> {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(path);
                return Ok(None);
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        // Restore refuses links that leave the restored tree (docs/design.md §3: an archive must
        // not be able to plant a path to /etc in the media the app serves). Storing one
        // would make a backup that looks good and cannot be restored; skip it loudly.
        // `link_stays_inside` judges links under one top-level directory: the root's.
        if !super::archive::link_stays_inside(&Path::new("storage").join(rel), &target) {
            self.warnings.push(format!(
                "{} is a symlink to {} outside the storage tree; skipped (a restore refuses links that escape)",
                shown(path),
                shown(&target)
            ));
            return Ok(None);
        }
        Ok(Some(target))
    }

    /// A regular file: a link to its first name when seen before, else open. `lstat` is
    /// the walk's `meta`; the entry gets `fstat` of the open file.
    fn regular(
        &mut self,
        path: &Path,
        rel: &Path,
        meta: Metadata,
        read_file: &mut dyn FnMut(&Path, &EntryMeta) -> bool,
    ) -> Result<Option<(SourceKind, Metadata)>> {
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = self.hardlinks.get(&key)
        {
            let target = first.clone();
            return Ok(Some((SourceKind::HardLink { target }, meta)));
        }
        if !read_file(rel, &EntryMeta::of(&meta)) {
            if meta.nlink() > 1 {
                self.hardlinks.insert(key, rel.to_path_buf());
            }
            return Ok(Some((SourceKind::Unopened, meta)));
        }
        let Some((file, opened)) = self.open_walked(path, &meta)? else {
            return Ok(None);
        };
        advise_sequential(&file);
        if meta.nlink() > 1 {
            self.hardlinks.insert(key, rel.to_path_buf());
        }
        let file = SourceFile {
            file,
            remaining: opened.len(),
            short: false,
            error: None,
            cancel: self.cancel.clone(),
        };
        Ok(Some((SourceKind::File(file), opened)))
    }

    /// Open the regular file the walk saw at `path` (`walked` is its `lstat`), with
    /// `fstat` of the handle; `None` (and a warning) when something else is there now.
    /// The open follows no link (`O_NOFOLLOW`: a symlink swapped in fails with ELOOP)
    /// and does not wait (`O_NONBLOCK`: a FIFO swapped in opens at once, with no writer),
    /// and the handle must be the same regular file (device and inode): only then is
    /// its content what the walk meant to store. The size `fstat` gives is the number of
    /// bytes the reader yields, whatever happens to the file meanwhile.
    fn open_walked(&mut self, path: &Path, walked: &Metadata) -> Result<Option<(File, Metadata)>> {
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(path);
                return Ok(None);
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.changed(path, "now a symlink");
                return Ok(None);
            }
            // ENXIO: a socket swapped in (it cannot be opened).
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                self.changed(path, "now a socket");
                return Ok(None);
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let now = file.metadata().map_err(|e| Error::io("read", path, e))?;
        if !now.file_type().is_file() {
            self.changed(path, kind_name(now.file_type()));
            return Ok(None);
        }
        if (now.dev(), now.ino()) != (walked.dev(), walked.ino()) {
            self.changed(path, "replaced by another file");
            return Ok(None);
        }
        // O_NONBLOCK has no effect on a regular file's reads; it stays set.
        Ok(Some((file, now)))
    }

    fn special(&mut self, path: &Path, ft: fs::FileType) {
        self.warnings.push(format!(
            "{} is a {}; skipped",
            shown(path),
            special_name(ft)
        ));
    }

    /// An entry that is no longer what the walk saw: skipped, like one that vanished.
    fn changed(&mut self, path: &Path, now: &str) {
        self.warnings.push(format!(
            "{} changed while being backed up ({now}); skipped",
            shown(path)
        ));
    }

    /// Once per top-level directory: it holds a tree deeper than the path limit, and
    /// what lies below the limit is skipped. The line names the top of the deep tree
    /// and the depth, not the (kilobytes long) path.
    fn too_deep(&mut self, rel: &Path, depth: usize) {
        let top = rel
            .components()
            .next()
            .map_or_else(PathBuf::new, |c| PathBuf::from(c.as_os_str()));
        if !self.too_deep.insert(top.clone()) {
            return;
        }
        self.warnings.push(format!(
            "{} holds a tree nested deeper than paths can go ({MAX_PATH_BYTES} bytes, reached {depth} levels down); everything below that depth is skipped",
            shown(&self.root.join(top))
        ));
    }

    fn vanished(&mut self, path: &Path) {
        self.warnings.push(format!(
            "{} vanished while being backed up; skipped",
            shown(path)
        ));
    }
}

impl StorageSource {
    /// The next entry, asking `read_file(rel, lstat)` of each regular file (first names
    /// only) whether it is to be read: if not, it is yielded as [`SourceKind::Unopened`]
    /// without being opened — a snapshot's unchanged files cost one `lstat` each.
    pub fn next_entry(
        &mut self,
        read_file: &mut dyn FnMut(&Path, &EntryMeta) -> bool,
    ) -> Option<Result<SourceEntry>> {
        loop {
            let item = match self.listing.next()? {
                Ok(item) => item,
                Err(e) => return Some(Err(e)),
            };
            if let Err(e) = self.cancel.check() {
                return Some(Err(e));
            }
            match self.admit(item, read_file) {
                Ok(Some(entry)) => return Some(Ok(entry)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Iterator for StorageSource {
    type Item = Result<SourceEntry>;

    fn next(&mut self) -> Option<Result<SourceEntry>> {
        self.next_entry(&mut |_, _| true)
    }
}

/// What an entry that is not a regular file is, for "changed while backed up" warnings.
fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "now a directory"
    } else if ft.is_symlink() {
        "now a symlink"
    } else if ft.is_file() {
        "now a regular file"
    } else if ft.is_fifo() {
        "now a FIFO"
    } else if ft.is_socket() {
        "now a socket"
    } else {
        "now a device or special file"
    }
}

fn special_name(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device file"
    } else {
        "special file"
    }
}

/// The total size and file count a backup of `root` will read (metadata only), for the
/// free-space estimate and the progress bar.
pub fn estimate(root: &Path, exclude: &[String]) -> Result<(u64, u64)> {
    let excludes = build_excludes(exclude)?;
    let mut bytes = 0u64;
    let mut files = 0u64;
    let mut walker = WalkDir::new(root).follow_links(false).into_iter();
    while let Some(entry) = walker.next() {
        let Ok(entry) = entry else { continue };
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let too_deep = entry.path().as_os_str().len() > MAX_PATH_BYTES;
        if !rel.as_os_str().is_empty() && (too_deep || excludes.is_match(rel)) {
            if entry.file_type().is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        if entry.file_type().is_file() {
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            files += 1;
        }
    }
    Ok((bytes, files))
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| Error::Config {
            file: None,
            line: None,
            key: "backup.exclude".into(),
            message: format!("`{p}`: {e}"),
        })?;
        b.add(glob);
    }
    b.build().map_err(|e| Error::Config {
        file: None,
        line: None,
        key: "backup.exclude".into(),
        message: e.to_string(),
    })
}

/// Tell the kernel we read front to back, so readahead grows (a hint; errors ignored).
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the fd and plain integers.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A tree holding one file of `data`: the source, past the root, and the file's entry.
    fn open_one(data: &[u8]) -> (tempfile::TempDir, StorageSource, SourceEntry) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), data).unwrap();
        let mut source = StorageSource::new(dir.path(), &[], Cancel::new()).unwrap();
        let root = source.next().unwrap().unwrap();
        assert!(root.is_root());
        let entry = source.next().unwrap().unwrap();
        assert!(matches!(entry.kind, SourceKind::File(_)));
        (dir, source, entry)
    }

    fn read_all(entry: &mut SourceEntry) -> Vec<u8> {
        let SourceKind::File(file) = &mut entry.kind else {
            panic!("not a file");
        };
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_file_read_unchanged_gives_its_bytes_and_no_warning() {
        let (_dir, mut source, mut entry) = open_one(b"0123456789");
        assert_eq!(entry.meta.size, 10);
        assert_eq!(read_all(&mut entry), b"0123456789");
        source.finish(entry).unwrap();
        assert!(source.next().is_none());
        assert!(source.into_warnings().is_empty());
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_padded_to_its_size_and_warned() {
        let (dir, mut source, mut entry) = open_one(b"0123456789");
        fs::File::options()
            .write(true)
            .open(dir.path().join("file"))
            .unwrap()
            .set_len(3)
            .unwrap();
        assert_eq!(read_all(&mut entry), b"012\0\0\0\0\0\0\0");
        source.finish(entry).unwrap();
        let warnings = source.into_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("changed while being backed up"));
    }

    #[test]
    fn a_file_that_grows_while_read_is_cut_at_its_size_and_warned() {
        let (dir, mut source, mut entry) = open_one(b"0123456789");
        let mut f = fs::File::options()
            .append(true)
            .open(dir.path().join("file"))
            .unwrap();
        f.write_all(b"more").unwrap();
        drop(f);
        assert_eq!(read_all(&mut entry), b"0123456789");
        source.finish(entry).unwrap();
        assert_eq!(source.into_warnings().len(), 1);
    }

    #[test]
    fn excluded_specials_and_escaping_links_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("cache")).unwrap();
        fs::write(root.join("cache/big"), b"x").unwrap();
        fs::write(root.join("keep.txt"), b"x").unwrap();
        fs::write(root.join("skip.tmp"), b"x").unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.join("escape")).unwrap();
        let fifo = std::ffi::CString::new(root.join("pipe").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: a valid NUL-terminated path and a plain mode.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        let exclude = ["cache".to_string(), "*.tmp".to_string()];
        let mut source = StorageSource::new(root, &exclude, Cancel::new()).unwrap();
        let mut rels = Vec::new();
        while let Some(entry) = source.next() {
            let entry = entry.unwrap();
            rels.push(entry.rel.clone());
            source.finish(entry).unwrap();
        }
        assert_eq!(rels, vec![PathBuf::new(), PathBuf::from("keep.txt")]);
        let warnings = source.into_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("outside the storage tree"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("is a FIFO; skipped"), "{warnings:?}");
    }

    #[test]
    fn a_cancelled_read_stops_without_blaming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"data").unwrap();
        fs::write(dir.path().join("next"), b"data").unwrap();
        let cancel = Cancel::new();
        let mut source = StorageSource::new(dir.path(), &[], cancel.clone()).unwrap();
        source.next().unwrap().unwrap();
        let mut entry = source.next().unwrap().unwrap();
        cancel.cancel();
        let SourceKind::File(file) = &mut entry.kind else {
            panic!("not a file");
        };
        assert!(file.read(&mut [0u8; 4]).is_err());
        assert!(file.take_read_error().is_none());
        assert!(matches!(source.next(), Some(Err(Error::Cancelled))));
    }
}

#[cfg(test)]
#[path = "walk_swaps.rs"]
pub(crate) mod swaps;
