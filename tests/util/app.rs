//! `TestApp`: a throw-away installation laid out like a Vertex AR server (a WAL SQLite
//! database with the app's schema, a media tree, an empty backup dir and a config), and
//! the commands that run the binary against it.

use std::ffi::OsStr;
use std::fs::{self};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;
use tempfile::TempDir;

use super::*;

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

/// No test secret in the backup directory's text files (metadata, logs, state, lock):
/// the binary must never write a token where an operator or a backup copy would carry it.
impl Drop for TestApp {
    fn drop(&mut self) {
        if thread::panicking() {
            return;
        }
        for f in files_under(&self.backups) {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let is_text = [".json", ".log", ".lock"].iter().any(|x| name.ends_with(x));
            if is_text && let Ok(text) = fs::read_to_string(&f) {
                assert_no_secret(&f.display().to_string(), &text);
            }
        }
    }
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

    /// Write `dirs` directories of `per_dir` small text files under `storage/<dir>/`
    /// (`dNN/fNNN.txt`): a few hundred of them and a snapshot's entry list is stored in
    /// parts.
    pub fn write_small_files(&self, dir: &str, dirs: usize, per_dir: usize) {
        for d in 0..dirs {
            for f in 0..per_dir {
                self.write_storage_file(
                    &format!("{dir}/d{d:02}/f{f:03}.txt"),
                    format!("directory {d}, file {f}\n").as_bytes(),
                );
            }
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

impl TestApp {
    /// Replace the config file as editors do: write a temporary file beside it, then
    /// rename it over the config (one atomic directory change).
    pub fn replace_config_by_rename(&self, text: &str) {
        let tmp = self.config.with_extension("toml.tmp-edit");
        fs::write(&tmp, text).expect("write the new config");
        fs::rename(&tmp, &self.config).expect("rename over the config");
    }

    /// `status --json`. Exit 1 (some type is stale) is accepted: the JSON is the same.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        let status = self.run(["status", "--json"]);
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "{}",
            status.describe()
        );
        status.json()
    }

    /// The operation log `backups/backup.log` ("" while it does not exist).
    pub fn backup_log(&self) -> String {
        fs::read_to_string(self.backups.join("backup.log")).unwrap_or_default()
    }
}

/// The entry for `job` in the output of `status --json`.
#[track_caller]
pub fn status_job(status: &Value, job: &str) -> Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job"] == job))
        .cloned()
        .unwrap_or_else(|| panic!("no job {job} in {status:#}"))
}
