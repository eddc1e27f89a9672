//! Bad configs, missing or non-SQLite sources, unusable backup dirs: clear errors,
//! nothing written.

use super::*;

// ---------------------------------------------------------------------------------------
// 8. Errors

#[test]
fn unknown_config_key_is_a_usage_error_naming_key_and_line() {
    let app = TestApp::new();
    let text = app.config_text("compresion = \"zstd\"", "");
    app.write_config_raw(&text);
    let line = line_of(&text, "compresion");
    for args in [
        &["create", "--type", "database"][..],
        &["check-config"][..],
        &["list"][..],
    ] {
        let r = app.run(args);
        r.assert_code(2);
        assert!(r.stderr.contains("compresion"), "{}", r.describe());
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "expected line {line}\n{}",
            r.describe()
        );
    }
    assert_nothing_written(&app);
}

#[test]
fn bad_cron_expression_is_a_usage_error_naming_its_line() {
    let app = TestApp::new();
    let text = app.config_text(
        "",
        "[schedule]\ndatabase = \"0 */6 * * *\"\nfull = \"0 25 * * *\"\n",
    );
    app.write_config_raw(&text);
    let line = line_of(&text, "full =");
    for args in [&["check-config"][..], &["create", "--type", "database"][..]] {
        let r = app.run(args);
        r.assert_code(2);
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "expected line {line}\n{}",
            r.describe()
        );
        assert!(r.stderr.contains("0 25 * * *"), "{}", r.describe());
    }
    assert_nothing_written(&app);
}

/// The app's database gone, with its WAL and shared-memory files.
fn remove_database(app: &TestApp) {
    for sfx in ["", "-wal", "-shm"] {
        let mut p = app.db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// A first run that fails before the backup directory exists (a fresh install, the
/// database path wrong) is recorded like any other failure: `backup.log`, the state's
/// `last_failure`, `stats` and `status` — it used to exit 1 and leave no trace ("could not
/// save the state file: cannot open the lock file").
#[test]
fn a_first_run_failure_on_a_fresh_backup_directory_is_recorded() {
    let app = TestApp::new();
    remove_database(&app);
    let _ = fs::remove_dir_all(&app.backups);
    let r = app.run(["create", "--type", "database"]);
    r.assert_code(1);
    assert!(
        !r.stderr.contains("could not save the state file"),
        "{}",
        r.describe()
    );
    let log = app.backup_log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("does not exist")),
        "no ERROR line in backup.log:\n{log}"
    );
    let state = read_json(&app.backups.join("vertex-backup.state.json"));
    assert_eq!(
        state["runs"]["database"]["last_failure"]["step"], "check sources",
        "state: {state:#}"
    );
    let stats = app.stats();
    assert!(stats["last_failure"].is_object(), "stats: {stats:#}");
    let status = app.run(["status", "--json"]);
    assert!(
        status.stdout.contains("does not exist"),
        "status does not show the failure:\n{}",
        status.describe()
    );
}

/// Issue 13, item 8: a missing database is a failed backup (exit 1), not a config error,
/// and it is recorded like every other failure: an ERROR line in `backup.log`, the state's
/// `last_failure` (so `stats` shows it) and the `on_error` hook.
#[test]
fn missing_database_fails_with_exit_1_naming_the_path_and_is_recorded() {
    let app = TestApp::new();
    remove_database(&app);
    let marker = app.root.join("on_error.ran");
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[hooks]\non_error = \"echo \\\"$VERTEX_BACKUP_STEP\\\" >> '{}'\"\n",
            marker.display()
        ),
    ));
    for kind in ["database", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(app.db.to_str().unwrap()),
            "the error does not name {}\n{}",
            app.db.display(),
            r.describe()
        );
        assert!(
            r.stderr.contains("database") && r.stderr.contains("does not exist"),
            "the error does not say the database is missing\n{}",
            r.describe()
        );
        assert!(
            !r.stderr.contains("invalid configuration") && !r.stderr.contains("fix the file"),
            "a missing database is not a configuration mistake\n{}",
            r.describe()
        );
        let log = app.backup_log();
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains(&format!("create {kind}"))
                && l.contains("does not exist")),
            "no ERROR line for the {kind} backup in backup.log:\n{log}"
        );
        let state = read_json(&app.backups.join("vertex-backup.state.json"));
        let failure = &state["runs"][kind]["last_failure"];
        assert_eq!(failure["step"], "check sources", "state: {state:#}");
        assert!(
            failure["error"]
                .as_str()
                .unwrap_or("")
                .contains("does not exist"),
            "state: {state:#}"
        );
    }
    let ran = fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["check sources", "check sources"],
        "the on_error hook did not run once per failed backup"
    );
    let stats = app.stats();
    assert!(
        stats["last_failure"].is_object(),
        "stats shows no last failure: {stats:#}"
    );
    assert_nothing_written(&app);
    assert!(app.list().is_empty());
    assert!(!app.db.exists(), "the missing database was created");
}

#[test]
fn backup_dir_inside_storage_is_refused() {
    let app = TestApp::new();
    let text = app.config_text("", "").replace(
        "backup_dir = \"backups\"",
        "backup_dir = \"storage/backups\"",
    );
    app.write_config_raw(&text);
    let line = line_of(&text, "backup_dir");
    for kind in ["storage", "full", "database"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(2);
        assert!(r.stderr.contains("backup_dir"), "{}", r.describe());
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "{}",
            r.describe()
        );
    }
    assert!(!app.storage.join("backups").exists());
    assert_nothing_written(&app);
}

#[test]
fn unusable_backup_dir_fails_naming_the_path() {
    let app = TestApp::new();
    // A regular file where a directory is needed: even root cannot create under it.
    let afile = app.root.join("afile");
    fs::write(&afile, b"not a directory\n").unwrap();
    let text = app
        .config_text("", "")
        .replace("backup_dir = \"backups\"", "backup_dir = \"afile/backups\"");
    app.write_config_raw(&text);
    let target = afile.join("backups");
    for kind in ["database", "storage", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(target.to_str().unwrap()),
            "the error does not name {}\n{}",
            target.display(),
            r.describe()
        );
    }
    assert_eq!(fs::read(&afile).unwrap(), b"not a directory\n");
    assert_nothing_written(&app);
}

#[test]
fn a_database_that_is_not_sqlite_fails_and_writes_nothing() {
    let app = TestApp::new();
    for sfx in ["-wal", "-shm"] {
        let mut p = app.db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
    let junk = "this is not a database\n".repeat(200);
    fs::write(&app.db, &junk).unwrap();
    for kind in ["database", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(app.db.to_str().unwrap()),
            "the error does not name {}\n{}",
            app.db.display(),
            r.describe()
        );
    }
    assert_eq!(
        fs::read_to_string(&app.db).unwrap(),
        junk,
        "the source was modified"
    );
    assert_nothing_written(&app);
    assert!(app.list().is_empty());
}

#[test]
fn a_failing_before_hook_fails_the_backup_with_exit_1() {
    // Exit 2 is for usage and configuration errors; a hook that fails is an operation
    // that failed, like any other step.
    let app = TestApp::new();
    let text = app.config_text(
        "",
        "[hooks]\nbefore = \"echo the NAS is not mounted >&2; exit 7\"\ntimeout = \"30s\"\n",
    );
    app.write_config_raw(&text);
    let r = app.run(["create", "--type", "database"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("before hook") && r.stderr.contains("the NAS is not mounted"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("hint:"), "{}", r.describe());
    assert!(app.list().is_empty());
}

/// Issue 13, item 7: `busy_timeout = "30d"` passed `check-config`, then every backup
/// panicked inside SQLite ("too big"). Duration and size keys are range-checked at load.
#[test]
fn an_out_of_range_busy_timeout_is_refused_at_load_naming_key_and_line() {
    let app = TestApp::new();
    let text = app.config_text("busy_timeout = \"30d\"", "");
    app.write_config_raw(&text);
    let line = line_of(&text, "busy_timeout");
    for args in [&["check-config"][..], &["create", "--type", "database"][..]] {
        let r = app.run(args);
        r.assert_code(2);
        assert!(
            r.stderr.contains("busy_timeout")
                && r.stderr.contains(&format!("line {line}"))
                && r.stderr.contains("out of range"),
            "{}",
            r.describe()
        );
    }
    assert_nothing_written(&app);
}
