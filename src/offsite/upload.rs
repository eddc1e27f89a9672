//! Sending one backup to a target (what a push, and `offsite verify` repairing a copy, do
//! per backup): the data objects first and its metadata object last (a full backup: both
//! members' data, their metadata, then the manifest), so an upload killed at any moment
//! leaves nothing that lists as a backup. An object already there with the right size is
//! not sent again. Each object is checked after upload (size, and on S3 the
//! `x-amz-meta-sha256` it carries), because provider checksums are not portable. To an
//! encrypting target the backup goes as ciphertext with content-free clear metadata; a
//! snapshot repacking rewrote goes with its entry list under a versioned name
//! ([`super::data_object`]), and a copy the target holds from before that rewrite is
//! [`outdated`]: sent again, only what changed.

use std::fs::File;
use std::io::Read;

use serde::Serialize;

use super::Remote;
use super::data_object::Generations;
use super::encrypt::EncryptingReader;
use super::remote::{RemoteBackup, RemoteListing};
use super::sealed;
use super::target::{RemoteError, Stored};
use crate::catalog::{BackupEntry, BackupMetadata, PackRef, Part, PartRef, PartRole};
use crate::encryption::{AGE_SUFFIX, Recipients};
use crate::engine::Cancel;
use crate::error::{Error, RemoteFailure, Result};
use crate::kind::BackupKind;

/// One backup sent.
#[derive(Debug, Clone, Serialize)]
pub struct UploadedBackup {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Bytes sent (objects already there are not counted).
    pub bytes: u64,
    pub objects: usize,
}

/// Whether the target holds `entry` complete but not as the local store has it now: a
/// copy of it from before repacking rewrote it (or a full backup's member), whose packs
/// differ from the local ones. Its files are the same; the target keeps packs the local
/// store no longer has until the copy is brought up to date.
pub(super) fn outdated(listing: &RemoteListing, entry: &BackupEntry) -> bool {
    let Some(copy) = listing
        .find(&entry.stem)
        .filter(|r| r.is_complete() && r.copy_of(entry))
    else {
        return false;
    };
    if copy.behind_its_members {
        return true;
    }
    let remote: std::collections::BTreeSet<String> = copy
        .objects
        .iter()
        .filter(|o| o.shared)
        .map(|o| pack_id_of(&o.key))
        .collect();
    let local: std::collections::BTreeSet<String> = entry
        .parts
        .data()
        .filter(|p| p.shared)
        .map(|p| pack_id_of(&p.name))
        .collect();
    remote != local
}

/// The order a backup's files go up in: data, then members' metadata, its own last.
pub(super) fn upload_order(entry: &BackupEntry) -> Vec<&Part> {
    let mut order: Vec<&Part> = entry.parts.data().collect();
    order.extend(
        entry
            .parts
            .iter()
            .filter(|p| p.role == PartRole::Metadata && p.of != entry.stem),
    );
    order.extend(
        entry
            .parts
            .iter()
            .filter(|p| p.role == PartRole::Metadata && p.of == entry.stem),
    );
    order
}

/// Send one backup; objects already there (same size) are skipped. To a target that
/// takes only ciphertext, the backup goes encrypted ([`upload_sealed`]).
pub(super) fn upload_backup(
    remote: &Remote,
    entry: &BackupEntry,
    listing: &mut RemoteListing,
    cancel: &Cancel,
) -> Result<UploadedBackup> {
    let mut sent = UploadedBackup {
        name: entry.stem.clone(),
        kind: entry.kind,
        bytes: 0,
        objects: 0,
    };
    let generations = Generations::of(entry)?;
    let sending = Sending {
        remote,
        entry,
        generations: &generations,
        previous: listing
            .find(&entry.stem)
            .filter(|copy| copy.is_complete() && outdated(listing, entry))
            .cloned(),
        cancel,
    };
    match &remote.seal {
        Some(recipients) => upload_sealed(&sending, recipients, listing, &mut sent)?,
        None => {
            for part in upload_order(entry) {
                cancel.check()?;
                let stored = match part.role {
                    PartRole::Data => {
                        let key = generations.key(part, &part.name);
                        let there = listing.objects.get(&key);
                        if there.is_some_and(|o| o.size == part.size) {
                            continue;
                        }
                        let stored = upload_part_as(remote, part, &key, cancel)?;
                        let pack = part.shared.then(|| PackRef {
                            id: pack_id_of(&part.name),
                            size: stored.size,
                            checksum: stored.sha256.clone(),
                        });
                        listing.note_put(&key, stored.size, pack);
                        stored
                    }
                    PartRole::Metadata => {
                        let stored = upload_plain_metadata(&sending, part)?;
                        listing.note_put(&part.name, stored.size, None);
                        stored
                    }
                };
                sent.bytes += stored.size;
                sent.objects += 1;
            }
        }
    }
    tracing::info!(
        "offsite {}: uploaded {} ({}, {} objects)",
        remote.config.name,
        entry.stem,
        crate::units::format_bytes(sent.bytes),
        sent.objects
    );
    Ok(sent)
}

/// One backup on its way up: what every step of it needs.
struct Sending<'a> {
    remote: &'a Remote<'a>,
    entry: &'a BackupEntry,
    /// Which of its snapshots repacking rewrote: their entry lists go up under versioned
    /// names.
    generations: &'a Generations,
    /// The copy on the target it brings up to date (see [`outdated`]): what of it has not
    /// changed is reused, not sent again.
    previous: Option<RemoteBackup>,
    cancel: &'a Cancel,
}

impl Sending<'_> {
    /// The canonical key of the data object of the backup `of` (the entry itself or a
    /// member), as the local store names it.
    fn data_name_of(&self, of: &str) -> Option<&str> {
        self.entry
            .parts
            .data()
            .find(|p| p.of == of && !p.shared)
            .map(|p| p.name.as_str())
    }

    /// The metadata of the backup `part` is the metadata file of.
    fn metadata_of(&self, part: &Part) -> Result<BackupMetadata> {
        if part.of == self.entry.stem {
            Ok(self.entry.metadata.clone())
        } else {
            read_metadata(&part.path)
        }
    }
}

/// A metadata file to a plain target: as it is, or — a snapshot whose entry list went up
/// under a versioned name — with `data_object` naming it.
fn upload_plain_metadata(sending: &Sending, part: &Part) -> Result<Stored> {
    let object = sending
        .data_name_of(&part.of)
        .and_then(|name| sending.generations.object_of(&part.of, name));
    let Some(object) = object else {
        return upload_part(sending.remote, part, sending.cancel);
    };
    let mut meta = sending.metadata_of(part)?;
    meta.data_object = Some(object);
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::Internal(format!("serialize the remote metadata: {e}")))?;
    put_checked(sending.remote, &part.name, None, sending.cancel, || {
        Ok(Source::Stream(Box::new(std::io::Cursor::new(json.clone()))))
    })
}

/// A data part as stored on an encrypted target.
struct StoredPart {
    /// The stem of the backup it is the data of (a full backup's member).
    of: String,
    /// The local data file's bare name (`db_backup_X.db`): what the local manifest names.
    local_name: String,
    remote: PartRef,
    /// The versioned file name it went up under (a rewritten snapshot's entry list).
    object: Option<String>,
}

/// Send one backup encrypted (docs/design.md §5), in the same order as a plain one: each data
/// object as ciphertext — a plain local file encrypted on its way up under its name +
/// `.age`, one already encrypted as it is — then each member's clear metadata with its
/// original sealed inside, the backup's own (a full backup's manifest, naming the
/// members' remote objects) last. A plain file's ciphertext is new at every upload, so
/// one already there is sent again: its checksum, which the metadata records, is known
/// only from sending it.
fn upload_sealed(
    sending: &Sending,
    recipients: &Recipients,
    listing: &mut RemoteListing,
    sent: &mut UploadedBackup,
) -> Result<()> {
    let Sending {
        remote,
        entry,
        cancel,
        ..
    } = *sending;
    let mut stored: Vec<StoredPart> = Vec::new();
    let mut packs: Vec<(String, PackRef)> = Vec::new();
    for part in entry.parts.data() {
        cancel.check()?;
        if part.shared {
            let (pack, sent_now) = upload_sealed_pack(remote, recipients, part, listing, cancel)?;
            if sent_now {
                sent.bytes += pack.size;
                sent.objects += 1;
            }
            packs.push((part.of.clone(), pack));
            continue;
        }
        stored.push(upload_sealed_data(
            sending, recipients, part, listing, sent,
        )?);
    }
    for part in upload_order(entry)
        .into_iter()
        .filter(|p| p.role == PartRole::Metadata)
    {
        cancel.check()?;
        let local = sending.metadata_of(part)?;
        let mut clear = clear_metadata(recipients, part, &local, &stored)?;
        if let Some(own) = stored
            .iter()
            .find(|s| s.of == part.of && part.kind != BackupKind::Full)
        {
            clear.data_object = own.object.clone();
            // The copy it replaces, by the checksum the target's records know it by: a
            // manifest not yet replaced still names the member by it.
            if own.object.is_some() {
                clear.earlier_checksums = previous_checksum(listing, entry, part)
                    .into_iter()
                    .collect();
            }
        }
        // A snapshot's packs as the target holds them: encrypted, with their own sizes.
        if let Some(info) = clear.snapshot.as_mut() {
            info.packs = packs
                .iter()
                .filter(|(of, _)| *of == part.of)
                .map(|(_, p)| p.clone())
                .collect();
        }
        let json = serde_json::to_vec_pretty(&clear)
            .map_err(|e| Error::Internal(format!("serialize the remote metadata: {e}")))?;
        let got = put_checked(remote, &part.name, None, cancel, || {
            Ok(Source::Stream(Box::new(std::io::Cursor::new(json.clone()))))
        })?;
        listing.note_put(&part.name, got.size, None);
        sent.bytes += got.size;
        sent.objects += 1;
    }
    Ok(())
}

/// Send one data file that is not a pack to an encrypting target: a plain local file
/// encrypted on its way up under its name + `.age` (its ciphertext is new at every upload,
/// so one already there is sent again: its checksum is known only from sending it), one
/// already encrypted as it is unless there at its size. A rewritten snapshot's entry list
/// goes under its versioned name.
fn upload_sealed_data(
    sending: &Sending,
    recipients: &Recipients,
    part: &Part,
    listing: &mut RemoteListing,
    sent: &mut UploadedBackup,
) -> Result<StoredPart> {
    let (remote, cancel) = (sending.remote, sending.cancel);
    let encrypted = part.format.as_ref().is_some_and(|f| f.is_encrypted());
    let canonical = if encrypted {
        part.name.clone()
    } else {
        format!("{}{AGE_SUFFIX}", part.name)
    };
    let key = sending.generations.key(part, &canonical);
    let there = listing.objects.get(&key);
    let (got, sent_now) = match (encrypted, there, &part.checksum) {
        (true, Some(o), Some(sum)) if o.size == part.size => {
            let got = Stored {
                size: part.size,
                sha256: sum.clone(),
            };
            (got, false)
        }
        (true, _, _) => (upload_part_as(remote, part, &key, cancel)?, true),
        (false, _, _) => {
            match unchanged_on_target(sending, part, &key, key != canonical, listing) {
                Some(got) => (got, false),
                None => (
                    upload_encrypting(remote, recipients, part, &key, cancel)?,
                    true,
                ),
            }
        }
    };
    if sent_now {
        listing.note_put(&key, got.size, None);
        sent.bytes += got.size;
        sent.objects += 1;
    }
    Ok(StoredPart {
        of: part.of.clone(),
        local_name: bare_name(&part.name).to_string(),
        remote: PartRef {
            kind: part.kind,
            file_name: bare_name(&canonical).to_string(),
            backup_path: bare_name(&canonical).to_string(),
            file_size: got.size,
            checksum: got.sha256,
        },
        object: sending.generations.object_of(&part.of, &canonical),
    })
}

/// When bringing a copy up to date, a full backup's member that repacking did not rewrite
/// (`rewritten` false) is on the target as it should be: its object as the copy's
/// manifest records it (size, checksum), reused. Encrypting it again would put other
/// ciphertext under the same key, which the copy's metadata — in force until replaced —
/// does not describe.
fn unchanged_on_target(
    sending: &Sending,
    part: &Part,
    key: &str,
    rewritten: bool,
    listing: &RemoteListing,
) -> Option<Stored> {
    let copy = sending.previous.as_ref().filter(|_| !rewritten)?;
    recorded_member(copy, part, key, listing)
}

/// The object `key` of the full backup `copy` holds for the member `part` is of, as its
/// manifest records it, when the target holds it at that size.
fn recorded_member(
    copy: &RemoteBackup,
    part: &Part,
    key: &str,
    listing: &RemoteListing,
) -> Option<Stored> {
    let record = copy
        .metadata
        .parts
        .iter()
        .find(|p| p.kind == part.kind && p.file_name == bare_name(key))?;
    let there = listing.objects.get(key)?;
    (there.size == record.file_size).then(|| Stored {
        size: record.file_size,
        sha256: record.checksum.clone(),
    })
}

/// Whether an upload of `entry` to an encrypting target reuses the object at `key` (the
/// canonical key of the plain local data file `part`) instead of encrypting it again: a
/// member of a copy being brought up to date that repacking did not rewrite. What the
/// Object Lock upkeep must extend ([`super::locks`]).
pub(super) fn reuses_sealed_member(
    listing: &RemoteListing,
    entry: &BackupEntry,
    part: &Part,
    key: &str,
) -> bool {
    listing
        .find(&entry.stem)
        .filter(|copy| copy.is_complete() && outdated(listing, entry))
        .and_then(|copy| recorded_member(copy, part, key, listing))
        .is_some()
}

/// The checksum the target's records know the copy of the backup the metadata file `part`
/// belongs to by, before this upload: its own metadata's, or — a full backup's member —
/// the one the manifest there records.
fn previous_checksum(listing: &RemoteListing, entry: &BackupEntry, part: &Part) -> Option<String> {
    let copy = listing.find(&entry.stem)?;
    if part.of == entry.stem {
        return Some(copy.checksum.clone());
    }
    copy.metadata
        .parts
        .iter()
        .find(|p| p.kind == part.kind)
        .map(|p| p.checksum.clone())
}

/// Send a snapshot's pack to an encrypting target, unless it is there already as some
/// metadata object on the target records it (packs are never rewritten: their ids are
/// random, and new ciphertext of the same pack would break every backup recording the
/// old): encrypted on the way up as `….pack.age`, or as it is when the local store is
/// encrypted too. Returns the pack as the target holds it and whether it was sent now.
fn upload_sealed_pack(
    remote: &Remote,
    recipients: &Recipients,
    part: &Part,
    listing: &mut RemoteListing,
    cancel: &Cancel,
) -> Result<(PackRef, bool)> {
    let encrypted = part.name.ends_with(AGE_SUFFIX);
    let key = if encrypted {
        part.name.clone()
    } else {
        format!("{}{AGE_SUFFIX}", part.name)
    };
    if let Some(known) = listing.recorded_pack(&key) {
        return Ok((known.clone(), false));
    }
    let got = if encrypted {
        upload_part(remote, part, cancel)?
    } else {
        upload_encrypting(remote, recipients, part, &key, cancel)?
    };
    let pack = PackRef {
        id: pack_id_of(&key),
        size: got.size,
        checksum: got.sha256,
    };
    listing.note_put(&key, pack.size, Some(pack.clone()));
    Ok((pack, true))
}

/// `store/packs/ab/abcd….pack[.age]` → `abcd…`.
fn pack_id_of(key: &str) -> String {
    bare_name(key)
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The clear remote metadata for the metadata file `part` (whose contents are `local`),
/// its original sealed inside.
fn clear_metadata(
    recipients: &Recipients,
    part: &Part,
    local: &BackupMetadata,
    stored: &[StoredPart],
) -> Result<BackupMetadata> {
    let sealed = sealed::seal(recipients, local)
        .map_err(|e| Error::io("seal the metadata", &part.path, e))?;
    let not_a_backup = |reason: String| Error::NotABackup {
        path: part.path.clone(),
        reason,
    };
    if part.kind == BackupKind::Full {
        let mut parts = Vec::new();
        for named in &local.parts {
            let s = stored
                .iter()
                .find(|s| s.remote.kind == named.kind && s.local_name == named.file_name)
                .ok_or_else(|| {
                    not_a_backup(format!("its part {} was not sent", named.file_name))
                })?;
            parts.push(s.remote.clone());
        }
        return Ok(sealed::clear_manifest(local, parts, sealed));
    }
    let own = stored
        .iter()
        .find(|s| s.remote.kind == part.kind && s.of == part.of)
        .ok_or_else(|| not_a_backup("its data file was not sent".into()))?;
    sealed::clear_single(
        local,
        &own.remote.file_name,
        own.remote.file_size,
        &own.remote.checksum,
        recipients.fingerprints(),
        sealed,
    )
    .map_err(not_a_backup)
}

/// A member's metadata file, read for sealing.
fn read_metadata(path: &std::path::Path) -> Result<BackupMetadata> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::NotABackup {
        path: path.to_path_buf(),
        reason: format!("its metadata is not valid: {e}"),
    })
}

/// `database/db_backup_X.db` → `db_backup_X.db`.
fn bare_name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, f)| f)
}

/// Send the plain local data file `part` encrypted to `recipients`, as `key`. The
/// checksum of the ciphertext is not known before it is sent, so none is expected (and
/// on S3 a multipart upload carries none); the plaintext is checked against the local
/// checksum on the way instead.
fn upload_encrypting(
    remote: &Remote,
    recipients: &Recipients,
    part: &Part,
    key: &str,
    cancel: &Cancel,
) -> Result<Stored> {
    put_checked(remote, key, None, cancel, || {
        let file = open_local(part)?;
        let reader =
            EncryptingReader::start(recipients.clone(), Box::new(file), part.checksum.clone())
                .map_err(|e| {
                    RemoteError::new(RemoteFailure::Other, format!("start encrypting: {e}"))
                })?;
        Ok(Source::Stream(Box::new(reader)))
    })
}

fn open_local(part: &Part) -> std::result::Result<File, RemoteError> {
    File::open(&part.path).map_err(|e| {
        RemoteError::new(
            RemoteFailure::Other,
            format!("open the local copy {}: {e}", part.path.display()),
        )
    })
}

/// Send one file and check what the target then holds.
pub(super) fn upload_part(remote: &Remote, part: &Part, cancel: &Cancel) -> Result<Stored> {
    upload_part_as(remote, part, &part.name, cancel)
}

/// Send one file as `key` and check what the target then holds.
fn upload_part_as(remote: &Remote, part: &Part, key: &str, cancel: &Cancel) -> Result<Stored> {
    let expect = match part.role {
        PartRole::Data => part.checksum.as_deref(),
        PartRole::Metadata => None,
    };
    put_checked(remote, key, expect, cancel, || {
        Ok(Source::File(open_local(part)?))
    })
}

/// What a put reads: a local file (which a target may read at any offset) or a stream.
enum Source {
    File(File),
    Stream(Box<dyn Read + Send>),
}

/// Put what `open` gives (opened again for every attempt) under `key`, then check what
/// the target holds: its size, and the checksum it carries where it carries one.
fn put_checked(
    remote: &Remote,
    key: &str,
    expect: Option<&str>,
    cancel: &Cancel,
    open: impl Fn() -> std::result::Result<Source, RemoteError>,
) -> Result<Stored> {
    let op = format!("upload {key}");
    let stored = remote.with_retries(&op, cancel, || match open()? {
        Source::File(file) => remote.target.put_file(key, file, expect),
        Source::Stream(mut data) => remote.target.put(key, &mut data, expect),
    })?;
    let check = format!("check the uploaded {key}");
    let head = remote.with_retries(&check, cancel, || remote.target.head(key))?;
    let fine = head.as_ref().is_some_and(|h| {
        h.size == stored.size && h.sha256.as_ref().is_none_or(|s| *s == stored.sha256)
    });
    if !fine {
        return Err(remote.error(
            &check,
            RemoteError::new(
                RemoteFailure::Mismatch,
                format!(
                    "sent {} bytes with SHA-256 {}, the target reports {:?}",
                    stored.size, stored.sha256, head
                ),
            ),
        ));
    }
    Ok(stored)
}
