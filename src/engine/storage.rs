//! The storage archive in one streaming pass (SPEC §4): walk (sorted, deterministic) →
//! tar → compressor → SHA-256 → file. Each file's data is read exactly once, in large
//! chunks, straight into the compressor; memory stays bounded whatever the tree's size.
//! Symlinks are stored as links (those pointing outside the tree skipped with a warning,
//! as restore would refuse them), hard links once, special files skipped with a warning;
//! a file that changes or vanishes while read is a warning, and the archive stays valid.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

use super::compression::Compressor;
use super::hashing::{CountingWriter, HashingWriter};
use super::output::ArchiveFile;
use super::{Cancel, Progress};
use crate::config::Compression;
use crate::error::{Error, Result};

/// Size of the buffer file data moves through: large enough for few syscalls and to feed
/// zstd's workers whole jobs, small enough to keep memory flat.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub compression: Compression,
    pub level: i32,
    pub threads: u32,
    pub exclude: Vec<String>,
    /// Extensions (lower case, no dot) of files that are already compressed.
    pub precompressed: Vec<String>,
}

/// zstd's level for already-compressed files: its fastest positive level, which stores
/// such data as fast as possible while keeping the archive a standard zstd stream.
const PRECOMPRESSED_LEVEL: i32 = 1;

fn is_precompressed(rel: &Path, extensions: &[String]) -> bool {
    rel.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// What one archive holds.
#[derive(Debug, Clone, Default)]
pub struct ArchiveSummary {
    /// Non-directory entries (files, links).
    pub file_count: u64,
    pub dir_count: u64,
    /// Bytes of the tar stream before compression.
    pub uncompressed_size: u64,
    /// Bytes written to the archive file.
    pub compressed_size: u64,
    pub checksum: String,
    pub warnings: Vec<String>,
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
        if !rel.as_os_str().is_empty() && excludes.is_match(rel) {
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

/// Write the archive of `root` into `out`. Entries are named `<root's name>/<relative
/// path>`, so `tar -xf` in the app directory recreates the storage directory, as the
/// seed's manual restore expects.
pub fn write_archive(
    root: &Path,
    out: File,
    out_path: &Path,
    opts: &ArchiveOptions,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(ArchiveSummary, File)> {
    let excludes = build_excludes(&opts.exclude)?;
    let top = root
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("storage"));
    // Once cancelled, every error is the cancellation: the compressor's worker threads may
    // still be flushing when the output starts refusing writes.
    let w = |e| {
        if cancel.is_cancelled() {
            Error::Cancelled
        } else {
            Error::io("write the archive", out_path, e)
        }
    };

    let hashed = HashingWriter::new(ArchiveFile::new(out, cancel.clone()));
    let compressor =
        Compressor::new(hashed, opts.compression, opts.level, opts.threads).map_err(w)?;
    let mut tar = tar::Builder::new(CountingWriter::new(compressor));
    tar.mode(tar::HeaderMode::Complete);

    let mut summary = ArchiveSummary::default();
    let mut level_now = opts.level;
    let mut buf = vec![0u8; CHUNK];
    let mut hardlinks: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();

    while let Some(entry) = walker.next() {
        cancel.check()?;
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                match e.io_error().map(io::Error::kind) {
                    Some(io::ErrorKind::NotFound) => {
                        summary.warnings.push(format!(
                            "{} vanished while the tree was read",
                            crate::names::shown(&path)
                        ));
                        continue;
                    }
                    _ => {
                        let source = e
                            .into_io_error()
                            .unwrap_or_else(|| io::Error::other("filesystem loop"));
                        return Err(Error::io("read the storage tree at", path, source));
                    }
                }
            }
        };
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_path_buf();
        if !rel.as_os_str().is_empty() && excludes.is_match(&rel) {
            if entry.file_type().is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        if rel.as_os_str().is_empty() {
            // The root is the directory behind `[paths] storage`, even when that path is a
            // symlink (media on another disk): archive it as a directory, never as a link.
            let meta = fs::metadata(root).map_err(|e| Error::io("read", root, e))?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_mode(meta.mode() & 0o7777);
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, &top, io::empty()).map_err(w)?;
            summary.dir_count += 1;
            continue;
        }
        let name = top.join(&rel);
        // Media is already compressed: spend zstd's effort only where it pays.
        if entry.file_type().is_file() {
            let wanted = if is_precompressed(&rel, &opts.precompressed) {
                PRECOMPRESSED_LEVEL
            } else {
                opts.level
            };
            if wanted != level_now {
                tar.get_mut().get_mut().set_level(wanted).map_err(w)?;
                level_now = wanted;
            }
        }
        append_entry(
            &mut tar,
            &entry,
            &name,
            &mut buf,
            &mut hardlinks,
            &mut summary,
            progress,
            cancel,
        )
        .map_err(|e| match e {
            EntryError::Source(err) => Error::io("read", entry.path(), err),
            EntryError::Sink(err) => w(err),
            EntryError::Cancelled => Error::Cancelled,
        })?;
    }

    let counting = tar.into_inner().map_err(w)?;
    summary.uncompressed_size = counting.count;
    let hashed = counting.into_inner().finish().map_err(w)?;
    let (sink, checksum, written) = hashed.finish();
    let file = sink.into_file().map_err(w)?;
    cancel.check()?;
    summary.checksum = checksum;
    summary.compressed_size = written;
    Ok((summary, file))
}

enum EntryError {
    /// Reading the source tree failed.
    Source(io::Error),
    /// Writing the archive failed.
    Sink(io::Error),
    Cancelled,
}

#[allow(clippy::too_many_arguments)]
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &DirEntry,
    name: &Path,
    buf: &mut [u8],
    hardlinks: &mut HashMap<(u64, u64), PathBuf>,
    summary: &mut ArchiveSummary,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> std::result::Result<(), EntryError> {
    let path = entry.path();
    let ft = entry.file_type();
    let vanished = |summary: &mut ArchiveSummary| {
        summary.warnings.push(format!(
            "{} vanished while being backed up; skipped",
            crate::names::shown(path)
        ));
    };
    let meta = match entry.metadata() {
        Ok(m) => m,
        Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
            vanished(summary);
            return Ok(());
        }
        Err(e) => {
            return Err(EntryError::Source(
                e.into_io_error()
                    .unwrap_or_else(|| io::Error::other("metadata")),
            ));
        }
    };
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_mode(meta.mode() & 0o7777);

    if ft.is_dir() {
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty())
            .map_err(EntryError::Sink)?;
        summary.dir_count += 1;
    } else if ft.is_symlink() {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                vanished(summary);
                return Ok(());
            }
            Err(e) => return Err(EntryError::Source(e)),
        };
        // Restore refuses links that leave the restored tree (SPEC §5: an archive must
        // not be able to plant a path to /etc in the media the app serves). Archiving one
        // would make a backup that looks good and cannot be restored; skip it loudly.
        if !super::archive::link_stays_inside(name, &target) {
            summary.warnings.push(format!(
                "{} is a symlink to {} outside the storage tree; skipped (a restore refuses links that escape)",
                crate::names::shown(path),
                crate::names::shown(&target)
            ));
            return Ok(());
        }
        header.set_size(0);
        tar.append_link(&mut header, name, &target)
            .map_err(EntryError::Sink)?;
        summary.file_count += 1;
        progress.advance(0, 1);
    } else if ft.is_file() {
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = hardlinks.get(&key)
        {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            tar.append_link(&mut header, name, first)
                .map_err(EntryError::Sink)?;
            summary.file_count += 1;
            progress.advance(0, 1);
            return Ok(());
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                vanished(summary);
                return Ok(());
            }
            Err(e) => return Err(EntryError::Source(e)),
        };
        advise_sequential(&file);
        // Describe the file as it is now that it is open; the size in the header is the
        // number of bytes we will write, whatever happens to the file meanwhile.
        let before = file.metadata().map_err(EntryError::Source)?;
        header.set_metadata_in_mode(&before, tar::HeaderMode::Complete);
        header.set_mode(before.mode() & 0o7777);
        let size = before.len();
        tar.append_data(&mut header, name, io::empty())
            .map_err(EntryError::Sink)?;
        let sink = tar.get_mut();
        let mut remaining = size;
        let mut short = false;
        while remaining > 0 {
            if cancel.is_cancelled() {
                return Err(EntryError::Cancelled);
            }
            let want = remaining.min(buf.len() as u64) as usize;
            let n = if short {
                buf[..want].fill(0);
                want
            } else {
                match file.read(&mut buf[..want]) {
                    Ok(0) => {
                        // Shrank while read: pad with zeros so the archive stays valid.
                        short = true;
                        buf[..want].fill(0);
                        want
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(EntryError::Source(e)),
                }
            };
            sink.write_all(&buf[..n]).map_err(EntryError::Sink)?;
            remaining -= n as u64;
            progress.advance(n as u64, 0);
        }
        let pad = (512 - (size % 512)) % 512;
        sink.write_all(&[0u8; 512][..pad as usize])
            .map_err(EntryError::Sink)?;
        let after = file.metadata().map_err(EntryError::Source)?;
        if short
            || after.len() != size
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
        {
            summary.warnings.push(format!(
                "{} changed while being backed up; the archived copy may be inconsistent",
                crate::names::shown(path)
            ));
        }
        if meta.nlink() > 1 {
            hardlinks.insert(key, name.to_path_buf());
        }
        summary.file_count += 1;
        progress.advance(0, 1);
    } else {
        let what = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "device file"
        } else {
            "special file"
        };
        summary.warnings.push(format!(
            "{} is a {what}; skipped",
            crate::names::shown(path)
        ));
    }
    Ok(())
}

/// Tell the kernel we read front to back, so readahead grows (a hint; errors ignored).
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the fd and plain integers.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}
