//! What protects history while it travels: a backup being uploaded is not deleted by a
//! local rotation running meanwhile (upload pins), and a target with `object_lock` writes
//! every object under S3 Object Lock (COMPLIANCE) and its retention holds locked copies.

use std::time::Duration;

use serde_json::Value;

use crate::util::{TestApp, poll_until, s3_server};

fn decisions<'a>(rotation: &'a Value, list: &str) -> Vec<&'a Value> {
    rotation["plan"][list]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[test]
fn a_backup_being_uploaded_survives_a_rotation_until_its_upload_ends() {
    let app = TestApp::new();
    app.write_random_files("videos", 4, 1 << 20);
    let nas = app.path().join("nas");
    std::fs::create_dir(&nas).unwrap();
    app.write_config_raw(&app.config_text(
        "",
        // The target keeps both (a push sends no backup its own retention would drop).
        "[retention]\nkeep_last = 1\n\n[[offsite]]\nname = \"nas\"\nurl = \"nas\"\nupload = [\"storage\"]\nbandwidth_limit = \"1 MiB/s\"\n[offsite.retention]\nkeep_last = 2\n",
    ));
    let first = app.run(["create", "--type", "storage", "--json", "--no-offsite"]);
    first.assert_code(0);
    let first_name = first.json()["timestamp"].as_str().unwrap().to_string();
    app.write_storage_file("client_1/new.jpg", b"changed");
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    // The push sends the oldest first, at 1 MiB/s: seconds in which it is pinned.
    let mut push = app.spawn(["offsite", "push"]);
    poll_until(
        Duration::from_secs(30),
        "the upload pins its backups",
        || {
            std::fs::read_dir(app.path().join("backups"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".uploading-"))
        },
    );
    let rotation = app.run(["rotate", "--json"]);
    rotation.assert_code(0);
    let rotation = rotation.json();
    let held: Vec<&Value> = decisions(&rotation, "keep")
        .into_iter()
        .filter(|d| d["reasons"][0] == "uploading")
        .collect();
    assert_eq!(held.len(), 1, "{rotation}");
    assert!(
        held[0]["id"].as_str().unwrap().ends_with(&first_name),
        "{rotation}"
    );
    assert!(decisions(&rotation, "delete").is_empty(), "{rotation}");
    assert!(
        push.is_running(),
        "the push ended before the rotation could test the pin"
    );
    push.wait(Duration::from_secs(60)).assert_code(0);
    // Uploaded: the next rotation applies keep_last = 1 again.
    let rotation = app.run(["rotate", "--json"]).json();
    assert_eq!(decisions(&rotation, "delete").len(), 1, "{rotation}");
    assert_eq!(app.list_of("storage").len(), 1);
}

#[test]
fn object_lock_writes_locked_objects_and_retention_holds_them() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_locked_bucket();
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[[offsite]]\nname = \"vault\"\nurl = \"s3://{bucket}/vertex\"\nendpoint = \"{}\"\npath_style = true\nobject_lock = \"2d\"\nretries = 0\nupload = [\"database\"]\n[offsite.retention]\nkeep_last = 1\n",
            s3.endpoint()
        ),
    ));
    let run = |args: &[&str]| {
        let mut cmd = app.command(args);
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        crate::util::run(cmd)
    };
    run(&["create", "--type", "database"]).assert_code(0);
    run(&["create", "--type", "database"]).assert_code(0);
    let objects = backup_objects(&s3, &bucket);
    assert_eq!(objects.len(), 4, "{objects:?}");
    for (key, _) in &objects {
        let head = s3.head(&bucket, key).expect("uploaded object");
        assert_eq!(
            head.get("x-amz-object-lock-mode").map(String::as_str),
            Some("COMPLIANCE"),
            "{key}: {head:?}"
        );
        assert!(
            head.contains_key("x-amz-object-lock-retain-until-date"),
            "{key}: {head:?}"
        );
    }
    // keep_last = 1 would delete the older copy, but it is locked for two days.
    let prune = run(&["offsite", "prune", "--json"]);
    prune.assert_code(0);
    let plans = prune.json();
    let plan = &plans[0]["plan"];
    assert!(plan["delete"].as_array().unwrap().is_empty(), "{plans}");
    assert!(
        plan["keep"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reasons"][0] == "locked"),
        "{plans}"
    );
    assert_eq!(backup_objects(&s3, &bucket).len(), 4);
}

/// The bucket's objects under `vertex/` but the owner marker and lock objects.
fn backup_objects(s3: &crate::util::S3Server, bucket: &str) -> Vec<(String, u64)> {
    s3.list(bucket, "vertex/")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("vertex/vertex-backup/"))
        .collect()
}
