//! The state files beside the backups (`vertex-backup.state.json`, `.verify.json`,
//! `.schedule.json`) against the real binary: a corrupt one is moved aside as
//! `NAME.corrupt-TIMESTAMP` and reported — by the CLI on stderr, by the daemon in its log —
//! and what is written afterwards starts afresh; two `verify` processes recording their
//! verdicts at the same moment lose neither.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const GARBAGE: &[u8] = b"{\"runs\": {\"database\": {\"last_success\": tru";

/// The files `NAME.corrupt-*` beside `file`.
fn set_aside(file: &Path) -> Vec<PathBuf> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    children_containing(file.parent().unwrap(), &format!("{name}.corrupt-"))
}

/// `file` was moved aside exactly once, with its bytes, and a warning naming both the
/// file and where it went is in `log`.
#[track_caller]
fn assert_set_aside_and_reported(file: &Path, log: &str) {
    let aside = set_aside(file);
    assert_eq!(aside.len(), 1, "{aside:?}\n{log}");
    assert_eq!(fs::read(&aside[0]).unwrap(), GARBAGE);
    let line = log
        .lines()
        .find(|l| l.contains("corrupt") && l.contains(&aside[0].display().to_string()))
        .unwrap_or_else(|| panic!("no warning names {}:\n{log}", aside[0].display()));
    assert!(line.contains(&file.display().to_string()), "{line}");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_the_cli_warns() {
    let app = TestApp::new();
    app.create("storage");
    let state = app.backups.join("vertex-backup.state.json");
    fs::write(&state, GARBAGE).unwrap();

    let run = app.run(["create", "--type", "database", "--json"]);
    run.assert_code(0);
    assert_set_aside_and_reported(&state, &run.stderr);
    // Afresh: the new outcome, and nothing of the file that was set aside.
    let runs = read_json(&state)["runs"].clone();
    let keys: Vec<&String> = runs.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["database"], "{runs:#}");
    assert_eq!(
        runs["database"]["last_success"]["backup"],
        format!("db_backup_{}", jstr(&run.json(), "timestamp"))
    );
    // Reported once: the next reader finds a good file.
    let again = app.run(["status", "--json"]);
    assert!(!again.stderr.contains("corrupt"), "{}", again.describe());
    assert_eq!(set_aside(&state).len(), 1);
}

#[test]
fn a_corrupt_verdicts_file_is_kept_aside_and_verify_warns() {
    let app = TestApp::new();
    let meta = app.create("database");
    let verdicts = app.backups.join("vertex-backup.verify.json");
    fs::write(&verdicts, GARBAGE).unwrap();

    let run = app.run(["verify"]);
    run.assert_code(0);
    assert_set_aside_and_reported(&verdicts, &run.stderr);
    let recorded = read_json(&verdicts)["backups"].clone();
    let stem = format!("db_backup_{}", jstr(&meta, "timestamp"));
    assert_eq!(recorded.as_object().unwrap().len(), 1, "{recorded:#}");
    assert_eq!(recorded[&stem]["ok"], true, "{recorded:#}");
}

#[test]
fn a_corrupt_run_history_is_kept_aside_and_the_daemon_logs_it() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(&app, "", &[], ""));
    let history = app.backups.join("vertex-backup.schedule.json");
    fs::write(&history, GARBAGE).unwrap();

    let mut d = Daemon::start(&app);
    d.poll(START_TIMEOUT, "the set-aside warning in the log", |d| {
        d.logs().contains(".corrupt-")
    });
    let logs = d.logs();
    assert_set_aside_and_reported(&history, &logs);
    assert!(
        app.backup_log()
            .lines()
            .any(|l| l.contains("WARNING") && l.contains("corrupt")),
        "{}",
        d.describe()
    );
    // Afresh: a baseline for every job, none of them caught up.
    let jobs = read_json(&history)["jobs"].clone();
    for job in JOBS {
        assert!(jobs[job]["slot"].is_string(), "{job}: {jobs:#}");
        assert!(jobs[job].get("finished").is_none(), "{job}: {jobs:#}");
    }
    d.stop().assert_code(0);
}

/// Both verdicts after every round of two `verify` processes started together, one per
/// backup. Without a lock of its own around read-modify-write, the later writer drops the
/// earlier one's verdict (or fails on the shared temporary file).
#[test]
fn two_verify_processes_at_once_lose_neither_verdict() {
    const ROUNDS: usize = 50;
    let app = TestApp::new();
    let backups: Vec<(String, PathBuf)> = (0..2)
        .map(|_| {
            let m = app.create("database");
            (
                format!("db_backup_{}", jstr(&m, "timestamp")),
                PathBuf::from(jstr(&m, "backup_path")),
            )
        })
        .collect();
    let verdicts = app.backups.join("vertex-backup.verify.json");
    for round in 0..ROUNDS {
        let _ = fs::remove_file(&verdicts);
        let runs: Vec<Spawned> = backups
            .iter()
            .map(|(_, path)| app.spawn(["verify".as_ref(), path.as_os_str()]))
            .collect();
        for run in runs {
            let run = run.wait(Duration::from_secs(60));
            run.assert_code(0);
            assert!(!run.stderr.contains("warning"), "{}", run.describe());
        }
        let recorded = read_json(&verdicts)["backups"].clone();
        for (stem, _) in &backups {
            assert_eq!(
                recorded[stem]["ok"], true,
                "round {round}: the verdict of {stem} was lost: {recorded:#}"
            );
        }
    }
}
