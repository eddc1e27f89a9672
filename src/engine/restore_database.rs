//! The live database replaced by a restore: the backup opened as a file SQLite can read
//! (checked first, decrypted whole), the pre-restore safety copy of what is live (or, when
//! SQLite cannot read the live file, that file and its WAL set aside), then the copy into
//! the live file through SQLite, checked after.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::Local;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::backup::{BackupJob, create_backup_locked};
use super::database::{INTEGRITY_CHECKS, backup_into, run_check};
use super::decrypt::{Reading, SqliteFile};
use super::verify::open_verified_database;
use super::{Cancel, Progress};
use crate::catalog::{
    BackupDirLock, Catalog, Format, SQLITE_SIDE_SUFFIXES, sqlite_side_file, sync_dir,
};
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStep {
    pub source: PathBuf,
    #[serde(skip)]
    pub checksum: String,
    /// How to read it (encrypted or not), and the identity to decrypt with.
    #[serde(skip)]
    pub format: Format,
    #[serde(skip)]
    pub identity: Option<PathBuf>,
    pub target: PathBuf,
    /// A pre-restore backup of the current database is taken first.
    pub safety_copy: bool,
}

/// The pre-restore safety copy of the live database (or, when SQLite cannot read it, the
/// damaged file set aside): where it went.
pub(super) fn take_safety_copy(
    d: &DatabaseStep,
    config: &Config,
    catalog: &Catalog,
    lock: &BackupDirLock,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<Option<PathBuf>> {
    let job = BackupJob {
        config,
        kind: BackupKind::Database,
        reason: Some("pre-restore".into()),
        progress,
        cancel: cancel.clone(),
        // The restore stopped the app already, before this copy.
        app: &crate::engine::live_app::NoApp,
    };
    match create_backup_locked(&job, catalog, lock) {
        Ok(r) => Ok(Some(r.path)),
        // The live database is what needs repairing: SQLite cannot copy it, so keep its
        // bytes aside instead and restore into a fresh file.
        Err(f) if is_damaged_database(&f.error) => {
            let aside = set_damaged_database_aside(&d.target)?;
            catalog.log().warn(&format!(
                "restore: the live database {} could not be copied ({}); kept as {} instead (restart the app after the restore: it may still hold the old file open)",
                crate::names::shown(&d.target),
                crate::error_chain(&*f.error),
                crate::names::shown(&aside)
            ));
            Ok(Some(aside))
        }
        Err(f) => Err(*f.error),
    }
}

/// The database backup as a file SQLite restores from: checked first unless `verify` is
/// off; an encrypted one decrypted whole (so every chunk is authenticated) either way.
pub(super) fn prepare_database(
    d: &DatabaseStep,
    verify: bool,
    progress: &dyn Progress,
) -> Result<SqliteFile> {
    let reading = Reading {
        format: &d.format,
        identity: d.identity.as_deref(),
    };
    if !verify {
        return SqliteFile::open(&d.source, reading.format, reading.identity);
    }
    progress.begin("verify database", None, None);
    let (_, _, file) = open_verified_database(&d.source, reading, Some(&d.checksum))?;
    progress.end();
    Ok(file)
}

/// Did the safety copy fail because the live database itself is damaged (not SQLite,
/// corrupt, or failing its integrity check)? Then there is nothing SQLite can copy, and
/// refusing would block exactly the repair the operator is attempting.
fn is_damaged_database(e: &Error) -> bool {
    match e {
        Error::Sqlite { source, .. } => matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        ),
        Error::Verify { check, .. } => INTEGRITY_CHECKS.contains(check),
        _ => false,
    }
}

/// Rename a damaged live database and its side files (`-wal`, `-shm`, `-journal`) to
/// `NAME.pre-restore-TIMESTAMP…`, as the storage tree is kept. The side files must go
/// with it: SQLite deletes a WAL or journal it finds beside a new, empty database, and
/// with a damaged main file that WAL may hold the app's only copy of recent commits. All
/// or nothing: if one rename fails, those already done are undone.
fn set_damaged_database_aside(live: &Path) -> Result<PathBuf> {
    let stamp = Local::now().format("%Y%m%d_%H%M%S").to_string();
    let aside = unused_aside_path(live, &stamp);
    let mut moves: Vec<(PathBuf, PathBuf)> = SQLITE_SIDE_SUFFIXES
        .iter()
        .map(|sfx| (sqlite_side_file(live, sfx), sqlite_side_file(&aside, sfx)))
        .filter(|(from, _)| from.exists())
        .collect();
    moves.push((live.to_path_buf(), aside.clone()));
    for (i, (from, to)) in moves.iter().enumerate() {
        if let Err(e) = fs::rename(from, to) {
            for (back_from, back_to) in moves[..i].iter().rev() {
                let _ = fs::rename(back_to, back_from);
            }
            return Err(Error::io("move the damaged database aside to", to, e));
        }
    }
    if let Some(parent) = live.parent() {
        sync_dir(parent)?;
    }
    Ok(aside)
}

/// Copy a verified database backup into `target` through SQLite: into a live WAL
/// database this is one transaction that other connections observe atomically.
pub(super) fn restore_database(
    source: &Path,
    target: &Path,
    config: &Config,
    safety_copy: Option<&Path>,
) -> Result<()> {
    let busy = config.backup.busy_timeout.0;
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("open", source, e))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).ctx("create", parent)?;
    }
    let mut dst = Connection::open(target).map_err(|e| Error::sqlite("open", target, e))?;
    dst.busy_timeout(busy)
        .map_err(|e| Error::sqlite("configure", target, e))?;
    backup_into(&src, source, &mut dst, busy)?;
    run_check(&dst, "quick_check").map_err(|detail| {
        Error::verify(
            target,
            "SQLite quick_check after restore",
            match safety_copy {
                Some(copy) => format!(
                    "{detail}; the database as it was before is kept as {}",
                    crate::names::shown(copy)
                ),
                None => detail,
            },
        )
    })?;
    dst.close()
        .map_err(|(_, e)| Error::sqlite("close", target, e))?;
    Ok(())
}

/// `NAME.pre-restore-STAMP` beside `live` (`_2`, `_3`… if taken): where a restore keeps
/// what it replaces. Built from the name's bytes, whatever they are.
pub(super) fn unused_aside_path(live: &Path, stamp: &str) -> PathBuf {
    let with_suffix = |suffix: &str| {
        let mut name = live.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".pre-restore-{stamp}{suffix}"));
        live.with_file_name(name)
    };
    let mut candidate = with_suffix("");
    let mut n = 2;
    while candidate.exists() {
        candidate = with_suffix(&format!("_{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_damaged_database_goes_aside_with_its_side_files_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(OsStr::from_bytes(b"app\xff.db"));
        fs::write(&live, b"junk").unwrap();
        fs::write(sqlite_side_file(&live, "-wal"), b"wal").unwrap();
        // A name already taken by an earlier restore in the same second.
        let stamp = Local::now().format("%Y%m%d_%H%M%S").to_string();
        fs::write(unused_aside_path(&live, &stamp), b"earlier").unwrap();

        let aside = set_damaged_database_aside(&live).unwrap();
        assert!(!live.exists() && !sqlite_side_file(&live, "-wal").exists());
        assert_eq!(fs::read(&aside).unwrap(), b"junk");
        assert_eq!(fs::read(sqlite_side_file(&aside, "-wal")).unwrap(), b"wal");
        assert!(
            aside
                .as_os_str()
                .as_bytes()
                .starts_with(live.as_os_str().as_bytes()),
            "{aside:?} is not beside {live:?} under the same name"
        );
    }
}
