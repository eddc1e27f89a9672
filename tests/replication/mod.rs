//! Continuous replication with the real binary against the real S3 server (moto), and a
//! real app: a Python process committing tens of transactions a second through the
//! system's SQLite, killed with SIGKILL like any crashed app. The live database itself,
//! read after the fact, says what was committed: every row carries the wall time it was
//! written at, and a restore must hold exactly a prefix of the rows — all of those
//! committed long enough before the point asked for, none after it.
//!
//! - [`kills`]: the daemon and the app SIGKILLed together at 20 seeded moments; a fresh
//!   directory restores from the bucket each time.
//! - [`points`]: `--at` at random times, from the bucket and from the backup directory.
//! - [`gaps`]: a checkpoint and a VACUUM while the daemon is down, the file replaced,
//!   a transaction of 200 MiB.
//! - [`outage`]: the target unreachable for a minute: the lag alert, the catch-up.
//! - [`encrypted`]: sealed to age recipients, opened only with the identity.
//! - [`drill`]: `/metrics` and `status` show the stream; the scheduled drill replays it.

mod drill;
mod encrypted;
mod gaps;
mod kills;
mod outage;
mod points;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::util::*;

/// How long anything replication does here may take: a few requests to a local server.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// The app: commits `rate` transactions a second into `ledger`, ids from `first`, each
/// row stamped with the wall time (ms) it was written at, until killed.
const WRITER: &str = r#"
import os, sqlite3, sys, time
db, first, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = sqlite3.connect(db, isolation_level=None, timeout=30)
c.execute("PRAGMA busy_timeout = 30000")
i, period, due = first, 1.0 / rate, time.monotonic()
while True:
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO ledger (id, at_ms, body) VALUES (?, ?, ?)",
              (i, int(time.time() * 1000), os.urandom(300)))
    c.execute("COMMIT")
    i += 1
    due += period
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
"#;

/// Whether the app can run here (CI must have it).
pub(crate) fn has_python() -> bool {
    require(
        "python3 with its sqlite3 module",
        runs_ok("python3", &["-c", "import sqlite3"]),
    )
}

/// The app's writer process.
pub(crate) struct Writer(Child);

impl Writer {
    pub(crate) fn start(db: &Path, first: i64, rate: u32) -> Writer {
        let child = Command::new("python3")
            .args(["-c", WRITER])
            .arg(db)
            .arg(first.to_string())
            .arg(rate.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the writer");
        Writer(child)
    }

    /// SIGKILL, as a crash: whatever it was doing is cut off mid-way.
    pub(crate) fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ledger table the writer fills.
pub(crate) fn create_ledger(app: &TestApp) {
    app.open_db()
        .execute_batch(
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, body BLOB);",
        )
        .expect("ledger");
}

/// `n` ledger rows from id `from`, each its own transaction, from this process.
pub(crate) fn insert_rows(app: &TestApp, from: i64, n: i64) {
    let conn = app.open_db();
    for id in from..from + n {
        conn.execute(
            "INSERT INTO ledger (id, at_ms, body) VALUES (?1, ?2, randomblob(300))",
            (id, now_ms()),
        )
        .expect("insert");
    }
    // Kept open: a last connection closing would checkpoint and remove the log itself.
    std::mem::forget(conn);
}

/// (id, at_ms) of every ledger row of `db`, read without writing anything (a read-only
/// connection never checkpoints nor removes the log when it closes).
pub(crate) fn ledger(db: &Path) -> Vec<(i64, i64)> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy");
    let mut stmt = conn
        .prepare("SELECT id, at_ms FROM ledger ORDER BY id")
        .expect("select");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ledger rows")
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Asserts that `restored` is a prefix of `live` (nothing that was not committed, no
/// hole), holding every row written before `complete_before_ms` and none written after
/// `none_after_ms`.
#[track_caller]
pub(crate) fn assert_prefix(
    restored: &[(i64, i64)],
    live: &[(i64, i64)],
    complete_before_ms: i64,
    none_after_ms: i64,
    what: &str,
) {
    assert!(
        restored.len() <= live.len() && restored == &live[..restored.len()],
        "{what}: the restore is not a prefix of what was committed ({} rows restored, {} live; first difference at {:?})",
        restored.len(),
        live.len(),
        restored.iter().zip(live).position(|(a, b)| a != b)
    );
    let wanted = live.iter().filter(|r| r.1 < complete_before_ms).count();
    assert!(
        restored.len() >= wanted,
        "{what}: {} rows restored, but {wanted} were written before {complete_before_ms} (the last restored written at {:?})",
        restored.len(),
        restored.last().map(|r| r.1)
    );
    if let Some(last) = restored.last() {
        assert!(
            last.1 <= none_after_ms,
            "{what}: a row written at {} is restored, after {none_after_ms}",
            last.1
        );
    }
}

/// The `[[offsite]]` table of an S3 target `name` at `endpoint`.
pub(crate) fn s3_target(name: &str, bucket: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[offsite]]\nname = \"{name}\"\nurl = \"s3://{bucket}/vb\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\npath_style = true\nretries = 0\ntimeout = \"5s\"\n{extra}\n"
    )
}

/// The daemon's config: nothing scheduled, replication every `interval` to `targets`
/// (the `[[offsite]]` tables), `extra` sections after.
pub(crate) fn replication_config(
    app: &TestApp,
    targets: &str,
    replication: &str,
    extra: &str,
) -> String {
    schedule_config(
        app,
        "",
        &[],
        &format!("[replication]\nenabled = true\n{replication}\n{targets}{extra}"),
    )
}

/// An app with the ledger table, replicating every second to a fresh bucket of `s3`
/// (target `s3`), `extra` sections after; its config written. Returns the app, the
/// config's text and the bucket.
pub(crate) fn replicated_app(s3: &S3Server, extra: &str) -> (TestApp, String, String) {
    let bucket = s3.new_bucket();
    let app = TestApp::new();
    create_ledger(&app);
    let text = replication_config(
        &app,
        &s3_target("s3", &bucket, s3.endpoint(), ""),
        "interval = \"1s\"",
        extra,
    );
    app.write_config_raw(&text);
    (app, text, bucket)
}

/// The next of a seeded sequence (a 64-bit LCG): the moments and times a test draws.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// The dummy credentials the test server takes.
pub(crate) fn with_credentials(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", "vertex-test")
        .env("AWS_SECRET_ACCESS_KEY", "vertex-test-secret")
        .env_remove("AWS_SESSION_TOKEN");
}

pub(crate) fn start_daemon(app: &TestApp) -> Daemon<'_> {
    Daemon::start_with(app, with_credentials)
}

/// A rebuilt server: `config` (the app's, with an empty backup directory of its own) in a
/// fresh directory, where `restore ARGS --target OUT --yes` runs; returns the run and OUT.
pub(crate) struct FreshServer {
    dir: tempfile::TempDir,
    config: PathBuf,
    n: std::cell::Cell<u32>,
}

impl FreshServer {
    /// `text` is the app's config; its backup directory is replaced by a fresh one.
    pub(crate) fn new(text: &str) -> FreshServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let text = text.replace("backup_dir = \"backups\"", "backup_dir = \"fresh\"");
        std::fs::write(&config, text).expect("write the fresh config");
        std::fs::create_dir(dir.path().join("fresh")).expect("fresh backup dir");
        FreshServer {
            dir,
            config,
            n: std::cell::Cell::new(0),
        }
    }

    /// `restore ARGS --target OUT --yes`; OUT is a new file each time.
    pub(crate) fn restore(&self, args: &[&str], env: &[(&str, &str)]) -> (Run, PathBuf) {
        self.n.set(self.n.get() + 1);
        let out = self
            .dir
            .path()
            .join(format!("restored-{}.db", self.n.get()));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("restore")
            .args(args)
            .arg("--target")
            .arg(&out)
            .arg("--yes")
            .current_dir(self.dir.path())
            .env_remove("VERTEX_BACKUP_CONFIG")
            .env_remove("VERTEX_BACKUP_IDENTITY")
            .env_remove("RUST_LOG");
        with_credentials(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        (run(cmd), out)
    }

    /// [`FreshServer::restore`] that must succeed (exit 0); the rows restored.
    #[track_caller]
    pub(crate) fn restored(&self, args: &[&str]) -> Vec<(i64, i64)> {
        let (run, out) = self.restore(args, &[]);
        run.assert_code(0);
        ledger(&out)
    }
}

/// The app's `replication/status.json`, once written.
pub(crate) fn status(app: &TestApp) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(app.backups.join("replication/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The lag of `target` in the status, if it is there.
pub(crate) fn lag(app: &TestApp, target: &str) -> Option<f64> {
    status(app)?["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == target)?["lag_seconds"]
        .as_f64()
}

/// The generations in the backup directory (their `generation.json` records).
pub(crate) fn generations(app: &TestApp) -> Vec<serde_json::Value> {
    named_generations(app).into_iter().map(|(_, g)| g).collect()
}

/// [`generations`] with each one's directory name.
pub(crate) fn named_generations(app: &TestApp) -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> =
        std::fs::read_dir(app.backups.join("replication"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let text =
                            std::fs::read_to_string(e.path().join("generation.json")).ok()?;
                        let info = serde_json::from_str(&text).ok()?;
                        Some((e.file_name().to_string_lossy().into_owned(), info))
                    })
                    .collect()
            })
            .unwrap_or_default();
    out.sort_by(|a, b| a.1["started"].as_str().cmp(&b.1["started"].as_str()));
    out
}

/// Waits until the daemon's status says `target` holds everything read so far and the
/// stream has read the live database's newest row.
pub(crate) fn wait_caught_up(daemon: &mut Daemon, target: &str) {
    let app = daemon.app;
    daemon.poll(DEADLINE, &format!("{target} to catch up"), |_| {
        let s = status(app);
        let newest = s
            .as_ref()
            .and_then(|s| s["newest"].as_str().map(String::from));
        lag(app, target) == Some(0.0)
            && newest.is_some_and(|n| {
                chrono::DateTime::parse_from_rfc3339(&n).is_ok_and(|t| {
                    let live = ledger(&app.db).last().map_or(0, |r| r.1);
                    t.timestamp_millis() > live
                })
            })
    });
}
