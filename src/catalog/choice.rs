//! Which backup counts as "the newest good one" of a type, and which newer ones that choice
//! passes over and why: complete, not failed verification, not dated in the future, not a
//! restore's safety copy. One rule for `restore --latest`/`--at` (engine::select), the
//! bot's `/status` and `stats` (the CLI's and the API's), so none of them disagrees about
//! what "latest" means or passes over a newer backup without saying so.

use chrono::{DateTime, FixedOffset, Utc};

use super::{BackupEntry, Listing, Verdicts};
use crate::kind::BackupKind;

/// The backups of `kind` newer than `chosen` that a pick by time passed over, with why.
/// Safety copies are not backups and are not named.
pub fn passed_over(
    listing: &Listing,
    verdicts: &Verdicts,
    kind: BackupKind,
    chosen: &BackupEntry,
    upto: Option<DateTime<FixedOffset>>,
) -> Vec<(String, String)> {
    let now = Utc::now();
    listing
        .of_kind(kind)
        .take_while(|b| b.stem != chosen.stem)
        .filter(|b| !b.metadata.is_pre_restore())
        .filter(|b| match (upto, b.created) {
            (Some(at), Some(c)) => c <= at,
            _ => true,
        })
        .filter_map(|b| {
            let why = if let Some(problem) = &b.problem {
                format!("incomplete: {problem}")
            } else if verdicts.failed(&b.stem) {
                "it failed its last verification".to_string()
            } else if b
                .created
                .is_some_and(|c| crate::retention::is_future(&c, now))
            {
                "it is dated in the future (a clock that ran ahead)".to_string()
            } else {
                return None;
            };
            Some((listed_name(b), why))
        })
        .collect()
}

/// What `--latest` picks among `listing`'s backups of `kind`: the newest good one (complete,
/// not failed verification, not dated in the future, not a safety copy), with the newer
/// backups it passed over and why. The bot's `/status` shows the same choice.
pub fn latest_good<'a>(
    listing: &'a Listing,
    verdicts: &'a Verdicts,
    kind: BackupKind,
) -> Option<(&'a BackupEntry, Vec<(String, String)>)> {
    let now = Utc::now();
    let entry = good_of_kind(listing, verdicts, kind).find(|b| {
        b.created
            .is_some_and(|c| !crate::retention::is_future(&c, now))
    })?;
    Some((entry, passed_over(listing, verdicts, kind, entry, None)))
}

/// Complete backups of `kind` whose last verification (if any) passed, newest first.
pub fn good_of_kind<'a>(
    listing: &'a Listing,
    verdicts: &'a Verdicts,
    kind: BackupKind,
) -> impl Iterator<Item = &'a BackupEntry> {
    // A restore's safety copy is not a backup: it holds what was live before a restore
    // (often the damage the restore undid), so `--latest`/`--at` never pick it; it stays
    // restorable by name.
    listing.of_kind(kind).filter(move |b| {
        b.is_complete() && !verdicts.failed(&b.stem) && !b.metadata.is_pre_restore()
    })
}

/// The name `list` prints for a backup: its data file's name (a full backup's manifest).
pub fn listed_name(entry: &BackupEntry) -> String {
    entry
        .data_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| entry.stem.clone())
}
