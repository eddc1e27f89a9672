//! Applying retention to the backup directory, in three phases: [`candidates`] from a
//! listing and the verdicts (pure), the plan from the pure [`crate::retention::apply`],
//! then [`execute`], the only phase that deletes — metadata first, so a backup stops
//! existing in one step; a full backup takes its parts with it. The middle never reads
//! the disk, so it can serve a remote listing or snapshots as well. The safety copies a
//! restore set aside beside the live data ([`super::safety_copies`]) go through the same
//! three phases, under `keep_pre_restore`.

use std::path::PathBuf;

use chrono::Utc;
use serde::Serialize;

use super::Cancel;
use super::backup::catalog_for;
use super::repack::{RepackOptions, RepackReport, Tolerance, repack};
use super::safety_copies::{self, SafetyCopy};
use crate::catalog::{BackupDirLock, BackupEntry, Catalog, Listing, Outcome, Verdicts};
use crate::config::Config;
use crate::error::Result;
use crate::retention::{self, Candidate, RetentionPlan, RetentionPolicy};
use crate::units::format_bytes;

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub dry_run: bool,
    pub plan: RetentionPlan,
    /// Files removed (data, metadata, parts).
    pub deleted_files: Vec<PathBuf>,
    /// Bytes the deleted backups occupied (what a dry run would free).
    pub freed_bytes: u64,
    /// Leftovers of interrupted runs removed first.
    pub cleaned: Vec<PathBuf>,
    /// What repacking the snapshot store did (a dry run: would do), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack: Option<RepackReport>,
}

/// Phase one: what retention needs to know about each backup of a listing, with the
/// verdicts it has. Pure: the same step serves any listing, local or not.
pub fn candidates(listing: &Listing, verdicts: &Verdicts) -> Vec<Candidate> {
    listing
        .backups
        .iter()
        .filter_map(|b| {
            Some(Candidate {
                id: b.stem.clone(),
                kind: b.kind,
                created: b.created?,
                // A backup whose last verification failed is no good backup to keep.
                complete: b.is_complete() && !verdicts.failed(&b.stem),
                part_of: b.metadata.part_of.clone(),
                pre_restore: b.metadata.is_pre_restore(),
                set_aside: false,
            })
        })
        .collect()
}

/// Phase one for the safety copies beside the live data. Pure, like [`candidates`].
pub fn safety_candidates(copies: &[SafetyCopy]) -> Vec<Candidate> {
    copies
        .iter()
        .map(|c| Candidate {
            id: c.id(),
            kind: c.kind,
            created: c.created,
            complete: true,
            part_of: None,
            pre_restore: true,
            set_aside: true,
        })
        .collect()
}

/// What a plan was made from: the catalog's listing and the safety copies found.
#[derive(Debug)]
pub struct Found {
    pub listing: Listing,
    pub copies: Vec<SafetyCopy>,
}

/// The retention plan for what is on disk now: list, build the candidates, then the pure
/// [`retention::apply`].
pub fn plan(
    catalog: &Catalog,
    config: &Config,
    policy: &RetentionPolicy,
) -> Result<(Found, RetentionPlan)> {
    let listing = catalog.list()?;
    let copies = safety_copies::find(config);
    let mut all = candidates(&listing, &catalog.load_verdicts());
    all.extend(safety_candidates(&copies));
    let mut plan = retention::apply(&all, policy, Utc::now(), config.schedule.timezone);
    plan.hold(
        &catalog.pinned_for_upload(),
        "uploading",
        "being uploaded to an offsite target (kept until the upload ends)",
    );
    Ok((Found { listing, copies }, plan))
}

/// Rotate: take the lock (unless a dry run), clean leftovers, plan, delete.
pub fn rotate(config: &Config, policy: &RetentionPolicy, dry_run: bool) -> Result<RotateReport> {
    let catalog = catalog_for(config);
    if dry_run {
        let (found, plan) = plan(&catalog, config, policy)?;
        let freed = freed_bytes(&plan, &found);
        // What repacking would do once the deleted backups are gone.
        let mut kept = found.listing.clone();
        kept.backups.retain(|b| {
            !plan
                .delete
                .iter()
                .any(|d| d.id == b.stem || b.part_of() == Some(d.id.as_str()))
        });
        let repacked = repack(
            &catalog,
            &kept,
            &repack_options(config, true),
            &Cancel::new(),
        )?;
        return Ok(RotateReport {
            dry_run,
            plan,
            deleted_files: Vec::new(),
            freed_bytes: freed,
            cleaned: Vec::new(),
            repack: Some(repacked).filter(|r| r.used_bytes > 0),
        });
    }
    let lock = catalog.lock("rotate")?;
    rotate_locked(config, &catalog, &lock, policy)
}

/// Rotate while holding the lock (after `create --max-backups`).
pub fn rotate_locked(
    config: &Config,
    catalog: &Catalog,
    lock: &BackupDirLock,
    policy: &RetentionPolicy,
) -> Result<RotateReport> {
    let cleaned = catalog.clean_leftovers()?;
    let (found, plan) = plan(catalog, config, policy)?;
    for d in plan.future_dated() {
        catalog.log().warn(&format!(
            "rotate: {} is dated in the future (the clock ran ahead?): kept, not counted as the newest",
            d.id
        ));
    }
    // Then the store's sweep: a pack the deleted snapshots alone listed is gone with them
    // (deletion already frees them; this finishes whatever an earlier run left).
    let result = execute(&plan, &found, catalog, lock).and_then(|mut done| {
        // Packs the deleted snapshots shared with kept ones, mostly unused now, are
        // rewritten; the sweep then deletes the originals with the rest.
        // Best effort: a repack that fails (no room for the new packs, a damaged pack)
        // leaves every backup as it was, and the rotation stands.
        let kept = catalog.list()?;
        let repacked = repack(
            catalog,
            &kept,
            &repack_options(config, false),
            &Cancel::new(),
        )
        .unwrap_or_else(|e| {
            let chain = crate::error_chain(&e);
            catalog
                .log()
                .warn(&format!("repack: failed, nothing reclaimed: {chain}"));
            RepackReport {
                error: Some(chain),
                ..Default::default()
            }
        });
        done.repack = Some(repacked).filter(|r| r.used_bytes > 0 || r.error.is_some());
        done.deleted_files.extend(catalog.sweep_store_now()?);
        // And the index no longer names what went.
        for w in crate::engine::snapshot::upkeep::upkeep_now(catalog).warnings {
            catalog.log().warn(&format!("rotate: {w}"));
        }
        Ok(done)
    });
    match &result {
        Ok(executed) => {
            let repacked = executed
                .repack
                .as_ref()
                .filter(|r| r.packs_rewritten > 0)
                .map(|r| format!(", {} more by repacking", format_bytes(r.reclaimed_bytes)))
                .unwrap_or_default();
            let line = format!(
                "rotate: Rotation completed successfully: {} deleted, {} kept, {} freed{repacked}",
                plan.delete.len(),
                plan.keep.len(),
                format_bytes(executed.freed_bytes)
            );
            catalog.journal("rotate", true, &line, Outcome::default());
        }
        Err(e) => {
            let chain = crate::error_chain(e);
            let line = format!("rotate: failed: {chain}");
            let outcome = Outcome {
                error: Some(chain),
                ..Default::default()
            };
            catalog.journal("rotate", false, &line, outcome);
        }
    }
    let executed = result?;
    Ok(RotateReport {
        dry_run: false,
        plan,
        deleted_files: executed.deleted_files,
        freed_bytes: executed.freed_bytes,
        cleaned,
        repack: executed.repack,
    })
}

/// How rotation repacks, from the config: `[backup] max_unused`, the identity given
/// (`--identity`, `[encryption] identity_file`) and `[encryption]`'s recipients.
fn repack_options(config: &Config, dry_run: bool) -> RepackOptions<'_> {
    RepackOptions {
        tolerance: Tolerance(config.backup.max_unused.0),
        identity: config.identity.as_deref(),
        recipients: config.local_recipients(),
        reserve: config.backup.min_free_space.0,
        dry_run,
    }
}

/// What [`execute`] deleted.
#[derive(Debug, Default)]
pub struct Executed {
    pub deleted_files: Vec<PathBuf>,
    pub freed_bytes: u64,
    pub repack: Option<RepackReport>,
}

/// Phase three, the only one that deletes: remove the backups and safety copies `plan`
/// says go, as `found` found them, logging each. Needs the lock (`_lock` proves it is
/// held).
pub fn execute(
    plan: &RetentionPlan,
    found: &Found,
    catalog: &Catalog,
    _lock: &BackupDirLock,
) -> Result<Executed> {
    let log = catalog.log();
    let mut done = Executed::default();
    for d in &plan.delete {
        if let Some(entry) = found.listing.find_stem(&d.id) {
            done.freed_bytes += entry_bytes(entry, plan, found);
            done.deleted_files
                .extend(catalog.delete(entry, &found.listing)?);
        } else if let Some(copy) = found.copies.iter().find(|c| c.id() == d.id) {
            done.deleted_files.extend(safety_copies::delete(copy)?);
            done.freed_bytes += copy.bytes;
        } else {
            continue;
        }
        log.info(&format!(
            "rotate: deleted {} ({})",
            d.id,
            d.explained.join("; ")
        ));
    }
    Ok(done)
}

/// Bytes the backups and copies `plan` deletes occupy (what a dry run would free).
fn freed_bytes(plan: &RetentionPlan, found: &Found) -> u64 {
    plan.delete
        .iter()
        .map(|d| match found.listing.find_stem(&d.id) {
            Some(entry) => entry_bytes(entry, plan, found),
            None => found
                .copies
                .iter()
                .find(|c| c.id() == d.id)
                .map_or(0, |c| c.bytes),
        })
        .sum()
}

/// Bytes deleting `entry` gives back: its data files as they are on disk now. A data file
/// that is a symlink frees nothing (only the link goes; its target stays), so it is
/// measured with `lstat`, not by the size its metadata records. A full backup's parts
/// include its members' data. A snapshot's pack counts only for the first deleted
/// snapshot listing it, and only when no kept snapshot lists it too.
fn entry_bytes(entry: &BackupEntry, plan: &RetentionPlan, found: &Found) -> u64 {
    let deleted = |b: &BackupEntry| plan.delete.iter().any(|d| d.id == b.stem);
    let freed_here = |p: &&crate::catalog::Part| {
        !p.shared
            || !found.listing.backups.iter().any(|b| {
                b.stem != entry.stem
                    && b.parts.contains_path(&p.path)
                    && (!deleted(b)
                        || plan.delete.iter().position(|d| d.id == b.stem)
                            < plan.delete.iter().position(|d| d.id == entry.stem))
            })
    };
    entry
        .parts
        .data()
        .filter(freed_here)
        .filter_map(|p| std::fs::symlink_metadata(&p.path).ok())
        .filter(|m| m.file_type().is_file())
        .map(|m| m.len())
        .sum()
}
