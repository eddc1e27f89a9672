//! `ls`: what a backup holds without restoring it. A storage archive (or a full backup's
//! storage part) streams once through the archive reader — the same safety and checksum
//! checks as `verify`, so what `ls` shows is what `restore` would write — and each entry
//! under an optional path prefix is handed on as it passes. A database backup has no
//! files: its tables and their row counts are shown instead.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::archive::{EntryKind, EntrySink, SafeEntry};
use super::decrypt::{Reading, SqliteFile};
use super::restore::data_format;
use super::verify::{ArchiveExpectation, full_parts, read_storage_archive};
use super::{Cancel, Progress};
use crate::catalog::{BackupEntry, FormatKind, Listing};
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// One archive entry as `ls --json` prints it. The field names and value forms are part of
/// the documented interface (README, Commands → `ls`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListedEntry {
    /// Relative to the storage root, `/`-separated; directories end without a slash.
    pub path: String,
    /// `file`, `dir`, `symlink` or `hardlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Bytes of content (0 for directories and links).
    pub size: u64,
    /// Permission bits in octal, e.g. `0644`.
    pub mode: String,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Where a symlink points (as stored), or the entry a hard link shares data with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl ListedEntry {
    /// `e` with its path (and a hard link's target) relative to `top`.
    fn from_safe(e: &SafeEntry, path: &Path, top: &Path) -> Self {
        let (kind, link_target) = match &e.kind {
            EntryKind::File => ("file", None),
            EntryKind::Dir => ("dir", None),
            EntryKind::Symlink(t) => ("symlink", Some(t.to_string_lossy().into_owned())),
            EntryKind::Hardlink(t) => {
                let t = t.strip_prefix(top).unwrap_or(t);
                ("hardlink", Some(t.to_string_lossy().into_owned()))
            }
        };
        ListedEntry {
            path: path.to_string_lossy().into_owned(),
            kind,
            size: if kind == "file" { e.size } else { 0 },
            mode: format!("{:04o}", e.mode & 0o7777),
            mtime: e.mtime,
            link_target,
        }
    }
}

/// A table of a database backup and its row count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableRows {
    pub name: String,
    pub rows: u64,
}

/// The archive a backup's files are in: a storage backup's own, a full backup's storage
/// part. A database backup (or a full one without storage) has none.
pub fn storage_archive<'a>(
    entry: &'a BackupEntry,
    listing: &'a Listing,
) -> Result<Option<&'a BackupEntry>> {
    Ok(match entry.kind {
        BackupKind::Storage => Some(entry),
        BackupKind::Database => None,
        BackupKind::Full => full_parts(entry, listing)?
            .into_iter()
            .find(|p| p.kind == BackupKind::Storage),
    })
}

/// `PATH` as a prefix of archive paths: leading `/` and `./` and a trailing `/` do not
/// matter; `..` is refused (no archive entry has one).
pub fn path_prefix(text: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Refused(format!(
                    "the path \"{text}\" leaves the storage root; give a path as `ls` shows it, e.g. client_1/"
                )));
            }
        }
    }
    Ok(out)
}

/// Stream the entries of `archive` (a storage backup) that lie under `prefix` (the prefix
/// itself included; the empty prefix is everything) to `each`, in archive order. Paths are
/// relative to the storage directory, as `restore` puts them back: our archives hold one
/// top-level directory (the storage directory's name), which is left out. The whole
/// archive is read and checked, so a damaged one fails after the entries before the damage.
pub fn list_archive(
    archive: &BackupEntry,
    identity: Option<&Path>,
    prefix: &Path,
    progress: &dyn Progress,
    cancel: &Cancel,
    each: &mut dyn FnMut(ListedEntry),
) -> Result<u64> {
    let format = data_format(archive, FormatKind::Archive)?;
    let reading = Reading {
        format: &format,
        identity,
    };
    let expect = ArchiveExpectation {
        checksum: Some(&archive.metadata.checksum),
        file_count: archive.metadata.recorded_file_count(),
    };
    let mut sink = PrefixSink {
        prefix,
        each,
        top: None,
        shown: 0,
    };
    read_storage_archive(
        &archive.data_path,
        reading,
        expect,
        progress,
        cancel,
        &mut sink,
    )?;
    Ok(sink.shown)
}

/// Hands on the entries under a prefix; their data is left for the reader to skip.
struct PrefixSink<'a> {
    prefix: &'a Path,
    each: &'a mut dyn FnMut(ListedEntry),
    /// The archive's top-level directory: its first entry when that is a directory with
    /// one component (an archive not made by us may have none; its paths stay as stored).
    top: Option<PathBuf>,
    shown: u64,
}

impl EntrySink for PrefixSink<'_> {
    fn entry(&mut self, entry: &SafeEntry, _data: &mut dyn std::io::Read) -> Result<()> {
        let top = self.top.get_or_insert_with(|| {
            let single = entry.path.components().count() == 1;
            if entry.kind == EntryKind::Dir && single {
                entry.path.clone()
            } else {
                PathBuf::new()
            }
        });
        let path = entry.path.strip_prefix(&*top).unwrap_or(&entry.path);
        if path.as_os_str().is_empty() {
            return Ok(()); // the top-level directory itself
        }
        if path.starts_with(self.prefix) {
            self.shown += 1;
            (self.each)(ListedEntry::from_safe(entry, path, top));
        }
        Ok(())
    }
}

/// The tables of a database backup with their row counts, read-only (an encrypted one
/// from a private decrypted copy, removed afterwards).
pub fn database_tables(entry: &BackupEntry, identity: Option<&Path>) -> Result<Vec<TableRows>> {
    let path = &entry.data_path;
    let format = data_format(entry, FormatKind::Sqlite)?;
    let sqlite = SqliteFile::open(path, &format, identity)?;
    let failed = |e: rusqlite::Error| Error::verify(path, "database readable", e.to_string());
    let conn = rusqlite::Connection::open_with_flags(
        sqlite.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(failed)?;
    names
        .into_iter()
        .map(|name| {
            let quoted = name.replace('"', "\"\"");
            let rows: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |r| {
                    r.get(0)
                })
                .map_err(failed)?;
            Ok(TableRows {
                name,
                rows: u64::try_from(rows).unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_ignore_slashes_and_refuse_parent_dirs() {
        assert_eq!(path_prefix("client_1/").unwrap(), PathBuf::from("client_1"));
        assert_eq!(path_prefix("/./a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(path_prefix("").unwrap(), PathBuf::new());
        assert!(path_prefix("a/../b").is_err());
        // Component-wise: client_1 does not match client_10.
        assert!(!Path::new("client_10/x").starts_with(path_prefix("client_1").unwrap()));
    }
}
