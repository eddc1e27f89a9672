//! Uploading: send a target every local backup it lacks (of the types it takes), oldest
//! first, so a long outage catches up in order (each backup through [`super::upload`]; a
//! killed upload resumes where it stopped), bring the copies of backups the local store
//! has repacked since up to date, then remove the debris of uploads that will never
//! complete. The outcome is recorded in the offsite state.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use super::Remote;
use super::remote::RemoteListing;
use super::state::RecordedFailure;
pub use super::upload::UploadedBackup;
use super::upload::{outdated, upload_backup};
use crate::catalog::BackupEntry;
use crate::config::Config;
use crate::encryption::AGE_SUFFIX;
use crate::engine::Cancel;
use crate::engine::backup::catalog_for;
use crate::error::Result;
use crate::kind::BackupKind;

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
