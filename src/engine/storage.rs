//! The storage archive in one streaming pass (docs/design.md §3): the storage source (`walk`) →
//! tar → compressor → SHA-256 → file. The source decides what goes in and how (order,
//! excludes, links, what is skipped, the warnings); this module makes tar records of its
//! entries and picks zstd's level per file. The tar crate writes long names, headers,
//! data and padding; each file's data is read exactly once, straight from the file into
//! the tar crate's copy buffer and on into the compressor, so memory stays bounded
//! whatever the tree's size. With recipients, the compressor's output goes through age
//! on a thread of its own ([`super::sealing`]) before it is hashed and written.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::compression::Compressor;
use super::hashing::{CountingWriter, HashingWriter};
use super::output::ArchiveFile;
use super::sealing::Sealer;
use super::walk::{EntryMeta, SourceEntry, SourceKind, StorageSource};
use super::{Cancel, Progress, ProgressReader};
use crate::config::Compression;
use crate::encryption::Recipients;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub compression: Compression,
    pub level: i32,
    pub threads: u32,
    pub exclude: Vec<String>,
    /// Extensions (lower case, no dot) of files that are already compressed.
    pub precompressed: Vec<String>,
    /// Encrypt the archive to these (`encrypt = "all"`); the checksum is then of the
    /// encrypted bytes.
    pub recipients: Option<Recipients>,
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
    /// Bytes of the regular files' contents (what a restore writes).
    pub content_bytes: u64,
    /// Bytes written to the archive file.
    pub compressed_size: u64,
    pub checksum: String,
    pub warnings: Vec<String>,
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
    let mut source = StorageSource::new(root, &opts.exclude, cancel.clone())?;
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
    let sealer = Sealer::threaded(hashed, opts.recipients.as_ref()).map_err(w)?;
    let compressor =
        Compressor::new(sealer, opts.compression, opts.level, opts.threads).map_err(w)?;
    let mut tar = tar::Builder::new(CountingWriter::new(compressor));
    tar.mode(tar::HeaderMode::Complete);

    let mut summary = ArchiveSummary::default();
    let mut level_now = opts.level;
    let with_acls = super::xattrs::with_acls();
    while let Some(entry) = source.next() {
        let mut entry = entry?;
        // A hard link's attributes are its inode's: the first name carries them.
        if !matches!(entry.kind, SourceKind::HardLink { .. }) {
            let attrs = super::xattrs::read(&entry.path, with_acls)
                .map_err(|e| Error::io("read the extended attributes of", &entry.path, e))?;
            if !attrs.is_empty() {
                let records = super::xattrs::pax_records(&attrs);
                tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                    .map_err(w)?;
            }
        }
        // Media is already compressed: spend zstd's effort only where it pays.
        if matches!(
            entry.kind,
            SourceKind::File(_) | SourceKind::HardLink { .. }
        ) {
            let wanted = if is_precompressed(&entry.rel, &opts.precompressed) {
                PRECOMPRESSED_LEVEL
            } else {
                opts.level
            };
            if wanted != level_now {
                tar.get_mut().get_mut().set_level(wanted).map_err(w)?;
                level_now = wanted;
            }
        }
        append_entry(&mut tar, &top, &mut entry, progress).map_err(|e| match e {
            EntryError::Source(err) => Error::io("read", &entry.path, err),
            EntryError::Sink(err) => w(err),
        })?;
        match entry.kind {
            SourceKind::Dir => summary.dir_count += 1,
            SourceKind::File(_) => {
                summary.file_count += 1;
                summary.content_bytes += entry.meta.size;
                progress.advance(0, 1);
            }
            _ => {
                summary.file_count += 1;
                progress.advance(0, 1);
            }
        }
        source.finish(entry)?;
    }
    summary.warnings = source.into_warnings();

    let counting = tar.into_inner().map_err(w)?;
    summary.uncompressed_size = counting.count;
    let sealer = counting.into_inner().finish().map_err(w)?;
    let hashed = sealer.finish().map_err(w)?;
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
    /// Writing the archive failed (or the backup was cancelled).
    Sink(io::Error),
}

/// Store one entry as `top/<its relative path>`; the tar crate writes any GNU long-name
/// records, the header, the data and its padding.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    top: &Path,
    entry: &mut SourceEntry,
    progress: &dyn Progress,
) -> std::result::Result<(), EntryError> {
    let name = if entry.is_root() {
        top.to_path_buf()
    } else {
        top.join(&entry.rel)
    };
    match &mut entry.kind {
        SourceKind::Dir => {
            let mut header = header_for(&entry.meta, tar::EntryType::Directory, 0);
            tar.append_data(&mut header, &name, io::empty())
                .map_err(EntryError::Sink)
        }
        SourceKind::Symlink { target } => {
            let mut header = header_for(&entry.meta, tar::EntryType::Symlink, 0);
            tar.append_link(&mut header, &name, &*target)
                .map_err(EntryError::Sink)
        }
        SourceKind::HardLink { target } => {
            let mut header = header_for(&entry.meta, tar::EntryType::Link, 0);
            tar.append_link(&mut header, &name, top.join(&*target))
                .map_err(EntryError::Sink)
        }
        // The archive's walk reads every file (it never declines one).
        SourceKind::Unopened => Err(EntryError::Source(io::Error::other(
            "a file the walk did not open cannot be archived",
        ))),
        SourceKind::File(file) => {
            let mut header = header_for(&entry.meta, tar::EntryType::Regular, entry.meta.size);
            let body = ProgressReader {
                inner: &mut *file,
                progress,
            };
            tar.append_data(&mut header, &name, body)
                .map_err(|e| match file.take_read_error() {
                    Some(source) => EntryError::Source(source),
                    None => EntryError::Sink(e),
                })
        }
    }
}

/// The GNU header of an entry, byte for byte what `Header::set_metadata_in_mode(meta,
/// Complete)` made of the entry's `stat` (with the permission bits only in the mode).
fn header_for(meta: &EntryMeta, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    // `as u64`, as the tar crate does: a time before 1970 becomes a huge number, which
    // the header stores in GNU's binary form.
    header.set_mtime(meta.mtime as u64);
    header.set_uid(u64::from(meta.uid));
    header.set_gid(u64::from(meta.gid));
    header.set_mode(meta.mode);
    header.set_entry_type(kind);
    header.set_size(size);
    if let Some(gnu) = header.as_gnu_mut() {
        gnu.set_device_major(0);
        gnu.set_device_minor(0);
    }
    header
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    /// What the writer put in a header before the source existed: the tar crate's own
    /// description of the `stat`, with the permission bits only in the mode.
    /// An uncompressed, single-threaded archive: what the tests read back directly.
    fn plain_tar() -> ArchiveOptions {
        ArchiveOptions {
            compression: Compression::None,
            level: 0,
            threads: 1,
            exclude: vec![],
            precompressed: vec![],
            recipients: None,
        }
    }

    fn header_from_stat(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_mode(std::os::unix::fs::MetadataExt::mode(meta) & 0o7777);
        header.set_entry_type(kind);
        header.set_size(size);
        header
    }

    #[test]
    fn headers_are_the_ones_stat_gave() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/file"), b"twelve bytes").unwrap();
        fs::hard_link(root.join("sub/file"), root.join("twin")).unwrap();
        symlink("sub/file", root.join("link")).unwrap();
        // A time before 1970 takes the header's binary form.
        let old = fs::File::options()
            .write(true)
            .open(root.join("sub/file"))
            .unwrap();
        old.set_modified(std::time::UNIX_EPOCH - std::time::Duration::from_secs(86_400))
            .unwrap();
        drop(old);

        let mut source = StorageSource::new(&root, &[], Cancel::new()).unwrap();
        let mut kinds = Vec::new();
        while let Some(entry) = source.next() {
            let entry = entry.unwrap();
            let stat = if entry.is_root() {
                fs::metadata(&entry.path).unwrap()
            } else {
                fs::symlink_metadata(&entry.path).unwrap()
            };
            let (kind, size) = match &entry.kind {
                SourceKind::Dir => (tar::EntryType::Directory, 0),
                SourceKind::Symlink { .. } => (tar::EntryType::Symlink, 0),
                SourceKind::HardLink { .. } => (tar::EntryType::Link, 0),
                SourceKind::File(_) | SourceKind::Unopened => (tar::EntryType::Regular, stat.len()),
            };
            let ours = header_for(&entry.meta, kind, size);
            let theirs = header_from_stat(&stat, kind, size);
            assert_eq!(
                ours.as_bytes(),
                theirs.as_bytes(),
                "{}",
                entry.rel.display()
            );
            kinds.push((entry.rel.clone(), kind));
            source.finish(entry).unwrap();
        }
        assert_eq!(
            kinds,
            vec![
                (PathBuf::new(), tar::EntryType::Directory),
                (PathBuf::from("link"), tar::EntryType::Symlink),
                (PathBuf::from("sub"), tar::EntryType::Directory),
                (PathBuf::from("sub/file"), tar::EntryType::Regular),
                (PathBuf::from("twin"), tar::EntryType::Link),
            ]
        );
        assert!(source.into_warnings().is_empty());
    }

    /// Cuts `victim` to a few bytes once its first bytes have been read.
    struct TruncateMidRead {
        victim: std::sync::Mutex<Option<PathBuf>>,
    }

    impl Progress for TruncateMidRead {
        fn advance(&self, bytes: u64, _files: u64) {
            if bytes > 0
                && let Some(path) = self.victim.lock().unwrap().take()
            {
                let file = fs::File::options().write(true).open(path).unwrap();
                file.set_len(100).unwrap();
            }
        }
    }

    #[test]
    fn a_file_that_shrinks_while_archived_keeps_the_archive_valid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        fs::create_dir(&root).unwrap();
        let size = 3 * 1024 * 1024 + 7;
        fs::write(root.join("a"), vec![b'a'; size]).unwrap();
        fs::write(root.join("b"), b"after").unwrap();
        let out_path = dir.path().join("out.tar");
        let out = fs::File::create(&out_path).unwrap();
        let opts = plain_tar();
        let progress = TruncateMidRead {
            victim: std::sync::Mutex::new(Some(root.join("a"))),
        };
        let (summary, _) =
            write_archive(&root, out, &out_path, &opts, &progress, &Cancel::new()).unwrap();
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(summary.warnings[0].contains("changed while being backed up"));

        let mut archive = tar::Archive::new(fs::File::open(&out_path).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            let name = entry.path().unwrap().into_owned();
            if name == Path::new("storage/a") {
                assert_eq!(data.len(), size);
                // What was read before the cut, then zeros.
                assert!(data[..100].iter().all(|&b| b == b'a'));
                assert!(data[data.len() - 4096..].iter().all(|&b| b == 0));
            }
            if name == Path::new("storage/b") {
                assert_eq!(data, b"after");
            }
            seen.push(name);
        }
        assert_eq!(
            seen,
            ["storage", "storage/a", "storage/b"].map(PathBuf::from)
        );
    }

    #[test]
    fn a_tree_deeper_than_path_max_archives_what_gnu_tar_extracts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        fs::create_dir(&root).unwrap();
        crate::engine::walk::swaps::deep_tree(&root.join("deep"), 5000);
        let out_path = dir.path().join("out.tar");
        let out = fs::File::create(&out_path).unwrap();
        let opts = plain_tar();
        let (summary, _) = write_archive(
            &root,
            out,
            &out_path,
            &opts,
            &crate::engine::Silent,
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(summary.file_count > 1000, "{summary:?}");
        // Extracted beside the original (the same prefix length), every name is created.
        let into = dir.path().join("x");
        fs::create_dir(&into).unwrap();
        let tar = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&out_path)
            .arg("-C")
            .arg(&into)
            .output()
            .unwrap();
        assert!(
            tar.status.success(),
            "{}",
            String::from_utf8_lossy(&tar.stderr)
        );
        let listed = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&out_path)
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&listed.stdout).lines().count() as u64;
        assert_eq!(names, summary.file_count + summary.dir_count);
    }
}
