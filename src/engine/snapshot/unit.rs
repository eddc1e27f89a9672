//! A snapshot backup as one: a snapshot, or a full backup and its snapshot members —
//! what `repair` and repacking rewrite together (a full backup's manifest records its
//! members' checksums).

use crate::catalog::{BackupEntry, Listing};
use crate::kind::BackupKind;

pub struct SnapshotUnit<'a> {
    /// The snapshot itself, or the full backup's manifest.
    pub head: &'a BackupEntry,
    /// The snapshots: the head itself, or the full backup's members.
    pub members: Vec<&'a BackupEntry>,
}

/// Every snapshot backup of `listing`; a full backup without snapshot members only when
/// `keep_memberless` says so.
pub fn units<'a>(
    listing: &'a Listing,
    keep_memberless: &dyn Fn(&BackupEntry) -> bool,
) -> Vec<SnapshotUnit<'a>> {
    let all = &listing.backups;
    let mut units = Vec::new();
    for b in all {
        if b.kind == BackupKind::Full {
            let members: Vec<&BackupEntry> = all
                .iter()
                .filter(|m| m.part_of() == Some(b.stem.as_str()) && m.metadata.snapshot.is_some())
                .collect();
            if !members.is_empty() || keep_memberless(b) {
                units.push(SnapshotUnit { head: b, members });
            }
        } else if b.metadata.snapshot.is_some() && b.part_of().is_none() {
            units.push(SnapshotUnit {
                head: b,
                members: vec![b],
            });
        }
    }
    units
}
