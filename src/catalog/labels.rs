//! What `list` says about each backup and each file that is not one: notes that are true
//! (a run's `.partial` while it runs is not debris; a stray file is never "removed by the
//! next backup" when nothing would remove it). Pure but for two looks at the disk: is a
//! path a directory, and which run holds the lock.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{BackupEntry, LOCK_FILE, PARTIAL_SUFFIX, SQLITE_SIDE_SUFFIXES, Verdicts};
use crate::retention::is_future;

/// The notes of one backup row: incomplete, failed verification, dated in the future,
/// part of a full backup, safety copy, warnings, the keys an encrypted one opens with.
pub fn entry_notes(e: &BackupEntry, verdicts: &Verdicts, now: DateTime<Utc>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(p) = &e.problem {
        notes.push(format!("INCOMPLETE: {p}"));
    }
    if let Some(v) = verdicts.backups.get(&e.stem).filter(|v| !v.ok) {
        notes.push(format!(
            "FAILED VERIFICATION at {}: {}",
            v.at,
            v.failure.as_deref().unwrap_or("see backup.log")
        ));
    }
    if e.created.is_some_and(|c| is_future(&c, now)) {
        notes.push("DATED IN THE FUTURE (check the clock; not counted as the newest)".into());
    }
    if let Some(full) = e.part_of() {
        notes.push(format!("part of {full}"));
    }
    if e.metadata.is_pre_restore() {
        notes.push("pre-restore safety copy".into());
    }
    if let Some(r) = &e.metadata.repaired {
        let lost = match r.lost_files {
            0 => "nothing lost".to_string(),
            n => format!("{n} file(s) lost"),
        };
        notes.push(format!("repaired from {} ({lost})", r.from));
    }
    if !e.metadata.warnings.is_empty() {
        notes.push(format!("{} warnings", e.metadata.warnings.len()));
    }
    notes
}

/// The run holding the backup directory's lock, as its lock file names it, if that
/// process is alive. Read without locking: a listing must never get in a run's way.
pub fn running_operation(root: &Path) -> Option<String> {
    let text = fs::read_to_string(root.join(LOCK_FILE)).ok()?;
    let pid = text.strip_prefix("pid ")?.split_whitespace().next()?;
    let pid: u32 = pid.parse().ok()?;
    // The file outlives its holder; a dead pid means nobody holds it.
    Path::new("/proc")
        .join(pid.to_string())
        .exists()
        .then(|| text.trim().to_string())
}

/// What a file of `Listing::leftovers` is, and what happens to it. `running` is the
/// operation holding the lock ([`running_operation`]).
pub fn leftover_note(path: &Path, running: Option<&str>) -> String {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return "a name this program never writes; left alone".into();
    };
    let partial = name.ends_with(PARTIAL_SUFFIX)
        || SQLITE_SIDE_SUFFIXES
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .any(|base| base.ends_with(PARTIAL_SUFFIX));
    if partial {
        return match running {
            Some(holder) => format!("being written now ({holder})"),
            None => "left by an interrupted run; removed by the next backup or rotate".into(),
        };
    }
    if path.is_dir() {
        return "a directory named like a backup, not one; left alone".into();
    }
    let stem = name
        .strip_suffix(".json")
        .or_else(|| name.split_once('.').map(|(s, _)| s))
        .unwrap_or(name);
    let json = path.with_file_name(format!("{stem}.json"));
    if name.ends_with(".json") || json.exists() {
        return "part of a full backup whose manifest is missing (an interrupted run); removed by the next backup or rotate".into();
    }
    if path
        .with_file_name(format!("{stem}.json{PARTIAL_SUFFIX}"))
        .exists()
    {
        return "data of a run interrupted before its metadata landed; removed by the next backup or rotate".into();
    }
    "a data file without metadata: not a backup this program can restore (copied in, or its metadata was deleted); left alone".into()
}
