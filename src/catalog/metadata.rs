//! The metadata JSON beside every backup (docs/design.md §2): every field the seed wrote, plus what
//! an operator needs to trust and restore it. Documented field by field in README.md.
//! Seed-made metadata (no `format_version`) still loads: the added fields default.
//! Version 2 added the `format` object; a version-1 or seed file gets its format from its
//! data file's name ([`BackupMetadata::format`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::format::{Format, format_from_name};
use crate::kind::BackupKind;

/// Version of the metadata layout written by this build. Seed files read as 0; 1 had no
/// `format`; 2 records it.
pub const FORMAT_VERSION: u32 = 2;

/// The first version whose metadata records the data file's format.
const FORMAT_RECORDED_SINCE: u32 = 2;

/// One part of a full backup, as named by its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartRef {
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// File name of the part's data file, relative to its kind's directory.
    pub file_name: String,
    /// Absolute path at creation time (informational, like the seed's `backup_path`).
    pub backup_path: String,
    pub file_size: u64,
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupMetadata {
    // --- the seed's fields ---
    /// `YYYYMMDD_HHMMSS` (with `_N` appended when two backups share a second).
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    pub original_path: String,
    pub backup_path: String,
    pub file_size: u64,
    /// Lower-case hex SHA-256 of the data file (for a full backup: of its parts list).
    pub checksum: String,
    /// RFC 3339 with UTC offset.
    pub created_at: String,
    pub file_count: u64,

    // --- added by vertex-backup ---
    #[serde(default)]
    pub format_version: u32,
    /// What the data file is and how to read it (format_version 2 on). Readers use
    /// [`Self::format`], never this field or the file name directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default = "default_algorithm")]
    pub checksum_algorithm: String,
    /// zstd | gzip | none: the archive's compression (storage; for full, its storage
    /// part's); none for a database.
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub duration_ms: u64,
    /// Bytes before compression: the tar stream for storage, the database for database.
    #[serde(default)]
    pub uncompressed_size: u64,
    /// Storage (and a full backup's storage part): the bytes of the regular files it
    /// holds, what a restore writes. 0 when not recorded (backups made before it was).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub content_size: u64,
    #[serde(default)]
    pub tool_version: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// `PRAGMA quick_check`/`integrity_check` result on the copy ("ok"), database only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_check: Option<String>,
    /// Full backups: the parts with their own checksums.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartRef>,
    /// Parts of a full backup: the manifest's file stem (`full_backup_…`). Such a part is
    /// rotated with its full backup, never on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
    /// Why it was taken when not by plan: "pre-restore" for the safety copy a restore makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Remote copies on an encrypted target only: base64 of the age encryption (to the
    /// backup's recipients) of the full local metadata JSON. The clear fields beside it
    /// then say only type, time, sizes, checksums and format; whatever describes content
    /// (paths, host, file counts, warnings naming files) travels in here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Snapshots only: the packs of the content store it needs and what it added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// A snapshot (or full backup) `repair` wrote in place of a damaged one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<RepairNote>,
    /// The checksums it had before repacking the store rewrote its entry list (a full
    /// backup's: a member's) to point at the packs its chunks moved to, oldest first:
    /// copies uploaded before still carry one of them, and hold the same files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_checksums: Vec<String>,
    /// Metadata objects on a target only: the file name of the data object when it is not
    /// the local one's (a snapshot's entry list uploaded again after repacking rewrote it,
    /// `storage_snapshot_X.r1.tree.zst`, so that the copy already there stays whole until
    /// this metadata replaces its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_object: Option<String>,
}

/// What `repair` did to make this backup from a damaged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepairNote {
    /// The damaged backup's name as `list` prints it; its metadata and entry list are
    /// kept in `damaged/STEM/` under the backup directory.
    pub from: String,
    /// When (RFC 3339).
    pub at: String,
    /// Files left out because their data is gone (the next backup reads them again).
    pub lost_files: u64,
    /// Chunks found in another pack and pointed there.
    pub relocated_chunks: u64,
}

/// What a snapshot needs from the content store, readable without opening its entry list
/// (so rotation can prune by it), and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// The snapshot it was compared with (its stem): unchanged files were taken from it
    /// without being read.
    #[serde(default)]
    pub parent: Option<String>,
    /// Every pack holding a chunk of its files: kept while this snapshot is.
    pub packs: Vec<PackRef>,
    /// Bytes of the chunks it added to the store (compressed, as stored).
    pub added_bytes: u64,
    /// Chunks it references, and how many of them it added.
    pub chunks: u64,
    pub added_chunks: u64,
    /// Files taken from the parent unread (size, mtime, ctime and inode unchanged).
    pub unchanged_files: u64,
    /// Files read (new or changed).
    pub read_files: u64,
    /// Parts its entry list is stored in (chunks in the packs, cut at directory
    /// boundaries), and how many of them it added: the rest were stored already (their
    /// entries unchanged). Both 0 for an entry list of version 1, which holds its entries
    /// itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub list_parts: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub added_list_parts: u64,
}

/// One pack of the content store: `store/packs/<id[..2]>/<id>.pack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackRef {
    pub id: String,
    pub size: u64,
    /// SHA-256 of the pack file.
    pub checksum: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_algorithm() -> String {
    "sha256".into()
}

impl BackupMetadata {
    /// Whether it is a snapshot (or a full backup whose parts are): its data file is an
    /// entry list of a few KiB whatever it holds, so the size that means something is
    /// what it holds ([`Self::shown_size`]) and what it added to the store.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some() || self.parts.iter().any(|p| p.file_name.contains(".tree.zst"))
    }

    /// The size to show an operator. A snapshot's is its logical size: the bytes of its
    /// files (the database's pages), as an archive's uncompressed size — not its entry
    /// list's. An archive or a database copy shows its file's size (what it takes).
    pub fn shown_size(&self) -> u64 {
        if self.is_snapshot() && self.uncompressed_size > 0 {
            self.uncompressed_size
        } else {
            self.file_size
        }
    }

    /// The files and links its archive holds, when the metadata says: a copy whose
    /// metadata came sealed from an offsite target keeps the real count encrypted (its
    /// clear `file_count` is 0).
    pub fn recorded_file_count(&self) -> Option<u64> {
        self.sealed.is_none().then_some(self.file_count)
    }

    /// The data file's format: as recorded (format_version 2 on), else — a version-1 or
    /// seed file — as its data file's name implies, the way those builds read it. Err: a
    /// version-2 file without one, or an old name that is no known archive's.
    pub fn format(&self) -> Result<Format, String> {
        if let Some(f) = &self.format {
            return Ok(f.clone());
        }
        if self.format_version >= FORMAT_RECORDED_SINCE {
            return Err(format!(
                "its metadata (format_version {}) records no format",
                self.format_version
            ));
        }
        let name = Path::new(&self.backup_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format_from_name(self.kind, &name).ok_or_else(|| {
            format!("its data file name {name:?} does not end in .tar.zst, .tar.gz or .tar")
        })
    }

    pub fn is_pre_restore(&self) -> bool {
        self.reason.as_deref() == Some("pre-restore")
    }

    /// Whether `checksum` is this backup's, now or before repacking rewrote it (the same
    /// files either way): what a manifest or a copy made earlier may still record.
    pub fn has_or_had_checksum(&self, checksum: &str) -> bool {
        self.checksum == checksum || self.earlier_checksums.iter().any(|c| c == checksum)
    }

    /// Creation time; seed files without an offset are read as local time.
    pub fn created(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
        if let Ok(t) = DateTime::parse_from_rfc3339(&self.created_at) {
            return Some(t);
        }
        let naive = NaiveDateTime::parse_from_str(&self.created_at, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.fixed_offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_metadata_still_loads() {
        let seed = r#"{
          "timestamp": "20240101_120000",
          "type": "database",
          "original_path": "/app/data/app_data.db",
          "backup_path": "/app/backups/database/db_backup_20240101_120000.db",
          "file_size": 2048576,
          "checksum": "a1b2c3d4",
          "created_at": "2024-01-01T12:00:00",
          "file_count": 150
        }"#;
        let m: BackupMetadata = serde_json::from_str(seed).unwrap();
        assert_eq!(m.format_version, 0);
        assert_eq!(m.checksum_algorithm, "sha256");
        assert!(m.created().is_some());
        // No format recorded: read from the name, as the seed's reader did.
        assert_eq!(m.format(), Ok(Format::sqlite()));
    }

    #[test]
    fn version_2_takes_the_recorded_format_whatever_the_name() {
        let v2 = r#"{
          "timestamp": "20240101_120000", "type": "storage",
          "original_path": "/app/storage",
          "backup_path": "/b/storage/storage_backup_20240101_120000.tar.gz",
          "file_size": 1, "checksum": "00", "created_at": "2024-01-01T12:00:00Z",
          "file_count": 1, "format_version": 2,
          "format": {"kind": "archive", "compression": "zstd", "encryption": null}
        }"#;
        let mut m: BackupMetadata = serde_json::from_str(v2).unwrap();
        assert_eq!(
            m.format(),
            Ok(Format::archive(crate::config::Compression::Zstd))
        );
        m.format = None;
        assert!(m.format().unwrap_err().contains("records no format"));
        m.format_version = 1;
        assert_eq!(
            m.format(),
            Ok(Format::archive(crate::config::Compression::Gzip))
        );
    }
}
