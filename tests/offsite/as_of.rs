//! History a rooted server cannot erase, read back (issue 24): on a versioned Object Lock
//! bucket, an attacker with the server's own credentials hides every backup — new garbage
//! versions of the metadata objects, delete markers on the data — and `--as-of TIME`
//! reads the target as it was before: `offsite list` and `offsite verify` see the backups
//! whole, and a fresh server restores the newest full byte-identical.

use std::time::Duration;

use chrono::Utc;

use crate::offsite::composed::{SNAPSHOTS, change};
use crate::offsite::object_lock::api;
use crate::offsite::setup::{PREFIX, configure, remote_backups, s3_table};
use crate::util::{TestApp, assert_same_tree, dump_db_file, poll_until, s3_server};

#[test]
fn as_of_reads_through_delete_markers_and_overwritten_metadata_on_a_locked_bucket() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_locked_bucket();
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 3, 150 << 10);
    let table = s3_table(
        &app,
        "remote",
        s3.endpoint(),
        &bucket,
        "object_lock = \"1d\"",
    );
    app.write_config_raw(&app.config_text(SNAPSHOTS, &table));
    for round in 0..2 {
        change(&app, round);
        app.run(["create", "--type", "full"]).assert_code(0);
    }
    let before = remote_backups(&app, "remote");
    assert_eq!(before.len(), 2, "{before:#?}");

    // S3 times are whole seconds: the moment read back lies strictly after every upload
    // and strictly before every change the attacker makes.
    let client = api(&app);
    let newest_write = client
        .list_object_versions("")
        .expect("versions")
        .iter()
        .map(|v| v.last_modified)
        .max()
        .expect("objects on the target");
    poll_until(
        Duration::from_secs(10),
        "the clock to pass the uploads",
        || Utc::now().timestamp() > newest_write.timestamp(),
    );
    let at = Utc::now();
    poll_until(
        Duration::from_secs(10),
        "the clock to pass the moment",
        || Utc::now().timestamp() > at.timestamp(),
    );
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // The attack: every metadata object overwritten, every other object hidden.
    for listed in client.list_objects("").expect("list") {
        let key = format!("{PREFIX}/{}", listed.key);
        if listed.key.ends_with(".json") {
            s3.put(&bucket, &key, b"{\"garbage\": true}");
        } else {
            s3.delete(&bucket, &key);
        }
    }
    let now = remote_backups(&app, "remote");
    assert!(
        now.iter().all(|b| !b["problem"].is_null()),
        "the attack hid nothing: {now:#?}"
    );

    // As of before the attack: both fulls whole, verified by reading them back.
    let json = app
        .run(["offsite", "list", "--as-of", &at_text, "--json"])
        .assert_code(0)
        .json();
    let then = json[0]["backups"].as_array().expect("backups");
    assert_eq!(then.len(), 2, "{json:#}");
    assert!(then.iter().all(|b| b["problem"].is_null()), "{json:#}");
    app.run(["offsite", "verify", "--as-of", &at_text])
        .assert_code(0);

    // A fresh server restores the newest full from that moment.
    let fresh = TestApp::new();
    fresh.write_config_raw(&fresh.config_text(
        SNAPSHOTS,
        &s3_table(&fresh, "remote", s3.endpoint(), &bucket, ""),
    ));
    fresh
        .run([
            "restore", "--from", "remote", "--as-of", &at_text, "--latest", "full", "--yes",
        ])
        .assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
    assert_eq!(dump_db_file(&app.db), dump_db_file(&fresh.db));
    // The view was read-only: the attacker's versions are still the current ones.
    let after = remote_backups(&app, "remote");
    assert!(after.iter().all(|b| !b["problem"].is_null()), "{after:#?}");
}

#[test]
fn as_of_on_a_path_target_is_refused_with_why() {
    let app = TestApp::new();
    let nas = app.root.join("nas");
    std::fs::create_dir(&nas).unwrap();
    configure(&app, &[crate::offsite::setup::path_table("nas", &nas, "")]);
    let run = app.run(["offsite", "list", "--as-of", "2026-12-01 10:00"]);
    assert_ne!(run.code(), Some(0), "{}", run.describe());
    assert!(
        run.describe().contains("only an S3 target keeps"),
        "{}",
        run.describe()
    );
}
