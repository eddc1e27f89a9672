//! Totals over a listing: per type counts, sizes, newest and oldest, last success and
//! failure. One serializable shape, shared by `stats --json` and the REST API; it keeps
//! the seed's `total_backups` and `total_size_mb`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::state::{CatalogState, Outcome};
use super::{BackupEntry, Listing, Verdicts};
use crate::kind::BackupKind;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupRef {
    pub name: String,
    pub created_at: String,
    pub file_size: u64,
    /// The size to show: a snapshot's logical size (its files' bytes), else `file_size`.
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct KindStats {
    /// Complete backups of this type (parts of full backups included).
    pub count: usize,
    /// Of which parts of a full backup.
    pub parts_of_full: usize,
    /// Of which safety copies taken before a restore.
    pub pre_restore: usize,
    /// Bytes on disk of this type's data files (a snapshot's: its entry list; the packs
    /// are counted once, in `store_size`).
    pub size: u64,
    pub size_mb: f64,
    /// Snapshots of this type: the bytes they hold (their files', as an archive's
    /// uncompressed size), and what they added to the content store when made.
    pub snapshot_data: u64,
    pub snapshot_added: u64,
    pub newest: Option<BackupRef>,
    /// What `restore --latest` of this type would take (the newest good backup), and the
    /// newer ones it would pass over, with why (incomplete, failed verification, dated in
    /// the future): an admin panel shows them as `restore` says them.
    pub latest_good: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<PassedOver>,
    pub oldest: Option<BackupRef>,
    pub last_success: Option<Outcome>,
    pub last_failure: Option<Outcome>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub backup_dir: String,
    pub total_backups: usize,
    pub total_size: u64,
    pub total_size_mb: f64,
    pub full_backups: usize,
    pub database_backups: usize,
    pub storage_backups: usize,
    pub by_type: BTreeMap<String, KindStats>,
    /// Backups whose metadata or data is missing or inconsistent.
    pub incomplete: usize,
    /// `.partial` files and data without metadata.
    pub leftovers: usize,
    /// The most recent failure of any type.
    pub last_failure: Option<LastFailure>,
    pub free_space: Option<u64>,
    /// The snapshots' content store: the packs the complete snapshots list (each once)
    /// and their bytes, counted in `total_size` (a type's `size` counts its entry lists).
    pub store_packs: usize,
    pub store_size: u64,
}

/// A newer backup `restore --latest` passes over.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PassedOver {
    pub name: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastFailure {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0
}

fn reference(e: &BackupEntry) -> BackupRef {
    BackupRef {
        name: e
            .data_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_at: e.metadata.created_at.clone(),
        file_size: e.metadata.file_size,
        size: e.metadata.shown_size(),
    }
}

impl Stats {
    pub fn compute(
        backup_dir: &std::path::Path,
        listing: &Listing,
        state: &CatalogState,
        verdicts: &Verdicts,
        free_space: Option<u64>,
    ) -> Stats {
        let mut by_type = BTreeMap::new();
        let mut total_backups = 0;
        let mut total_size = 0;
        for kind in BackupKind::ALL {
            let complete: Vec<&BackupEntry> =
                listing.of_kind(kind).filter(|b| b.is_complete()).collect();
            let size: u64 = if kind == BackupKind::Full {
                0
            } else {
                complete.iter().map(|b| b.size()).sum()
            };
            let record = state.get(kind.as_str());
            let backups = complete
                .iter()
                .copied()
                .filter(|b| !b.metadata.is_pre_restore());
            let latest = super::choice::latest_good(listing, verdicts, kind);
            let ks = KindStats {
                count: complete.len(),
                parts_of_full: complete.iter().filter(|b| b.part_of().is_some()).count(),
                pre_restore: complete
                    .iter()
                    .filter(|b| b.metadata.is_pre_restore())
                    .count(),
                size: if kind == BackupKind::Full {
                    complete.iter().map(|b| b.size()).sum()
                } else {
                    size
                },
                size_mb: 0.0,
                snapshot_data: complete
                    .iter()
                    .filter(|b| b.metadata.snapshot.is_some())
                    .map(|b| b.metadata.shown_size())
                    .sum(),
                snapshot_added: complete
                    .iter()
                    .filter_map(|b| b.metadata.snapshot.as_ref().map(|s| s.added_bytes))
                    .sum(),
                // A restore's safety copy is not a backup: never the newest nor the oldest.
                newest: backups.clone().next().map(reference),
                latest_good: latest.as_ref().map(|(e, _)| super::choice::listed_name(e)),
                passed_over: latest
                    .map(|(_, skipped)| {
                        skipped
                            .into_iter()
                            .map(|(name, why)| PassedOver { name, why })
                            .collect()
                    })
                    .unwrap_or_default(),
                oldest: backups.clone().next_back().map(reference),
                last_success: record.and_then(|r| r.last_success.clone()),
                last_failure: record.and_then(|r| r.last_failure.clone()),
            };
            total_backups += complete.len();
            total_size += size;
            by_type.insert(
                kind.as_str().to_string(),
                KindStats {
                    size_mb: mb(ks.size),
                    ..ks
                },
            );
        }
        let last_failure = state
            .runs
            .iter()
            .filter_map(|(k, r)| {
                r.last_failure.clone().map(|o| LastFailure {
                    kind: k.clone(),
                    outcome: o,
                })
            })
            .max_by(|a, b| a.outcome.at.cmp(&b.outcome.at));
        let packs: BTreeMap<&std::path::Path, u64> = listing
            .backups
            .iter()
            .filter(|b| b.is_complete())
            .flat_map(|b| b.parts.iter().filter(|p| p.shared))
            .map(|p| (p.path.as_path(), p.size))
            .collect();
        let store_size: u64 = packs.values().sum();
        total_size += store_size;
        let count = |k: &str| by_type.get(k).map(|s| s.count).unwrap_or(0);
        Stats {
            backup_dir: backup_dir.display().to_string(),
            total_backups,
            total_size,
            total_size_mb: mb(total_size),
            full_backups: count("full"),
            database_backups: count("database"),
            storage_backups: count("storage"),
            incomplete: listing.backups.iter().filter(|b| !b.is_complete()).count(),
            leftovers: listing.leftovers.len(),
            by_type,
            last_failure,
            free_space,
            store_packs: packs.len(),
            store_size,
        }
    }
}
