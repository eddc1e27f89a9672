//! Uploading: send a target every local backup it lacks (of the types it takes), oldest
//! first, so a long outage catches up in order. Per backup the data objects go first and
//! its metadata object last (a full backup: both members' data, their metadata, then the
//! manifest) — the on-disk invariant, so an upload killed at any moment leaves nothing
//! that lists as a backup. An object already there with the right size is not sent again:
//! a killed upload resumes where it stopped. Each object is checked after upload (size,
//! and on S3 the `x-amz-meta-sha256` it carries), because provider checksums are not
//! portable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;

use chrono::Utc;
use serde::Serialize;

use super::Remote;
use super::data_object::Generations;
use super::encrypt::EncryptingReader;
use super::remote::{RemoteBackup, RemoteListing};
use super::sealed;
use super::state::RecordedFailure;
use super::target::{RemoteError, Stored};
use crate::catalog::{BackupEntry, BackupMetadata, PackRef, Part, PartRef, PartRole};
use crate::config::Config;
use crate::encryption::{AGE_SUFFIX, Recipients};
use crate::engine::Cancel;
use crate::engine::backup::catalog_for;
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

/// What one push to one target did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub target: String,
    pub uploaded: Vec<UploadedBackup>,
    /// Local backups the target already held.
    pub already_there: usize,
    /// Copies the target held as they were before the local store's repacking rewrote
    /// them, brought up to date: the new packs and entry lists sent, the metadata
    /// replaced last (see [`super::data_object`]). What they no longer need goes as
    /// debris.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repacked: Vec<UploadedBackup>,
    /// Local backups not sent because the target's own retention would delete them at
    /// once (its policy keeps fewer than the local one): sending them would only make
    /// the next prune delete them again, and on a locked bucket pay for each copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub beyond_retention: Vec<String>,
    /// Interrupted uploads cleaned up first (multipart uploads aborted, `.partial` files).
    pub cleaned: Vec<String>,
    /// Objects of backups that never completed, removed.
    pub debris_removed: Vec<String>,
    /// Why nothing was removed this time: another writer's live lock on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postponed: Option<String>,
    /// Complete backups on the target afterwards.
    pub remote_backups: usize,
    /// Objects the uploaded backups reuse whose S3 Object Lock retention was extended to
    /// this push's (see [`super::locks`]).
    pub lock_extended: usize,
}

/// Push to `remote` whatever it lacks; the outcome is recorded in the offsite state (a
/// failure with what is still pending).
pub fn push(config: &Config, remote: &Remote, cancel: &Cancel) -> Result<PushReport> {
    let _lock = remote
        .store
        .lock_target(&remote.config.name, "push", cancel)?;
    let catalog = catalog_for(config);
    let local = catalog.list()?;
    let wanted: Vec<&BackupEntry> = {
        let mut w: Vec<&BackupEntry> = local
            .backups
            .iter()
            .filter(|b| b.is_complete() && b.part_of().is_none())
            .filter(|b| !b.metadata.is_pre_restore() && remote.config.takes(b.kind))
            .collect();
        w.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.stem.cmp(&b.stem)));
        w
    };
    let mut pending: Vec<&BackupEntry> = wanted.clone();
    let mut locks = super::locks::Upkeep::new(remote);
    let result = (|| {
        let lease = super::writers::acquire(remote, "push", cancel)?;
        let cleaned = remote.with_retries("clean up interrupted uploads", cancel, || {
            remote.target.clean_interrupted()
        })?;
        let mut listing = read_listing(remote, cancel)?;
        pending.retain(|b| !listing.holds(b));
        let already_there = wanted.len() - pending.len();
        let beyond_retention = beyond_remote_retention(config, remote, &listing, &pending);
        pending.retain(|b| !beyond_retention.contains(&b.stem));
        let behind = behind_local(config, remote, &listing, &wanted);
        let stems: Vec<String> = pending
            .iter()
            .chain(&behind)
            .map(|b| b.stem.clone())
            .collect();
        let _pin = catalog.pin_for_upload(&stems)?;
        let mut uploaded = Vec::new();
        let mut newest = listing.newest();
        while let Some(entry) = pending.first().copied() {
            locks.before_upload(remote, entry, &listing, cancel)?;
            let sent = upload_backup(remote, entry, &mut listing, cancel)?;
            record_upload(remote, entry, sent.bytes);
            if let Some(created) = entry.created {
                for kind in crate::kind::JobName::creating(entry.kind).refreshes() {
                    let e = newest.entry(*kind).or_insert(created);
                    if created > *e {
                        *e = created;
                    }
                }
            }
            uploaded.push(sent);
            pending.remove(0);
        }
        let mut repacked = Vec::new();
        for entry in behind {
            locks.before_upload(remote, entry, &listing, cancel)?;
            let sent = upload_backup(remote, entry, &mut listing, cancel)?;
            record_upload(remote, entry, sent.bytes);
            repacked.push(sent);
        }
        if !repacked.is_empty() {
            // What the copies brought up to date no longer name is debris only in a
            // listing that has their new metadata.
            listing = read_listing(remote, cancel)?;
        }
        // Another writer's half-sent objects look like debris: none is removed while one
        // is live.
        let others = lease.others(cancel)?;
        let postponed = super::writers::Lease::postponed(&others);
        let debris_removed = match &postponed {
            None => remove_debris(remote, &listing, &local, cancel)?,
            Some(why) => {
                tracing::warn!(
                    "offsite {}: debris removal postponed: {why}",
                    remote.config.name
                );
                Vec::new()
            }
        };
        // The uploads the listing does not show (it was read before them, unless read
        // again after bringing copies up to date).
        let unlisted: &[UploadedBackup] = if repacked.is_empty() { &uploaded } else { &[] };
        let held = listing
            .backups
            .iter()
            .filter(|b| b.is_complete())
            .map(|b| b.stem.clone())
            .chain(unlisted.iter().map(|u| u.name.clone()))
            .collect();
        let after = TargetAfter {
            newest,
            remote_bytes: listing.backups.iter().map(|b| b.size).sum::<u64>()
                + unlisted.iter().map(|u| u.bytes).sum::<u64>(),
            held,
        };
        let report = PushReport {
            target: remote.config.name.clone(),
            remote_backups: listing.backups.iter().filter(|b| b.is_complete()).count()
                + unlisted.len(),
            uploaded,
            already_there,
            repacked,
            beyond_retention,
            cleaned,
            debris_removed,
            postponed,
            lock_extended: locks.extended,
        };
        Ok((report, after))
    })();
    match result {
        Ok((report, after)) => {
            record_success(remote, &report, after);
            Ok(report)
        }
        Err(e) => {
            record_failure(remote, &e, &pending);
            Err(e)
        }
    }
}

/// The pending backups that the target's retention, applied to what it holds plus what
/// is pending, would delete as soon as they landed.
fn beyond_remote_retention(
    config: &Config,
    remote: &Remote,
    listing: &RemoteListing,
    pending: &[&BackupEntry],
) -> Vec<String> {
    let pending_ids: std::collections::BTreeSet<&str> =
        pending.iter().map(|b| b.stem.as_str()).collect();
    let mut candidates: Vec<crate::retention::Candidate> = listing
        .candidates()
        .into_iter()
        .filter(|c| !pending_ids.contains(c.id.as_str()))
        .collect();
    candidates.extend(pending.iter().filter_map(|b| {
        Some(crate::retention::Candidate {
            id: b.stem.clone(),
            kind: b.kind,
            created: b.created?,
            complete: true,
            part_of: None,
            pre_restore: false,
            set_aside: false,
        })
    }));
    let policy = crate::retention::RetentionPolicy::from(&remote.config.retention);
    let plan = crate::retention::apply(&candidates, &policy, Utc::now(), config.schedule.timezone);
    plan.delete
        .into_iter()
        .map(|d| d.id)
        .filter(|id| pending_ids.contains(id.as_str()))
        .collect()
}

/// The local backups the target holds as they were before repacking rewrote them (see
/// [`outdated`]), oldest first, but those the target's own retention deletes now: they
/// are about to go, and sending their new packs would only cost.
fn behind_local<'e>(
    config: &Config,
    remote: &Remote,
    listing: &RemoteListing,
    wanted: &[&'e BackupEntry],
) -> Vec<&'e BackupEntry> {
    let policy = crate::retention::RetentionPolicy::from(&remote.config.retention);
    let plan = crate::retention::apply(
        &listing.candidates(),
        &policy,
        Utc::now(),
        config.schedule.timezone,
    );
    wanted
        .iter()
        .copied()
        .filter(|b| outdated(listing, b))
        .filter(|b| !plan.delete.iter().any(|d| d.id == b.stem))
        .collect()
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

pub(super) fn read_listing(remote: &Remote, cancel: &Cancel) -> Result<RemoteListing> {
    remote.with_retries("list the backups", cancel, || {
        RemoteListing::read(remote.target.as_ref())
    })
}

/// What a successful push leaves the offsite state knowing of the target.
struct TargetAfter {
    newest: std::collections::BTreeMap<BackupKind, chrono::DateTime<chrono::FixedOffset>>,
    remote_bytes: u64,
    /// The complete remote backups, for `offsite verify` to tell a loss by.
    held: std::collections::BTreeSet<String>,
}

fn record_success(remote: &Remote, report: &PushReport, after: TargetAfter) {
    let done = remote.store.update(&remote.config.name, |t| {
        t.last_success = Some(Utc::now());
        t.last_failure = None;
        t.failing_since = None;
        t.pending.clear();
        t.pending_bytes = 0;
        t.newest_remote = after.newest;
        t.remote_backups = report.remote_backups as u64;
        t.remote_bytes = after.remote_bytes;
        t.held = after.held;
    });
    if let Err(e) = done {
        tracing::warn!("could not record the upload: {}", crate::error_chain(&e));
    }
}

fn record_upload(remote: &Remote, entry: &BackupEntry, bytes: u64) {
    let done = remote.store.update(&remote.config.name, |t| {
        *t.uploaded_bytes.entry(entry.kind).or_default() += bytes;
        t.last_upload.insert(entry.kind, Utc::now());
    });
    if let Err(e) = done {
        tracing::warn!("could not record the upload: {}", crate::error_chain(&e));
    }
}

fn record_failure(remote: &Remote, e: &crate::error::Error, pending: &[&BackupEntry]) {
    let now = Utc::now();
    let done = remote.store.update(&remote.config.name, |t| {
        t.last_failure = Some(RecordedFailure {
            at: now,
            error: crate::error_chain(e),
        });
        t.failing_since.get_or_insert(now);
        t.pending = pending.iter().map(|b| b.stem.clone()).collect();
        t.pending_bytes = pending.iter().map(|b| b.parts.data_bytes()).sum();
    });
    if let Err(e) = done {
        tracing::warn!(
            "could not record the upload failure: {}",
            crate::error_chain(&e)
        );
    }
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

/// Remove the objects of uploads that never completed and will not be completed: their
/// backup is neither listed on the target nor still present locally (a local one is
/// completed by this or the next push, reusing what is there).
fn remove_debris(
    remote: &Remote,
    listing: &RemoteListing,
    local: &crate::catalog::Listing,
    cancel: &Cancel,
) -> Result<Vec<String>> {
    // A local backup's data object goes to an encrypting target as its name + `.age`. A
    // copy the target holds up to date owns every object it needs: what else is there
    // under its names an earlier form of it left (its entry list before repacking). A
    // full backup's parts are its members' too.
    let local_names: BTreeMap<String, ()> = local
        .backups
        .iter()
        .filter(|b| b.part_of().is_none())
        .filter(|b| !listing.holds(b) || outdated(listing, b))
        .flat_map(|b| b.parts.iter())
        .flat_map(|p| [p.name.clone(), format!("{}{AGE_SUFFIX}", p.name)])
        .map(|n| (n, ()))
        .collect();
    let mut removed = Vec::new();
    for o in listing.debris() {
        if local_names.contains_key(o.key.as_str()) {
            continue;
        }
        let op = format!("remove the unfinished upload {}", o.key);
        remote.with_retries(&op, cancel, || remote.target.delete(&o.key))?;
        removed.push(o.key.clone());
    }
    Ok(removed)
}
