//! The plan (`--dry-run`), the confirmation rule (`--yes`, no terminal), `--no-verify`,
//! and the backup-directory lock.

use super::*;

// ---------------------------------------------------------------------------------------
// 6. --dry-run, confirmation, --no-verify

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let everything = snapshot_tree(app.path());
    let backup = data_path(&meta);

    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--dry-run".as_ref()]);
    r.assert_code(0);
    for want in [
        "restore plan",
        "verify",
        "pre-restore",
        &app.db.display().to_string(),
        "storage.pre-restore-",
    ] {
        assert!(
            r.stdout.contains(want),
            "the plan lacks {want:?}\n{}",
            r.describe()
        );
    }
    assert_tree_matches(&everything, app.path());

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--dry-run".as_ref(),
        "--json".as_ref(),
    ]);
    r.assert_code(0);
    let plan = r.json();
    assert_eq!(plan["type"], "full", "{plan:#}");
    assert_eq!(plan["in_place"], true, "{plan:#}");
    assert_eq!(plan["verify"], true, "{plan:#}");
    assert_eq!(plan["database"]["safety_copy"], true, "{plan:#}");
    assert!(
        jstr(&plan["storage"], "previous_tree").contains("storage.pre-restore-"),
        "{plan:#}"
    );
    assert_tree_matches(&everything, app.path());
}

#[test]
fn in_place_restore_without_yes_and_without_a_terminal_is_refused() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let everything = snapshot_tree(app.path());

    // The runner gives the child /dev/null as stdin: not a terminal.
    let r = app.run(["restore".as_ref(), data_path(&meta).as_os_str()]);
    r.assert_code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.describe());
    assert_tree_matches(&everything, app.path());
}

#[test]
fn no_verify_warns_loudly_and_still_restores() {
    let app = TestApp::new();
    let db_at_backup = live_dump(&app);
    let meta = app.create("database");
    change_db(&app);
    let backup = data_path(&meta);

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--no-verify".as_ref(),
        "--dry-run".as_ref(),
    ]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("--no-verify"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("NO VERIFICATION"), "{}", r.describe());

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--no-verify".as_ref(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("--no-verify"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("NOT verified"), "{}", r.describe());
    assert_eq!(live_dump(&app), db_at_backup);

    // With verification, the same restore says so and no warning is printed.
    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()]);
    r.assert_code(0);
    assert!(!r.stderr.contains("WARNING"), "{}", r.describe());
    assert!(r.stdout.contains("(verified)"), "{}", r.describe());
}

// ---------------------------------------------------------------------------------------
// 7. The lock

#[test]
fn restore_while_the_lock_is_held_fails_naming_the_holder() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let before = live(&app);
    let backups_before = app.list().len();

    let lock_path = app.backups.join(".vertex-backup.lock");
    let holder = "pid 4242 running `create full` since 2026-11-27 03:00:00";
    let held = hold_flock(&lock_path, holder);
    let r = app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("pid 4242") && r.stderr.contains("create full"),
        "the error does not name the holder\n{}",
        r.describe()
    );
    assert_live_unchanged(&app, &before, "with the lock held");
    assert_eq!(app.list().len(), backups_before);
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), holder);

    // It was the lock: released, the same restore goes through.
    drop(held);
    app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--yes".as_ref(),
    ])
    .assert_code(0);
}
