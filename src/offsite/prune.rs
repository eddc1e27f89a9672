//! Remote retention: the target's listing through the same pure
//! [`crate::retention::apply`] as the backup directory (its own `[offsite.retention]`),
//! then the plan applied. The newest complete remote copy of each type is always kept
//! (the pure function guarantees it); a backup with an object still under S3 Object Lock
//! is held, not attempted — each object judged by its own retain-until (HEAD), since a
//! push extends the packs a new snapshot reuses. A backup is deleted metadata first, so
//! it stops being a backup in one step.
//!
//! "Deleted" on a versioned bucket (every Object Lock bucket is one) means a delete
//! marker on top: S3 accepts it even on a locked object, whose version stays billed and
//! restorable until its lock ends and a lifecycle rule expires it. Deleting a locked
//! backup would only hide it while it still costs, so it is held and listed instead. A
//! delete the server does refuse as locked is reported and held, not a failed prune.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::push::read_listing;
use super::{Remote, RemoteListing};
use crate::config::{Config, Timezone};
use crate::engine::Cancel;
use crate::error::{RemoteFailure, Result};
use crate::retention::{self, RetentionPlan, RetentionPolicy};

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub target: String,
    pub dry_run: bool,
    pub plan: RetentionPlan,
    pub deleted_objects: Vec<String>,
    /// Bytes of the backups deleted (a dry run: would delete).
    pub freed_bytes: u64,
    /// Why nothing was deleted: another writer's live lock on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postponed: Option<String>,
    /// Objects whose delete the target refused because S3 Object Lock holds them (their
    /// backups are held; one whose metadata was already gone leaves the object as debris,
    /// removed by a later push once the lock ends).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locked_objects: Vec<String>,
}

/// What retention deletes from `listing` at `now`: `retention::apply` over the remote
/// candidates, then every backup with an object still under Object Lock held — `locks`
/// has the retain-until of each locked object by key (from [`lock_candidates`], read by
/// the caller). Pure, so the property tests can drive it.
pub fn plan(
    listing: &RemoteListing,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    timezone: Timezone,
    locks: &BTreeMap<String, DateTime<Utc>>,
) -> RetentionPlan {
    let mut plan = retention::apply(&listing.candidates(), policy, now, timezone);
    let locked: Vec<String> = plan
        .delete
        .iter()
        .filter_map(|d| listing.find(&d.id))
        .filter(|b| {
            b.objects
                .iter()
                .any(|o| locks.get(&o.key).is_some_and(|until| *until > now))
        })
        .map(|b| b.stem.clone())
        .collect();
    plan.hold(
        &locked,
        "locked",
        "under S3 Object Lock retention on the target",
    );
    plan
}

/// The objects to delete for `plan`, per backup in plan order, each backup's metadata
/// object first (then the rest is debris at worst). Pure, so the property tests can drive
/// it over damaged listings. Never an object a kept backup lists (shared packs, or
/// anything a hostile metadata object names twice); with any metadata object unreadable
/// (which packs it needs is unknown), no shared pack at all.
pub fn deletions(listing: &RemoteListing, plan: &RetentionPlan) -> Vec<(String, Vec<String>)> {
    let deleted: BTreeSet<&str> = plan.delete.iter().map(|d| d.id.as_str()).collect();
    let kept: BTreeSet<&str> = listing
        .backups
        .iter()
        .filter(|b| !deleted.contains(b.stem.as_str()))
        .flat_map(|b| b.objects.iter().map(|o| o.key.as_str()))
        .collect();
    let unknown_packs = listing.unreadable_snapshot || !listing.unreadable.is_empty();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for d in &plan.delete {
        let Some(backup) = listing.find(&d.id) else {
            continue;
        };
        let mut keys = Vec::new();
        for object in backup.objects.iter().rev() {
            let keep = kept.contains(object.key.as_str())
                || gone.contains(&object.key)
                || (object.shared && unknown_packs);
            if keep {
                continue;
            }
            gone.insert(object.key.clone());
            keys.push(object.key.clone());
        }
        out.push((d.id.clone(), keys));
    }
    out
}

/// The objects whose locks decide `plan`: those of every backup retention alone would
/// delete, but the shared packs a kept backup lists (never deleted with it). Pure.
pub fn lock_candidates(
    listing: &RemoteListing,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    timezone: Timezone,
) -> Vec<String> {
    let plan = retention::apply(&listing.candidates(), policy, now, timezone);
    let doomed = |stem: &str| plan.delete.iter().any(|d| d.id == stem);
    let kept: BTreeSet<&str> = listing
        .backups
        .iter()
        .filter(|b| !doomed(&b.stem))
        .flat_map(|b| b.objects.iter().filter(|o| o.shared))
        .map(|o| o.key.as_str())
        .collect();
    let keys: BTreeSet<String> = listing
        .backups
        .iter()
        .filter(|b| doomed(&b.stem))
        .flat_map(|b| b.objects.iter())
        .filter(|o| !kept.contains(o.key.as_str()))
        .map(|o| o.key.clone())
        .collect();
    keys.into_iter().collect()
}

/// Delete `key`; `Ok(false)` when the target refuses because S3 Object Lock holds it
/// (not retried: the lock lasts), any other failure as it is.
fn delete_unless_locked(remote: &Remote, key: &str, cancel: &Cancel) -> Result<bool> {
    let op = format!("delete {key}");
    match remote.with_retries(&op, cancel, || remote.target.delete(key)) {
        Ok(()) => Ok(true),
        Err(e) if super::failure_of(&e) == Some(RemoteFailure::Locked) => {
            tracing::warn!(
                "offsite {}: {}; held",
                remote.config.name,
                crate::error_chain(&e)
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Move the backups whose delete the target refused as locked from `delete` to `keep`;
/// returns `freed_bytes` without theirs.
fn held_locked(
    plan: &mut RetentionPlan,
    listing: &RemoteListing,
    refused: &[String],
    freed_bytes: u64,
) -> u64 {
    plan.hold(
        refused,
        "locked",
        "its delete was refused: under S3 Object Lock retention on the target",
    );
    let kept: u64 = refused
        .iter()
        .filter_map(|id| listing.find(id))
        .map(|b| b.size)
        .sum();
    freed_bytes.saturating_sub(kept)
}

/// Change what the offsite state remembers this target holding (`held`).
fn record_held(remote: &Remote, change: impl FnOnce(&mut BTreeSet<String>)) {
    let recorded = remote
        .store
        .update(&remote.config.name, |t| change(&mut t.held));
    if let Err(e) = recorded {
        tracing::warn!("could not record the prune: {}", crate::error_chain(&e));
    }
}

/// Plan, and unless `dry_run`, delete.
pub fn prune(
    config: &Config,
    remote: &Remote,
    dry_run: bool,
    cancel: &Cancel,
) -> Result<PruneReport> {
    let _lock = remote
        .store
        .lock_target(&remote.config.name, "prune", cancel)?;
    let lease = super::writers::acquire(remote, "prune", cancel)?;
    let listing = read_listing(remote, cancel)?;
    let policy = RetentionPolicy::from(&remote.config.retention);
    let now = Utc::now();
    let tz = config.schedule.timezone;
    let asked = lock_candidates(&listing, &policy, now, tz);
    let locks = super::locks::retain_untils(remote, &listing, &asked, cancel)?;
    let mut plan = plan(&listing, &policy, now, tz, &locks);
    // A snapshot's size is its entry list (its packs are shared): an estimate.
    let freed_bytes = plan
        .delete
        .iter()
        .filter_map(|d| listing.find(&d.id))
        .map(|b| b.size)
        .sum();
    let mut deleted_objects = Vec::new();
    let mut locked_objects = Vec::new();
    let mut refused = Vec::new();
    // Another writer may be mid-push of a snapshot that needs a pack this plan frees:
    // nothing is deleted while one is live.
    let postponed = if dry_run {
        None
    } else {
        super::writers::Lease::postponed(&lease.others(cancel)?)
    };
    if let Some(why) = &postponed {
        tracing::warn!("offsite {}: prune postponed: {why}", remote.config.name);
    }
    if !dry_run && postponed.is_none() {
        // Forgotten before anything is deleted: a prune killed half way must not make
        // the next `offsite verify` report what it deleted as LOST.
        record_held(remote, |held| {
            for d in &plan.delete {
                held.remove(&d.id);
            }
        });
        for (id, keys) in deletions(&listing, &plan) {
            let own_metadata = listing
                .find(&id)
                .and_then(|b| b.objects.last())
                .map(|o| o.key.clone());
            for key in keys {
                cancel.check()?;
                if !delete_unless_locked(remote, &key, cancel)? {
                    // Its own metadata (the first to go) refused: nothing of it is gone,
                    // the backup is whole and stays one.
                    let whole = own_metadata.as_ref() == Some(&key);
                    locked_objects.push(key);
                    if whole {
                        refused.push(id.clone());
                        break;
                    }
                    continue;
                }
                deleted_objects.push(key);
            }
            if refused.contains(&id) {
                continue;
            }
            let why = plan
                .delete
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.explained.join("; "))
                .unwrap_or_default();
            tracing::info!("offsite {}: deleted {id} ({why})", remote.config.name);
        }
    }
    let freed_bytes = held_locked(&mut plan, &listing, &refused, freed_bytes);
    if !refused.is_empty() {
        // Still there after all: the target holds them again as far as verify knows.
        record_held(remote, |held| held.extend(refused.iter().cloned()));
    }
    Ok(PruneReport {
        target: remote.config.name.clone(),
        dry_run,
        plan,
        deleted_objects,
        freed_bytes,
        postponed,
        locked_objects,
    })
}

#[cfg(test)]
mod tests;
