//! What a backup's data file is and how to read it: the `format` object of the metadata
//! (format_version 2 on), and — for version-1 and seed metadata, which have none — the
//! format its file name implies. [`format_from_name`] is the one place a format is read
//! from a name; every reader takes the format from [`BackupMetadata::format`].
//!
//! [`BackupMetadata::format`]: super::BackupMetadata::format

use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::kind::BackupKind;

/// How a backup's data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// A SQLite database file (a database backup).
    Sqlite,
    /// A tar archive (a storage backup), compressed as `compression` says.
    Archive,
    /// A JSON manifest naming other files (a full backup names its two member backups).
    Manifest,
    /// A snapshot: the data file is its entry list (`.tree.zst`), whose files' contents
    /// are chunks in packs of the content store shared by all snapshots.
    Snapshot,
}

impl FormatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FormatKind::Sqlite => "sqlite",
            FormatKind::Archive => "archive",
            FormatKind::Manifest => "manifest",
            FormatKind::Snapshot => "snapshot",
        }
    }
}

/// Encryption of the data file: `{"scheme": "age", "recipients": [fingerprints]}`. The
/// data file is then an age file (`….age`) whose plaintext is what `kind` and
/// `compression` describe; its checksum is of the stored (encrypted) bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Encryption {
    /// `age`.
    pub scheme: String,
    /// Fingerprints of the recipients' public keys (never the keys' secrets).
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// The one encryption scheme this build writes and reads.
pub const AGE: &str = "age";

/// The metadata's `format` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Format {
    pub kind: FormatKind,
    /// The data file's compression; `none` for a database and a manifest.
    pub compression: Compression,
    /// `null` when the data file is not encrypted.
    pub encryption: Option<Encryption>,
}

impl Format {
    pub fn sqlite() -> Self {
        Format::plain(FormatKind::Sqlite, Compression::None)
    }
    pub fn archive(compression: Compression) -> Self {
        Format::plain(FormatKind::Archive, compression)
    }
    /// A snapshot's entry list: zstd-compressed JSON lines.
    pub fn snapshot() -> Self {
        Format::plain(FormatKind::Snapshot, Compression::Zstd)
    }
    pub fn manifest() -> Self {
        Format::plain(FormatKind::Manifest, Compression::None)
    }
    fn plain(kind: FormatKind, compression: Compression) -> Self {
        Format {
            kind,
            compression,
            encryption: None,
        }
    }

    /// The format a backup of `kind` is written in (the kinds map one to one today).
    pub fn of_kind(kind: BackupKind, compression: Compression) -> Self {
        match kind {
            BackupKind::Database => Format::sqlite(),
            BackupKind::Storage => Format::archive(compression),
            BackupKind::Full => Format::manifest(),
        }
    }

    /// The same format, encrypted with age to the recipients with these fingerprints.
    pub fn encrypted(mut self, fingerprints: Vec<String>) -> Self {
        self.encryption = Some(Encryption {
            scheme: AGE.into(),
            recipients: fingerprints,
        });
        self
    }

    /// Whether the backup is a snapshot (its data lives in the content store).
    pub fn is_snapshot(&self) -> bool {
        self.kind == FormatKind::Snapshot
    }

    /// Whether the data file is an age file.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Why this build cannot read data in this format, if it cannot: an encryption scheme
    /// other than age.
    pub fn unreadable(&self) -> Option<String> {
        self.encryption.as_ref().filter(|e| e.scheme != AGE).map(|e| {
            format!(
                "it is encrypted with `{}`, which this build of vertex-backup cannot decrypt (it reads age)",
                e.scheme
            )
        })
    }
}

/// The format of a backup whose metadata does not record one (format_version ≤ 1), from
/// its data file's name, as builds before format_version 2 read it: a database is a
/// SQLite file, a full backup is its manifest, and a storage archive's compression is
/// its extension (`.tar.zst`, `.tar.gz`/`.tgz`, `.tar`). `None`: the name is no archive's.
pub fn format_from_name(kind: BackupKind, file_name: &str) -> Option<Format> {
    match kind {
        BackupKind::Database => Some(Format::sqlite()),
        BackupKind::Full => Some(Format::manifest()),
        BackupKind::Storage => {
            let compression = if file_name.ends_with(".tar.zst") {
                Compression::Zstd
            } else if file_name.ends_with(".tar.gz") || file_name.ends_with(".tgz") {
                Compression::Gzip
            } else if file_name.ends_with(".tar") {
                Compression::None
            } else {
                return None;
            };
            Some(Format::archive(compression))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_names_give_the_formats_they_were_read_as() {
        let storage = |name| format_from_name(BackupKind::Storage, name).map(|f| f.compression);
        assert_eq!(storage("storage_backup_X.tar.zst"), Some(Compression::Zstd));
        assert_eq!(storage("storage_backup_X.tar.gz"), Some(Compression::Gzip));
        assert_eq!(storage("storage_backup_X.tgz"), Some(Compression::Gzip));
        assert_eq!(storage("storage_backup_X.tar"), Some(Compression::None));
        assert_eq!(storage("storage_backup_X.zip"), None);
        assert_eq!(
            format_from_name(BackupKind::Database, "db_backup_X.db"),
            Some(Format::sqlite())
        );
        assert_eq!(
            format_from_name(BackupKind::Full, "full_backup_X.json"),
            Some(Format::manifest())
        );
    }

    #[test]
    fn the_format_object_has_a_place_for_encryption() {
        let f = Format::archive(Compression::Zstd);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "archive", "compression": "zstd", "encryption": null})
        );
        assert!(f.unreadable().is_none());
        let encrypted: Format = serde_json::from_value(serde_json::json!({
            "kind": "archive", "compression": "zstd",
            "encryption": {"scheme": "age", "recipients": ["sha256:abc"]}
        }))
        .unwrap();
        assert!(encrypted.is_encrypted());
        assert_eq!(encrypted, f.clone().encrypted(vec!["sha256:abc".into()]));
        // age is read (with an identity); another scheme is refused by name.
        assert!(encrypted.unreadable().is_none());
        let mut other = encrypted.clone();
        other.encryption.as_mut().unwrap().scheme = "gpg".into();
        assert!(other.unreadable().unwrap().contains("gpg"));
    }
}
