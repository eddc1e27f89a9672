//! Consistent snapshots of a live SQLite database, taken through SQLite itself (docs/design.md §3):
//! the online backup API in ONE step. A step-wise backup restarts on every commit from
//! another connection and never finishes under a busy app; `step(-1)` copies every page
//! under one read transaction, which in WAL mode does not block the app's writers.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::config::IntegrityCheck;
use crate::error::{Error, Result};

/// Open the live database for reading as a backup source.
///
/// Read-only first: a read-write connection that closes last checkpoints and deletes the
/// app's WAL file, and when the main file is damaged that WAL may hold the only copy of
/// recent commits — a backup must not change the live files. The one case read-only
/// cannot handle is a rollback-journal database left with a hot journal by an app that
/// crashed mid-transaction (`SQLITE_READONLY_ROLLBACK`): only a writer may roll it back,
/// which is exactly what the app itself does on its next open, so then (and only then)
/// the source is reopened read-write. Connections open lazily: the schema probe is what
/// surfaces such errors.
pub fn open_source(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    // SQLite reports any failure to open as "unable to open database file"; looking at
    // the file ourselves first names the cause ("Permission denied", "No such file").
    // stat and access(2), never open: opening a FIFO put at this path would block until
    // a writer came, and closing any descriptor of the live file would drop the POSIX
    // locks SQLite holds on it in this process (the daemon's replicating connection's).
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::io(
                "open the database",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Err(e) => return Err(Error::io("open the database", path, e)),
    }
    crate::sys::may_read(path).map_err(|e| Error::io("open the database", path, e))?;
    let open = |flags: OpenFlags| -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(busy_timeout)?;
        // Touch the schema: a file that is not SQLite fails here, before anything is written.
        conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))?;
        Ok(conn)
    };
    let failed = |e| read_only_directory(path).unwrap_or_else(|| Error::sqlite("read", path, e));
    match open(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(conn) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
            open(OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(failed)
        }
        Err(e) => Err(failed(e)),
    }
}

/// The case SQLite words as "attempt to write a readonly database": a WAL database the
/// app closed cleanly (no `-shm` beside it) in a directory this user may not write. Every
/// reader of a WAL database needs the `-shm` index, so SQLite must create it, and cannot.
/// Opening it `immutable` would work only while no writer exists, which a backup of a
/// live database cannot know — so it is refused, naming what to grant.
fn read_only_directory(path: &Path) -> Option<Error> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    // Bytes 18 and 19 of the header: file format read/write versions, 2 = WAL.
    let wal = header.starts_with(b"SQLite format 3\0") && header[18] == 2 && header[19] == 2;
    let shm = crate::catalog::sqlite_side_file(path, "-shm");
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    if !wal || shm.exists() || crate::sys::may_write(dir) {
        return None;
    }
    Some(Error::io(
        "read the WAL-mode database in",
        dir,
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "SQLite must create {} to read a WAL database the app closed cleanly, but this user may not write to the directory; give the service user write access to it (README: permissions)",
                crate::names::shown(&shm)
            ),
        ),
    ))
}

/// Refuse a source database that holds no tables: an empty file (truncated to 0 bytes,
/// or a path the app never wrote) opens as a valid, empty SQLite database, and its
/// "successful" backup would count as the newest good one — after `keep_last` of them,
/// retention would have pushed out every backup that had the data.
pub fn refuse_empty(source: &Connection, path: &Path) -> Result<()> {
    let objects: i64 = source
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| Error::sqlite("read", path, e))?;
    if objects > 0 {
        return Ok(());
    }
    Err(Error::EmptyDatabase {
        path: path.to_path_buf(),
        bytes: estimate_size(path),
    })
}

/// Copy `source` into a new database file at `dest` (which must not exist yet) in one
/// backup step, retrying while the source is locked, up to `busy_timeout`.
pub fn copy_database(
    source: &Connection,
    source_path: &Path,
    dest: &Path,
    busy_timeout: Duration,
) -> Result<()> {
    // Through the coalescing VFS: the copy is private until it is renamed into place.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let opened = if super::sqlite_vfs::register() {
        Connection::open_with_flags_and_vfs(dest, flags, super::sqlite_vfs::NAME)
    } else {
        Connection::open_with_flags(dest, flags)
    };
    let mut target = opened.map_err(|e| Error::sqlite("create", dest, e))?;
    // The caller fsyncs the finished copy once; SQLite's own syncs of a file nobody else
    // can see yet would only add waits.
    // No rollback journal either: a crash leaves a `.partial` that is thrown away anyway.
    target
        .pragma_update(None, "synchronous", "OFF")
        .and_then(|()| target.pragma_update(None, "journal_mode", "OFF"))
        .map_err(|e| Error::sqlite("configure", dest, e))?;
    backup_into(source, source_path, &mut target, busy_timeout)?;
    // The copy carries the source's WAL flag; make it a self-contained rollback-journal
    // file so it is one file to move, hash and open read-only.
    target
        .pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| Error::sqlite("finish", dest, e))?;
    target
        .close()
        .map_err(|(_, e)| Error::sqlite("close", dest, e))?;
    Ok(())
}

/// Copy every page of `source` into `target` in one step (SQLite's online backup API),
/// retrying while either side is locked, up to `busy_timeout`. Into a live WAL database
/// this is one write transaction: other connections see the old or the new content.
pub fn backup_into(
    source: &Connection,
    source_path: &Path,
    target: &mut Connection,
    busy_timeout: Duration,
) -> Result<()> {
    let backup = Backup::new(source, target)
        .map_err(|e| Error::sqlite("start a backup of", source_path, e))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match backup
            .step(-1)
            .map_err(|e| Error::sqlite("copy", source_path, e))?
        {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked if started.elapsed() < busy_timeout => {
                // Another connection holds an exclusive lock; back off, capped.
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            _ => {
                return Err(Error::sqlite(
                    "copy",
                    source_path,
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some(format!("still locked after {} s", busy_timeout.as_secs())),
                    ),
                ));
            }
        }
    }
}

/// Run the configured integrity check on a database file. Returns what SQLite said
/// ("ok"), or an error carrying its complaints.
pub fn integrity_check(path: &Path, mode: IntegrityCheck) -> Result<String> {
    let pragma = match mode {
        IntegrityCheck::Off => return Ok("skipped".into()),
        IntegrityCheck::Quick => "quick_check",
        IntegrityCheck::Full => "integrity_check",
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::verify(path, "database opens", e.to_string()))?;
    run_check(&conn, pragma).map_err(|detail| Error::verify(path, pragma_label(pragma), detail))
}

/// Run the configured integrity check of the copy at `path` on a thread of its own while
/// `alongside` runs on this one, and return both results. The check is CPU work on pages
/// the copy just left in the page cache; what runs beside it (the fsync that waits for the
/// disk, the SHA-256 of the same bytes, or the sealing) needs none of its results, and the
/// backup counts only once all of them succeeded — so their times overlap instead of
/// adding up (issue 18: the check, the fsync and the hash were three passes in a row; the
/// check, the longest, is now what the others hide behind).
pub fn integrity_check_alongside<T: Send>(
    path: &Path,
    mode: IntegrityCheck,
    alongside: impl FnOnce() -> T + Send,
) -> (Result<String>, T) {
    thread::scope(|scope| {
        let check = thread::Builder::new()
            .name("db-check".into())
            .spawn_scoped(scope, || integrity_check(path, mode));
        let other = alongside();
        let integrity = match check {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::verify(
                    path,
                    check_label(mode),
                    "the check thread panicked".to_string(),
                ))
            }),
            // No thread to be had: check here, after the other work.
            Err(_) => integrity_check(path, mode),
        };
        (integrity, other)
    })
}

/// Run the check on an open connection: `Ok("ok")`, or the problems SQLite listed.
pub fn run_check(conn: &Connection, pragma: &str) -> std::result::Result<String, String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA {pragma}"))
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok("ok".into())
    } else {
        let mut detail = rows.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if detail.is_empty() {
            detail = "no result".into();
        }
        Err(detail)
    }
}

/// How errors name the check `mode` runs.
fn check_label(mode: IntegrityCheck) -> &'static str {
    match mode {
        IntegrityCheck::Full => INTEGRITY_CHECKS[1],
        _ => INTEGRITY_CHECKS[0],
    }
}

fn pragma_label(pragma: &str) -> &'static str {
    if pragma == "quick_check" {
        INTEGRITY_CHECKS[0]
    } else {
        INTEGRITY_CHECKS[1]
    }
}

/// The names of the checks SQLite runs on a database copy, as errors report them.
pub const INTEGRITY_CHECKS: [&str; 2] = ["SQLite quick_check", "SQLite integrity_check"];

/// Bytes the live database occupies (main file plus WAL): the space a copy needs at most.
pub fn estimate_size(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(&crate::catalog::sqlite_side_file(path, "-wal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_source_is_refused_and_a_used_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let conn = open_source(&empty, Duration::from_secs(1)).unwrap();
        let err = refuse_empty(&conn, &empty).unwrap_err();
        assert!(
            matches!(err, Error::EmptyDatabase { bytes: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("empty.db"), "{err}");

        let used = dir.path().join("used.db");
        Connection::open(&used)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let conn = open_source(&used, Duration::from_secs(1)).unwrap();
        refuse_empty(&conn, &used).unwrap();
    }

    #[test]
    fn an_unreadable_source_names_the_os_error() {
        use std::os::unix::fs::PermissionsExt;
        // Root reads anything; the check is meaningful only for other users.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = open_source(&db, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
            "{err:?}"
        );
    }
}
