//! The shipped unit's `SystemCallFilter=` allows every system call the program makes with
//! the documented options, run as an unprivileged service user: a refused call is SIGSYS,
//! which kills the service in the middle of a backup. The binary runs under `strace -f -u
//! nobody` (create, verify, restore in place, rotate, list and status, with archives and
//! with snapshots, at `nice`/`io_class`; the daemon running a scheduled job with the REST
//! API on); every call it made is checked against the unit's filter, expanded the way
//! systemd reads it (`systemd-analyze syscall-filter` for each `@group`, the assignments
//! applied in order).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// The unprivileged user the traced runs take (the service's own user does not exist on
/// a test machine; what matters is that it is not root).
const SERVICE_USER: &str = "nobody";
const SERVICE_ID: u32 = 65534;

/// `[backup]` lines with every option that makes its own system calls.
const PRIORITY: &str = "nice = 10\nio_class = \"idle\"";

/// The members of `@group` (nested groups expanded) as `systemd-analyze` lists them.
fn expand_group(group: &str, out: &mut BTreeSet<String>) {
    let r = tool("systemd-analyze", ["syscall-filter", group]);
    r.assert_code(0);
    for line in r.stdout.lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            expand_group(name, out);
        } else {
            out.insert(name.to_string());
        }
    }
}

/// The system calls the unit allows: the first `SystemCallFilter=` sets the kind (an allow
/// list here); each later one removes (`~`) or adds its calls, in order, as systemd.exec(5)
/// describes. `@default` is always allowed with an allow list.
fn allowed_by(unit: &str) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    expand_group("@default", &mut allowed);
    let mut first = true;
    for value in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        assert!(
            !(first && deny),
            "the unit's first SystemCallFilter= is a deny list; this test reads an allow list"
        );
        first = false;
        let mut calls = BTreeSet::new();
        for item in list.split_whitespace() {
            // `name:errno` asks for an error instead of SIGSYS; the call is still refused.
            let name = item.split(':').next().unwrap_or(item);
            if name.starts_with('@') {
                expand_group(name, &mut calls);
            } else {
                calls.insert(name.to_string());
            }
        }
        if deny {
            allowed.retain(|c| !calls.contains(c));
        } else {
            allowed.extend(calls);
        }
    }
    assert!(!first, "the unit has no SystemCallFilter=");
    allowed
}

/// Each system call named in an `strace -f` log (`PID name(…`, `PID <... name resumed>`).
fn calls_in(log: &Path, into: &mut BTreeSet<String>) {
    let text = fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    for line in text.lines() {
        let rest = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or(line);
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let called =
            rest[name.len()..].starts_with('(') || rest[name.len()..].starts_with(" resumed");
        if !name.is_empty() && called {
            into.insert(name);
        }
    }
}

/// `strace -f -qq -o LOG -u nobody BIN --config … ARGS…`.
fn traced(app: &TestApp, args: &[&str], log: &Path) -> Command {
    let inner = app.command(args);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-u", SERVICE_USER, "-o"])
        .arg(log)
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(&app.root);
    for (key, value) in inner.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// Everything under the app's root owned by the service user, as an install makes it.
fn give_to_service_user(app: &TestApp) {
    tool(
        "chown",
        [
            "-R".as_ref(),
            format!("{SERVICE_ID}:{SERVICE_ID}").as_ref(),
            app.root.as_os_str(),
        ],
    )
    .assert_code(0);
}

/// The CLI commands an operator runs, each traced; the calls they made go into `calls`.
fn trace_cli(app: &TestApp, label: &str, logs: &Path, calls: &mut BTreeSet<String>) {
    let commands: [&[&str]; 7] = [
        &["create", "--type", "full"],
        &["create", "--type", "database"],
        &["verify", "--read-data", "--all"],
        &["restore", "--latest", "full", "--yes"],
        &["--max-backups", "1", "rotate"],
        &["list"],
        &["status"],
    ];
    for (i, args) in commands.iter().enumerate() {
        let log = logs.join(format!("{label}-{i}.strace"));
        let r = run(traced(app, args, &log));
        assert!(
            matches!(r.code(), Some(0 | 3)),
            "{label}: {args:?} as {SERVICE_USER} failed:\n{}",
            r.describe()
        );
        calls_in(&log, calls);
    }
}

/// The daemon with the REST API on, until its scheduled job has made a backup; then
/// SIGTERM to the daemon itself (strace exits with it).
fn trace_daemon(app: &TestApp, logs: &Path, calls: &mut BTreeSet<String>) {
    let text = schedule_config(
        app,
        PRIORITY,
        &[("database", "*/1 * * * * *")],
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"unit-filter-token-0123456789\"\n",
    );
    app.write_config_raw(&text);
    give_to_service_user(app);
    let before = files_under(&app.backups.join("database")).len();
    let log = logs.join("daemon.strace");
    let strace = spawn(traced(app, &["daemon"], &log));
    let base = poll_for(Duration::from_secs(30), "the API to listen", || {
        let err = strace.stderr_so_far();
        let at = err.find("REST API listening on ")?;
        let rest = &err[at + "REST API listening on ".len()..];
        Some(rest.split_whitespace().next()?.to_string())
    });
    let health = reqwest::blocking::get(format!("{base}/health")).expect("GET /health");
    assert!(health.status().is_success() || health.status().as_u16() == 503);
    poll_until(
        Duration::from_secs(60),
        "a scheduled database backup",
        || files_under(&app.backups.join("database")).len() > before,
    );
    // The first line of strace's log is the daemon's own execve, with its pid.
    let pid: i32 = fs::read_to_string(&log)
        .expect("strace log")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the traced daemon's pid in strace's log");
    // SAFETY: kill(2) with a pid this test started and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let r = strace.wait(Duration::from_secs(60));
    assert_eq!(r.code(), Some(0), "the traced daemon:\n{}", r.describe());
    calls_in(&log, calls);
}

#[test]
fn the_shipped_unit_allows_every_system_call_of_a_run_as_the_service_user() {
    if !require("root, to run the binary as an unprivileged user", {
        if is_root() {
            Ok(())
        } else {
            Err("not root".into())
        }
    }) || !require(
        "strace, able to trace",
        crate::faults::crash::strace_usable(),
    ) || !require(
        "systemd-analyze",
        crate::faults::system("systemd-analyze", &["--version".as_ref()]),
    ) {
        return;
    }
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/vertex-backup.service"),
    )
    .unwrap();
    let allowed = allowed_by(&unit);
    assert!(allowed.contains("read") && !allowed.contains("reboot"));

    let logs = tempfile::tempdir().unwrap();
    let mut calls = BTreeSet::new();

    let archives = TestApp::new();
    archives.write_random_files("media", 4, 200 << 10);
    archives.write_config(PRIORITY);
    give_to_service_user(&archives);
    trace_cli(&archives, "archives", logs.path(), &mut calls);

    let snapshots = TestApp::new();
    snapshots.write_random_files("media", 4, 200 << 10);
    snapshots.write_config(&format!(
        "{PRIORITY}\nstorage_format = \"snapshot\"\ndatabase_format = \"snapshot\""
    ));
    give_to_service_user(&snapshots);
    trace_cli(&snapshots, "snapshots", logs.path(), &mut calls);

    trace_daemon(&archives, logs.path(), &mut calls);

    // The priority calls were made (else this test would not test what it names).
    for needed in ["setpriority", "ioprio_set", "renameat2", "fsync"] {
        let seen = calls.contains(needed)
            || (needed == "renameat2" && (calls.contains("rename") || calls.contains("renameat")));
        assert!(seen, "no {needed} in the traced runs: {calls:?}");
    }
    let refused: Vec<&String> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(
        refused.is_empty(),
        "the shipped unit's SystemCallFilter= refuses (SIGSYS: the service is killed) \
         these calls the program makes: {refused:?}\nall calls made: {calls:?}"
    );
}
