//! Remote retention: the target's listing through the same pure
//! [`crate::retention::apply`] as the backup directory (its own `[offsite.retention]`),
//! then the plan applied. The newest complete remote copy of each type is always kept
//! (the pure function guarantees it); objects still under S3 Object Lock are held, not
//! attempted. A backup is deleted metadata first, so it stops being a backup in one step.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::push::read_listing;
use super::{Remote, RemoteListing};
use crate::config::{Config, Timezone};
use crate::engine::Cancel;
use crate::error::Result;
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
}

/// What retention deletes from `listing` at `now`: `retention::apply` over the remote
/// candidates, then every backup still under Object Lock (`locked_until` of its upload
/// time lies after `now`) held. Pure, so the property tests can drive it.
pub fn plan(
    listing: &RemoteListing,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    timezone: Timezone,
    locked_until: &dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> RetentionPlan {
    let mut plan = retention::apply(&listing.candidates(), policy, now, timezone);
    let locked: Vec<String> = plan
        .delete
        .iter()
        .filter_map(|d| listing.find(&d.id))
        .filter(|b| {
            b.uploaded
                .and_then(locked_until)
                .is_some_and(|until| until > now)
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
    use std::collections::BTreeSet;
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

/// Plan, and unless `dry_run`, delete.
pub fn prune(
    config: &Config,
    remote: &Remote,
    dry_run: bool,
    cancel: &Cancel,
) -> Result<PruneReport> {
    let _lock = remote.store.lock_target(&remote.config.name)?;
    let lease = super::writers::acquire(remote, "prune", cancel)?;
    let listing = read_listing(remote, cancel)?;
    let policy = RetentionPolicy::from(&remote.config.retention);
    let locked_until = |uploaded| remote.target.locked_until(uploaded);
    let plan = plan(
        &listing,
        &policy,
        Utc::now(),
        config.schedule.timezone,
        &locked_until,
    );
    // A snapshot's size is its entry list (its packs are shared): an estimate.
    let freed_bytes = plan
        .delete
        .iter()
        .filter_map(|d| listing.find(&d.id))
        .map(|b| b.size)
        .sum();
    let mut deleted_objects = Vec::new();
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
        for (id, keys) in deletions(&listing, &plan) {
            for key in keys {
                cancel.check()?;
                let op = format!("delete {key}");
                remote.with_retries(&op, cancel, || remote.target.delete(&key))?;
                deleted_objects.push(key);
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
    if !dry_run && postponed.is_none() && !plan.delete.is_empty() {
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
        postponed,
    })
}

#[cfg(test)]
mod tests;
