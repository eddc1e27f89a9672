//! `--wait DURATION`: a second mutating command waits for the directory lock, says once
//! who holds it, and runs when it is released; without the flag it fails at once.

use super::*;

#[test]
fn create_with_wait_runs_once_the_holder_releases_the_lock() {
    let app = TestApp::new();
    let (started, go) = blocking_first_hook(&app);
    let holder = app.spawn(["create", "--type", "database"]);
    poll_until(
        WAIT_LIMIT,
        "the first backup's before hook to start",
        || started.exists(),
    );

    // Without --wait: refused at once, naming the holder.
    let refused = app.run(["create", "--type", "database"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("create database") && refused.stderr.contains("pid "),
        "{}",
        refused.describe()
    );
    // Its hint names the way to wait instead of failing.
    assert!(refused.stderr.contains("--wait"), "{}", refused.describe());

    let waiter = app.spawn(["create", "--type", "database", "--wait", "30s"]);
    poll_until(
        WAIT_LIMIT,
        "the waiting create to say who holds the lock",
        || {
            let err = waiter.stderr_so_far();
            err.contains("waiting up to 30s") && err.contains("create database")
        },
    );
    assert_eq!(
        app.list().len(),
        0,
        "the waiter ran while the lock was held"
    );
    fs::write(&go, b"").unwrap();
    holder.wait(WAIT_LIMIT).assert_code(0);
    let waited = waiter.wait(WAIT_LIMIT);
    waited.assert_code(0);
    assert_eq!(
        waited.stderr.matches("waiting up to").count(),
        1,
        "the holder is announced once\n{}",
        waited.describe()
    );
    assert_eq!(app.list_of("database").len(), 2);
}

#[test]
fn wait_gives_up_at_the_deadline_with_the_locked_error() {
    let app = TestApp::new();
    let lock_path = app.backups.join(".vertex-backup.lock");
    let holder = "pid 4242 running `restore x` since 2026-11-30 14:00:00";
    let _held = hold_flock(&lock_path, holder);
    for args in [
        vec!["rotate", "--wait", "300ms"],
        vec!["create", "--type", "database", "--wait", "300ms"],
    ] {
        let r = app.run(&args);
        r.assert_code(1);
        assert!(r.stderr.contains("pid 4242"), "{}", r.describe());
        assert!(r.stderr.contains("waiting up to 300ms"), "{}", r.describe());
    }
    assert!(app.list().is_empty());
}
