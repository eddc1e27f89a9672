//! A backup's parts: every file that makes it up, so listing, verification and retention
//! handle "a backup" without knowing how many files it has. A database or storage backup
//! is its metadata plus one data file; a full backup is its manifest plus its two member
//! backups' parts. Later kinds fit the same list: a snapshot is a manifest plus content
//! objects it shares with other snapshots (`shared` parts, deleted only with the last
//! backup that lists them), and a remote copy is the same relative names under another
//! root.

use std::path::{Path, PathBuf};

use super::format::Format;
use super::metadata::PackRef;
use crate::kind::BackupKind;

/// What a part is to its backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartRole {
    /// The metadata JSON (a full backup's is its manifest). Always deleted first, so a
    /// backup stops being one in a single step.
    Metadata,
    /// Data to read by its `format`.
    Data,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub role: PartRole,
    /// The kind and stem of the backup this file belongs to: the backup itself or, for a
    /// full backup, one of its members.
    pub kind: BackupKind,
    pub of: String,
    /// Path relative to the backup directory: `database/db_backup_X.db`.
    pub name: String,
    /// Where it is now (the backup directory may have moved since it was written).
    pub path: PathBuf,
    /// Bytes as the metadata records them (data parts); metadata files count as 0.
    pub size: u64,
    /// Lower-case hex SHA-256 as recorded (data parts).
    pub checksum: Option<String>,
    /// How to read it (data parts).
    pub format: Option<Format>,
    /// Also listed by other backups (a snapshot's packs): deleted only with the last
    /// backup that lists it.
    pub shared: bool,
}

impl Part {
    /// The metadata file at `path` of the backup `of`.
    pub fn metadata(kind: BackupKind, of: &str, path: &Path) -> Part {
        Part {
            role: PartRole::Metadata,
            kind,
            of: of.to_string(),
            name: relative_name(kind, path),
            path: path.to_path_buf(),
            size: 0,
            checksum: None,
            format: None,
            shared: false,
        }
    }

    /// The data file at `path` of the backup `of`, as its metadata records it.
    pub fn data(
        kind: BackupKind,
        of: &str,
        path: &Path,
        size: u64,
        checksum: &str,
        format: Option<Format>,
    ) -> Part {
        Part {
            role: PartRole::Data,
            size,
            checksum: Some(checksum.to_string()),
            format,
            ..Part::metadata(kind, of, path)
        }
    }
}

impl Part {
    /// A pack of the content store that the snapshot `of` needs.
    pub fn pack(kind: BackupKind, of: &str, root: &Path, pack: &PackRef, sealed: bool) -> Part {
        let name = super::pack_name(&pack.id, sealed);
        Part {
            role: PartRole::Data,
            kind,
            of: of.to_string(),
            path: root.join(&name),
            name,
            size: pack.size,
            checksum: Some(pack.checksum.clone()),
            format: None,
            shared: true,
        }
    }
}

/// `database/db_backup_X.db`: a file's name relative to the backup directory.
fn relative_name(kind: BackupKind, path: &Path) -> String {
    format!(
        "{}/{}",
        kind.dir_name(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    )
}

/// The parts of one backup, metadata first: the order they are deleted in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupParts(Vec<Part>);

impl BackupParts {
    pub fn push(&mut self, part: Part) {
        self.0.push(part);
    }
    pub fn extend(&mut self, parts: &BackupParts) {
        self.0.extend(parts.0.iter().cloned());
    }
    pub fn iter(&self) -> impl Iterator<Item = &Part> {
        self.0.iter()
    }
    /// The parts holding data, in the backup's order (a full backup's: as its manifest).
    pub fn data(&self) -> impl Iterator<Item = &Part> {
        self.0.iter().filter(|p| p.role == PartRole::Data)
    }
    /// Bytes of data the backup occupies (what deleting it frees, shared parts aside).
    pub fn data_bytes(&self) -> u64 {
        self.data().filter(|p| !p.shared).map(|p| p.size).sum()
    }
    pub fn contains_path(&self, path: &Path) -> bool {
        self.0.iter().any(|p| p.path == path)
    }
}
