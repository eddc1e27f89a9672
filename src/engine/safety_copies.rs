//! The copies an in-place restore sets aside beside the live data and that are not in the
//! catalog: the replaced storage tree (`STORAGE.pre-restore-STAMP[_N]`, tens of GB) and a
//! damaged live database moved aside (`DB.pre-restore-STAMP[_N]`, with its `-wal`,
//! `-shm`, `-journal`). Named by [`super::restore`]; found here for `list` and for
//! rotation (`[retention] keep_pre_restore`), and deleted only by rotation. Only names
//! of exactly that form are taken for ours: anything else beside the live data is the
//! operator's.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};
use serde::Serialize;

use crate::catalog::{SQLITE_SIDE_SUFFIXES, sqlite_side_file};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// The infix a restore puts between the live name and its timestamp.
const INFIX: &str = ".pre-restore-";

/// One copy a restore set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SafetyCopy {
    /// What it is a copy of: `storage` (a tree) or `database` (a file).
    #[serde(rename = "type")]
    pub kind: BackupKind,
    pub path: PathBuf,
    /// When the restore set it aside (from its name, in the local zone it was named in).
    pub created: DateTime<FixedOffset>,
    /// Bytes it occupies (a tree's regular files; a database with its side files).
    pub bytes: u64,
}

impl SafetyCopy {
    /// The name rotation plans it under: its path, unique beside both live paths.
    pub fn id(&self) -> String {
        self.path.display().to_string()
    }
}

/// Every safety copy beside the live storage and database, newest first.
pub fn find(config: &Config) -> Vec<SafetyCopy> {
    let mut copies = beside(&config.paths.storage, BackupKind::Storage);
    copies.extend(beside(&config.paths.database, BackupKind::Database));
    copies.sort_by(|a, b| b.created.cmp(&a.created).then(b.path.cmp(&a.path)));
    copies
}

/// The copies of `live` in its directory (an unreadable directory has none to offer).
fn beside(live: &Path, kind: BackupKind) -> Vec<SafetyCopy> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}{INFIX}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let created = parse_stamp(file_name.strip_prefix(&prefix)?)?;
            let path = e.path();
            let bytes = match kind {
                BackupKind::Storage => tree_bytes(&path),
                _ => database_bytes(&path),
            };
            Some(SafetyCopy {
                kind,
                path,
                created,
                bytes,
            })
        })
        .collect()
}

/// `20261130_140000` or `20261130_140000_2` → that local time; anything else (a SQLite
/// side file, a name not ours) → `None`.
fn parse_stamp(rest: &str) -> Option<DateTime<FixedOffset>> {
    let stamp = rest.get(..15)?;
    let suffix = &rest[15..];
    let suffix_ok = suffix.is_empty()
        || suffix
            .strip_prefix('_')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !suffix_ok {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
}

/// Bytes of the regular files under `root` (symlinks not followed).
fn tree_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len())
}

/// A set-aside database with its side files.
fn database_bytes(path: &Path) -> u64 {
    file_bytes(path)
        + SQLITE_SIDE_SUFFIXES
            .iter()
            .map(|sfx| file_bytes(&sqlite_side_file(path, sfx)))
            .sum::<u64>()
}

/// Delete `copy` (a tree, or a database and its side files); returns the paths removed.
/// Rotation calls it with the backup directory's lock held.
pub fn delete(copy: &SafetyCopy) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    match copy.kind {
        BackupKind::Storage => {
            std::fs::remove_dir_all(&copy.path)
                .map_err(|e| Error::io("delete the safety copy", &copy.path, e))?;
            removed.push(copy.path.clone());
        }
        _ => {
            for side in SQLITE_SIDE_SUFFIXES.map(|sfx| sqlite_side_file(&copy.path, sfx)) {
                match std::fs::remove_file(&side) {
                    Ok(()) => removed.push(side),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete the safety copy", &side, e)),
                }
            }
            std::fs::remove_file(&copy.path)
                .map_err(|e| Error::io("delete the safety copy", &copy.path, e))?;
            removed.push(copy.path.clone());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_restore_gives_are_copies() {
        assert!(parse_stamp("20261130_140000").is_some());
        assert!(parse_stamp("20261130_140000_12").is_some());
        assert!(parse_stamp("20261130_140000-wal").is_none());
        assert!(parse_stamp("20261130_140000_").is_none());
        assert!(parse_stamp("keep-me").is_none());
    }

    #[test]
    fn copies_beside_the_live_paths_are_found_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("storage");
        let tree = dir.path().join("storage.pre-restore-20261130_140000");
        std::fs::create_dir_all(tree.join("a")).unwrap();
        std::fs::write(tree.join("a/f"), b"12345").unwrap();
        std::fs::create_dir_all(dir.path().join("storage.pre-restore-mine")).unwrap();
        let db = dir.path().join("app.db.pre-restore-20261129_010000");
        std::fs::write(&db, b"abc").unwrap();
        std::fs::write(sqlite_side_file(&db, "-wal"), b"de").unwrap();
        let mut found = beside(&live, BackupKind::Storage);
        found.extend(beside(&dir.path().join("app.db"), BackupKind::Database));
        let got: Vec<_> = found.iter().map(|c| (c.path.clone(), c.bytes)).collect();
        assert_eq!(got, [(tree, 5), (db.clone(), 5)]);
        let removed = delete(&found[1]).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!db.exists());
    }
}
