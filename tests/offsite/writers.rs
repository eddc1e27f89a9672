//! Two servers on one prefix (issue 24): the old server back after a disaster recovery,
//! a cloned staging box. The prefix has an owner marker; another server's jobs are
//! refused there until it claims the prefix; while another writer's lock object is live,
//! nothing is deleted (its half-sent objects look like debris); a stale lock does not
//! block for ever.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::offsite::composed::{change, complete_remote};
use crate::offsite::setup::{PREFIX, bucket_objects, configure, path_table, s3_table};
use crate::util::{TestApp, s3_server};

/// A debris-shaped object (named like a backup's data, no metadata, no local copy).
const DEBRIS: &str = "storage/storage_backup_20200101_000000.tar.zst";

#[test]
fn a_second_server_on_one_prefix_is_refused_until_it_claims_it_and_deletes_nothing() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let a = TestApp::new();
    configure(&a, &[s3_table(&a, "remote", s3.endpoint(), &bucket, "")]);
    a.run(["create", "--type", "storage"]).assert_code(0);
    let before: BTreeSet<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();

    // B: the same config on another machine (its own backup directory).
    let b = TestApp::new();
    configure(&b, &[s3_table(&b, "remote", s3.endpoint(), &bucket, "")]);
    // (A database backup: its name cannot be A's storage backup's, whatever the second.)
    let run = b.run(["create", "--type", "database"]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let text = run.describe();
    assert!(text.contains("belongs to another server"), "{text}");
    assert!(text.contains("offsite claim --target remote"), "{text}");
    let after: BTreeSet<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(before, after, "the refused server changed the bucket");
    b.run(["offsite", "prune"]).assert_code(1);
    b.run(["offsite", "verify"]).assert_code(1);

    // B takes over (it replaced A): its pushes go through, A's are refused now.
    let claimed = b.run(["offsite", "claim", "--target", "remote"]);
    claimed.assert_code(0);
    assert!(
        claimed.stdout.contains("now owns the prefix"),
        "{}",
        claimed.describe()
    );
    b.run(["offsite", "push"]).assert_code(0);
    change(&a, 1);
    let old = a.run(["create", "--type", "storage"]);
    assert_eq!(old.code(), Some(1), "{}", old.describe());
    assert!(
        old.describe().contains("belongs to another server"),
        "{}",
        old.describe()
    );
    // Nothing A uploaded was deleted by B: both backups are there.
    assert_eq!(complete_remote(&b, "storage").len(), 1);
    assert_eq!(complete_remote(&b, "database").len(), 1);
}

#[test]
fn a_live_lock_of_another_writer_postpones_every_deletion() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = TestApp::new();
    configure(
        &app,
        &[s3_table(
            &app,
            "remote",
            s3.endpoint(),
            &bucket,
            "[offsite.retention]\nkeep_last = 1",
        )],
    );
    app.run(["create", "--type", "storage"]).assert_code(0);
    // Another writer, mid-push: its lock, and an object of its unfinished upload.
    let lock = format!(
        "{PREFIX}/vertex-backup/locks/{}-{}.json",
        "ab".repeat(16),
        "cd".repeat(16)
    );
    s3.put(&bucket, &lock, br#"{"server_id":"abab","host":"0123456789abcdef","hostname":"staging","pid":7,"operation":"push","created":"2026-12-06T10:00:00Z"}"#);
    s3.put(
        &bucket,
        &format!("{PREFIX}/{DEBRIS}"),
        b"half of someone's upload",
    );
    change(&app, 1);
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    let row = &json[0];
    assert!(
        row["push"]["postponed"]
            .as_str()
            .unwrap_or_default()
            .contains("staging"),
        "{json:#}"
    );
    assert!(
        row["prune"]["postponed"]
            .as_str()
            .unwrap_or_default()
            .contains("another writer"),
        "{json:#}"
    );
    assert_eq!(
        row["prune"]["deleted_objects"],
        serde_json::json!([]),
        "{json:#}"
    );
    let held: BTreeSet<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        held.contains(DEBRIS),
        "another writer's object was deleted: {held:?}"
    );
    assert_eq!(
        complete_remote(&app, "storage").len(),
        2,
        "prune deleted under a live lock"
    );

    // The writer finishes (its lock goes): the next push cleans up and prunes.
    s3.delete(&bucket, &lock);
    app.run(["offsite", "push"]).assert_code(0);
    let held: BTreeSet<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!held.contains(DEBRIS), "{held:?}");
    assert_eq!(complete_remote(&app, "storage").len(), 1);
}

#[test]
fn a_stale_lock_of_a_dead_job_is_removed_and_does_not_block() {
    let app = TestApp::new();
    let nas = app.root.join("nas");
    std::fs::create_dir_all(nas.join("vertex-backup/locks")).unwrap();
    configure(&app, &[path_table("nas", &nas, "")]);
    app.run(["create", "--type", "storage"]).assert_code(0);
    // A lock last written an hour ago: its job died (stale after 30 minutes).
    let lock = nas.join(format!(
        "vertex-backup/locks/{}-{}.json",
        "ef".repeat(16),
        "01".repeat(16)
    ));
    std::fs::write(&lock, br#"{"server_id":"efef","hostname":"gone","pid":1,"operation":"push","created":"2026-12-06T09:00:00Z"}"#).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let debris = nas.join(DEBRIS);
    std::fs::write(&debris, b"an upload that never finished").unwrap();

    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    assert!(json[0]["push"]["postponed"].is_null(), "{json:#}");
    assert!(!debris.exists(), "debris stayed behind a stale lock");
    assert!(!lock.exists(), "the stale lock was not removed");
    // This job's own lock is gone too, and the owner marker names this server.
    let locks: Vec<_> = std::fs::read_dir(nas.join("vertex-backup/locks"))
        .unwrap()
        .collect();
    assert!(locks.is_empty(), "{locks:?}");
    let owner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nas.join("vertex-backup/owner.json")).unwrap())
            .unwrap();
    assert!(
        owner["server_id"].as_str().is_some_and(|s| s.len() == 32),
        "{owner:#}"
    );
    // A target that gets plaintext may show the hostname; the tag is what identifies.
    assert!(
        owner["host"].as_str().is_some_and(|s| s.len() == 16),
        "{owner:#}"
    );
    assert!(owner["hostname"].is_string(), "{owner:#}");
}

#[test]
fn create_waits_for_another_offsite_job_on_its_target_instead_of_failing() {
    let app = TestApp::new();
    let target = tempfile::tempdir().unwrap();
    configure(&app, &[path_table("nas", target.path(), "")]);
    app.run(["create", "--type", "database"]).assert_code(0);

    // Another offsite job (an `offsite prune` from the shell) holds the target's lock.
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(app.backups.join(".offsite-nas.lock"))
        .unwrap();
    held.lock().unwrap();
    let mut create = app.spawn(["create", "--type", "database"]);
    crate::util::poll_until(
        Duration::from_secs(60),
        "create to wait for the target or exit",
        || create.stderr_so_far().contains("waiting up to") || !create.is_running(),
    );
    assert!(
        create.is_running(),
        "create did not wait for the other offsite job:\n{}",
        create.stderr_so_far()
    );
    drop(held);
    let r = create.wait(Duration::from_secs(60));
    r.assert_code(0);
    assert!(r.stdout.contains("nas: 1 uploaded"), "{}", r.describe());
}
