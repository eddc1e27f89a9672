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
//! root, the kill-at-each-syscall test needs strace: without them a test says why it was
//! skipped, and fails under CI (`require` in tests/util), or falls back to `chmod` where
//! that is equivalent.
//!
//! One submodule per fault: `crash`, `disk_full`, `backup_dir`, `sources`; the helpers
//! they share live here.

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

mod backup_dir;
pub(crate) mod crash;
mod disk_full;
mod restore_swap;
mod sources;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// Deadline for one run of the binary that is expected to fail fast.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// SplitMix64: a tiny deterministic generator, so every run kills at the same fractions.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Run a system tool; `Err` with its output (or why it could not start) unless it exits 0.
pub(crate) fn system(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
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
pub(crate) struct Mount {
    target: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. "8m"), mode 0700, over `target`.
    pub(crate) fn tmpfs(target: &Path, size: &str) -> Result<Mount, String> {
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
pub(crate) fn assert_no_partials(root: &Path, ctx: &str) {
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
pub(crate) fn assert_only_listed_backups(app: &TestApp, ctx: &str) {
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

/// After a fault (`ctx` says which): the catalog is as the ledger expects, a normal
/// `create` succeeds at once (the lock died with the killed process), and only files of
/// listed backups remain (that run cleaned what the fault left).
fn assert_recovers_after(app: &TestApp, ledger: &mut Ledger, ctx: &str) {
    ledger.check(app, ctx);
    let next = app.run(["create", "--type", "database"]);
    assert_eq!(
        next.code(),
        Some(0),
        "{ctx}: the next create failed\n{}",
        next.describe()
    );
    assert_only_listed_backups(app, &format!("{ctx}, then a normal create"));
}
