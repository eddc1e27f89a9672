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

#[test]
fn missing_database_is_a_usage_error_naming_the_path() {
    let app = TestApp::new();
    for sfx in ["", "-wal", "-shm"] {
        let mut p = app.db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
    for kind in ["database", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(2);
        assert!(
            r.stderr.contains(app.db.to_str().unwrap()),
            "the error does not name {}\n{}",
            app.db.display(),
            r.describe()
        );
    }
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
