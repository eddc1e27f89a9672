//! SIGKILL at any moment of `create` (seeded random delays, and at every commit system
//! call through strace), checked against a ledger of everything `list` has shown.

use super::*;

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

            assert_recovers_after(&app, &mut ledger, &ctx);
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
pub(crate) fn strace_usable() -> Result<(), String> {
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

/// `strace [-e inject=SYSCALL:signal=KILL:when=N] -e trace=SYSCALLS BIN --config … ARGS…`,
/// with strace's own record of the traced calls in `log`.
pub(crate) fn strace_command<S: AsRef<std::ffi::OsStr>>(
    app: &TestApp,
    args: &[S],
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
    let inner = app.command(args);
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

/// `args` under strace, recording each of `syscalls` in `log` (`inject`: killed at that
/// call, the only one traced then).
pub(crate) fn traced_run(
    app: &TestApp,
    args: &[&str],
    syscalls: &[&str],
    inject: Option<(&str, usize)>,
    log: &Path,
) -> Command {
    let trace = match inject {
        Some((call, _)) => call.to_string(),
        None => syscalls.join(","),
    };
    strace_command(app, args, &trace, inject, log)
}

/// How many times `syscall` was made, from an strace log (the first word that is not a
/// pid names the call; a `<... resumed>` line is not a call).
pub(crate) fn calls_in(log: &Path, syscall: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .find(|w| !w.chars().all(|c| c.is_ascii_digit()))
                .is_some_and(|c| c.starts_with(&format!("{syscall}(")))
        })
        .count()
}

/// Where a run is killed, at each call in turn: the renames and fsyncs that make a backup
/// durable and visible, and the unlinks and truncations around them (SQLite's journal
/// switch of the copy, closing the source, the lock file).
const COMMIT_SYSCALLS: [&str; 4] = ["rename", "fsync", "unlink", "ftruncate"];

#[test]
fn sigkill_at_each_commit_syscall_leaves_only_complete_verified_backups() {
    if !require("strace, able to trace", strace_usable()) {
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
        let mut cmd = strace_command(&app, &["create", "--type"], &trace, None, &log);
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
                let mut cmd = strace_command(
                    &app,
                    &["create", "--type"],
                    syscall,
                    Some((syscall, n)),
                    &log,
                );
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
                assert_recovers_after(&app, &mut ledger, &ctx);
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
