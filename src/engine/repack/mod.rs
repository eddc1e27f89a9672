//! Repacking the snapshot store: packs most of whose bytes no kept snapshot uses any more
//! are rewritten, so that rotation gives back the space of what it deleted even when the
//! deleted snapshots shared packs with kept ones (restic's `prune` with `--max-unused`).
//!
//! Plan, then execute, each step durable before the next, so a kill at any moment loses
//! nothing a kept snapshot needs:
//!
//! 1. **Use** ([`usage`]): every kept snapshot's entry list is read once; per pack, the
//!    chunks used and the bytes they take. Packs of snapshots that cannot be rewritten
//!    now stay as they are: incomplete, failed verification, being uploaded, encrypted
//!    without `--identity`.
//! 2. **Choose** ([`usage::choose`], pure): the emptiest packs until the unused bytes
//!    left are within `max_unused` percent of the used ones.
//! 3. **Copy** ([`copy`]): their used chunks, each checked against its id, into new
//!    packs — durable and indexed.
//! 4. **Rewrite** ([`stage`], then [`Catalog::commit_rewrite`]): the snapshots using
//!    them point at the copies; staged beside the originals, then put in place under one
//!    journal.
//! 5. The old packs are then listed by no snapshot: the sweep that follows every
//!    rotation deletes them, and the index upkeep forgets them.
//!
//! Killed before 4's journal, the new packs are unreferenced (the next sweep deletes
//! them) and the snapshots untouched; after it, the next cleaning finishes the renames.

mod copy;
mod stage;
pub mod usage;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::Cancel;
use crate::catalog::{BackupEntry, Catalog, Listing};
use crate::encryption::Recipients;
use crate::engine::snapshot::keys::Opening;
use crate::error::Result;
use copy::{Copier, Keys};
use stage::{Staged, Stager};
pub use usage::Tolerance;
use usage::{Unit, units};

/// How repacking runs.
pub struct RepackOptions<'a> {
    /// `[backup] max_unused`.
    pub tolerance: Tolerance,
    /// The operator's identity: without it, encrypted packs are left as they are.
    pub identity: Option<&'a Path>,
    /// `[encryption]`'s recipients (what encrypted packs and entry lists are sealed to).
    pub recipients: Option<&'a Recipients>,
    /// `min_free_space`: the new packs never leave less free.
    pub reserve: u64,
    /// Only say what would be rewritten.
    pub dry_run: bool,
}

/// What repacking found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepackReport {
    pub dry_run: bool,
    /// Bytes of the packs kept snapshots use, and how many of those no snapshot uses:
    /// before repacking.
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Packs rewritten (a dry run: that would be), and their bytes.
    pub packs_rewritten: usize,
    pub rewritten_bytes: u64,
    /// New packs written, and their bytes.
    pub packs_written: usize,
    pub written_bytes: u64,
    /// What deleting the rewritten packs gives back (a dry run: about).
    pub reclaimed_bytes: u64,
    /// Snapshots (and full backups) whose entry lists now point at the new packs.
    pub backups_rewritten: Vec<String>,
    /// Packs left as they were although unused bytes are in them, and why.
    pub left: Vec<String>,
    /// Why repacking stopped, when it failed (the rotation itself stands: every backup
    /// is as it was, or — a rewrite committed part-way — finished by the next run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Repack the store of `catalog`, whose kept backups `listing` lists. Call while holding
/// the lock, after retention deleted what it deletes and before the store's sweep.
pub fn repack(
    catalog: &Catalog,
    listing: &Listing,
    opts: &RepackOptions,
    cancel: &Cancel,
) -> Result<RepackReport> {
    let mut report = RepackReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !listing
        .backups
        .iter()
        .any(|b| b.metadata.snapshot.is_some())
    {
        return Ok(report);
    }
    // The operator's identity (loaded once, by the opening) opens sealed packs too.
    let opening = Opening::new(opts.identity, catalog.root())?;
    let identity = opening.operator.as_ref();
    let verdicts = catalog.load_verdicts();
    let pinned = catalog.pinned_for_upload();
    let can_open = identity.is_some() && opts.recipients.is_some();
    let fixed = |unit: &Unit| fixed_reason(unit, &verdicts, &pinned, can_open);
    let store = usage::read_use(listing, &opening, &fixed, cancel)?;
    let uses = store.packs;
    let table: Vec<_> = uses
        .iter()
        .map(|(id, u)| (*id, u.used_bytes(), u.unused_bytes(), u.pinned.is_none()))
        .collect();
    report.used_bytes = table.iter().map(|t| t.1).sum();
    report.unused_bytes = table.iter().map(|t| t.2).sum();
    let chosen = usage::choose(&table, opts.tolerance);
    let over = opts.tolerance.0.is_some_and(|pct| {
        report.unused_bytes > report.used_bytes.saturating_mul(u64::from(pct)) / 100
    });
    // Over the tolerance: the packs holding unused bytes that must stay, so the operator
    // knows what would free them (largest first, a few).
    let mut stuck: Vec<_> = uses
        .iter()
        .filter_map(|(id, u)| Some((u.unused_bytes(), id, u.pinned.as_ref()?)))
        .filter(|(unused, _, _)| over && *unused > 0)
        .collect();
    stuck.sort_by_key(|s| std::cmp::Reverse(s.0));
    report.left = store.unreadable;
    if !opts.dry_run {
        for why in &report.left {
            catalog.log().warn(&format!("repack: {why}"));
        }
    }
    report
        .left
        .extend(stuck.iter().take(10).map(|(unused, id, why)| {
            format!(
                "pack {id} ({} unused): {why}",
                crate::units::format_bytes(*unused)
            )
        }));
    if chosen.is_empty() {
        return Ok(report);
    }
    if opts.dry_run {
        report.packs_rewritten = chosen.len();
        for id in &chosen {
            if let Some(u) = uses.get(id) {
                report.rewritten_bytes += u.recorded.size;
                report.reclaimed_bytes += u.unused_bytes();
            }
        }
        return Ok(report);
    }
    let copier = Copier {
        catalog,
        keys: Keys {
            identity,
            recipients: opts.recipients,
        },
        reserve: opts.reserve,
        cancel,
    };
    let copied = copier.copy_packs(&chosen, &uses)?;
    for why in &copied.left {
        catalog.log().warn(&format!("repack: {why}"));
    }
    report.left.extend(copied.left.iter().cloned());
    if copied.moved.is_empty() {
        return Ok(report);
    }
    let written: HashMap<String, crate::catalog::PackRef> = copied
        .written
        .iter()
        .map(|w| (w.pack.id.clone(), w.pack.clone()))
        .collect();
    let stager = Stager {
        catalog,
        opening: &opening,
        copied: &copied,
        recipients: opts.recipients,
        written,
    };
    let mut staged = Staged::default();
    // Packs a unit that could not be rewritten still lists: they stay.
    let mut still_listed: HashSet<String> = HashSet::new();
    for unit in units(listing) {
        if let Err(e) = cancel.check() {
            staged.discard();
            return Err(e);
        }
        // A unit that cannot be rewritten keeps its old files and so its old packs.
        if let Err(e) = stager.stage_unit(&unit, &mut staged) {
            let why = format!(
                "{} was not rewritten ({}): the packs it uses stay",
                unit.head.stem,
                crate::error_chain(&e)
            );
            catalog.log().warn(&format!("repack: {why}"));
            report.left.push(why);
            still_listed.extend(
                unit.members
                    .iter()
                    .filter_map(|m| m.metadata.snapshot.as_ref())
                    .flat_map(|s| s.packs.iter().map(|p| p.id.clone())),
            );
        }
    }
    if staged.files().is_empty() {
        return Ok(report);
    }
    if let Err(e) = catalog.commit_rewrite(&staged.files()) {
        // Not committed (no journal): nothing changed. Committed part-way: the journal
        // stays, the sweep waits, and the next holder of the lock finishes it.
        if !catalog.rewrite_in_flight() {
            staged.discard();
        }
        return Err(e);
    }
    let rewritten: BTreeMap<_, _> = copied
        .moved
        .iter()
        .filter(|id| !still_listed.contains(&id.to_hex()))
        .filter_map(|id| uses.get(id).map(|u| (id, u.recorded.size)))
        .collect();
    report.packs_rewritten = rewritten.len();
    report.rewritten_bytes = rewritten.values().sum();
    report.packs_written = copied.written.len();
    report.written_bytes = copied.written.iter().map(|w| w.pack.size).sum();
    report.reclaimed_bytes = report.rewritten_bytes.saturating_sub(report.written_bytes);
    report.backups_rewritten = staged.backups;
    catalog.log().info(&format!(
        "repack: {} pack(s) rewritten into {}, {} reclaimed, {} backup(s) rewritten",
        report.packs_rewritten,
        report.packs_written,
        crate::units::format_bytes(report.reclaimed_bytes),
        report.backups_rewritten.len()
    ));
    Ok(report)
}

/// Why `unit` must not be rewritten now, if it must not.
fn fixed_reason(
    unit: &Unit,
    verdicts: &crate::catalog::Verdicts,
    pinned: &[String],
    can_open: bool,
) -> Option<String> {
    let all = || std::iter::once(unit.head).chain(unit.members.iter().copied());
    let name = &unit.head.stem;
    if let Some(b) = all().find(|b| b.problem.is_some()) {
        return Some(format!(
            "{name} is incomplete ({})",
            b.problem.as_deref().unwrap_or_default()
        ));
    }
    if all().any(|b| verdicts.failed(&b.stem)) {
        return Some(format!("{name} failed verification (`repair` first)"));
    }
    if all().any(|b| pinned.contains(&b.stem)) {
        return Some(format!("{name} is being uploaded"));
    }
    if all().any(is_sealed) && !can_open {
        return Some(format!(
            "{name} is encrypted: `rotate --identity KEY` (with [encryption]'s recipients) repacks it"
        ));
    }
    None
}

fn is_sealed(b: &BackupEntry) -> bool {
    b.metadata.format().is_ok_and(|f| f.encryption.is_some())
}
