//! `vertex-backup daemon` against the real binary (docs/design.md §7, issue 4): scheduled runs and
//! `status`, reload by SIGHUP and by saving the config file (a broken config is rejected
//! and the old schedule keeps running), a clean stop during a slow backup, catch-up after
//! downtime, no overlapping runs, sd_notify, the systemd unit, one daemon per directory.
//!
//! Every test spawns the daemon with its own temporary app and its own `NOTIFY_SOCKET`,
//! waits for `READY=1` (the schedule is live, the config watch is set up), and then only
//! polls with deadlines. Schedules use 6-field cron lines (seconds first) in UTC.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::Value;

use crate::util::*;

/// Deadline for something a 2-second schedule must produce (a generous multiple).
const FEW_CYCLES: Duration = Duration::from_secs(20);
/// Deadline for a reload to be logged after SIGHUP or a saved edit (300 ms debounce).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// 1-based number of the first line of `text` starting with `prefix`.
fn line_number(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
        + 1
}

/// Complete backups of `kind` according to `list --json`. The listing reads its own
/// copy of the standard config, so it works while the daemon's config is broken.
fn complete(app: &TestApp, kind: &str) -> usize {
    let config = app.root.join("observer.toml");
    if !config.exists() {
        fs::write(&config, app.config_text("", "")).unwrap();
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .args(["list", "--type", kind, "--json"])
        .current_dir(&app.root)
        .env_remove("VERTEX_BACKUP_CONFIG");
    let rows = run(cmd).assert_code(0).json();
    rows.as_array()
        .unwrap_or_else(|| panic!("list --json is not an array: {rows}"))
        .iter()
        .filter(|r| r["complete"] == Value::Bool(true))
        .count()
}

/// The lines of `text` containing `needle`.
fn lines_with(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Storage archives being written: `.tar*.partial` files under backups/storage. (A
/// finishing run also writes its metadata as `.json.partial`, and the daemon its state
/// files at the top the same way; those are not runs.)
fn archive_partials(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.kind_dir("storage"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".partial") && name.contains(".tar")
        })
        .collect()
}

/// Make `app.config` a symlink to `<root>/etc/config.toml` and return the target (the
/// SIGHUP tests edit the target; with `watch_config = false` only SIGHUP reloads it).
/// Relative `[paths]` still resolve against the app root (the symlink's directory).
fn symlinked_config(app: &TestApp) -> PathBuf {
    let dir = app.root.join("etc");
    fs::create_dir(&dir).expect("mkdir etc");
    let target = dir.join("config.toml");
    fs::rename(&app.config, &target).expect("move the config");
    symlink("etc/config.toml", &app.config).expect("symlink the config");
    target
}

/// The daemon's run history file.
fn schedule_file(app: &TestApp) -> PathBuf {
    app.backups.join("vertex-backup.schedule.json")
}

/// After a reload that turned `database` off and `storage` on (every 2 s) was logged:
/// storage backups run from now on and no more database backups do. At most one database
/// backup may still land after the reload line — a run already queued or running when the
/// reload came finishes undisturbed; since the queue is FIFO, it has landed by the time
/// the first storage backup has.
fn assert_switched_to_storage(d: &mut Daemon, app: &TestApp, db_at_reload: usize) {
    d.poll(
        FEW_CYCLES,
        "a storage backup under the new schedule",
        |_| complete(app, "storage") >= 1,
    );
    let db = complete(app, "database");
    assert!(
        db <= db_at_reload + 1,
        "{db} database backups, {db_at_reload} when the reload was logged: database kept running\n{}",
        d.describe()
    );
    let storage = complete(app, "storage");
    d.poll(FEW_CYCLES, "two more storage backups", |d| {
        let now_db = complete(app, "database");
        assert_eq!(
            now_db,
            db,
            "a database backup ran after the schedule turned it off\n{}",
            d.describe()
        );
        complete(app, "storage") >= storage + 2
    });
    assert_eq!(complete(app, "full"), 0, "{}", d.describe());
}

// ---------------------------------------------------------------------------------------
// 1. A schedule every 2 seconds: backups appear, `status` shows them

#[test]
fn scheduled_database_backups_run_and_status_reports_them() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        "",
    ));
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "two scheduled database backups", |_| {
        complete(&app, "database") >= 2
    });
    assert_eq!(complete(&app, "storage"), 0, "{}", d.describe());
    assert_eq!(complete(&app, "full"), 0, "{}", d.describe());

    // max_age here is 3 s: `status` may exit 1 (stale), which status_json accepts.
    let json = app.status_json();
    let job = |name: &str| status_job(&json, name);
    let db = job("database");
    assert_eq!(db["schedule"], "*/2 * * * * *", "{db:#}");
    assert_eq!(db["last_ok"], true, "{db:#}");
    let parse = |key: &str| {
        DateTime::parse_from_str(jstr(&db, key), "%Y-%m-%d %H:%M:%S %:z")
            .unwrap_or_else(|e| panic!("{key} is not a time ({e}): {db:#}"))
    };
    let (last_run, next_run) = (parse("last_run"), parse("next_run"));
    assert!(next_run > last_run, "{db:#}");
    for other in ["full", "storage", "rotate", "verify"] {
        let j = job(other);
        assert_eq!(j["schedule"], "off", "{j:#}");
        assert!(j["next_run"].is_null(), "{j:#}");
        assert!(j["last_run"].is_null(), "{j:#}");
    }
    let db_type = json["types"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "database"))
        .unwrap_or_else(|| panic!("no database type in {json:#}"));
    assert!(db_type["newest"].is_string(), "{db_type:#}");

    d.stop();
}

// ---------------------------------------------------------------------------------------
// 2. SIGHUP with a changed schedule changes what runs next

#[test]
fn sighup_with_a_changed_schedule_changes_what_runs_next() {
    let app = TestApp::new();
    let real = symlinked_config(&app);
    fs::write(
        &real,
        schedule_config(
            &app,
            "",
            &[("database", "*/2 * * * * *")],
            "watch_config = false\n",
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup", |_| {
        complete(&app, "database") >= 1
    });

    fs::write(
        &real,
        schedule_config(
            &app,
            "",
            &[("storage", "*/2 * * * * *")],
            "watch_config = false\n",
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let reloaded = d.poll_for(RELOAD_TIMEOUT, "the reload in backup.log", |d| {
        lines_with(&d.app.backup_log(), "configuration reloaded")
            .into_iter()
            .next()
    });
    let db_at_reload = complete(&app, "database");
    assert!(
        reloaded.contains("next runs: storage ") && !reloaded.contains("database"),
        "the reload line should list the new next runs (storage only): {reloaded}"
    );

    assert_switched_to_storage(&mut d, &app, db_at_reload);

    // SIGHUP did it, once (watch_config = false: saving the file alone reloads nothing).
    let stderr = d.stderr();
    let hup = stderr.find("SIGHUP: reloading the configuration");
    let reload = stderr.find("configuration reloaded");
    assert!(
        hup.is_some() && reload.is_some() && hup < reload,
        "stderr should log the SIGHUP, then the reload\n{}",
        d.describe()
    );
    assert_eq!(
        lines_with(&app.backup_log(), "configuration reloaded").len(),
        1,
        "{}",
        d.describe()
    );
    d.stop();
}

// ---------------------------------------------------------------------------------------
// 3. SIGHUP with a broken config keeps the old schedule and logs the line

#[test]
fn sighup_with_a_broken_config_keeps_the_old_schedule_and_logs_the_line() {
    let app = TestApp::new();
    let real = symlinked_config(&app);
    let good = schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        "watch_config = false\n",
    );
    fs::write(&real, &good).unwrap();
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup", |_| {
        complete(&app, "database") >= 1
    });

    // Two broken edits in turn: a cron field out of range, then an unknown key.
    let bad_cron = schedule_config(
        &app,
        "",
        &[("database", "0 99 * * *")],
        "watch_config = false\n",
    );
    let bad_key = schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        "watch_config = false\ndatabse = \"*/5 * * * * *\"\n",
    );
    let cases = [
        (bad_cron.as_str(), "database = \"0 99", "0 99 * * *"),
        (bad_key.as_str(), "databse = ", "databse"),
    ];
    for (i, (text, line_prefix, named)) in cases.into_iter().enumerate() {
        let line = line_number(text, line_prefix);
        fs::write(&real, text).unwrap();
        d.signal(libc::SIGHUP);
        let rejected = d.poll_for(RELOAD_TIMEOUT, "the rejection in backup.log", |d| {
            lines_with(&d.app.backup_log(), "configuration change REJECTED")
                .into_iter()
                .nth(i)
        });
        assert!(
            rejected.contains("WARNING"),
            "a rejection is a warning: {rejected}"
        );
        assert!(
            rejected.contains(&format!("line {line}")),
            "the rejection should name line {line}: {rejected}"
        );
        assert!(
            rejected.contains(named),
            "the rejection should name {named:?}: {rejected}"
        );
        // stderr (journald) says the same.
        assert!(
            lines_with(&d.stderr(), "configuration change REJECTED")
                .get(i)
                .is_some_and(|l| l.contains(&format!("line {line}"))),
            "{}",
            d.describe()
        );

        // The old schedule keeps running.
        let before = complete(&app, "database");
        d.poll(
            FEW_CYCLES,
            "two more database backups on the old schedule",
            |_| complete(&app, "database") >= before + 2,
        );
    }
    // An empty file (an in-place write caught between truncate and write) is valid TOML
    // meaning "all defaults"; a running daemon refuses it like any broken edit.
    fs::write(&real, "").unwrap();
    d.signal(libc::SIGHUP);
    let rejected = d.poll_for(RELOAD_TIMEOUT, "the empty file's rejection", |d| {
        lines_with(&d.app.backup_log(), "configuration change REJECTED")
            .into_iter()
            .nth(2)
    });
    assert!(rejected.contains("empty"), "{rejected}");
    let before = complete(&app, "database");
    d.poll(
        FEW_CYCLES,
        "database backups go on after the empty file",
        |_| complete(&app, "database") >= before + 2,
    );
    assert!(
        lines_with(&app.backup_log(), "configuration reloaded").is_empty(),
        "{}",
        d.describe()
    );
    assert_eq!(complete(&app, "storage"), 0);
    d.stop();
}

/// Issue 4 and the README: an invalid config is "rejected with its line and key". Here
/// the value of `[schedule] database` is a bad cron line.
#[test]
fn a_rejected_config_names_the_key_and_its_line() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(&app, "", &[("database", "0 3 * * *")], ""));
    let mut d = Daemon::start(&app);
    let bad = schedule_config(&app, "", &[("database", "0 99 * * *")], "");
    let line = line_number(&bad, "database = \"0 99");
    app.write_config_raw(&bad);
    d.signal(libc::SIGHUP);
    let rejected = d.poll_for(RELOAD_TIMEOUT, "the rejection in backup.log", |d| {
        lines_with(&d.app.backup_log(), "configuration change REJECTED")
            .into_iter()
            .next()
    });
    assert!(
        rejected.contains(&format!("line {line}")),
        "the rejection should name line {line}: {rejected}"
    );
    // The message must let the operator find the key without opening the file: the
    // dotted key (`schedule.database`) or at least the key's name.
    let message = rejected
        .split_once("config.toml")
        .map_or(rejected.as_str(), |(_, rest)| rest);
    assert!(
        message.contains("database"),
        "the rejection should name the key `schedule.database`: {rejected}"
    );
    d.stop();
}

// ---------------------------------------------------------------------------------------
// 4. Saving the config file reloads it (inotify), no signal needed

#[test]
fn saving_the_config_file_reloads_the_schedule_without_a_signal() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        "",
    ));
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup", |_| {
        complete(&app, "database") >= 1
    });

    // As editors save: a new file renamed over the old one.
    app.replace_config_by_rename(&schedule_config(
        &app,
        "",
        &[("storage", "*/2 * * * * *")],
        "",
    ));
    let reloaded = d.poll_for(
        RELOAD_TIMEOUT,
        "the reload after the saved edit in backup.log",
        |d| {
            lines_with(&d.app.backup_log(), "configuration reloaded")
                .into_iter()
                .next()
        },
    );
    let db_at_reload = complete(&app, "database");
    assert!(reloaded.contains("next runs: storage "), "{reloaded}");
    assert_switched_to_storage(&mut d, &app, db_at_reload);

    // A saved broken edit goes through the same check: rejected, the schedule stays.
    let bad = schedule_config(&app, "", &[("storage", "*/2 * * * * * * *")], "");
    let line = line_number(&bad, "storage = \"*/2");
    app.replace_config_by_rename(&bad);
    let rejected = d.poll_for(
        RELOAD_TIMEOUT,
        "the rejection of the broken edit in backup.log",
        |d| {
            lines_with(&d.app.backup_log(), "configuration change REJECTED")
                .into_iter()
                .next()
        },
    );
    assert!(rejected.contains(&format!("line {line}")), "{rejected}");
    let storage = complete(&app, "storage");
    d.poll(FEW_CYCLES, "a storage backup after the rejection", |_| {
        complete(&app, "storage") > storage
    });

    assert!(
        !d.stderr().contains("SIGHUP"),
        "no signal was sent\n{}",
        d.describe()
    );
    assert_eq!(
        lines_with(&app.backup_log(), "configuration reloaded").len(),
        1,
        "one saved edit, one reload\n{}",
        d.describe()
    );
    d.stop();
}

/// `path` replaced atomically by a symlink to `to`, as deploy tools switch releases.
fn swap_symlink(path: &Path, to: &str) {
    let tmp = path.with_extension("toml.tmp-link");
    symlink(to, &tmp).expect("make the new symlink");
    fs::rename(&tmp, path).expect("rename the symlink over the config");
}

#[test]
fn after_the_configs_symlink_moves_to_another_directory_edits_there_reload() {
    let app = TestApp::new();
    let (a, b) = (app.root.join("release-a"), app.root.join("release-b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let db_every_2s = schedule_config(&app, "", &[("database", "*/2 * * * * *")], "");
    fs::write(a.join("config.toml"), &db_every_2s).unwrap();
    fs::remove_file(&app.config).unwrap();
    symlink("release-a/config.toml", &app.config).unwrap();
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup", |_| {
        complete(&app, "database") >= 1
    });

    // The release switch: a reload, and from now on the file in release-b is the config.
    let storage_every_2s = schedule_config(&app, "", &[("storage", "*/2 * * * * *")], "");
    fs::write(b.join("config.toml"), &storage_every_2s).unwrap();
    swap_symlink(&app.config, "release-b/config.toml");
    let reloaded = d.poll_for(RELOAD_TIMEOUT, "the reload after the switch", |d| {
        lines_with(&d.app.backup_log(), "configuration reloaded")
            .into_iter()
            .next()
    });
    assert!(reloaded.contains("next runs: storage "), "{reloaded}");

    // An edit saved in release-b (a directory the daemon did not watch at its start).
    let bad = schedule_config(&app, "", &[("storage", "*/2 * * * * * * *")], "");
    let tmp = b.join("config.toml.tmp-edit");
    fs::write(&tmp, &bad).unwrap();
    fs::rename(&tmp, b.join("config.toml")).unwrap();
    let rejected = d.poll_for(RELOAD_TIMEOUT, "the edit in release-b seen", |d| {
        lines_with(&d.app.backup_log(), "configuration change REJECTED")
            .into_iter()
            .next()
    });
    let line = line_number(&bad, "storage = \"*/2");
    assert!(rejected.contains(&format!("line {line}")), "{rejected}");
    assert!(!d.stderr().contains("SIGHUP"), "{}", d.describe());
    d.stop();
}

// ---------------------------------------------------------------------------------------
// 5. SIGTERM during a slow storage backup

#[test]
fn sigterm_during_a_slow_storage_backup_exits_0_and_leaves_nothing() {
    let app = TestApp::new();
    // ~150 MB of incompressible data: several seconds of work for a debug build. Two
    // compression threads bound what zstd buffers in flight (about (threads + 2) × 8 MiB,
    // compressed and hashed only when the archive is finished), so the backup is still
    // reading its input when the grace period ends, whatever the machine's core count.
    app.write_random_files("media", 15, 10 << 20);
    let grace = Duration::from_secs(1);
    let mut text = schedule_config(&app, "", &[("storage", "*/1 * * * * *")], "");
    text = text.replace("[backup]\n", "[backup]\nthreads = 2\n");
    app.write_config_raw(&text);
    let mut d = Daemon::start(&app);
    let partial = d.poll_for(
        Duration::from_secs(60),
        "a growing .partial storage archive",
        |d| {
            archive_partials(d.app)
                .into_iter()
                .find(|p| fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20))
        },
    );
    assert_eq!(complete(&app, "storage"), 0, "{}", d.describe());

    let sent = Instant::now();
    d.signal(libc::SIGTERM);
    let run = d.wait_exit(grace + Duration::from_secs(5));
    let took = sent.elapsed();
    assert_eq!(
        run.code(),
        Some(0),
        "{}\n--- backup.log ---\n{}",
        run.describe(),
        app.backup_log()
    );
    assert!(
        run.stderr
            .contains("did not finish within the grace period"),
        "the slow backup should have been aborted after the grace period (stopped after {took:?})\n{}",
        run.describe()
    );
    assert!(!partial.exists(), "{} is left", partial.display());
    assert!(
        app.partial_files().is_empty(),
        "left: {:#?}",
        app.partial_files()
    );
    assert!(app.list_of("storage").is_empty(), "{}", run.describe());
    assert!(
        app.backup_files().is_empty(),
        "nothing of the aborted backup may stay: {:#?}",
        app.backup_files()
    );
}

// ---------------------------------------------------------------------------------------
// 6. Catch-up

/// A run history saying `database` last ran for the 2020-01-01 00:00 UTC slot.
fn write_history_from_2020(app: &TestApp) {
    fs::write(
        schedule_file(app),
        r#"{"jobs": {"database": {"slot": "2020-01-01T00:00:00Z", "finished": "2020-01-01T00:00:07Z", "ok": true}}}"#,
    )
    .unwrap();
}

/// Yearly at 00:00 on 1 January (UTC): its most recent slot is this year's.
const YEARLY: &str = "0 0 1 1 *";
const CATCH_UP_LINE: &str = "missed while the daemon was down";

#[test]
fn a_missed_slot_is_caught_up_exactly_once_at_start() {
    let app = TestApp::new();
    write_history_from_2020(&app);
    app.write_config_raw(&schedule_config(&app, "", &[("database", YEARLY)], ""));
    let started = Utc::now();
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "the catch-up database backup", |_| {
        complete(&app, "database") >= 1
    });
    d.holds_for(
        Duration::from_secs(3),
        "exactly one database backup",
        |_| complete(&app, "database") == 1,
    );
    assert_eq!(
        lines_with(&d.stderr(), CATCH_UP_LINE).len(),
        1,
        "{}",
        d.describe()
    );

    // The history now records this year's slot as run, so a restart would not repeat it.
    let slot = Utc
        .with_ymd_and_hms(started.year(), 1, 1, 0, 0, 0)
        .single()
        .unwrap();
    let history: Value = serde_json::from_slice(&fs::read(schedule_file(&app)).unwrap()).unwrap();
    let db = &history["jobs"]["database"];
    assert_eq!(
        jstr(db, "slot").parse::<DateTime<Utc>>().unwrap(),
        slot,
        "{history:#}"
    );
    assert_eq!(db["ok"], true, "{history:#}");
    assert!(
        jstr(db, "finished").parse::<DateTime<Utc>>().unwrap() >= started,
        "{history:#}"
    );
    assert_eq!(complete(&app, "storage") + complete(&app, "full"), 0);
    d.stop();
}

#[test]
fn with_catch_up_off_a_missed_slot_is_not_run() {
    let app = TestApp::new();
    write_history_from_2020(&app);
    app.write_config_raw(&schedule_config(
        &app,
        "",
        &[("database", YEARLY)],
        "catch_up = false\n",
    ));
    let mut d = Daemon::start(&app);
    d.holds_for(Duration::from_secs(3), "no database backup", |_| {
        complete(&app, "database") == 0
    });
    assert!(!d.stderr().contains(CATCH_UP_LINE), "{}", d.describe());
    d.stop();
    assert!(app.backup_files().is_empty(), "{:#?}", app.backup_files());
}

#[test]
fn a_job_never_run_before_is_not_caught_up() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(&app, "", &[("database", YEARLY)], ""));
    let started = Utc::now();
    let mut d = Daemon::start(&app);
    d.holds_for(Duration::from_secs(3), "no database backup", |_| {
        complete(&app, "database") == 0
    });
    assert!(!d.stderr().contains(CATCH_UP_LINE), "{}", d.describe());
    d.stop();
    assert!(app.backup_files().is_empty(), "{:#?}", app.backup_files());
    // The start is recorded as the baseline from which later downtime is measured.
    let history: Value = serde_json::from_slice(&fs::read(schedule_file(&app)).unwrap()).unwrap();
    let db = &history["jobs"]["database"];
    assert!(
        jstr(db, "slot").parse::<DateTime<Utc>>().unwrap() >= started,
        "{history:#}"
    );
    assert!(db.get("finished").is_none(), "{history:#}");
}

// ---------------------------------------------------------------------------------------
// 7. Overlap: a job longer than its interval never runs twice at once

#[test]
fn a_storage_job_longer_than_its_interval_never_runs_twice_at_once() {
    let app = TestApp::new();
    // ~50 MB of incompressible data: a few seconds per run in a debug build, far more
    // than the 1 s interval.
    app.write_random_files("media", 5, 10 << 20);
    app.write_config_raw(&schedule_config(
        &app,
        "",
        &[("storage", "*/1 * * * * *")],
        "",
    ));
    let mut d = Daemon::start(&app);
    let one_at_a_time = |d: &Daemon| {
        let partials = archive_partials(d.app);
        assert!(
            partials.len() <= 1,
            "two runs at once: {partials:#?}\n{}",
            d.describe()
        );
        partials.into_iter().next()
    };
    let skipped = "storage job skipped: the previous run is still queued or running";

    // A first run, with skipped slots while it runs, that completes.
    let first = d.poll_for(Duration::from_secs(60), "a first storage run", |d| {
        one_at_a_time(d)
    });
    d.poll(
        Duration::from_secs(90),
        "skipped slots and the first storage backup",
        |d| {
            one_at_a_time(d);
            d.logs().contains(skipped)
                && !first.exists()
                && files_under(&d.app.kind_dir("storage"))
                    .iter()
                    .any(|p| p.to_string_lossy().ends_with(".tar.zst"))
        },
    );
    // The schedule goes on: the next slot starts a second run.
    d.poll(Duration::from_secs(30), "a second storage run", |d| {
        one_at_a_time(d).is_some_and(|p| p != first)
    });

    let logs = d.logs();
    assert!(
        lines_with(&app.backup_log(), skipped)
            .iter()
            .all(|l| l.contains("WARNING")),
        "{logs}"
    );
    assert!(
        !logs.contains("holds the lock"),
        "a run collided with another on the lock\n{}",
        d.describe()
    );
    let run = d.stop();
    assert!(!run.stderr.contains("holds the lock"), "{}", run.describe());
    assert!(!app.backup_log().contains("holds the lock"));
    // The second run was either aborted or finished; either way nothing partial stays.
    let rows = app.list_of("storage");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["complete"] == Value::Bool(true)),
        "{rows:#?}"
    );
    assert!(app.partial_files().is_empty(), "{:#?}", app.partial_files());
}

// ---------------------------------------------------------------------------------------
// 8. sd_notify

#[test]
fn sd_notify_reports_ready_status_reloading_and_stopping() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(&app, "", &[("database", "0 3 * * *")], ""));
    let mut d = Daemon::start(&app);
    let ready = d.notify.find_line(0, "READY=1").unwrap();
    let ready_msg = &d.notify.messages()[ready];
    let status = ready_msg
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 without STATUS=: {ready_msg:?}"));
    assert!(
        status.contains("next: database at "),
        "STATUS= should name the next job: {status:?}"
    );

    d.signal(libc::SIGHUP);
    let reloading = d.poll_for(RELOAD_TIMEOUT, "RELOADING=1 after SIGHUP", |d| {
        d.notify.find_line(ready + 1, "RELOADING=1")
    });
    d.poll(RELOAD_TIMEOUT, "READY=1 after the reload", |d| {
        d.notify.find_line(reloading + 1, "READY=1").is_some()
    });

    d.signal(libc::SIGTERM);
    d.poll_for(STOP_TIMEOUT, "STOPPING=1 after SIGTERM", |d| {
        d.notify.find_line(reloading + 1, "STOPPING=1")
    });
    let run = d.wait_exit(STOP_TIMEOUT);
    run.assert_code(0);
}

// ---------------------------------------------------------------------------------------
// 9. The systemd unit

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !require(
        "systemd-analyze",
        runs_ok("systemd-analyze", &["--version"]),
    ) {
        return;
    }
    let unit_src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/vertex-backup.service");
    let unit = fs::read_to_string(&unit_src).unwrap();
    crate::install::assert_unit_verifies(&unit, Path::new(BIN));
}

// ---------------------------------------------------------------------------------------
// 10. One daemon per backup directory

#[test]
fn a_second_daemon_on_the_same_backup_dir_exits_1_naming_the_holder() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(&app, "", &[("database", "0 3 * * *")], ""));
    let mut first = Daemon::start(&app);

    let mut cmd = app.command(["daemon"]);
    cmd.env_remove("NOTIFY_SOCKET");
    let second = spawn(cmd).wait(Duration::from_secs(10));
    assert_eq!(second.code(), Some(1), "{}", second.describe());
    assert!(
        second.stderr.contains(&format!("pid {}", first.pid())),
        "the refusal should name the running daemon (pid {})\n{}",
        first.pid(),
        second.describe()
    );
    assert!(second.stderr.contains("daemon"), "{}", second.describe());

    // The first one is undisturbed.
    assert!(first.proc.is_running(), "{}", first.describe());
    let lock = fs::read_to_string(app.backups.join(".vertex-backup.daemon.lock")).unwrap();
    assert!(lock.contains(&format!("pid {}", first.pid())), "{lock}");
    first.stop();
}
