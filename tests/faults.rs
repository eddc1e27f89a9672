//! Faults (issue "Hardening", faults part), against real processes of the real binary:
//! `create` killed with SIGKILL at any moment (seeded pseudo-random delays, and at every
//! commit system call through strace's fault injection); a full disk (a size-limited
//! tmpfs, for the one-shot command and for the daemon); a read-only or vanished backup
//! directory; unreadable sources; the database held by an exclusive writer past
//! `busy_timeout`; the database replaced by junk or truncated.
//!
//! Each fault must give a clear error that names the path and the cause (exit 1) and lose
//! nothing: the live data untouched, older backups byte-identical and verified, no
//! partial file left, and the next run works.
//!
//! Mounts (tmpfs, read-only bind mounts) and running the binary as another user need
//! root; without root those cases print why they were skipped (or fall back to `chmod`
//! where that is equivalent). The strace-driven test skips when strace cannot trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

use crate::telegram::{FakeBotApi, Reply, telegram_section, text_of};
use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// Deadline for one run of the binary that is expected to fail fast.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Say why a test did not run (visible with `--nocapture` and in CI logs).
fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED faults::{test}: {why}");
}

/// SplitMix64: a tiny deterministic generator, so every run kills at the same fractions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Run a system tool; `Err` with its output (or why it could not start) unless it exits 0.
fn system(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {:?} failed ({}): {}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A mount made by a test, unmounted when dropped — also when the test panics.
struct Mount {
    target: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. "8m"), mode 0700, over `target`.
    fn tmpfs(target: &Path, size: &str) -> Result<Mount, String> {
        let opts = format!("size={size},mode=0700");
        system(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                opts.as_ref(),
                "tmpfs".as_ref(),
                target.as_os_str(),
            ],
        )?;
        Ok(Mount {
            target: target.to_path_buf(),
        })
    }

    /// `target` bind-mounted onto itself, then remounted read-only.
    fn read_only_bind(target: &Path) -> Result<Mount, String> {
        system(
            "mount",
            &["--bind".as_ref(), target.as_os_str(), target.as_os_str()],
        )?;
        let mount = Mount {
            target: target.to_path_buf(),
        };
        system(
            "mount",
            &[
                "-o".as_ref(),
                "remount,bind,ro".as_ref(),
                target.as_os_str(),
            ],
        )?;
        Ok(mount)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = system("umount", &[self.target.as_os_str()]) {
            eprintln!("{e}; unmounting lazily");
            let _ = system("umount", &["-l".as_ref(), self.target.as_os_str()]);
        }
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn available_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Fill the filesystem of `dir` with `dir/filler` until `leave` bytes remain available.
fn fill_leaving(dir: &Path, leave: u64) -> PathBuf {
    let filler = dir.join("filler");
    let avail = available_bytes(dir);
    assert!(
        avail > leave,
        "only {avail} bytes free in {}",
        dir.display()
    );
    // Real zeros, not a sparse file: tmpfs allocates what is written.
    fs::write(&filler, vec![0u8; (avail - leave) as usize])
        .unwrap_or_else(|e| panic!("write {}: {e}", filler.display()));
    filler
}

/// SHA-256 of every file in the per-type directories (backups, metadata, leftovers).
fn backup_hashes(app: &TestApp) -> BTreeMap<PathBuf, String> {
    app.backup_files()
        .into_iter()
        .map(|p| {
            let h = sha256sum_cli(&p);
            (p, h)
        })
        .collect()
}

/// The older backups are still there, byte for byte, and nothing was added beside them.
#[track_caller]
fn assert_backups_unchanged(app: &TestApp, before: &BTreeMap<PathBuf, String>, ctx: &str) {
    let after = backup_hashes(app);
    assert_eq!(
        &after, before,
        "{ctx}: the backup directory changed (left: now, right: before)"
    );
}

/// No file anywhere under `root` whose name has `.partial` in it (our temporary names,
/// and SQLite's `-journal`/`-wal` beside a `.partial` copy).
#[track_caller]
fn assert_no_partials(root: &Path, ctx: &str) {
    let partials: Vec<PathBuf> = files_under(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".partial"))
        })
        .collect();
    assert!(
        partials.is_empty(),
        "{ctx}: temporary files left: {partials:#?}"
    );
}

/// `verify --all` passes (exit 0).
#[track_caller]
fn assert_all_verify(app: &TestApp, ctx: &str) {
    let r = app.run(["verify", "--all"]);
    assert_eq!(r.code(), Some(0), "{ctx}: verify --all\n{}", r.describe());
}

/// The run failed with exit 1 and its stderr names every one of `needles`.
#[track_caller]
fn assert_fails_naming(r: &Run, needles: &[&str], ctx: &str) {
    assert_eq!(
        r.code(),
        Some(1),
        "{ctx}: expected exit 1\n{}",
        r.describe()
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "{ctx}: the error does not mention {n:?}\n{}",
            r.describe()
        );
    }
    assert!(
        !r.stderr.contains("panicked"),
        "{ctx}: the binary panicked\n{}",
        r.describe()
    );
}

/// True when the error mentions one of `causes`.
fn mentions_any(r: &Run, causes: &[&str]) -> bool {
    causes.iter().any(|c| r.stderr.contains(c))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Remove the live database's `-wal` and `-shm` files (after the last connection closed).
fn remove_db_side_files(db: &Path) {
    for sfx in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// Grow the live database by `clients` rows of `pad` bytes and fold the WAL into it.
fn grow_database(app: &TestApp, clients: usize, pad: usize) {
    let mut conn = app.open_db();
    add_clients(&mut conn, clients, pad);
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

// ---------------------------------------------------------------------------------------
// The catalog as `list --json` shows it, checked after every fault

/// Every complete backup `list --json` has shown so far, by path, with its checksum; the
/// ones already byte-checked and verified are not verified again (a later fault must
/// still leave them listed, with the same checksum and size).
#[derive(Default)]
struct Ledger {
    seen: BTreeMap<String, Value>,
}

impl Ledger {
    /// `list --json`: every row complete, no temporary name; every backup seen before
    /// still listed and unchanged; every new one byte-checked here (SHA-256 of the file
    /// equals the metadata's) and passing `verify PATH`. A part of a full backup is
    /// verified through its manifest (`verify` of a full backup checks both parts in
    /// full). Returns the number of new backups.
    #[track_caller]
    fn check(&mut self, app: &TestApp, ctx: &str) -> usize {
        let rows = app.list();
        let mut by_path: BTreeMap<String, Value> = BTreeMap::new();
        for row in rows {
            assert_eq!(
                row["complete"],
                Value::Bool(true),
                "{ctx}: list shows an incomplete backup: {row:#}"
            );
            for key in ["path", "metadata_path"] {
                assert!(
                    !jstr(&row, key).contains(".partial"),
                    "{ctx}: list shows a temporary file: {row:#}"
                );
            }
            by_path.insert(jstr(&row, "path").to_string(), row);
        }
        for (path, old) in &self.seen {
            let now = by_path.get(path).unwrap_or_else(|| {
                panic!("{ctx}: the backup {path} was listed before and is gone: {old:#}")
            });
            assert_eq!(
                (jstr(now, "checksum"), ju64(now, "file_size")),
                (jstr(old, "checksum"), ju64(old, "file_size")),
                "{ctx}: the backup {path} changed"
            );
        }
        let new: Vec<Value> = by_path
            .iter()
            .filter(|(p, _)| !self.seen.contains_key(*p))
            .map(|(_, r)| r.clone())
            .collect();
        for row in &new {
            let path = Path::new(jstr(row, "path"));
            if jstr(row, "type") == "full" {
                for part in row["parts"].as_array().expect("parts") {
                    let file = Path::new(jstr(part, "backup_path"));
                    assert_eq!(
                        sha256sum_cli(file),
                        jstr(part, "checksum"),
                        "{ctx}: part {} does not match its manifest",
                        file.display()
                    );
                }
            } else {
                assert_eq!(
                    sha256sum_cli(path),
                    jstr(row, "checksum"),
                    "{ctx}: {} does not match its metadata's sha256",
                    path.display()
                );
            }
            let covered_by_full = row.get("part_of").and_then(Value::as_str).is_some_and(|f| {
                by_path.values().any(|r| {
                    jstr(r, "type") == "full"
                        && Path::new(jstr(r, "path")).file_stem() == Some(f.as_ref())
                })
            });
            if !covered_by_full {
                let r = app.run(["verify".as_ref(), path.as_os_str()]);
                assert_eq!(
                    r.code(),
                    Some(0),
                    "{ctx}: a listed backup fails verification\n{}",
                    r.describe()
                );
            }
        }
        let n = new.len();
        self.seen = by_path;
        n
    }
}

/// Every file in the per-type directories belongs to a backup `list` shows (no
/// temporary file, no orphan, no SQLite side file), and no temporary file is left at
/// the top of the backup directory either.
#[track_caller]
fn assert_only_listed_backups(app: &TestApp, ctx: &str) {
    let listed: BTreeSet<PathBuf> = app
        .list()
        .iter()
        .flat_map(|r| {
            [
                PathBuf::from(jstr(r, "path")),
                PathBuf::from(jstr(r, "metadata_path")),
            ]
        })
        .collect();
    let stray: Vec<PathBuf> = app
        .backup_files()
        .into_iter()
        .filter(|p| !listed.contains(p))
        .collect();
    assert!(
        stray.is_empty(),
        "{ctx}: files that are not listed backups: {stray:#?}"
    );
    assert_no_partials(&app.backups, ctx);
}

/// What a killed run left in the per-type directories, as a phase of the backup.
fn debris_phase(before: &BTreeSet<PathBuf>, app: &TestApp) -> &'static str {
    let new: Vec<String> = app
        .backup_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let any = |f: &dyn Fn(&str) -> bool| new.iter().any(|n| f(n));
    if new.is_empty() {
        "nothing written yet (start, lock, cleanup, space check)"
    } else if any(&|n| n.contains(".partial-")) {
        "SQLite side files of the copy"
    } else if any(&|n| n.ends_with(".json.partial")) {
        "committing (metadata written, renames pending)"
    } else if any(&|n| n.ends_with(".partial")) {
        "writing data"
    } else if any(&|n| n.starts_with("full_backup_")) {
        "after the manifest landed"
    } else if any(&|n| n.ends_with(".json")) && any(&|n| !n.ends_with(".json")) {
        "after the data and metadata landed"
    } else {
        "between renames"
    }
}

// ---------------------------------------------------------------------------------------
// 1. Crash anywhere

/// Kills that must land (the process still running) per backup type; the first is
/// immediate, the rest at seeded fractions of an unkilled run.
const KILLS_PER_TYPE: usize = 10;
/// Attempts per type at most (a delay past the end lets the run finish: no kill).
const ATTEMPTS_PER_TYPE: usize = 40;

#[test]
fn sigkill_at_any_moment_of_create_leaves_only_complete_verified_backups() {
    let started = Instant::now();
    let app = TestApp::new();
    // 12.5 MiB of incompressible media in 160 files and a database of ~1.5 MiB: runs
    // long enough for the kills to land in every phase, short enough for ~40 of them.
    app.write_random_files("media", 160, 80 << 10);
    grow_database(&app, 2_000, 600);
    let mut rng = SplitMix64(0x00FA_0175_EED5);
    let mut ledger = Ledger::default();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let mut kills = 0;

    for kind in ["database", "storage", "full"] {
        // Two unkilled runs: the shorter spreads the kills (the first run of a fresh
        // build also pages the binary in), and both are older backups that every later
        // kill must leave alone.
        let unkilled = (0..2)
            .map(|_| {
                let t0 = Instant::now();
                app.create(kind);
                t0.elapsed()
            })
            .min()
            .expect("two runs");
        ledger.check(&app, &format!("after the unkilled {kind} backup"));

        let mut landed = 0;
        // The window the delays spread over: shrinks to any faster run seen, since a
        // run that beats its kill (the machine got less busy) proves nothing new.
        let mut window = unkilled;
        for attempt in 0..ATTEMPTS_PER_TYPE {
            if landed == KILLS_PER_TYPE {
                break;
            }
            let delay = if attempt == 0 {
                Duration::ZERO
            } else {
                window.mul_f64(1.2 * rng.unit())
            };
            let ctx = format!("{kind} backup killed after {delay:?} (unkilled: {unkilled:?})");
            let before: BTreeSet<PathBuf> = app.backup_files().into_iter().collect();
            let spawned_at = Instant::now();
            let mut child = app.spawn(["create", "--type", kind]);
            // The delay is the thing under test, not a synchronisation.
            thread::sleep(delay);
            let was_running = child.is_running();
            if was_running {
                child.signal(libc::SIGKILL);
            }
            let run = child.wait(RUN_DEADLINE);
            let phase = match run.signal() {
                Some(libc::SIGKILL) => {
                    kills += 1;
                    landed += 1;
                    debris_phase(&before, &app)
                }
                _ => {
                    // It finished before the signal: it must have succeeded.
                    run.assert_code(0);
                    window = window.min(spawned_at.elapsed());
                    "finished before the kill"
                }
            };
            *phases.entry(format!("{kind}: {phase}")).or_default() += 1;

            ledger.check(&app, &ctx);
            // The lock died with the process and the next run cleans what it left.
            let next = app.run(["create", "--type", "database"]);
            assert_eq!(
                next.code(),
                Some(0),
                "{ctx}: the next create failed\n{}",
                next.describe()
            );
            assert_only_listed_backups(&app, &format!("{ctx}, then a normal create"));
        }
    }
    ledger.check(&app, "at the end");
    // Every backup ever listed is still there, byte for byte.
    for row in ledger.seen.values() {
        if jstr(row, "type") != "full" {
            assert_eq!(
                sha256sum_cli(Path::new(jstr(row, "path"))),
                jstr(row, "checksum"),
                "at the end: {row:#}"
            );
        }
    }
    eprintln!(
        "{kills} kills in {:?}; where they landed:\n{phases:#?}",
        started.elapsed()
    );
    assert!(
        kills >= 3 * KILLS_PER_TYPE,
        "only {kills} runs were still running when killed: {phases:#?}"
    );
    assert!(
        phases.keys().any(|k| k.contains("writing data")),
        "no kill landed while data was being written: {phases:#?}"
    );
}

/// Whether strace can trace a child here (it needs ptrace, which containers may deny).
fn strace_usable() -> Result<(), String> {
    system(
        "strace",
        &[
            "-f".as_ref(),
            "-qq".as_ref(),
            "-o".as_ref(),
            "/dev/null".as_ref(),
            "true".as_ref(),
        ],
    )
}

/// `strace [-e inject=SYSCALL:signal=KILL:when=N] -e trace=SYSCALLS BIN --config … ARGS`,
/// with strace's own record of the traced calls in `log`.
fn strace_command(
    app: &TestApp,
    trace: &str,
    inject: Option<(&str, usize)>,
    log: &Path,
) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e"])
        .arg(format!("trace={trace}"))
        .arg("-o")
        .arg(log);
    if let Some((syscall, n)) = inject {
        cmd.arg("-e")
            .arg(format!("inject={syscall}:signal=KILL:when={n}"));
    }
    let inner = app.command(["create", "--type"]);
    cmd.arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(&app.root)
        .env_remove("VERTEX_BACKUP_CONFIG")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("TELEGRAM_CHAT_ID")
        .env_remove("VERTEX_BACKUP_API_TOKEN")
        .env_remove("RUST_LOG");
    cmd
}

/// Where a run is killed, at each call in turn: the renames and fsyncs that make a backup
/// durable and visible, and the unlinks and truncations around them (SQLite's journal
/// switch of the copy, closing the source, the lock file).
const COMMIT_SYSCALLS: [&str; 4] = ["rename", "fsync", "unlink", "ftruncate"];

#[test]
fn sigkill_at_each_commit_syscall_leaves_only_complete_verified_backups() {
    if let Err(why) = strace_usable() {
        skipped(
            "sigkill_at_each_commit_syscall_leaves_only_complete_verified_backups",
            &format!("strace cannot trace here: {why}"),
        );
        return;
    }
    let app = TestApp::new();
    grow_database(&app, 200, 200);
    let logs = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::default();
    let mut landed: Vec<String> = Vec::new();
    let trace = COMMIT_SYSCALLS.join(",");

    for kind in ["database", "storage", "full"] {
        // Count each call in an unkilled run.
        let log = logs.path().join(format!("{kind}.strace"));
        let mut cmd = strace_command(&app, &trace, None, &log);
        cmd.arg(kind);
        run(cmd).assert_code(0);
        ledger.check(
            &app,
            &format!("after the unkilled {kind} backup under strace"),
        );
        let text = fs::read_to_string(&log).expect("strace log");
        for syscall in COMMIT_SYSCALLS {
            let calls = text
                .lines()
                .filter(|l| {
                    // "PID call(args) = result"; the PID column is there with -f.
                    l.split_whitespace()
                        .find(|w| !w.chars().all(|c| c.is_ascii_digit()))
                        .is_some_and(|c| c.starts_with(&format!("{syscall}(")))
                })
                .count();
            for n in 1..=calls {
                let ctx = format!("{kind} backup killed at {syscall} #{n} of {calls}");
                let before: BTreeSet<PathBuf> = app.backup_files().into_iter().collect();
                let log = logs.path().join(format!("{kind}-{syscall}-{n}.strace"));
                let mut cmd = strace_command(&app, syscall, Some((syscall, n)), &log);
                cmd.arg(kind);
                let r = run(cmd);
                let phase = if r.signal() == Some(libc::SIGKILL) || r.code() == Some(137) {
                    let call = fs::read_to_string(&log)
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .find(|l| l.contains(&format!("{syscall}(")))
                        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    format!("{} at {call}", debris_phase(&before, &app))
                } else {
                    // A run can make fewer calls than the counted one (nothing to clean).
                    r.assert_code(0);
                    "not reached; finished".to_string()
                };
                landed.push(format!("{ctx}: {phase}"));
                ledger.check(&app, &ctx);
                let next = app.run(["create", "--type", "database"]);
                assert_eq!(
                    next.code(),
                    Some(0),
                    "{ctx}: the next create failed\n{}",
                    next.describe()
                );
                assert_only_listed_backups(&app, &format!("{ctx}, then a normal create"));
            }
        }
    }
    ledger.check(&app, "at the end");
    eprintln!("{} injected kills:\n{}", landed.len(), landed.join("\n"));
    assert!(
        landed.iter().filter(|l| !l.contains("not reached")).count() >= 20,
        "too few kills landed:\n{}",
        landed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 2. Disk full

/// Files of 100 bytes: each takes 1 KiB in a tar stream (header + padded block) but counts
/// 100 bytes in the free-space estimate, so with `compression = "none"` the pre-flight
/// check passes and the write runs out of space.
fn add_tiny_files(app: &TestApp, count: usize) {
    for i in 0..count {
        app.write_storage_file(
            &format!("tiny/{:02}/t{i:05}.bin", i % 40),
            &random_bytes(50_000 + i as u64, 100),
        );
    }
}

/// A tmpfs of 8 MiB over `app.backups`, or why not.
fn backup_tmpfs(app: &TestApp) -> Result<Mount, String> {
    if !is_root() {
        return Err("not root: cannot mount a size-limited tmpfs".into());
    }
    Mount::tmpfs(&app.backups, "8m").map_err(|e| format!("cannot mount a tmpfs: {e}"))
}

#[test]
fn a_full_disk_fails_the_write_naming_the_path_and_keeps_older_backups() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let _mount = match backup_tmpfs(&app) {
        Ok(m) => m,
        Err(why) => {
            skipped(
                "a_full_disk_fails_the_write_naming_the_path_and_keeps_older_backups",
                &why,
            );
            return;
        }
    };
    app.write_config_raw(&app.config_text(
        "compression = \"none\"",
        &telegram_section(&fake.base, "42", "\"failure\"", "10s"),
    ));
    app.create("database");
    app.create("storage");
    let older = backup_hashes(&app);
    add_tiny_files(&app, 4_000);
    let filler = fill_leaving(&app.backups, 5 << 19);

    for kind in ["storage", "full"] {
        let ctx = format!("{kind} backup on a full disk");
        let r = app.run(["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.kind_dir("storage"))], &ctx);
        assert!(
            mentions_any(&r, &["No space left on device", "ENOSPC"]),
            "{ctx}: the error does not say the disk is full\n{}",
            r.describe()
        );
        assert!(
            r.stderr.contains("write archive"),
            "{ctx}: the failing step is not named\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
        let log = app.backup_log();
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("create {kind}: failed"))
                    && l.contains("No space left on device")),
            "{ctx}: no failure line in backup.log:\n{log}"
        );
        let told =
            fake.messages().iter().map(text_of).any(|t| {
                t.contains(&format!("{kind} backup FAILED")) && t.contains("No space left")
            });
        assert!(
            told,
            "{ctx}: no failure message reached Telegram: {:#?}",
            fake.messages().iter().map(text_of).collect::<Vec<_>>()
        );
    }

    // When the estimate already shows there is no room, nothing is even started.
    let leave = available_bytes(&app.backups);
    fs::write(
        app.backups.join("filler2"),
        vec![0u8; (leave - (256 << 10)) as usize],
    )
    .expect("fill the rest");
    let r = app.run(["create", "--type", "database"]);
    assert_fails_naming(
        &r,
        &[s(&app.backups), "free space"],
        "database backup, no room",
    );
    assert_backups_unchanged(&app, &older, "database backup, no room");
    fs::remove_file(app.backups.join("filler2")).expect("remove filler2");

    assert_all_verify(&app, "after the failures");
    assert_backups_unchanged(&app, &older, "after verify");

    // Space freed: the same backup succeeds.
    fs::remove_file(&filler).expect("remove the filler");
    let meta = app.create("storage");
    assert_eq!(
        ju64(&meta, "file_count"),
        files_under(&app.storage).len() as u64
    );
    assert_only_listed_backups(&app, "after space was freed");
    assert_all_verify(&app, "after space was freed");
}

/// The standard config with `[backup]` lines and a `[schedule]` in UTC: `storage` on
/// `storage_cron`, every other job off, no catch-up, a short shutdown grace.
fn storage_schedule_config(app: &TestApp, backup_lines: &str, storage_cron: &str) -> String {
    app.config_text(
        backup_lines,
        &format!(
            "[schedule]\ntimezone = \"UTC\"\ncatch_up = false\nshutdown_grace = \"1s\"\n\
             full = \"off\"\ndatabase = \"off\"\nrotate = \"off\"\nverify = \"off\"\n\
             storage = \"{storage_cron}\"\n"
        ),
    )
}

#[test]
fn the_daemon_survives_a_full_disk_and_the_next_job_succeeds_once_space_is_freed() {
    let app = TestApp::new();
    let _mount = match backup_tmpfs(&app) {
        Ok(m) => m,
        Err(why) => {
            skipped(
                "the_daemon_survives_a_full_disk_and_the_next_job_succeeds_once_space_is_freed",
                &why,
            );
            return;
        }
    };
    app.create("database");
    let older = backup_hashes(&app);
    add_tiny_files(&app, 4_000);
    app.write_config_raw(&storage_schedule_config(
        &app,
        "compression = \"none\"",
        "*/2 * * * * *",
    ));
    let filler = fill_leaving(&app.backups, 5 << 19);

    let mut d = Daemon::start(&app);
    d.poll(
        Duration::from_secs(60),
        "a scheduled storage backup to fail for lack of space",
        |d| {
            d.app.backup_log().lines().any(|l| {
                l.contains("create storage: failed at \"write archive\"")
                    && l.contains("No space left on device")
            })
        },
    );
    assert!(
        app.list_of("storage").is_empty(),
        "a storage backup landed on a full disk\n{}",
        d.describe()
    );
    assert_backups_unchanged(&app, &older, "while the daemon fails");
    // It keeps running and keeps trying (a second failure proves the loop survived).
    d.poll(Duration::from_secs(60), "a second failed attempt", |d| {
        d.app
            .backup_log()
            .lines()
            .filter(|l| l.contains("create storage: failed"))
            .count()
            >= 2
    });

    fs::remove_file(&filler).expect("remove the filler");
    d.poll(
        Duration::from_secs(60),
        "a scheduled storage backup to succeed once space was freed",
        |d| {
            d.app
                .backup_log()
                .contains("create storage: Backup completed successfully")
        },
    );
    d.stop();
    assert!(
        !app.list_of("storage").is_empty(),
        "the success is not listed"
    );
    assert_only_listed_backups(&app, "after the daemon stopped");
    assert_all_verify(&app, "after the daemon stopped");
}

// ---------------------------------------------------------------------------------------
// 3. The backup directory: read-only, vanished

/// Make `dir` and every directory under it read-only: a read-only bind mount as root
/// (root ignores modes), `chmod a-w` otherwise. The guard undoes it.
enum ReadOnly {
    Mounted(#[allow(dead_code)] Mount),
    Chmod(Vec<PathBuf>),
}

impl ReadOnly {
    fn make(dir: &Path) -> Result<ReadOnly, String> {
        if is_root() {
            return Mount::read_only_bind(dir).map(ReadOnly::Mounted);
        }
        let dirs = dirs_under(dir);
        for d in &dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o500))
                .map_err(|e| format!("chmod {}: {e}", d.display()))?;
        }
        Ok(ReadOnly::Chmod(dirs))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dirs) = self {
            for d in dirs {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o700));
            }
        }
    }
}

#[test]
fn a_read_only_backup_dir_fails_naming_the_path_and_keeps_older_backups() {
    let app = TestApp::new();
    app.create("database");
    app.create("storage");
    let older = backup_hashes(&app);
    let listed = app.list().len();
    let ro = ReadOnly::make(&app.backups).expect("make the backup dir read-only");

    for kind in ["database", "storage", "full"] {
        let ctx = format!("{kind} backup into a read-only backup dir");
        let r = app.run(["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.backups)], &ctx);
        assert!(
            mentions_any(&r, &["Read-only file system", "Permission denied"]),
            "{ctx}: the cause is not named\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
    }
    // Reads still work.
    assert_eq!(app.list().len(), listed);
    assert_all_verify(&app, "read-only backup dir");
    drop(ro);

    app.create("database");
    assert_eq!(app.list().len(), listed + 1);
    assert_only_listed_backups(&app, "after the backup dir became writable again");
}

#[test]
fn a_missing_backup_dir_under_a_read_only_parent_fails_and_is_recreated_when_possible() {
    let app = TestApp::new();
    let vault = app.root.join("vault");
    fs::create_dir(&vault).expect("mkdir vault");
    let text = app.config_text("", "").replace(
        "backup_dir = \"backups\"",
        "backup_dir = \"vault/a/backups\"",
    );
    app.write_config_raw(&text);
    let target = vault.join("a").join("backups");

    // (a) The whole path is gone and its parent is read-only: a clear error, nothing
    // written anywhere.
    {
        let _ro = ReadOnly::make(&vault).expect("make vault read-only");
        for kind in ["database", "storage", "full"] {
            let ctx = format!("{kind} backup under a read-only parent");
            let r = app.run(["create", "--type", kind]);
            assert_fails_naming(&r, &[s(&target)], &ctx);
            assert!(
                mentions_any(&r, &["Read-only file system", "Permission denied"]),
                "{ctx}: the cause is not named\n{}",
                r.describe()
            );
            assert!(
                files_under(&vault).is_empty(),
                "{ctx}: wrote into {vault:?}"
            );
        }
    }

    // (b) Deleted, with its parent missing too but creatable: created again (0700).
    let meta = app.create("database");
    assert!(jstr(&meta, "backup_path").starts_with(s(&target)));
    let mode = fs::metadata(&target)
        .expect("backup dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the recreated backup dir is {mode:o}");
    fs::remove_dir_all(vault.join("a")).expect("delete the backup dir and its parent");
    app.create("storage");
    let listed = app.list();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_all_verify(&app, "recreated backup dir");
}

#[test]
fn deleting_the_backup_dir_during_a_storage_backup_fails_cleanly_and_the_next_run_recreates_it() {
    let app = TestApp::new();
    // ~24 MiB of incompressible media: a run of a second or more in a debug build.
    app.write_random_files("media", 24, 1 << 20);
    let live = snapshot_tree(&app.storage);
    let storage_dir = app.kind_dir("storage");
    let mut child = app.spawn(["create", "--type", "storage"]);
    poll_until(
        Duration::from_secs(120),
        "a growing .partial archive",
        || {
            files_under(&storage_dir).iter().any(|p| {
                p.to_string_lossy().ends_with(".partial")
                    && fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
            })
        },
    );
    assert!(
        child.is_running(),
        "the backup finished before its directory could be deleted"
    );
    // The run may create a file between our readdir and rmdir: retry until it is gone.
    poll_until(
        Duration::from_secs(30),
        "the backup dir to be deleted",
        || match fs::remove_dir_all(&app.backups) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        },
    );
    let r = child.wait(RUN_DEADLINE);
    assert_fails_naming(
        &r,
        &[s(&app.backups), "No such file or directory"],
        "deleted backup dir",
    );
    // The hint names the directory that vanished, not the file that could not be made.
    let hint = format!("the directory {} does not exist", app.backups.display());
    assert!(
        r.stderr.contains(&hint),
        "no hint {hint:?}\n{}",
        r.describe()
    );
    assert_no_partials(&app.root, "after the failed run");
    assert_tree_matches(&live, &app.storage);

    // The next run creates the directory again and succeeds.
    let meta = app.create("storage");
    assert_eq!(
        sha256file_of(&meta),
        jstr(&meta, "checksum"),
        "the new archive does not match its metadata"
    );
    let mode = fs::metadata(&app.backups)
        .expect("backup dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(app.list().len(), 1);
    assert_only_listed_backups(&app, "after the backup dir was recreated");
    assert_all_verify(&app, "after the backup dir was recreated");
}

fn sha256file_of(meta: &Value) -> String {
    sha256sum_cli(Path::new(jstr(meta, "backup_path")))
}

// ---------------------------------------------------------------------------------------
// 4. Sources: unreadable, locked, not SQLite, truncated

/// The uid/gid the binary runs as when root must be denied by file modes.
const NOBODY: u32 = 65534;

/// Run the binary as `nobody` when we are root (root reads anything), as ourselves
/// otherwise.
fn run_unprivileged(app: &TestApp, args: &[&str]) -> Run {
    let mut cmd = app.command(args);
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    run(cmd)
}

/// Give the whole app to `nobody` (root only), parents included up to the temp dir.
fn chown_app_to_nobody(app: &TestApp) -> Result<(), String> {
    let who = format!("{NOBODY}:{NOBODY}");
    system(
        "chown",
        &["-R".as_ref(), who.as_ref(), app.path().as_os_str()],
    )?;
    // Every parent of the temporary directory must be traversable for `nobody`.
    for dir in app.path().ancestors().skip(1) {
        let mode = fs::metadata(dir)
            .map_err(|e| format!("stat {}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!("{} is not traversable by others", dir.display()));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[test]
fn unreadable_source_files_fail_naming_the_file_and_keep_older_backups() {
    let app = TestApp::new();
    if is_root()
        && let Err(why) = chown_app_to_nobody(&app)
    {
        skipped(
            "unreadable_source_files_fail_naming_the_file_and_keep_older_backups",
            &format!("cannot run the binary as uid {NOBODY}: {why}"),
        );
        return;
    }
    run_unprivileged(&app, &["create", "--type", "full"]).assert_code(0);
    let older = backup_hashes(&app);

    // A media file nobody may read.
    let video = app.storage.join("client_1/videos/video_1.mp4");
    let video_sum = sha256_file(&video);
    set_mode(&video, 0o000);
    for kind in ["storage", "full"] {
        let ctx = format!("{kind} backup with an unreadable media file");
        let r = run_unprivileged(&app, &["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&video), "Permission denied"], &ctx);
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    set_mode(&video, 0o644);
    assert_eq!(sha256_file(&video), video_sum, "the media file changed");

    // The database file itself unreadable.
    let db_sum = sha256_file(&app.db);
    set_mode(&app.db, 0o000);
    for kind in ["database", "full"] {
        let ctx = format!("{kind} backup with an unreadable database");
        let r = run_unprivileged(&app, &["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.db), "Permission denied"], &ctx);
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    set_mode(&app.db, 0o644);
    assert_eq!(sha256_file(&app.db), db_sum, "the database changed");

    // A database directory the service cannot enter: an I/O error naming the cause
    // (exit 1), not a config error claiming the file does not exist.
    let db_dir = app.db.parent().expect("db dir").to_path_buf();
    set_mode(&db_dir, 0o000);
    let r = run_unprivileged(&app, &["create", "--type", "database"]);
    set_mode(&db_dir, 0o755);
    assert_fails_naming(
        &r,
        &[s(&app.db), "Permission denied"],
        "database dir not enterable",
    );
    assert!(
        !r.stderr.contains("does not exist"),
        "a permission problem reported as a missing file\n{}",
        r.describe()
    );
    assert_backups_unchanged(&app, &older, "database dir not enterable");

    let r = run_unprivileged(&app, &["verify", "--all"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    run_unprivileged(&app, &["create", "--type", "full"]).assert_code(0);
}

#[test]
fn a_database_locked_by_an_exclusive_writer_past_busy_timeout_fails_naming_the_path() {
    let app = TestApp::new();
    app.write_config("busy_timeout = \"1s\"");
    app.create("database");
    let older = backup_hashes(&app);

    // The app holds an exclusive lock: in WAL mode only `locking_mode = EXCLUSIVE` keeps
    // readers out, and the lock is taken by the first write.
    let writer = Connection::open(&app.db).expect("open the live database");
    writer
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))
        .expect("locking_mode");
    writer
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("begin exclusive");
    writer
        .execute(
            "INSERT INTO clients (phone, name, created_at) VALUES ('+70000000001', 'held', '2026-11-27')",
            [],
        )
        .expect("write under the lock");

    for kind in ["database", "full"] {
        let ctx = format!("{kind} backup while the database is locked");
        let t0 = Instant::now();
        let r = app.spawn(["create", "--type", kind]).wait(RUN_DEADLINE);
        let took = t0.elapsed();
        assert_fails_naming(&r, &[s(&app.db), "locked"], &ctx);
        assert!(
            took >= Duration::from_millis(900),
            "{ctx}: gave up after {took:?}, before busy_timeout (1 s)\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    // The writer was not disturbed: it commits.
    writer
        .execute_batch("COMMIT")
        .expect("commit after the failed backups");
    drop(writer);

    let meta = app.create("database");
    let copy = dump_db_file(Path::new(jstr(&meta, "backup_path")));
    assert!(
        copy.iter()
            .any(|row| row.contains("'held'") || row.contains("\"held\"")),
        "the writer's row is not in the next backup"
    );
    assert_only_listed_backups(&app, "after the lock was released");
    assert_all_verify(&app, "after the lock was released");
}

#[test]
fn a_database_replaced_by_junk_or_truncated_fails_naming_the_cause_and_keeps_older_backups() {
    // tests/backup.rs covers junk with no older backups; here every variant of a broken
    // database file, with older backups that must survive and the cause in the message.
    let app = TestApp::new();
    grow_database(&app, 300, 300);
    app.create("database");
    app.create("full");
    let older = backup_hashes(&app);
    let listed = app.list().len();
    let good = fs::read(&app.db).expect("read the database");
    assert!(
        good.len() > 16 * 4096,
        "the database is too small to truncate meaningfully"
    );

    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "junk",
            "this is not a database\n".repeat(200).into_bytes(),
            &["not a database"],
        ),
        (
            "truncated to half",
            good[..good.len() / 2].to_vec(),
            &["malformed"],
        ),
        (
            "truncated to one page",
            good[..4096].to_vec(),
            &["malformed"],
        ),
        ("truncated to 0 bytes", Vec::new(), &["empty"]),
    ];
    for (what, bytes, causes) in cases {
        remove_db_side_files(&app.db);
        fs::write(&app.db, &bytes).expect("replace the database");
        for kind in ["database", "full"] {
            let ctx = format!("{kind} backup of a database {what}");
            let r = app.run(["create", "--type", kind]);
            assert_fails_naming(&r, &[s(&app.db)], &ctx);
            assert!(
                mentions_any(&r, causes),
                "{ctx}: the cause ({causes:?}) is not named\n{}",
                r.describe()
            );
            assert_eq!(
                fs::read(&app.db).expect("read the database"),
                bytes,
                "{ctx}: the live file was modified"
            );
            assert_backups_unchanged(&app, &older, &ctx);
            assert_no_partials(&app.root, &ctx);
        }
    }
    assert_eq!(app.list().len(), listed);
    assert_all_verify(&app, "after the broken databases");

    remove_db_side_files(&app.db);
    fs::write(&app.db, &good).expect("put the database back");
    app.create("database");
    assert_only_listed_backups(&app, "after the database was repaired");
}
