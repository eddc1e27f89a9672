//! What `check-config` and `list` tell the operator (issue 13, items 20 and 21): every
//! problem the daemon would refuse, in one run; notes that are true about each backup and
//! each file that is not one; paths and cron fields named.

use super::*;

#[test]
fn check_config_reports_every_problem_the_daemon_would_refuse_in_one_run() {
    let app = TestApp::new();
    fs::write(app.path().join("token"), "short\n").unwrap();
    fs::set_permissions(app.path().join("token"), fs::Permissions::from_mode(0o644)).unwrap();
    // Static problems: all of them in one error.
    let text = app.config_text(
        "compression_level = 99",
        "[retention]\nkeep_last = 0\n[schedule]\nfull = \"0 0 31 2 *\"\n",
    );
    app.write_config_raw(&text);
    let r = app.run(["check-config"]);
    r.assert_code(2);
    for needle in ["compression_level", "keep_last", "never fires"] {
        assert!(
            r.stderr.contains(needle),
            "{needle} missing\n{}",
            r.describe()
        );
    }
    // Live problems and warnings: a short token in a world-readable file, a reserve
    // bigger than the filesystem, a listen address beyond this machine.
    let text = app
        .config_text(
            "",
            "[api]\nlisten = \"0.0.0.0:8787\"\ntoken_file = \"token\"\n",
        )
        .replace("min_free_space = \"1 MiB\"", "min_free_space = \"900 TiB\"");
    app.write_config_raw(&text);
    let r = app.run(["check-config"]);
    r.assert_code(2);
    for needle in [
        "shorter than 16",
        "api.token_file",
        "min_free_space",
        "chmod 600",
        "0.0.0.0:8787 is reachable from other machines",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle} missing\n{}",
            r.describe()
        );
    }
    // A directory as the token file, and one that does not exist.
    for (file, why) in [("tokendir", "Is a directory"), ("missing", "No such file")] {
        fs::create_dir_all(app.path().join("tokendir")).unwrap();
        app.write_config_raw(&app.config_text("", &format!("[api]\ntoken_file = \"{file}\"\n")));
        let r = app.run(["check-config"]);
        r.assert_code(2);
        assert!(r.stderr.contains(why), "{}", r.describe());
    }
}

#[test]
fn cron_errors_name_the_field_and_tilde_paths_are_expanded_or_refused() {
    let app = TestApp::new();
    app.write_config_raw(&app.config_text("", "[schedule]\nfull = \"0 2 32 * *\"\n"));
    let r = app.run(["check-config"]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("the day of month field `32`"),
        "{}",
        r.describe()
    );

    let text = app.config_text("", "").replace(
        "backup_dir = \"backups\"",
        "backup_dir = \"~nobody/backups\"",
    );
    app.write_config_raw(&text);
    let r = app.run(["check-config"]);
    r.assert_code(2);
    assert!(r.stderr.contains("`~nobody/backups`"), "{}", r.describe());

    let text = app
        .config_text("", "")
        .replace("backup_dir = \"backups\"", "backup_dir = \"~/backups\"");
    app.write_config_raw(&text);
    let r = app
        .command(["check-config"])
        .env("HOME", app.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    let expected = format!("backup_dir: {}", app.path().join("backups").display());
    assert!(
        stdout.contains(&expected),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn list_says_what_each_file_is_and_marks_failed_verification() {
    let app = TestApp::new();
    let good = app.create("database");
    let dir = app.kind_dir("database");
    // A stray data file without metadata and a directory named like a backup: never
    // removed by anything, so list must not promise it.
    fs::write(dir.join("db_backup_19990101_000000.db"), b"stray").unwrap();
    fs::create_dir(dir.join("db_backup_19990102_000000.db")).unwrap();
    // An interrupted run's debris, with nobody holding the lock.
    fs::write(dir.join("db_backup_19990103_000000.db.partial"), b"x").unwrap();
    // A failed verification: corrupt the backup's data, same size.
    let data = PathBuf::from(jstr(&good, "backup_path"));
    let mut bytes = fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    fs::write(&data, &bytes).unwrap();
    app.run(["verify", "--all"]).assert_code(1);

    let out = app.run(["list"]).assert_code(0).stdout.clone();
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not listed\n{out}"))
            .to_string()
    };
    assert!(
        !out.contains("removed by the next backup or rotate):"),
        "{out}"
    );
    assert!(
        line("db_backup_19990101_000000.db").contains("left alone"),
        "{out}"
    );
    assert!(
        line("db_backup_19990102_000000.db").contains("a directory named like a backup"),
        "{out}"
    );
    assert!(line(".partial").contains("interrupted run"), "{out}");
    let name = data.file_name().unwrap().to_string_lossy().into_owned();
    assert!(line(&name).contains("FAILED VERIFICATION"), "{out}");
}

#[test]
fn list_of_a_backup_dir_that_does_not_exist_is_an_error() {
    let app = TestApp::new();
    let r = app.run(["--backup-dir", "no-such-dir", "list"]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("no-such-dir") && r.stderr.contains("does not exist"),
        "{}",
        r.describe()
    );
}
