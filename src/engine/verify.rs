//! Proving a backup can be restored, without restoring it (docs/design.md §3): the checksum, then
//! what only a real read shows — the database opens and passes `integrity_check`; the
//! archive decompresses end to end and every entry is safe to extract; a full backup's
//! manifest matches its parts and each part passes its own checks. Every data part is
//! read by the format its metadata records (never guessed from its name); an encrypted
//! one is decrypted with the identity given, its stored bytes' checksum checked either
//! way ([`Keys`]). Changes nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::archive::{self, ArchiveStats, Drain, EntrySink};
use super::backup::parts_checksum;
use super::database::integrity_check;
use super::decrypt::{Reading, SqliteFile};
use super::hashing::sha256_file;
use super::snapshot::{
    self,
    check::{Depth, PackRun, RecordedPacks, check_snapshot},
};
use super::{Cancel, Progress};
use crate::catalog::{BackupEntry, FormatKind, Listing, Part, Verdict};
use crate::config::IntegrityCheck;
use crate::error::{Error, Result};
use crate::kind::BackupKind;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The check could not be made here (an encrypted backup and no identity, or one that
    /// is not among its recipients): neither a failure nor a pass of the backup.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_checked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup's stem (`db_backup_…`).
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    pub path: PathBuf,
    pub ok: bool,
    pub checks: Vec<Check>,
    pub bytes_read: u64,
    pub duration_ms: u64,
    /// Every check could be made (false: some were not, see `checks[].not_checked`).
    pub fully_checked: bool,
    /// The checksum its metadata recorded when verification began.
    #[serde(skip)]
    pub checksum: String,
}

impl VerifyReport {
    /// What to remember of this run: a failure always; a pass only when every check
    /// could be made — a partial check that passed says nothing new about the contents,
    /// so an earlier verdict (good or failed) stands.
    pub fn verdict(&self, at: &str) -> Option<Verdict> {
        (!self.ok || self.fully_checked).then(|| Verdict {
            ok: self.ok,
            at: at.to_string(),
            failure: self.failure(),
            checksum: Some(self.checksum.clone()),
        })
    }

    /// Why some checks could not be made, when some could not.
    pub fn not_checked(&self) -> Option<String> {
        let why: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.not_checked)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The first failed check, as "check: detail".
    pub fn failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
    }
}

fn passed(name: &str) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: String::new(),
        not_checked: false,
    }
}

/// A check that could not be made, and why.
fn not_checked(name: &str, why: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: why.into(),
        not_checked: true,
    }
}

/// The checksum of the stored bytes (of the ciphertext, for an encrypted backup), when
/// one is expected; needs no key.
pub fn stored_checksum(path: &Path, expected: Option<&str>) -> Result<(Vec<Check>, u64)> {
    let (sum, bytes) =
        sha256_file(path).map_err(|e| Error::verify(path, "readable", crate::error_chain(&e)))?;
    let Some(expected) = expected else {
        return Ok((Vec::new(), bytes));
    };
    if !sum.eq_ignore_ascii_case(expected) {
        return Err(Error::verify(
            path,
            "checksum",
            format!("expected sha256 {expected}, file has {sum}"),
        ));
    }
    Ok((vec![passed("checksum")], bytes))
}

/// Checksum and full integrity check of a database backup file; an encrypted one is
/// decrypted (all of it, so every chunk is authenticated) into a private temporary copy
/// for SQLite, removed afterwards.
pub fn verify_database_file(
    path: &Path,
    reading: Reading,
    expected: Option<&str>,
) -> Result<(Vec<Check>, u64)> {
    let (checks, bytes, _sqlite) = open_verified_database(path, reading, expected)?;
    Ok((checks, bytes))
}

/// [`verify_database_file`], keeping the file SQLite checked (a restore copies from it).
pub fn open_verified_database(
    path: &Path,
    reading: Reading,
    expected: Option<&str>,
) -> Result<(Vec<Check>, u64, SqliteFile)> {
    let (mut checks, bytes) = stored_checksum(path, expected)?;
    let sqlite = SqliteFile::open(path, reading.format, reading.identity)?;
    if reading.format.is_encrypted() {
        checks.push(passed("decrypt"));
    }
    integrity_check(sqlite.path(), IntegrityCheck::Full).map_err(|e| match e {
        // The temporary copy's name means nothing to the operator: name the backup.
        Error::Verify { check, detail, .. } => Error::verify(path, check, detail),
        other => other,
    })?;
    checks.push(passed("SQLite integrity_check"));
    Ok((checks, bytes, sqlite))
}

/// How `verify` treats encrypted backups: with an identity, in full; without one (or
/// with one that is not among a backup's recipients), by what needs no key — the stored
/// bytes' checksum — and the contents recorded as not checked, never as failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keys<'a> {
    /// The identity to decrypt with.
    pub identity: Option<&'a Path>,
    /// Read every chunk of a snapshot back (else check each is present in its pack).
    pub read_data: bool,
    /// The run's record of packs already read (each is read once per run); `None`: this
    /// backup's own.
    pub packs: Option<&'a PackRun>,
}

impl<'a> Keys<'a> {
    /// `verify` at the command line: deep checks, decrypting with `identity`.
    pub fn given(identity: Option<&'a Path>) -> Self {
        Keys {
            identity,
            read_data: false,
            packs: None,
        }
    }

    /// The drill: every chunk read back where an identity is configured.
    pub fn drill(identity: Option<&'a Path>) -> Self {
        Keys {
            identity,
            read_data: true,
            packs: None,
        }
    }
}

/// What a storage archive must match: its metadata's checksum and entry count.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveExpectation<'a> {
    pub checksum: Option<&'a str>,
    /// Non-directory entries, as metadata's `file_count` records them; `None` when the
    /// metadata does not say (a sealed copy fetched from an offsite target keeps the
    /// count encrypted: the ciphertext's checksum and age's authentication vouch for it).
    pub file_count: Option<u64>,
}

/// Read a storage archive through `sink` and judge it: the one pass and the one verdict
/// that `verify` (draining) and `restore` (extracting) share. Checksum, decompression end
/// to end, every entry safe and extractable where it stands, the end-of-archive marker,
/// and as many files and links as the metadata says — an archive cut short at an entry
/// boundary otherwise restores "successfully" with fewer files.
pub fn read_storage_archive(
    path: &Path,
    reading: Reading,
    expect: ArchiveExpectation,
    progress: &dyn Progress,
    cancel: &Cancel,
    sink: &mut dyn EntrySink,
) -> Result<ArchiveStats> {
    let stats = if reading.format.is_snapshot() {
        let keys = (expect.checksum, reading.identity);
        snapshot::read_snapshot(path, keys, progress, cancel, sink)?
    } else {
        archive::read_archive(path, reading, expect.checksum, progress, cancel, sink)?
    };
    if let Some(count) = expect.file_count
        && stats.non_dir_entries != count
    {
        return Err(Error::verify(
            path,
            "entry count",
            format!(
                "its metadata records {count} files and links, the archive holds {}",
                stats.non_dir_entries
            ),
        ));
    }
    Ok(stats)
}

/// Checksum, decompression end to end, entry safety and entry count of a storage archive.
pub fn verify_storage_file(
    path: &Path,
    reading: Reading,
    expect: ArchiveExpectation,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(Vec<Check>, u64)> {
    let stats = read_storage_archive(
        path,
        reading,
        expect,
        progress,
        cancel,
        &mut Drain::default(),
    )?;
    let mut checks = Vec::new();
    if expect.checksum.is_some() {
        checks.push(passed("checksum"));
    }
    if reading.format.is_encrypted() {
        checks.push(passed("decrypt"));
    }
    checks.push(Check {
        detail: format!("{} entries, {} files", stats.entries, stats.files),
        ..passed("archive readable")
    });
    checks.push(passed("entries safe"));
    if expect.file_count.is_some() {
        checks.push(passed("entry count"));
    }
    Ok((checks, stats.archive_bytes))
}

/// Verify the parts of a full backup against its manifest; returns the parts' entries.
pub fn full_parts<'a>(entry: &BackupEntry, listing: &'a Listing) -> Result<Vec<&'a BackupEntry>> {
    let m = &entry.metadata;
    if m.parts.is_empty() {
        return Err(Error::verify(
            &entry.meta_path,
            "manifest",
            "it names no parts",
        ));
    }
    if parts_checksum(&m.parts) != m.checksum {
        return Err(Error::verify(
            &entry.meta_path,
            "manifest",
            "its checksum does not match the parts it lists (edited?)",
        ));
    }
    let mut parts = Vec::new();
    for part in &m.parts {
        let dir_entry = listing
            .backups
            .iter()
            .find(|b| {
                b.kind == part.kind
                    && b.data_path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy() == part.file_name.as_str())
            })
            .ok_or_else(|| {
                Error::verify(
                    &entry.meta_path,
                    "parts present",
                    format!("its {} part {} is missing", part.kind, part.file_name),
                )
            })?;
        // A member repacking rewrote is still the one the manifest recorded (a full backup
        // fetched from a target whose push stopped between the member and the manifest).
        if !dir_entry.metadata.has_or_had_checksum(&part.checksum) {
            return Err(Error::verify(
                &entry.meta_path,
                "parts present",
                format!(
                    "the checksum of its {} part differs from the manifest",
                    part.kind
                ),
            ));
        }
        parts.push(dir_entry);
    }
    Ok(parts)
}

/// Run every check on one backup. Never fails: a failure is a failed check in the report.
pub fn verify_entry(
    entry: &BackupEntry,
    listing: &Listing,
    keys: Keys,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> VerifyReport {
    let started = Instant::now();
    let mut checks = Vec::new();
    let mut bytes = 0;
    let outcome = run_checks(
        entry,
        listing,
        keys,
        progress,
        cancel,
        &mut checks,
        &mut bytes,
    );
    match outcome {
        // The key, not the backup: check what needs no key, and say the rest was not.
        Err(Error::Decrypt {
            failure, detail, ..
        }) if failure.is_about_the_key() => {
            checks.clear();
            bytes = 0;
            let keyless = Keys {
                identity: None,
                ..keys
            };
            let again = run_checks(
                entry,
                listing,
                keyless,
                progress,
                cancel,
                &mut checks,
                &mut bytes,
            );
            if let Err(e) = again {
                checks.push(failed_check(&e));
            }
            checks.push(not_checked(
                "decrypt",
                format!(
                    "{} ({detail}); the contents were not checked",
                    failure.describe_for_verify()
                ),
            ));
        }
        Err(e) => checks.push(failed_check(&e)),
        Ok(()) => {}
    }
    VerifyReport {
        id: entry.stem.clone(),
        name: entry
            .data_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: entry.kind,
        path: entry.data_path.clone(),
        ok: checks.iter().all(|c| c.ok),
        fully_checked: !checks.iter().any(|c| c.not_checked),
        checks,
        bytes_read: bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        checksum: entry.metadata.checksum.clone(),
    }
}

/// A failed check from the error that ended the checks.
fn failed_check(e: &Error) -> Check {
    let (name, detail) = match e {
        Error::Decrypt { .. } => ("decrypt".to_string(), crate::error_chain(e)),
        Error::Verify { check, detail, .. } => (check.to_string(), detail.clone()),
        Error::UnsafeEntry { entry, reason, .. } => {
            ("entries safe".to_string(), format!("{entry}: {reason}"))
        }
        other => ("readable".to_string(), crate::error_chain(other)),
    };
    Check {
        name,
        ok: false,
        detail,
        not_checked: false,
    }
}

fn run_checks(
    entry: &BackupEntry,
    listing: &Listing,
    keys: Keys,
    progress: &dyn Progress,
    cancel: &Cancel,
    checks: &mut Vec<Check>,
    bytes: &mut u64,
) -> Result<()> {
    if let Some(problem) = &entry.problem {
        return Err(Error::verify(&entry.meta_path, "complete", problem.clone()));
    }
    checks.push(passed("complete"));
    if entry.kind == BackupKind::Full {
        full_parts(entry, listing)?;
        checks.push(passed("manifest"));
    }
    // A snapshot's packs are checked through its entry list, chunk by chunk.
    for part in entry.parts.data().filter(|p| !p.shared) {
        // A member's checks are named after it: "database part: checksum".
        let member = (part.of != entry.stem).then(|| format!("{} part", part.kind));
        // The part's own metadata records its entry count (a full backup's member's), and
        // a snapshot's the checksum of each of its packs.
        let own = listing
            .find_stem(&part.of)
            .map_or(&entry.metadata, |m| &m.metadata);
        let file_count = own.recorded_file_count();
        let packs: RecordedPacks = own
            .snapshot
            .iter()
            .flat_map(|s| &s.packs)
            .map(|p| (p.id.clone(), p.checksum.clone()))
            .collect();
        let (c, n) = verify_data_part(part, (file_count, &packs), keys, progress, cancel).map_err(
            |e| match (e, &member) {
                (
                    Error::Verify {
                        path,
                        check,
                        detail,
                    },
                    Some(label),
                ) => Error::Verify {
                    path,
                    check,
                    detail: format!("{label}: {detail}"),
                },
                (other, _) => other,
            },
        )?;
        checks.extend(c.into_iter().map(|c| match &member {
            Some(label) => Check {
                name: format!("{label}: {}", c.name),
                ..c
            },
            None => c,
        }));
        *bytes += n;
    }
    Ok(())
}

/// Check one data part by the format its metadata records.
fn verify_data_part(
    part: &Part,
    (file_count, packs): (Option<u64>, &RecordedPacks),
    keys: Keys,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(Vec<Check>, u64)> {
    let format = part.format.as_ref().ok_or_else(|| {
        Error::verify(
            &part.path,
            "format",
            "its metadata records no usable format",
        )
    })?;
    if let Some(why) = format.unreadable() {
        return Err(Error::verify(&part.path, "readable", why));
    }
    let expected = part.checksum.as_deref();
    let keyless = format.is_encrypted() && keys.identity.is_none();
    if keyless && format.kind != FormatKind::Snapshot {
        let (mut checks, bytes) = stored_checksum(&part.path, expected)?;
        checks.push(not_checked(
            "contents",
            "encrypted and no identity here: only the stored bytes were checked (pass --identity to check the contents)",
        ));
        return Ok((checks, bytes));
    }
    let reading = Reading {
        format,
        identity: keys.identity,
    };
    match format.kind {
        FormatKind::Sqlite => verify_database_file(&part.path, reading, expected),
        FormatKind::Archive => {
            let expect = ArchiveExpectation {
                checksum: expected,
                file_count,
            };
            verify_storage_file(&part.path, reading, expect, progress, cancel)
        }
        FormatKind::Snapshot if part.kind == BackupKind::Database && !keyless => {
            verify_database_file(&part.path, reading, expected)
        }
        FormatKind::Snapshot => {
            // Without an identity the server's store key still opens the entry list, so
            // structure and presence are checked; reading the chunks back needs the key.
            let depth = if keys.read_data && !keyless {
                Depth::ReadData
            } else {
                Depth::Presence
            };
            let own_run = PackRun::default();
            let run = keys.packs.unwrap_or(&own_run);
            let (mut checks, bytes) = verify_snapshot(
                part,
                (expected, keys.identity),
                (depth, packs, run),
                file_count,
                progress,
                cancel,
            )?;
            if keyless && part.kind == BackupKind::Database {
                checks.push(not_checked(
                    "SQLite integrity_check",
                    "encrypted and no identity here: the database is reassembled and checked by SQLite only with one (pass --identity)",
                ));
            } else if keyless && keys.read_data {
                checks.push(not_checked(
                    "read data",
                    "encrypted and no identity here: the chunks were found in their packs, not read back (pass --identity)",
                ));
            }
            Ok((checks, bytes))
        }
        FormatKind::Manifest => Err(Error::verify(
            &part.path,
            "format",
            "a manifest is not a data file",
        )),
    }
}

/// Structure, safety, entry count and chunks (present, or read back) of a snapshot.
fn verify_snapshot(
    part: &Part,
    keys: (Option<&str>, Option<&Path>),
    (depth, packs, run): (Depth, &RecordedPacks, &PackRun),
    file_count: Option<u64>,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(Vec<Check>, u64)> {
    let checked = check_snapshot(&part.path, keys, (depth, packs, run), progress, cancel)?;
    let mut checks = vec![passed("checksum"), passed("entries safe")];
    if let Some(count) = file_count {
        if checked.non_dir_entries != count {
            return Err(Error::verify(
                &part.path,
                "entry count",
                format!(
                    "its metadata records {count} files and links, the snapshot holds {}",
                    checked.non_dir_entries
                ),
            ));
        }
        checks.push(passed("entry count"));
    }
    checks.push(Check {
        detail: match depth {
            Depth::ReadData => format!(
                "{} chunks of {} files read back and hashed",
                checked.chunks, checked.files
            ),
            Depth::Presence => format!(
                "{} chunks of {} files present in their packs, each pack's SHA-256 as recorded (--read-data reads the chunks back)",
                checked.chunks, checked.files
            ),
        },
        ..passed("contents")
    });
    Ok((checks, checked.bytes_read))
}

/// Which backups `verify` looks at.
pub enum Selection<'a> {
    /// The newest backup of each type.
    Latest,
    /// Everything (parts are covered by their full backup).
    All,
    One(&'a BackupEntry),
}

pub fn select<'a>(listing: &'a Listing, selection: Selection<'a>) -> Vec<&'a BackupEntry> {
    match selection {
        Selection::One(e) => vec![e],
        Selection::Latest => BackupKind::ALL
            .iter()
            .filter_map(|k| listing.of_kind(*k).next())
            .collect(),
        Selection::All => listing
            .backups
            .iter()
            .filter(|b| {
                b.part_of()
                    .is_none_or(|full| listing.find_stem(full).is_none())
            })
            .collect(),
    }
}
