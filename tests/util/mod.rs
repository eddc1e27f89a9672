//! Shared fixtures for the integration tests: a throw-away installation laid out like a
//! Vertex AR server (`TestApp`), a runner for the real binary with a deadline, polling
//! without fixed sleeps, and helpers to hash, list and compare file trees.
//!
//! Every test module uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vertex-backup");

/// How long any single run of the binary may take before the test gives up on it. Far
/// above what any run needs; it only turns a hang (e.g. a blocked read on a FIFO) into a
/// failure instead of a stuck test run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Polling

/// Call `cond` until it returns true; panic naming `what` once `timeout` has passed.
/// The short sleep between calls is only to avoid spinning, never a synchronisation.
pub fn poll_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll_for(timeout, what, || cond().then_some(()))
}

/// Call `probe` until it returns `Some`, and return that value; panic after `timeout`.
pub fn poll_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// The outcome of one run of the binary.
#[derive(Debug, Clone)]
pub struct Run {
    /// The program and its arguments.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code; `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Panic with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// stdout parsed as JSON (panics with the output if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }

    /// Both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// A process of the binary running in the background. Its output goes to anonymous temp
/// files (never pipes, so it can never block on a full pipe). Killed when dropped.
pub struct Spawned {
    pub child: Child,
    args: Vec<String>,
    out: File,
    err: File,
    status: Option<ExitStatus>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(st) => {
                self.status = Some(st);
                false
            }
            None => true,
        }
    }

    /// Send `sig` (e.g. `libc::SIGKILL`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Wait (polling, with a deadline) for the process to exit and collect its output.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let what = format!("`{}` to exit", self.args.join(" "));
        poll_until(timeout, &what, || !self.is_running());
        let status = self.status.expect("exited");
        Run {
            args: self.args.clone(),
            status,
            stdout: read_all(&mut self.out),
            stderr: read_all(&mut self.err),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_all(f: &mut File) -> String {
    let mut s = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek output");
    f.read_to_end(&mut s).expect("read output");
    String::from_utf8_lossy(&s).into_owned()
}

/// Start `cmd` in the background with its output captured.
pub fn spawn(mut cmd: Command) -> Spawned {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args[0]));
    Spawned {
        child,
        args,
        out,
        err,
        status: None,
    }
}

/// Run `cmd` to completion (at most [`RUN_TIMEOUT`]).
pub fn run(cmd: Command) -> Run {
    spawn(cmd).wait(RUN_TIMEOUT)
}

/// Make the child start with `mask` as its umask (the test process keeps its own).
pub fn with_umask(cmd: &mut Command, mask: u32) -> &mut Command {
    // SAFETY: umask(2) is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        });
    }
    cmd
}

/// Run an external tool (tar, zstd, sha256sum, sqlite3) and return its output.
pub fn tool<I, S>(program: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = Command::new(program);
    cmd.args(&args);
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    let mut out_r = out.try_clone().expect("clone");
    let mut err_r = err.try_clone().expect("clone");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Run {
        args: std::iter::once(program.to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect(),
        status,
        stdout: read_all(&mut out_r),
        stderr: read_all(&mut err_r),
    }
}

// ---------------------------------------------------------------------------------------
// The application under backup

/// The app's schema, as in `examples/app/schema.sql` (tables users, clients, portraits,
/// videos), without the WAL pragma, which [`create_app_database`] sets itself.
pub const APP_SCHEMA: &str = "
CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, hashed_password TEXT NOT NULL, is_admin INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE clients (id INTEGER PRIMARY KEY, phone TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE portraits (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), image_path TEXT NOT NULL, marker_fset TEXT, marker_fset3 TEXT, marker_iset TEXT, permanent_link TEXT UNIQUE NOT NULL, view_count INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE videos (id INTEGER PRIMARY KEY, portrait_id INTEGER NOT NULL REFERENCES portraits(id), video_path TEXT NOT NULL, is_active INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE INDEX idx_portraits_client ON portraits(client_id);
CREATE INDEX idx_videos_portrait ON videos(portrait_id);
";

/// Create a WAL-mode database with the app's tables and `clients` clients, each with one
/// portrait and one video, plus an admin user.
pub fn create_app_database(path: &Path, clients: usize) -> Connection {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create app_data");
    }
    let mut conn = Connection::open(path).expect("open app database");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("WAL");
    assert_eq!(mode, "wal");
    conn.execute_batch(APP_SCHEMA).expect("schema");
    conn.execute(
        "INSERT INTO users VALUES (1, 'admin', '$2b$12$examplehashexamplehashexamplehashexampleha', 1, '2026-11-01T10:00:00')",
        [],
    )
    .expect("admin");
    add_clients(&mut conn, clients, 64);
    conn
}

/// Insert `n` clients, each with a portrait (view_count 10) and a video; names padded to
/// `pad` bytes so a test can make the database as large as it needs.
pub fn add_clients(conn: &mut Connection, n: usize, pad: usize) {
    let tx = conn.transaction().expect("begin");
    {
        let mut client = tx
            .prepare("INSERT INTO clients (phone, name, created_at) VALUES (?1, ?2, '2026-11-02T11:00:00')")
            .expect("prepare");
        let mut portrait = tx
            .prepare(
                "INSERT INTO portraits (client_id, image_path, marker_fset, permanent_link, view_count, created_at)
                 VALUES (?1, ?2, ?3, ?4, 10, '2026-11-02T11:05:00')",
            )
            .expect("prepare");
        let mut video = tx
            .prepare("INSERT INTO videos (portrait_id, video_path, is_active, created_at) VALUES (?1, ?2, 1, '2026-11-02T11:10:00')")
            .expect("prepare");
        for i in 0..n {
            let name = format!("client {i} {}", "x".repeat(pad));
            client
                .execute(rusqlite::params![format!("+7999{i:07}"), name])
                .expect("client");
            let cid = tx.last_insert_rowid();
            portrait
                .execute(rusqlite::params![
                    cid,
                    format!("storage/client_{cid}/images/portrait_{cid}.jpg"),
                    format!("storage/client_{cid}/nft_markers/portrait_{cid}.fset"),
                    format!("p-{cid}-{}", unique_suffix()),
                ])
                .expect("portrait");
            let pid = tx.last_insert_rowid();
            video
                .execute(rusqlite::params![
                    pid,
                    format!("storage/client_{cid}/videos/video_{pid}.mp4")
                ])
                .expect("video");
        }
    }
    tx.commit().expect("commit");
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Deterministic incompressible bytes (xorshift64*), different for each `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A temporary Vertex AR installation:
///
/// ```text
/// <root>/config.toml             relative paths, min_free_space = "1 MiB"
/// <root>/app_data/app_data.db    WAL, users/clients/portraits/videos with a few rows
/// <root>/storage/…               a small media tree (client_N/{images,videos,nft_markers})
/// <root>/backups/                empty, 0700
/// ```
pub struct TestApp {
    dir: TempDir,
    pub root: PathBuf,
    pub db: PathBuf,
    pub storage: PathBuf,
    pub backups: PathBuf,
    pub config: PathBuf,
}

impl Default for TestApp {
    fn default() -> Self {
        Self::new()
    }
}

impl TestApp {
    pub fn new() -> TestApp {
        let dir = tempfile::Builder::new()
            .prefix("vertex-backup-it-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let app = TestApp {
            db: root.join("app_data").join("app_data.db"),
            storage: root.join("storage"),
            backups: root.join("backups"),
            config: root.join("config.toml"),
            root,
            dir,
        };
        drop(create_app_database(&app.db, 3));
        for c in 1..=2u64 {
            app.write_storage_file(
                &format!("client_{c}/images/portrait_{c}.jpg"),
                &random_bytes(c, 20_000),
            );
            app.write_storage_file(
                &format!("client_{c}/videos/video_{c}.mp4"),
                &random_bytes(100 + c, 50_000),
            );
            app.write_storage_file(
                &format!("client_{c}/nft_markers/portrait_{c}.fset"),
                format!("fset marker {c}\n").as_bytes(),
            );
        }
        fs::create_dir(&app.backups).expect("backups");
        fs::set_permissions(&app.backups, fs::Permissions::from_mode(0o700)).expect("chmod");
        app.write_config("");
        app
    }

    /// The config text: `[paths]` relative to the config file, `[backup]` with a small
    /// `min_free_space` plus `backup_lines`, then `rest` (more sections) verbatim.
    pub fn config_text(&self, backup_lines: &str, rest: &str) -> String {
        format!(
            "# written by the integration tests\n\
             [paths]\n\
             database = \"app_data/app_data.db\"\n\
             storage = \"storage\"\n\
             backup_dir = \"backups\"\n\
             \n\
             [backup]\n\
             min_free_space = \"1 MiB\"\n\
             {backup_lines}\n\
             {rest}\n"
        )
    }

    /// Write the standard config with extra lines in its `[backup]` section
    /// (e.g. `compression = "gzip"`).
    pub fn write_config(&self, backup_lines: &str) {
        self.write_config_raw(&self.config_text(backup_lines, ""));
    }

    /// Write `text` as the config file.
    pub fn write_config_raw(&self, text: &str) {
        fs::write(&self.config, text).expect("write config");
    }

    /// A `Command` for the binary with `--config` set, run in the app root, with the
    /// environment variables the binary reads removed.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.root)
            .env_remove("VERTEX_BACKUP_CONFIG")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("TELEGRAM_CHAT_ID")
            .env_remove("VERTEX_BACKUP_API_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Run the binary to completion.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.command(args))
    }

    /// Start the binary in the background.
    pub fn spawn<I, S>(&self, args: I) -> Spawned
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        spawn(self.command(args))
    }

    /// `create --type KIND --json`, which must succeed (exit 0); returns its metadata.
    #[track_caller]
    pub fn create(&self, kind: &str) -> Value {
        self.run(["create", "--type", kind, "--json"])
            .assert_code(0)
            .json()
    }

    /// `list --json` (all types), which must succeed.
    #[track_caller]
    pub fn list(&self) -> Vec<Value> {
        self.list_of("all")
    }

    /// `list --type KIND --json`, which must succeed.
    #[track_caller]
    pub fn list_of(&self, kind: &str) -> Vec<Value> {
        match self
            .run(["list", "--type", kind, "--json"])
            .assert_code(0)
            .json()
        {
            Value::Array(rows) => rows,
            other => panic!("list --json is not an array: {other}"),
        }
    }

    /// `stats --json`, which must succeed.
    #[track_caller]
    pub fn stats(&self) -> Value {
        self.run(["stats", "--json"]).assert_code(0).json()
    }

    /// A read-write connection to the live database.
    pub fn open_db(&self) -> Connection {
        let conn = Connection::open(&self.db).expect("open app database");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy");
        conn
    }

    /// Write a file under storage/ (parents created).
    pub fn write_storage_file(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.storage.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, bytes).expect("write storage file");
        p
    }

    /// Write `count` files of `size` random bytes under `storage/<dir>/`.
    pub fn write_random_files(&self, dir: &str, count: usize, size: usize) {
        for i in 0..count {
            self.write_storage_file(
                &format!("{dir}/file_{i:03}.bin"),
                &random_bytes(1_000 + i as u64, size),
            );
        }
    }

    /// Directory of one backup type (`database`, `storage`, `full`).
    pub fn kind_dir(&self, kind: &str) -> PathBuf {
        self.backups.join(kind)
    }

    /// Every file (recursively) under backups/ whose name ends in `.partial`.
    pub fn partial_files(&self) -> Vec<PathBuf> {
        files_under(&self.backups)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect()
    }

    /// Every file in the per-type directories: backups, metadata and leftovers — but not
    /// the lock, the log or the state file at the top.
    pub fn backup_files(&self) -> Vec<PathBuf> {
        ["database", "storage", "full"]
            .iter()
            .flat_map(|k| files_under(&self.kind_dir(k)))
            .collect()
    }

    /// Where the temporary directory lives (kept alive as long as the app).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

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

// =======================================================================================
// Added for the daemon tests (tests/daemon.rs): reading a running process's output,
// asserting that a condition holds for a while, replacing the config as editors do, the
// operation log, and a `NOTIFY_SOCKET` listener.

impl Spawned {
    /// Everything the process has written to stderr so far. Reads with `pread`, so the
    /// file offset the child shares with us is never moved (a seek would make the child's
    /// next write land in the middle of the file).
    pub fn stderr_so_far(&self) -> String {
        read_at_start(&self.err)
    }

    /// Everything the process has written to stdout so far (see [`Self::stderr_so_far`]).
    pub fn stdout_so_far(&self) -> String {
        read_at_start(&self.out)
    }
}

fn read_at_start(f: &File) -> String {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).expect("read output");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Call `cond` repeatedly for `duration`; panic naming `what` as soon as it is false.
/// For "nothing more happens" checks: the window is the assertion, not a synchronisation.
#[track_caller]
pub fn assert_holds_for(duration: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + duration;
    loop {
        assert!(cond(), "no longer true: {what}");
        if Instant::now() >= end {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl TestApp {
    /// Replace the config file as editors do: write a temporary file beside it, then
    /// rename it over the config (one atomic directory change).
    pub fn replace_config_by_rename(&self, text: &str) {
        let tmp = self.config.with_extension("toml.tmp-edit");
        fs::write(&tmp, text).expect("write the new config");
        fs::rename(&tmp, &self.config).expect("rename over the config");
    }

    /// The operation log `backups/backup.log` ("" while it does not exist).
    pub fn backup_log(&self) -> String {
        fs::read_to_string(self.backups.join("backup.log")).unwrap_or_default()
    }
}

/// A `NOTIFY_SOCKET` for a child, as systemd provides: a unix datagram socket bound to a
/// fresh temporary path, drained by a background thread (a full queue would block the
/// sender), every datagram kept in arrival order.
pub struct NotifyListener {
    path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Default for NotifyListener {
    fn default() -> Self {
        Self::bind()
    }
}

impl NotifyListener {
    pub fn bind() -> NotifyListener {
        use std::sync::atomic::Ordering;
        // A short path: sun_path holds at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("vb-notify-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s) = (messages.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while !s.load(Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    Ok(n) => m
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("recv on the notify socket: {e}"),
                }
            }
        });
        NotifyListener {
            path,
            messages,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram received so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Index of the first datagram at or after `from` with a line equal to `line`.
    pub fn find_line(&self, from: usize, line: &str) -> Option<usize> {
        self.find(from, |m| m.lines().any(|l| l == line))
    }

    /// Index of the first datagram at or after `from` that satisfies `pred`.
    pub fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        let messages = self.messages.lock().unwrap();
        (from..messages.len()).find(|&i| pred(&messages[i]))
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
