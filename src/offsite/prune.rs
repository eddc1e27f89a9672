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

/// Plan, and unless `dry_run`, delete.
pub fn prune(
    config: &Config,
    remote: &Remote,
    dry_run: bool,
    cancel: &Cancel,
) -> Result<PruneReport> {
    let _lock = remote.store.lock_target(&remote.config.name)?;
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
    if !dry_run {
        // A snapshot's pack stays while a backup that is kept lists it.
        let kept: std::collections::BTreeSet<&str> = listing
            .backups
            .iter()
            .filter(|b| !plan.delete.iter().any(|d| d.id == b.stem))
            .flat_map(|b| b.objects.iter().filter(|o| o.shared))
            .map(|o| o.key.as_str())
            .collect();
        let mut gone: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for d in &plan.delete {
            let Some(backup) = listing.find(&d.id) else {
                continue;
            };
            // The metadata object (listed last) first: then the rest is debris at worst.
            for object in backup.objects.iter().rev() {
                // With a snapshot's metadata unreadable, which packs it needs is unknown:
                // shared packs wait for a prune that can tell (debris removal finishes).
                let keep = listing.unreadable_snapshot
                    || kept.contains(object.key.as_str())
                    || gone.contains(&object.key);
                if object.shared && keep {
                    continue;
                }
                gone.insert(object.key.clone());
                cancel.check()?;
                if !delete_unless_locked(remote, &object.key, cancel)? {
                    locked_objects.push(object.key.clone());
                    // Its own metadata (the first to go) refused: nothing of it is gone,
                    // the backup is whole and stays one.
                    if backup.objects.last().map(|o| &o.key) == Some(&object.key) {
                        refused.push(d.id.clone());
                        break;
                    }
                    continue;
                }
                deleted_objects.push(object.key.clone());
            }
            if refused.contains(&d.id) {
                continue;
            }
            tracing::info!(
                "offsite {}: deleted {} ({})",
                remote.config.name,
                d.id,
                d.explained.join("; ")
            );
        }
    }
    let freed_bytes = held_locked(&mut plan, &listing, &refused, freed_bytes);
    if !dry_run && !plan.delete.is_empty() {
        let recorded = remote.store.update(&remote.config.name, |t| {
            for d in &plan.delete {
                t.held.remove(&d.id);
            }
        });
        if let Err(e) = recorded {
            tracing::warn!("could not record the prune: {}", crate::error_chain(&e));
        }
    }
    Ok(PruneReport {
        target: remote.config.name.clone(),
        dry_run,
        plan,
        deleted_objects,
        freed_bytes,
        locked_objects,
    })
}

#[cfg(test)]
mod tests;
