//! A target that cannot take the backups fails the push with a clear error naming it and
//! the operator hint for the case, and touches nothing local: a bucket that does not
//! exist, a path target whose directory is not there (unmounted), a path target that
//! fills up (a small tmpfs), credentials the server rejects.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::faults::Mount;
use crate::offsite::setup::{configure, path_table, s3_table};
use crate::util::{PrivateS3, Run, TestApp, files_under, require, root, s3_server, sha256_file};

/// Every file of the per-type backup directories with its checksum.
fn local_backups(app: &TestApp) -> BTreeMap<PathBuf, String> {
    app.backup_files()
        .into_iter()
        .map(|p| {
            let sha = sha256_file(&p);
            (p, sha)
        })
        .collect()
}

/// A local storage backup, then `offsite push`, which must fail (exit 1) naming the
/// target `remote` with a hint containing `hint`, leaving the local backups as they were.
#[track_caller]
fn push_fails_untouched(app: &TestApp, hint: &str) -> Run {
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    let before = local_backups(app);
    assert!(!before.is_empty());
    let run = app.run(["offsite", "push"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("offsite target `remote`"),
        "the error does not name the target: {}",
        run.describe()
    );
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains(hint),
        "no hint with {hint:?}: {}",
        run.describe()
    );
    assert_eq!(
        local_backups(app),
        before,
        "the failed push changed local backups"
    );
    assert!(app.partial_files().is_empty(), "{:?}", app.partial_files());
    run
}

#[test]
fn a_missing_bucket_fails_the_push_naming_the_target_and_saying_to_create_it() {
    let Some(s3) = s3_server() else { return };
    let app = TestApp::new();
    let bucket = format!("never-created-{}", std::process::id());
    configure(
        &app,
        &[s3_table(
            &app,
            "remote",
            s3.endpoint(),
            &bucket,
            "retries = 0",
        )],
    );
    push_fails_untouched(&app, "create the bucket");
}

#[test]
fn an_unmounted_path_target_fails_the_push_and_creates_nothing() {
    let app = TestApp::new();
    let mount_point = tempfile::tempdir().expect("tempdir");
    let missing = mount_point.path().join("nas").join("vertex");
    configure(&app, &[path_table("remote", &missing, "retries = 0")]);
    push_fails_untouched(&app, "mount the directory");
    assert!(
        files_under(mount_point.path()).is_empty() && !mount_point.path().join("nas").exists(),
        "the push created the missing target directory"
    );
}

#[test]
fn a_full_path_target_fails_the_push_with_the_full_hint_and_leaves_no_partial_file() {
    let app = TestApp::new();
    let target = tempfile::tempdir().expect("tempdir");
    let mounted = root("mount tmpfs").and_then(|()| Mount::tmpfs(target.path(), "2m"));
    let _mount = match mounted {
        Ok(m) => m,
        Err(why) => {
            require("root and mount(8), for a 2 MiB tmpfs", Err(why));
            return;
        }
    };
    app.write_random_files("big", 3, 1024 * 1024);
    configure(&app, &[path_table("remote", target.path(), "retries = 0")]);
    push_fails_untouched(&app, "is full");
    let partials: Vec<PathBuf> = files_under(target.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "left on the target: {partials:?}");
    let listed: Vec<PathBuf> = files_under(target.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        // The owner marker (written before anything else) is not a backup's.
        .filter(|p| !p.starts_with(target.path().join("vertex-backup")))
        .collect();
    assert!(listed.is_empty(), "a metadata object landed: {listed:?}");
}

#[test]
fn credentials_the_server_rejects_fail_the_push_with_the_credentials_hint() {
    // moto checks credentials only when told to (from the first request on).
    let Some(server) = PrivateS3::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else {
        return;
    };
    let app = TestApp::new();
    configure(
        &app,
        &[s3_table(
            &app,
            "remote",
            server.endpoint(),
            "any-bucket",
            "retries = 0",
        )],
    );
    push_fails_untouched(&app, "check the credentials of `remote`");
}
