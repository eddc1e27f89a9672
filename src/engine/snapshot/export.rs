//! `export`: a snapshot written out as a plain `.tar.zst` — the archive a
//! `storage_format = "archive"` backup of the same tree would be (entries named
//! `<storage dir>/<path>`, GNU headers), for `tar -x` habits and the seed's manual steps.
//! The snapshot is read (and so checked) in the same pass; the archive is written under a
//! `.partial` name and renamed only when complete.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::read::read_snapshot;
use crate::catalog::PartialFile;
use crate::engine::archive::{EntryKind, EntrySink, SafeEntry};
use crate::engine::{Cancel, Progress};
use crate::error::{Error, IoContext, Result};

struct TarSink<W: Write> {
    tar: tar::Builder<W>,
    out: std::path::PathBuf,
}

impl<W: Write> EntrySink for TarSink<W> {
    fn entry(&mut self, e: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        let w = |err| Error::io("write", &self.out, err);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(e.mtime);
        header.set_uid(e.uid);
        header.set_gid(e.gid);
        header.set_mode(e.mode);
        let (kind, size) = match &e.kind {
            EntryKind::Dir => (tar::EntryType::Directory, 0),
            EntryKind::File => (tar::EntryType::Regular, e.size),
            EntryKind::Symlink(_) => (tar::EntryType::Symlink, 0),
            EntryKind::Hardlink(_) => (tar::EntryType::Link, 0),
        };
        header.set_entry_type(kind);
        header.set_size(size);
        // The attributes as GNU tar `--xattrs` writes them, as an archive backup has them.
        if !e.xattrs.is_empty() {
            let records = crate::engine::xattrs::pax_records(&e.xattrs);
            self.tar
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(w)?;
        }
        match &e.kind {
            EntryKind::Symlink(t) | EntryKind::Hardlink(t) => {
                self.tar.append_link(&mut header, &e.path, t).map_err(w)
            }
            EntryKind::Dir => self
                .tar
                .append_data(&mut header, &e.path, io::empty())
                .map_err(w),
            EntryKind::File => self.tar.append_data(&mut header, &e.path, data).map_err(w),
        }
    }
}

/// Write the snapshot `tree` (checked against `expected`) as a zstd-compressed tar at
/// `out`. Returns the archive's size.
pub fn export_snapshot(
    tree: &Path,
    expected: (Option<&str>, Option<&Path>),
    out: &Path,
    level: i32,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<u64> {
    let (partial, file) = PartialFile::create(out, 0o600)?;
    let w = |e| Error::io("write", partial.temp_path(), e);
    let mut encoder =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, file), level)
            .map_err(w)?;
    encoder.include_checksum(true).map_err(w)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let _ = encoder.multithread(threads);
    let mut sink = TarSink {
        tar: tar::Builder::new(encoder),
        out: partial.temp_path().to_path_buf(),
    };
    read_snapshot(tree, expected, progress, cancel, &mut sink)?;
    let encoder = sink.tar.into_inner().map_err(w)?;
    let file: File = encoder
        .finish()
        .map_err(w)?
        .into_inner()
        .map_err(|e| w(e.into_error()))?;
    partial.sync(&file)?;
    let size = file.metadata().ctx("stat", partial.temp_path())?.len();
    // The archive keeps the snapshot's owner-only mode until the operator says otherwise.
    partial.rename()?;
    Ok(size)
}
