//! Reading a storage archive in one pass: file → SHA-256 → (age) → decompressor → tar
//! entries; the checksum is of the stored bytes, so it is checked with or without a key.
//! Every entry is checked for safety (no absolute paths, no `..`, no links out of the
//! tree, no device files) before a sink sees it, and the checksum is compared once the
//! whole file has streamed past. `verify` drains entries; `restore` extracts them —
//! the same pass, so a restore reads the archive exactly once.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::compression::Decompressor;
use super::decrypt::{Reading, plaintext};
use super::entry_tree::EntryTree;
use super::hashing::ThreadedHashReader;
use super::xattrs::Xattr;
use super::{Cancel, Progress, ProgressReader};
use crate::config::Compression;
use crate::error::{Error, IoContext, Result};

/// What an entry is, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Target as stored (relative, checked not to escape).
    Symlink(PathBuf),
    /// Target: another entry's path, relative to the archive root.
    Hardlink(PathBuf),
}

/// An entry that passed the safety checks.
#[derive(Debug, Clone)]
pub struct SafeEntry {
    /// Relative, without `.` or `..` components.
    pub path: PathBuf,
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime: u64,
    /// Nanoseconds past `mtime` (snapshots record them; an archive's header does not).
    pub mtime_ns: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// The `user.*` attributes (and POSIX ACLs) it carries, to set on the restored entry.
    pub xattrs: Vec<Xattr>,
}

/// Receives the entries of an archive in order.
pub trait EntrySink {
    fn entry(&mut self, entry: &SafeEntry, data: &mut dyn Read) -> Result<()>;
}

/// A sink that reads and discards: proves every byte decompresses. Reads in large chunks
/// (`io::copy`'s 8 KiB would pull each entry through the decoder in tiny steps).
pub struct Drain {
    buf: Vec<u8>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            buf: vec![0; 1 << 20],
        }
    }
}

impl EntrySink for Drain {
    fn entry(&mut self, _entry: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        loop {
            match data.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read an archive entry", "", e)),
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ArchiveStats {
    pub entries: u64,
    pub files: u64,
    /// Non-directory entries (files, links): what metadata's `file_count` counts.
    pub non_dir_entries: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// Bytes of the archive file.
    pub archive_bytes: u64,
    pub checksum: String,
}

/// Stream `path` through `sink`. With `expected` set, a checksum mismatch fails with the
/// check "checksum" — reported in preference to a decoding error, since a damaged file
/// usually fails both and the checksum is the root cause.
pub fn read_archive(
    path: &Path,
    reading: Reading,
    expected: Option<&str>,
    progress: &dyn Progress,
    cancel: &Cancel,
    sink: &mut dyn EntrySink,
) -> Result<ArchiveStats> {
    let file = File::open(path).ctx("open", path)?;
    let total = file.metadata().map(|m| m.len()).ok();
    progress.begin("read archive", total, None);
    let mut hashing = ThreadedHashReader::new(file);
    let mut stats = ArchiveStats::default();
    let counted = ProgressReader {
        inner: &mut hashing,
        progress,
    };
    // Decryption (when the format says so) sits between the stored bytes, which are
    // hashed, and the decompressor. Its failure to open is judged after the checksum.
    let walked = plaintext(counted, path, reading.format, reading.identity).and_then(
        |(mut plain, watch)| {
            walk_entries(
                &mut plain,
                path,
                reading.format.compression,
                cancel,
                sink,
                &mut stats,
            )
            // Read what the decoder left, so an age stream's last chunk is authenticated.
            .and_then(|()| {
                io::copy(&mut plain, &mut io::sink())
                    .map(|_| ())
                    .map_err(|e| Error::verify(path, "archive readable", e.to_string()))
            })
            .map_err(|e| watch.error(path).unwrap_or(e))
        },
    );
    // Hash whatever the decoder did not consume, so the checksum covers the whole file.
    let (checksum, bytes) = hashing.finish().ctx("read", path)?;
    progress.end();
    stats.checksum = checksum;
    stats.archive_bytes = bytes;
    if let Some(expected) = expected
        && !stats.checksum.eq_ignore_ascii_case(expected)
    {
        let mut detail = format!("expected sha256 {expected}, file has {}", stats.checksum);
        if let Err(e) = &walked {
            detail.push_str(&format!(
                " (and reading it failed: {})",
                crate::error_chain(e)
            ));
        }
        return Err(Error::verify(path, "checksum", detail));
    }
    walked.map(|()| stats)
}

fn walk_entries(
    input: &mut dyn Read,
    path: &Path,
    compression: Compression,
    cancel: &Cancel,
    sink: &mut dyn EntrySink,
    stats: &mut ArchiveStats,
) -> Result<()> {
    let unreadable = |e: io::Error| Error::verify(path, "archive readable", e.to_string());
    let decoder = Decompressor::new(BufReader::with_capacity(1 << 20, input), compression)
        .map_err(unreadable)?;
    let mut archive = tar::Archive::new(EndWatch {
        inner: decoder,
        ended: false,
    });
    // The same judgement for verify and restore: what one refuses, the other does too.
    let mut tree = EntryTree::default();
    for entry in archive.entries().map_err(unreadable)? {
        cancel.check()?;
        let mut entry = entry.map_err(unreadable)?;
        let mut safe = check_entry(&entry, path)?;
        safe.xattrs = pax_xattrs(&mut entry, path, &safe.path)?;
        tree.admit(path, &safe)?;
        stats.entries += 1;
        if safe.kind == EntryKind::File {
            stats.files += 1;
            stats.content_bytes += safe.size;
        }
        let mut data = TrackedReader {
            inner: &mut entry,
            error: None,
        };
        let result = sink.entry(&safe, &mut data);
        if let Some(e) = data.error.take() {
            // The sink failed because the archive could not be read, not the target written.
            return Err(unreadable(e));
        }
        result?;
    }
    stats.non_dir_entries = tree.non_dir_entries;
    // The tar reader stops at the first zero block, or quietly at the end of the data: an
    // archive cut at an entry boundary would pass for a complete one with fewer files.
    let mut rest = archive.into_inner();
    if rest.ended {
        return Err(Error::verify(
            path,
            "archive readable",
            "it ends without the end-of-archive marker (cut short?)",
        ));
    }
    // Read to the end of the compressed stream so its own checksum (zstd frame checksum,
    // gzip CRC) is verified too.
    io::copy(&mut rest, &mut io::sink()).map_err(unreadable)?;
    Ok(())
}

/// Notes whether the tar reader reached the end of the data (a read returned nothing)
/// rather than stopping at the end-of-archive marker.
struct EndWatch<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for EndWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        Ok(n)
    }
}

/// Remembers a read error, so a sink's failure can be blamed on the right side.
struct TrackedReader<'a, R> {
    inner: &'a mut R,
    error: Option<io::Error>,
}

impl<R: Read> Read for TrackedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

fn unsafe_entry(archive: &Path, entry: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: crate::names::shown(entry).to_string(),
        reason: reason.into(),
    }
}

/// A relative path without `.`/`..`, or why not.
pub fn safe_relative(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("its path is empty");
    }
    Ok(out)
}

/// Does a symlink at `link` (relative to the archive root) pointing at `target` stay
/// inside the tree? Links under a top-level directory must stay under it.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut stack: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let floor = usize::from(link.components().count() >= 2);
    for c in target.components() {
        match c {
            Component::Normal(n) => stack.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.len() <= floor {
                    return false;
                }
                stack.pop();
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn check_entry<R: Read>(entry: &tar::Entry<R>, archive: &Path) -> Result<SafeEntry> {
    let header = entry.header();
    let raw_path = entry
        .path()
        .map_err(|e| {
            Error::verify(
                archive,
                "archive readable",
                format!("an entry name is unreadable: {e}"),
            )
        })?
        .into_owned();
    let path = safe_relative(&raw_path).map_err(|r| unsafe_entry(archive, &raw_path, r))?;
    let et = header.entry_type();
    let link = || -> Result<PathBuf> {
        entry
            .link_name()
            .map_err(|e| Error::verify(archive, "archive readable", e.to_string()))?
            .map(|l| l.into_owned())
            .ok_or_else(|| unsafe_entry(archive, &raw_path, "a link without a target"))
    };
    let kind = if et.is_file() || et.is_contiguous() || et.is_gnu_sparse() {
        EntryKind::File
    } else if et.is_dir() {
        EntryKind::Dir
    } else if et.is_symlink() {
        let target = link()?;
        if !link_stays_inside(&path, &target) {
            return Err(unsafe_entry(
                archive,
                &raw_path,
                format!(
                    "it is a symlink to {} outside the restored tree",
                    crate::names::shown(&target)
                ),
            ));
        }
        EntryKind::Symlink(target)
    } else if et.is_hard_link() {
        let target = link()?;
        let target = safe_relative(&target).map_err(|r| {
            unsafe_entry(
                archive,
                &raw_path,
                format!("it is a hard link whose target is unsafe: {r}"),
            )
        })?;
        EntryKind::Hardlink(target)
    } else if et.is_character_special() || et.is_block_special() {
        return Err(unsafe_entry(archive, &raw_path, "it is a device file"));
    } else if et.is_fifo() {
        return Err(unsafe_entry(archive, &raw_path, "it is a FIFO"));
    } else {
        return Err(unsafe_entry(
            archive,
            &raw_path,
            format!("unsupported entry type {:?}", et.as_byte() as char),
        ));
    };
    Ok(SafeEntry {
        path,
        kind,
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        mtime: header.mtime().unwrap_or(0),
        mtime_ns: 0,
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
        size: entry.size(),
        xattrs: Vec::new(),
    })
}

/// The extended attributes an entry's PAX records carry (`SCHILY.xattr.NAME`, as GNU tar
/// writes them), each checked: only `user.*` and POSIX ACLs, within the kernel's limits.
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    archive: &Path,
    rel: &Path,
) -> Result<Vec<Xattr>> {
    let unreadable = |e: io::Error| Error::verify(archive, "archive readable", e.to_string());
    let Some(records) = entry.pax_extensions().map_err(unreadable)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for record in records {
        let record = record.map_err(unreadable)?;
        let Ok(key) = record.key() else { continue };
        let Some(name) = key.strip_prefix(super::xattrs::PAX_PREFIX) else {
            continue;
        };
        if let Some(why) = super::xattrs::refused(name, record.value_bytes().len()) {
            return Err(unsafe_entry(archive, rel, why));
        }
        out.push(Xattr {
            name: name.to_string(),
            value: record.value_bytes().to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative(Path::new("./storage/a")).unwrap(),
            PathBuf::from("storage/a")
        );
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert!(safe_relative(Path::new("storage/../../x")).is_err());
        assert!(safe_relative(Path::new(".")).is_err());
    }

    #[test]
    fn symlinks_must_stay_in_the_tree() {
        assert!(link_stays_inside(
            Path::new("storage/a/link"),
            Path::new("../b/file")
        ));
        assert!(link_stays_inside(
            Path::new("storage/link"),
            Path::new("a/b")
        ));
        assert!(!link_stays_inside(
            Path::new("storage/link"),
            Path::new("../outside")
        ));
        assert!(!link_stays_inside(
            Path::new("storage/a/link"),
            Path::new("../../../etc")
        ));
        assert!(!link_stays_inside(
            Path::new("storage/link"),
            Path::new("/etc")
        ));
        assert!(!link_stays_inside(Path::new("link"), Path::new("..")));
    }
}
