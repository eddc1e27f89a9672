//! The metadata of a backup on an encrypted target (docs/design.md §5): what a target and anyone
//! who reads it see is type, time, sizes, checksums (of the stored ciphertext) and the
//! format with the recipients' fingerprints; the local metadata whole — paths, host, file
//! counts, warnings that name files — travels beside it sealed, as `sealed`: base64 of
//! its JSON encrypted with age to the same recipients.
//!
//! The clear fields are enough for everything the server does without a key: list,
//! check sizes and checksums, retain, fetch into the backup directory, verify there.

use base64::Engine as _;

use crate::catalog::{BackupMetadata, FORMAT_VERSION, PartRef, SnapshotInfo};
use crate::encryption::{DecryptError, Identities, Recipients};
use crate::engine::backup::parts_checksum;

/// `sealed` for `metadata`: its JSON, encrypted to `recipients`, in base64.
pub fn seal(recipients: &Recipients, metadata: &BackupMetadata) -> std::io::Result<String> {
    let json = serde_json::to_vec(metadata).map_err(std::io::Error::other)?;
    let mut age = recipients.encrypt(Vec::new())?;
    std::io::Write::write_all(&mut age, &json)?;
    let ciphertext = age.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ciphertext))
}

/// The metadata `seal` sealed, opened with an identity of one of its recipients.
pub fn unseal(identities: &Identities, sealed: &str) -> Result<BackupMetadata, DecryptError> {
    crate::encryption::unseal_json(identities, sealed)
}

/// The clear remote metadata of a database or storage backup whose data object is
/// `file_name` (bare: `db_backup_X.db.age`), `size` bytes hashing to `sha256`.
/// Err: the local metadata records no usable format (an incomplete backup).
pub fn clear_single(
    local: &BackupMetadata,
    file_name: &str,
    size: u64,
    sha256: &str,
    fingerprints: Vec<String>,
    sealed: String,
) -> Result<BackupMetadata, String> {
    let format = local.format()?;
    let format = if format.is_encrypted() {
        format
    } else {
        format.encrypted(fingerprints)
    };
    let mut m = blanked(local, sealed);
    m.backup_path = file_name.to_string();
    m.file_size = size;
    m.checksum = sha256.to_string();
    m.format = Some(format);
    Ok(m)
}

/// The clear remote manifest of a full backup whose members were stored as `parts` (their
/// remote file names, sizes and checksums).
pub fn clear_manifest(
    local: &BackupMetadata,
    parts: Vec<PartRef>,
    sealed: String,
) -> BackupMetadata {
    let mut m = blanked(local, sealed);
    let file = std::path::Path::new(&local.backup_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.backup_path = file;
    m.file_size = parts.iter().map(|p| p.file_size).sum();
    m.checksum = parts_checksum(&parts);
    // The manifest itself is JSON, not an age file: its format stays a manifest's; the
    // members' metadata say how their data is encrypted.
    m.format = local.format.clone();
    m.parts = parts;
    m
}

/// The clear metadata of `local` on an encrypted target, field by field from an
/// allow-list — what listing, retention, prune and verification need without a key —
/// and nothing else: a field added to the metadata later stays sealed until it is named
/// here. Clear: type, timestamp, creation time, sizes and checksums of the stored
/// (encrypted) objects, the format with the recipients' fingerprints, the full backup it
/// belongs to, why it was taken, and a snapshot's packs (ids, sizes, checksums: prune
/// needs them). Sealed only: paths, host, file counts, durations, warnings, integrity
/// results, a snapshot's parent and how many files or chunks it read, kept or added.
fn blanked(local: &BackupMetadata, sealed: String) -> BackupMetadata {
    BackupMetadata {
        timestamp: local.timestamp.clone(),
        kind: local.kind,
        original_path: String::new(),
        backup_path: String::new(),
        // Set by the callers to the stored object's.
        file_size: 0,
        checksum: String::new(),
        created_at: local.created_at.clone(),
        file_count: 0,
        format_version: local.format_version.max(FORMAT_VERSION),
        format: None,
        checksum_algorithm: local.checksum_algorithm.clone(),
        compression: local.compression.clone(),
        duration_ms: 0,
        uncompressed_size: 0,
        content_size: 0,
        tool_version: String::new(),
        hostname: String::new(),
        warnings: Vec::new(),
        integrity_check: None,
        parts: Vec::new(),
        part_of: local.part_of.clone(),
        reason: local.reason.clone(),
        sealed: Some(sealed),
        // The packs are set by the caller (as the target holds them); nothing else of
        // what a snapshot read or added is said in clear.
        snapshot: local.snapshot.as_ref().map(|_| SnapshotInfo::default()),
        // Inside the sealed copy with the rest.
        repaired: None,
        earlier_checksums: Vec::new(),
        data_object: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Format;
    use crate::config::Compression;
    use crate::kind::BackupKind;
    use age::secrecy::ExposeSecret;

    fn local() -> BackupMetadata {
        let mut m: BackupMetadata = serde_json::from_value(serde_json::json!({
            "timestamp": "20261201_020000", "type": "storage",
            "original_path": "/srv/app/storage-secret-client",
            "backup_path": "/srv/backups/storage/storage_backup_20261201_020000.tar.zst",
            "file_size": 1234, "checksum": "ab".repeat(32),
            "created_at": "2026-12-01T02:00:00+00:00", "file_count": 17,
            "format_version": 2, "hostname": "prod-host-1", "uncompressed_size": 99999,
            "warnings": ["client_7/secret-name.mp4 changed while read"],
            "format": {"kind": "archive", "compression": "zstd", "encryption": null}
        }))
        .unwrap();
        m.snapshot = Some(SnapshotInfo {
            parent: Some("storage_snapshot_20261130_020000".into()),
            packs: Vec::new(),
            added_bytes: 4242,
            chunks: 4242,
            added_chunks: 4242,
            unchanged_files: 4242,
            read_files: 4242,
            list_parts: 4242,
            added_list_parts: 4242,
        });
        m
    }

    #[test]
    fn the_clear_metadata_says_nothing_of_content_and_the_sealed_part_opens() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, id.to_string().expose_secret()).unwrap();
        let public = id.to_public().to_string();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let local = local();
        let sealed = seal(&recipients, &local).unwrap();
        let clear = clear_single(
            &local,
            "storage_backup_20261201_020000.tar.zst.age",
            2000,
            &"cd".repeat(32),
            recipients.fingerprints(),
            sealed,
        )
        .unwrap();
        // The clear fields (the sealed base64 is random and may show any digits).
        let shown = BackupMetadata {
            sealed: None,
            ..clear.clone()
        };
        let text = serde_json::to_string(&shown).unwrap();
        for secret in [
            "storage-secret-client",
            "prod-host-1",
            "secret-name",
            "/srv/",
            "storage_snapshot_20261130_020000",
            "4242",
            "99999",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(clear.file_size, 2000);
        assert_eq!(clear.uncompressed_size, 0);
        assert_eq!(
            clear.format,
            Some(Format::archive(Compression::Zstd).encrypted(recipients.fingerprints()))
        );
        assert_eq!(clear.kind, BackupKind::Storage);
        let ids = Identities::load(&key).unwrap();
        let opened = unseal(&ids, clear.sealed.as_deref().unwrap()).unwrap();
        assert_eq!(opened, local);
    }

    #[test]
    fn a_manifest_carries_its_members_remote_names_and_checksums() {
        let mut full = local();
        full.kind = BackupKind::Full;
        full.backup_path = "/srv/backups/full/full_backup_20261201_020000.json".into();
        full.format = Some(Format::manifest());
        let parts = vec![PartRef {
            kind: BackupKind::Database,
            file_name: "db_backup_20261201_020000.db.age".into(),
            backup_path: "db_backup_20261201_020000.db.age".into(),
            file_size: 10,
            checksum: "ef".repeat(32),
        }];
        let m = clear_manifest(&full, parts.clone(), "sealed".into());
        assert_eq!(m.backup_path, "full_backup_20261201_020000.json");
        assert_eq!(m.checksum, parts_checksum(&parts));
        assert_eq!(m.file_size, 10);
        assert_eq!(m.original_path, "");
        assert_eq!(m.format, Some(Format::manifest()));
    }
}
