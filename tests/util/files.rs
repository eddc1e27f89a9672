//! Files, trees and databases: hashing, listing, snapshots and comparison of trees,
//! FIFOs and held locks, JSON metadata edits, and dumps of SQLite databases.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

// ---------------------------------------------------------------------------------------
// Files and trees

/// All non-directory entries under `dir` (recursively, links not followed), sorted.
/// A missing `dir` has none.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// All directories under `dir`, `dir` included, sorted.
pub fn dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().expect("file type").is_dir() {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out.sort();
    out
}

/// Lower-case hex SHA-256 of a file, computed here (streaming).
pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// The checksum `sha256sum` prints for a file.
pub fn sha256sum_cli(path: &Path) -> String {
    let r = tool("sha256sum", [path]);
    r.assert_code(0);
    r.stdout
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Set a path's modification (and access) time to `secs` since the epoch, without
/// following a symlink.
pub fn set_mtime(path: &Path, secs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: a valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Give every entry under `root` (root included, symlinks too) a distinct, fixed mtime,
/// children before their directories so creating them does not bump the directory again.
pub fn set_fixed_mtimes(root: &Path, base: i64) {
    let mut entries: Vec<PathBuf> = files_under(root);
    entries.extend(dirs_under(root));
    // Deepest first: a directory's time is set after anything inside it.
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in entries.iter().enumerate() {
        set_mtime(p, base + 37 * i as i64);
    }
}

/// What a tree entry is, compared between a source and its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File { len: u64, sha256: String },
    Symlink { target: PathBuf },
    Other(String),
}

/// One entry of a tree: its kind, permission bits and whole-second mtime (both `None`
/// for symlinks, whose own mode and time tools treat inconsistently).
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if let Some(m) = self.mode {
            write!(f, " mode {m:04o}")?;
        }
        if let Some(t) = self.mtime {
            write!(f, " mtime {t}")?;
        }
        Ok(())
    }
}

/// Every entry under `root` (root itself as ""), keyed by relative path.
pub fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut all = files_under(root);
    all.extend(dirs_under(root));
    for p in all {
        let rel = p.strip_prefix(root).expect("under root").to_path_buf();
        let m = fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let node = if ft.is_symlink() {
            Node {
                kind: NodeKind::Symlink {
                    target: fs::read_link(&p).expect("readlink"),
                },
                mode: None,
                mtime: None,
            }
        } else {
            let kind = if ft.is_dir() {
                NodeKind::Dir
            } else if ft.is_file() {
                NodeKind::File {
                    len: m.len(),
                    sha256: sha256_file(&p),
                }
            } else {
                NodeKind::Other(format!("{ft:?}"))
            };
            Node {
                kind,
                mode: Some(m.mode() & 0o7777),
                mtime: Some(m.mtime()),
            }
        };
        out.insert(rel, node);
    }
    out
}

/// Assert two trees hold the same entries with the same contents, link targets, modes
/// and mtimes, listing every difference.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_tree(expected);
    let b = snapshot_tree(actual);
    let mut diffs = Vec::new();
    for (path, node) in &a {
        match b.get(path) {
            None => diffs.push(format!("missing: {path:?} ({node:?})")),
            Some(other) if other != node => diffs.push(format!(
                "differs: {path:?}\n  want {node:?}\n  got  {other:?}"
            )),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("unexpected: {path:?}"));
    }
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        actual.display(),
        expected.display(),
        diffs.join("\n")
    );
}

/// Create a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Hold an exclusive `flock` on `path` (created if needed) with `text` written in it, as
/// a running vertex-backup would. Released when the returned file is dropped.
pub fn hold_flock(path: &Path, text: &str) -> File {
    use std::os::fd::AsRawFd;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file");
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(
        rc,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    f.set_len(0).expect("truncate");
    f.write_all(text.as_bytes()).expect("write lock text");
    f.flush().expect("flush");
    f
}

/// `json[key]` as a string (panics naming the key when absent or not a string).
#[track_caller]
pub fn jstr<'a>(json: &'a Value, key: &str) -> &'a str {
    json.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("`{key}` missing or not a string in {json:#}"))
}

/// The name `list` prints for a backup: its data file's, from its metadata.
pub fn name_of(meta: &Value) -> String {
    std::path::Path::new(jstr(meta, "backup_path"))
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// `json[key]` as an unsigned integer (panics naming the key when absent).
#[track_caller]
pub fn ju64(json: &Value, key: &str) -> u64 {
    json.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("`{key}` missing or not an unsigned integer in {json:#}"))
}

// =======================================================================================
// Restore and rotation helpers (tests/restore.rs, tests/rotate.rs).
// Kept together in this block; nothing above depends on it.

/// Every row of every table of `conn`, one string per row (`table: [values]`), tables by
/// name and rows by rowid: two databases with equal dumps hold the same data.
pub fn dump_db(conn: &Connection) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    {
        let mut st = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .expect("prepare table list");
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .expect("table list");
        for t in rows {
            tables.push(t.expect("table name"));
        }
    }
    let mut out = Vec::new();
    for t in tables {
        let sql = format!("SELECT * FROM \"{t}\" ORDER BY rowid");
        let mut st = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for row in rows {
            out.push(format!("{t}: {:?}", row.expect("row")));
        }
    }
    out
}

/// [`dump_db`] of a database file that must not be changed (a backup): a copy of it is
/// opened, so SQLite never writes a journal or WAL beside the original.
pub fn dump_db_file(path: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.db");
    fs::copy(path, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
    let conn = Connection::open(&copy).expect("open the copy");
    let dump = dump_db(&conn);
    drop(conn);
    dump
}

/// Invert every bit of the byte at `offset` of `path`, in place.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read the byte to flip");
    b[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write the flipped byte");
    f.sync_all().expect("sync");
}

/// A JSON file's content.
#[track_caller]
pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).expect("serialize"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Like [`assert_same_tree`], against a [`snapshot_tree`] taken earlier (the tree itself
/// may have changed since): every entry with the same contents, link target, mode and
/// mtime, listing every difference.
#[track_caller]
pub fn assert_tree_matches(expected: &BTreeMap<PathBuf, Node>, actual: &Path) {
    let b = snapshot_tree(actual);
    let mut diffs = Vec::new();
    for (path, node) in expected {
        match b.get(path) {
            None => diffs.push(format!("missing: {path:?} ({node:?})")),
            Some(other) if other != node => diffs.push(format!(
                "differs: {path:?}\n  want {node:?}\n  got  {other:?}"
            )),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !expected.contains_key(*p)) {
        diffs.push(format!("unexpected: {path:?}"));
    }
    assert!(
        diffs.is_empty(),
        "{} differs from the snapshot:\n{}",
        actual.display(),
        diffs.join("\n")
    );
}

/// Entries directly in `dir` whose file name contains `needle`, sorted.
pub fn children_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(needle))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
