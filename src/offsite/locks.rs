//! S3 Object Lock upkeep (issue 24): a lock protects a backup only if it covers every
//! object the backup needs, for as long as the backup's own lock runs.
//!
//! An object gets its retain-until once, when written ([`Target::write_horizon`]). A
//! snapshot reuses packs written by earlier pushes, whose locks run out earlier and may
//! have run out already: with nothing more, the server's own credentials could delete a
//! version the newest snapshot needs. So before a backup's objects go up, [`Upkeep`]
//! extends each object it reuses to at least this push's horizon (PutObjectRetention, not
//! a new upload: a pack's bytes never change, and a new version would not move the old
//! one's lock). It does so before the backup's metadata is written, so a backup never
//! lists before its objects are protected, and a push that fails in between extends again
//! next time. Only the backups a push uploads need it: older ones have earlier horizons,
//! already covered when they went up.
//!
//! Cost: one HEAD per distinct object a push's new backups reuse (for a snapshot, about
//! every pack of the store: 100 GiB in 16 MiB packs is ~6 400 HEADs per push that uploads
//! a snapshot, `concurrency` at a time), and a PutObjectRetention (a HEAD and a PUT) for
//! the ones locked less than the horizon. Objects written or checked earlier in the same
//! push are not asked again. Short ones are extended past the horizon by a slack (a tenth
//! of the lock, at most 7 days), so an object every snapshot reuses is extended once per
//! slack, not at every push; it stays locked that much longer than strictly needed.
//!
//! For prune, [`retain_untils`] reads each object's own lock (HEAD), where the target can
//! tell, instead of deriving it from the config and the upload time of its backup's
//! metadata: both are wrong once a push has extended an object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

use super::Remote;
use super::remote::RemoteListing;
#[cfg(doc)]
use super::target::Target;
use crate::catalog::BackupEntry;
use crate::encryption::AGE_SUFFIX;
use crate::engine::Cancel;
use crate::error::{Error, Result};

/// The slack at most: a week more of storage for a pack no backup needs any longer.
const MAX_SLACK: chrono::Duration = chrono::Duration::days(7);

/// What a push knows about the locks of what its backups need.
pub(super) struct Upkeep {
    /// The retain-until of everything this push writes: what each object a backup
    /// uploaded now needs must reach. `None`: the target writes without a lock.
    horizon: Option<DateTime<Utc>>,
    /// What a short object is extended to: the horizon and the slack.
    until: DateTime<Utc>,
    /// Objects locked until the horizon or later: written, checked or extended in this
    /// push. Not asked again.
    known: BTreeSet<String>,
    /// Objects whose retention this push extended.
    pub extended: usize,
}

impl Upkeep {
    pub fn new(remote: &Remote) -> Upkeep {
        let horizon = remote.target.write_horizon();
        let lock = remote
            .config
            .object_lock
            .and_then(|l| chrono::Duration::from_std(l).ok())
            .unwrap_or_default();
        // Whole seconds, rounded up: retention dates carry no fraction.
        let slack = (lock / 10).min(MAX_SLACK) + chrono::Duration::seconds(1);
        let slack = chrono::Duration::seconds(slack.num_seconds());
        Upkeep {
            horizon,
            until: horizon.map_or(DateTime::<Utc>::MIN_UTC, |h| h + slack),
            known: BTreeSet::new(),
            extended: 0,
        }
    }

    /// Before `entry` is uploaded: extend the lock of every object it reuses (already on
    /// the target, so not written again) to the horizon, where it falls short.
    pub fn before_upload(
        &mut self,
        remote: &Remote,
        entry: &BackupEntry,
        listing: &RemoteListing,
        cancel: &Cancel,
    ) -> Result<()> {
        let Some(horizon) = self.horizon else {
            return Ok(());
        };
        let mut ask = Vec::new();
        let generations = super::data_object::Generations::of(entry)?;
        for (key, reused) in objects_of(remote, entry, &generations, listing) {
            // A written one gets the horizon itself; either way, known after this backup.
            if reused && !self.known.contains(&key) {
                ask.push(key.clone());
            }
            self.known.insert(key);
        }
        ask.sort();
        ask.dedup();
        let until = self.until;
        let extended = concurrently(remote, cancel, &ask, |key| {
            let op = format!("read the Object Lock of {key}");
            let current = remote.with_retries(&op, cancel, || remote.target.retain_until(key))?;
            if current.is_some_and(|c| c >= horizon) {
                return Ok(false);
            }
            let op = format!("extend the Object Lock of {key}");
            remote.with_retries(&op, cancel, || remote.target.extend_retention(key, until))
        })?;
        let count = extended.iter().filter(|(_, e)| *e).count();
        self.extended += count;
        if count > 0 {
            tracing::info!(
                "offsite {}: extended the Object Lock of {count} of the {} objects {} reuses to {}",
                remote.config.name,
                ask.len(),
                entry.stem,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        Ok(())
    }
}

/// The keys `entry` has on the target once uploaded, each with whether the upload reuses
/// the object already there instead of writing it. Mirrors the skip rules of
/// `upload::upload_backup` (a data object there at its size) and `upload::upload_sealed` (a
/// pack some metadata records; a local ciphertext there at its size; the unchanged member
/// of a copy brought up to date after repacking); metadata objects are always written.
fn objects_of(
    remote: &Remote,
    entry: &BackupEntry,
    generations: &super::data_object::Generations,
    listing: &RemoteListing,
) -> Vec<(String, bool)> {
    let there = |key: &str, size: u64| listing.objects.get(key).is_some_and(|o| o.size == size);
    entry
        .parts
        .data()
        .map(|part| match &remote.seal {
            None => {
                let key = generations.key(part, &part.name);
                let reused = there(&key, part.size);
                (key, reused)
            }
            Some(_) if part.shared => {
                let key = if part.name.ends_with(AGE_SUFFIX) {
                    part.name.clone()
                } else {
                    format!("{}{AGE_SUFFIX}", part.name)
                };
                let reused = listing.recorded_pack(&key).is_some();
                (key, reused)
            }
            Some(_) if part.format.as_ref().is_some_and(|f| f.is_encrypted()) => {
                let key = generations.key(part, &part.name);
                let reused = part.checksum.is_some() && there(&key, part.size);
                (key, reused)
            }
            Some(_) => {
                let canonical = format!("{}{AGE_SUFFIX}", part.name);
                let key = generations.key(part, &canonical);
                let reused = key == canonical
                    && super::upload::reuses_sealed_member(listing, entry, part, &key);
                (key, reused)
            }
        })
        .collect()
}

/// The retain-until date of each of `keys` that is locked: as the target tells it (HEAD,
/// [`Target::retain_until`]), else guessed from the object's own upload time and the
/// config ([`Target::locked_until`]) — never from another object's. Keys without a lock
/// are left out. A path target answers without I/O; an S3 target is asked even without
/// `object_lock` in the config, since a bucket's default retention locks objects too.
pub(super) fn retain_untils(
    remote: &Remote,
    listing: &RemoteListing,
    keys: &[String],
    cancel: &Cancel,
) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let found = concurrently(remote, cancel, keys, |key| {
        let op = format!("read the Object Lock of {key}");
        let told = remote.with_retries(&op, cancel, || remote.target.retain_until(key))?;
        Ok(told.or_else(|| {
            let modified = listing.objects.get(key)?.modified?;
            remote.target.locked_until(modified)
        }))
    })?;
    Ok(found
        .into_iter()
        .filter_map(|(key, until)| Some((key, until?)))
        .collect())
}

/// `work` on each of `keys`, `concurrency` at a time (the target's parts in flight):
/// thousands of small requests one after another would take minutes. The first error
/// stops the rest and is returned.
fn concurrently<T: Send>(
    remote: &Remote,
    cancel: &Cancel,
    keys: &[String],
    work: impl Fn(&str) -> Result<T> + Sync,
) -> Result<Vec<(String, T)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let done: Mutex<Vec<(String, T)>> = Mutex::new(Vec::with_capacity(keys.len()));
    let workers = remote.config.concurrency.clamp(1, keys.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(key) = keys.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    match cancel.check().and_then(|()| work(key)) {
                        Ok(v) => lock(&done).push((key.clone(), v)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            lock(&first_error).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    Ok(std::mem::take(&mut *lock(&done)))
}

/// A mutex's contents, also after a worker panicked holding it (the scope re-raises that
/// panic anyway; what the others collected is still sound).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
