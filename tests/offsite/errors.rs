//! A target that cannot take the backups fails the push with a clear error naming it and
//! the operator hint for the case, and touches nothing local: a bucket that does not
//! exist, a path target whose directory is not there (unmounted), a path target that
//! fills up (a small tmpfs), credentials the server rejects.

use std::path::PathBuf;

use crate::faults::Mount;
use crate::offsite::setup::{configure, path_table, push_fails_untouched, s3_table};
use crate::util::{PrivateS3, TestApp, files_under, require, root, s3_server};

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
    push_fails_untouched(&app, &["hint:", "create the bucket"]);
}

#[test]
fn an_unmounted_path_target_fails_the_push_and_creates_nothing() {
    let app = TestApp::new();
    let mount_point = tempfile::tempdir().expect("tempdir");
    let missing = mount_point.path().join("nas").join("vertex");
    configure(&app, &[path_table("remote", &missing, "retries = 0")]);
    push_fails_untouched(&app, &["hint:", "mount the directory"]);
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
    push_fails_untouched(&app, &["hint:", "is full"]);
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
    push_fails_untouched(&app, &["hint:", "check the credentials of `remote`"]);
}
