//! A remote object replaced on the server by different bytes of the same size is found by
//! `offsite verify`: repaired from the local copy while there is one (the object is back
//! with the right bytes and checksum), reported BAD (exit 1) once there is none.

use std::fs;

use serde_json::Value;

use crate::offsite::setup::{PREFIX, configure, data_objects, remote_backups, s3_table};
use crate::util::{S3Server, TestApp, s3_server, sha256_file};

/// Replace the object at `key` (relative to the target) by other bytes of its size;
/// `forge_sha`: keep its recorded checksum header, so only a read-back can tell.
pub fn corrupt(s3: &S3Server, bucket: &str, key: &str, sha: &str, forge_sha: bool) {
    let full = format!("{PREFIX}/{key}");
    let mut bytes = s3.get(bucket, &full).expect("the object to corrupt");
    for b in bytes.iter_mut().skip(1000).take(64) {
        *b ^= 0x5a;
    }
    let meta: &[(&str, &str)] = if forge_sha { &[("sha256", sha)] } else { &[] };
    s3.put_with_meta(bucket, &full, &bytes, meta);
}

/// An installation with a storage backup uploaded to `remote` on `bucket`; its data
/// object's key and checksum.
fn uploaded(s3: &S3Server, bucket: &str) -> (TestApp, Value, String, String) {
    let app = TestApp::new();
    configure(&app, &[s3_table(&app, "remote", s3.endpoint(), bucket, "")]);
    app.run(["create", "--type", "storage"]).assert_code(0);
    let backup = remote_backups(&app, "remote").remove(0);
    let (key, sha, _) = data_objects(&backup).remove(0);
    (app, backup, key, sha)
}

fn assert_repaired(s3: &S3Server, bucket: &str, app: &TestApp, key: &str, sha: &str) {
    let run = app.run(["offsite", "verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("REPAIRED"), "{}", run.describe());
    assert!(
        run.stdout.contains(key),
        "the report does not name {key}: {}",
        run.describe()
    );
    let full = format!("{PREFIX}/{key}");
    let head = s3.head(bucket, &full).expect("the repaired object");
    assert_eq!(head.get("x-amz-meta-sha256").map(String::as_str), Some(sha));
    let bytes = s3.get(bucket, &full).expect("the repaired object");
    assert_eq!(
        bytes,
        fs::read(app.backups.join(key)).expect("the local copy")
    );
    assert_eq!(sha256_file(&app.backups.join(key)), sha);
}

#[test]
fn a_corrupted_remote_object_is_found_by_verify_and_repaired_from_the_local_copy() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let (app, _, key, sha) = uploaded(&s3, &bucket);

    // Its checksum header lost with the replacement: a HEAD tells.
    corrupt(&s3, &bucket, &key, &sha, false);
    assert_repaired(&s3, &bucket, &app, &key, &sha);

    // Its checksum header forged: only reading the bytes back tells.
    corrupt(&s3, &bucket, &key, &sha, true);
    assert_repaired(&s3, &bucket, &app, &key, &sha);
}

#[test]
fn a_corrupted_remote_object_without_a_local_copy_is_reported_bad() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let (app, backup, key, sha) = uploaded(&s3, &bucket);
    corrupt(&s3, &bucket, &key, &sha, true);
    // The local backup is gone (rotated away, or the disk the server lost).
    for object in backup["objects"].as_array().expect("objects") {
        let path = app.backups.join(object["key"].as_str().expect("key"));
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
    let run = app.run(["offsite", "verify"]);
    run.assert_code(1);
    let report = format!("{}{}", run.stdout, run.stderr);
    assert!(report.contains("BAD"), "{}", run.describe());
    assert!(
        report.contains(&key),
        "the report does not name {key}: {}",
        run.describe()
    );
    assert!(!report.contains("REPAIRED"), "{}", run.describe());
}
