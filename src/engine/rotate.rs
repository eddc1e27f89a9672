//! Applying retention to the backup directory: list, plan with the pure
//! [`crate::retention::apply`], then delete what the plan says — metadata first, so a
//! backup stops existing in one step; a full backup takes its parts with it.

use std::path::PathBuf;

use chrono::{Local, SecondsFormat, Utc};
use serde::Serialize;

use super::backup::catalog_for;
use crate::catalog::{BackupDirLock, Catalog, Outcome};
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
}

/// The retention plan for what is on disk now.
pub fn plan(
    catalog: &Catalog,
    config: &Config,
    policy: &RetentionPolicy,
) -> Result<(crate::catalog::Listing, RetentionPlan)> {
    let listing = catalog.list()?;
    let verdicts = catalog.load_verdicts();
    let candidates: Vec<Candidate> = listing
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
            })
        })
        .collect();
    let plan = retention::apply(&candidates, policy, Utc::now(), config.schedule.timezone);
    Ok((listing, plan))
}

/// Rotate: take the lock (unless a dry run), clean leftovers, plan, delete.
pub fn rotate(config: &Config, policy: &RetentionPolicy, dry_run: bool) -> Result<RotateReport> {
    let catalog = catalog_for(config);
    if dry_run {
        let (listing, plan) = plan(&catalog, config, policy)?;
        let freed = plan
            .delete
            .iter()
            .filter_map(|d| listing.find_stem(&d.id))
            .map(|e| entry_bytes(e, &listing))
            .sum();
        return Ok(RotateReport {
            dry_run,
            plan,
            deleted_files: Vec::new(),
            freed_bytes: freed,
            cleaned: Vec::new(),
        });
    }
    let lock = catalog.lock("rotate")?;
    rotate_locked(config, &catalog, &lock, policy)
}

/// Rotate while holding the lock (after `create --max-backups`).
pub fn rotate_locked(
    config: &Config,
    catalog: &Catalog,
    _lock: &BackupDirLock,
    policy: &RetentionPolicy,
) -> Result<RotateReport> {
    let cleaned = catalog.clean_leftovers()?;
    let (listing, plan) = plan(catalog, config, policy)?;
    let mut deleted_files = Vec::new();
    let mut freed = 0;
    let log = catalog.log();
    let result = (|| {
        for d in &plan.delete {
            if let Some(entry) = listing.find_stem(&d.id) {
                freed += entry_bytes(entry, &listing);
                deleted_files.extend(catalog.delete(entry, &listing)?);
                log.info(&format!(
                    "rotate: deleted {} ({})",
                    d.id,
                    d.reasons.join(", ")
                ));
            }
        }
        Ok(())
    })();
    let mut state = catalog.load_state();
    let now = Local::now().to_rfc3339_opts(SecondsFormat::Secs, false);
    match &result {
        Ok(()) => {
            log.info(&format!(
                "rotate: Rotation completed successfully: {} deleted, {} kept, {} freed",
                plan.delete.len(),
                plan.keep.len(),
                format_bytes(freed)
            ));
            state.record_success(
                "rotate",
                Outcome {
                    at: now,
                    ..Default::default()
                },
            );
        }
        Err(e) => {
            let chain = crate::error_chain(e);
            log.error(&format!("rotate: failed: {chain}"));
            state.record_failure(
                "rotate",
                Outcome {
                    at: now,
                    error: Some(chain),
                    ..Default::default()
                },
            );
        }
    }
    let _ = catalog.save_state(&state);
    result?;
    Ok(RotateReport {
        dry_run: false,
        plan,
        deleted_files,
        freed_bytes: freed,
        cleaned,
    })
}

fn entry_bytes(entry: &crate::catalog::BackupEntry, _listing: &crate::catalog::Listing) -> u64 {
    // A full backup's parts include its members' data.
    entry.parts.data_bytes()
}
