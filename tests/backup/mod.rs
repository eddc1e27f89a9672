//! `create`, `list` and `stats` against the real binary (docs/design.md §2–3): consistent database
//! snapshots under a live writer, storage archives that stock GNU tar restores exactly,
//! truthful metadata, private permissions, crash safety, the lock, and clear failures
//! that leave nothing behind.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde_json::Value;

use crate::util::*;

mod database;
mod errors;
mod messages;
mod metadata;
mod safety;
mod storage;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// The data file a database/storage metadata names.
fn data_path(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// Open a database file read-only.
fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `PRAGMA integrity_check` rows.
fn integrity(conn: &Connection) -> Vec<String> {
    let mut st = conn.prepare("PRAGMA integrity_check").expect("prepare");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The `tar` flag that selects a compression, for extraction and listing.
fn tar_flag(compression: &str) -> Option<&'static str> {
    match compression {
        "zstd" => Some("--zstd"),
        "gzip" => Some("-z"),
        "none" => None,
        other => panic!("unknown compression {other}"),
    }
}

/// Entry names of an archive as `tar -t` lists them (trailing `/` of dirs removed).
fn tar_list(archive: &Path, compression: &str) -> Vec<String> {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(f) = tar_flag(compression) {
        args.push(f.as_ref());
    }
    args.push("-tf".as_ref());
    args.push(archive.as_os_str());
    let r = tool("tar", args);
    r.assert_code(0);
    r.stdout
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// Number of non-directory entries (files and symlinks) under `dir`.
fn non_dir_entries(dir: &Path) -> u64 {
    files_under(dir).len() as u64
}

/// Assert that no backup and no temporary file exists: nothing under the per-type
/// directories, no `.partial` anywhere under the app root.
#[track_caller]
fn assert_nothing_written(app: &TestApp) {
    let files = app.backup_files();
    assert!(files.is_empty(), "files were left behind: {files:#?}");
    let partials: Vec<PathBuf> = files_under(&app.root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "temporary files left: {partials:#?}");
}

/// 1-based line of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
        + 1
}
