//! Capabilities that each work alone, tried together as an operator configures them
//! (issue 24): snapshots with encryption to a target, catch-up pushes of several
//! snapshots, a damaged metadata object on a target whose backup exists nowhere else.
//! Each test here failed on the code before its fix.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::offsite::encrypted::encryption_section;
use crate::offsite::setup::{
    PREFIX, bucket_objects, remote_backups, restore_latest_from_remote, s3_table,
};
use crate::util::{S3Server, TestApp, assert_same_tree, dump_db_file, random_bytes, s3_server};

pub(super) const SNAPSHOTS: &str = "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"";

/// An app with a few hundred KiB of media, configured with `backup_lines` in `[backup]`,
/// `extra` sections and one S3 target named `remote` (its table's `table_extra` lines).
fn app_on(
    s3: &S3Server,
    bucket: &str,
    backup_lines: &str,
    table_extra: &str,
    extra: &str,
) -> TestApp {
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 4, 200 << 10);
    let table = s3_table(&app, "remote", s3.endpoint(), bucket, table_extra);
    app.write_config_raw(&app.config_text(backup_lines, &format!("{extra}\n{table}")));
    app
}

/// A change to the storage tree and to the database, different for each `round`.
pub(super) fn change(app: &TestApp, round: u64) {
    app.write_storage_file(
        &format!("client_{}/videos/new_{round}.mp4", 3 + round),
        &random_bytes(1000 + round, 150 << 10),
    );
    app.open_db()
        .execute(
            "INSERT INTO clients (phone, name, created_at) VALUES (?1, 'round', '2026-12-01T10:00:00')",
            [format!("+7000{round:07}")],
        )
        .expect("insert a client");
}

/// `rounds` backups of `kind` (each uploaded by `create`), a [`change`] before each.
pub(super) fn backups_with_changes(app: &TestApp, kind: &str, rounds: u64) {
    for round in 0..rounds {
        change(app, round);
        app.run(["create", "--type", kind]).assert_code(0);
    }
}

/// `offsite push --json` for the target `remote`: the bytes it sent.
#[track_caller]
pub(super) fn push_bytes(app: &TestApp) -> u64 {
    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    let rows = json.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{json:#}");
    rows[0]["push"]["uploaded"]
        .as_array()
        .expect("uploaded")
        .iter()
        .map(|u| u["bytes"].as_u64().expect("bytes"))
        .sum()
}

/// The remote backups of `kind` as `offsite list` shows them, each without a problem.
#[track_caller]
pub(super) fn complete_remote(app: &TestApp, kind: &str) -> Vec<Value> {
    let all = remote_backups(app, "remote");
    for b in &all {
        assert!(
            b["problem"].is_null(),
            "a remote backup has a problem: {b:#}"
        );
    }
    all.into_iter().filter(|b| b["type"] == kind).collect()
}

#[test]
fn encrypted_snapshot_fulls_offsite_stay_complete_send_nothing_twice_and_the_newest_restores() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(&s3, &bucket, SNAPSHOTS, "", &encryption_section());
    backups_with_changes(&app, "full", 3);
    // Every full is whole on the target (the packs their members record were once
    // re-sealed and overwritten by later pushes), and nothing is left to send.
    assert_eq!(complete_remote(&app, "full").len(), 3);
    assert_clear_metadata_says_no_counts(&s3, &bucket);
    assert_eq!(push_bytes(&app), 0, "a second push sent bytes again");
    assert_eq!(complete_remote(&app, "full").len(), 3);

    // A fresh server with the config and a key restores the newest full.
    let fresh = TestApp::new();
    let table = s3_table(&fresh, "remote", s3.endpoint(), &bucket, "");
    fresh.write_config_raw(
        &fresh.config_text(SNAPSHOTS, &format!("{}\n{table}", encryption_section())),
    );
    restore_latest_from_remote(&fresh, "full", true).assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
    assert_eq!(dump_db_file(&app.db), dump_db_file(&fresh.db));
}

#[test]
fn a_catch_up_push_sends_each_shared_pack_once() {
    let Some(s3) = s3_server() else { return };
    for (extra, what) in [("", "plain"), (encryption_section().as_str(), "encrypted")] {
        let bucket = s3.new_bucket();
        let app = app_on(&s3, &bucket, SNAPSHOTS, "", extra);
        // Three snapshots kept locally while the target is unreachable, sharing packs.
        for round in 0..3 {
            change(&app, round);
            app.run(["create", "--type", "storage", "--no-offsite"])
                .assert_code(0);
        }
        let sent = push_bytes(&app);
        let held: u64 = bucket_objects(&s3, &bucket).iter().map(|(_, s)| s).sum();
        assert_eq!(
            sent, held,
            "{what}: the catch-up push sent {sent} bytes for {held} bytes of objects"
        );
        assert_eq!(complete_remote(&app, "storage").len(), 3, "{what}");
    }
}

#[test]
fn a_damaged_metadata_object_does_not_get_its_backups_data_deleted() {
    let Some(s3) = s3_server() else { return };
    for (lines, what) in [("", "archive"), (SNAPSHOTS, "snapshot")] {
        let bucket = s3.new_bucket();
        let retention = "[retention]\nkeep_last = 1\n";
        let app = app_on(&s3, &bucket, lines, "", retention);
        app.run(["create", "--type", "storage"]).assert_code(0);
        let first = complete_remote(&app, "storage");
        assert_eq!(first.len(), 1, "{what}");
        let stem = first[0]["stem"].as_str().expect("stem").to_string();
        let owned: BTreeSet<String> = first[0]["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| o["key"].as_str().expect("key").to_string())
            .collect();
        // Local rotation removes the first backup: the bucket holds its only copy. Then
        // its metadata object is damaged (a flipped byte: no longer JSON).
        change(&app, 1);
        app.run(["create", "--type", "storage", "--no-offsite"])
            .assert_code(0);
        app.run(["rotate"]).assert_code(0);
        assert_eq!(app.list_of("storage").len(), 1, "{what}");
        let meta_key = format!("{PREFIX}/storage/{stem}.json");
        let mut body = s3.get(&bucket, &meta_key).expect("the metadata object");
        body[0] ^= 0x55;
        s3.put(&bucket, &meta_key, &body);

        app.run(["offsite", "push"]).assert_code(0);
        let held: BTreeSet<String> = bucket_objects(&s3, &bucket)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for key in &owned {
            assert!(
                held.contains(key),
                "{what}: {key} of the unreadable {stem} was deleted"
            );
        }
        // The listing says what is wrong with it instead of hiding it.
        let listed = remote_backups(&app, "remote");
        let damaged = listed
            .iter()
            .find(|b| b["stem"] == stem.as_str())
            .unwrap_or_else(|| panic!("{what}: {stem} is not listed: {listed:#?}"));
        assert!(damaged["problem"].is_string(), "{damaged:#}");
    }
}

#[test]
fn a_remote_policy_shorter_than_the_local_one_does_not_churn() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(
        &s3,
        &bucket,
        "",
        "[offsite.retention]\nkeep_last = 2",
        "[retention]\nkeep_last = 4\n",
    );
    backups_with_changes(&app, "storage", 4);
    assert_eq!(complete_remote(&app, "storage").len(), 2);
    // Four local, two remote: the two older local ones are beyond the target's policy,
    // so a push sends nothing and the prune after it deletes nothing.
    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    let row = &json[0];
    assert_eq!(row["push"]["uploaded"], serde_json::json!([]), "{json:#}");
    assert_eq!(
        row["push"]["beyond_retention"].as_array().map(Vec::len),
        Some(2),
        "{json:#}"
    );
    let deleted = row["prune"]["deleted_objects"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        deleted, 0,
        "the prune deleted what the push had sent: {json:#}"
    );
    // The next backup goes up and the oldest remote one goes: one each, no more.
    change(&app, 9);
    let before = bucket_objects(&s3, &bucket).len();
    app.run(["create", "--type", "storage"]).assert_code(0);
    assert_eq!(bucket_objects(&s3, &bucket).len(), before);
    assert_eq!(complete_remote(&app, "storage").len(), 2);
}

#[test]
fn verify_repairs_a_damaged_shared_pack_without_breaking_the_backups_that_share_it() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(&s3, &bucket, SNAPSHOTS, "", &encryption_section());
    backups_with_changes(&app, "storage", 2);
    // A pack both snapshots list, damaged on the target (same size, other bytes).
    let listed = complete_remote(&app, "storage");
    let packs = |b: &Value| -> BTreeSet<String> {
        b["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| o["key"].as_str().expect("key").to_string())
            .filter(|k| k.starts_with("store/packs/"))
            .collect()
    };
    let shared = packs(&listed[0])
        .intersection(&packs(&listed[1]))
        .next()
        .cloned()
        .expect("a pack both snapshots list");
    let key = format!("{PREFIX}/{shared}");
    let mut bytes = s3.get(&bucket, &key).expect("the pack");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    s3.put(&bucket, &key, &bytes);

    let json = app
        .run(["offsite", "verify", "--json"])
        .assert_code(0)
        .json();
    let problems = json[0]["report"]["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{json:#}");
    assert!(problems.iter().all(|p| p["repaired"] == true), "{json:#}");
    // Both whole again, and a second verify finds nothing.
    assert_eq!(complete_remote(&app, "storage").len(), 2);
    let again = app
        .run(["offsite", "verify", "--json"])
        .assert_code(0)
        .json();
    assert_eq!(
        again[0]["report"]["problems"],
        serde_json::json!([]),
        "{again:#}"
    );
}

#[test]
fn verify_fails_when_the_target_lost_what_it_held_even_an_emptied_bucket() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(
        &s3,
        &bucket,
        "",
        "[offsite.retention]\nkeep_last = 3",
        "[retention]\nkeep_last = 1\n",
    );
    backups_with_changes(&app, "storage", 2);
    let held = complete_remote(&app, "storage");
    assert_eq!(held.len(), 2);
    app.run(["rotate"]).assert_code(0);
    assert_eq!(app.list_of("storage").len(), 1);
    for (key, _) in bucket_objects(&s3, &bucket) {
        s3.delete(&bucket, &format!("{PREFIX}/{key}"));
    }
    let run = app.run(["offsite", "verify", "--json"]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let json = run.json();
    let problems = json[0]["report"]["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{json:#}");
    for p in problems {
        assert_eq!(p["lost"], true, "{json:#}");
        assert!(
            p["problem"]
                .as_str()
                .unwrap_or_default()
                .contains("holds no backup at all"),
            "{json:#}"
        );
    }
    // The local copy of the newer one went up again; the older existed only there.
    let repaired: Vec<&Value> = problems.iter().filter(|p| p["repaired"] == true).collect();
    assert_eq!(repaired.len(), 1, "{json:#}");
    assert_eq!(repaired[0]["backup"], held[0]["stem"], "{json:#}");
    // Said once: the next verification finds the target as this one left it.
    app.run(["offsite", "verify"]).assert_code(0);
}

#[test]
fn a_link_planted_on_a_path_target_is_refused_not_followed() {
    let app = TestApp::new();
    let nas = app.root.join("nas");
    let local = app.root.join("somewhere-local");
    std::fs::create_dir_all(&nas).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    std::os::unix::fs::symlink(&local, nas.join("database")).unwrap();
    let table = crate::offsite::setup::path_table("nas", &nas, "");
    app.write_config_raw(&app.config_text("", &format!("{}\n{table}", encryption_section())));
    let run = app.run(["create", "--type", "database"]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.describe().contains("symbolic link"),
        "{}",
        run.describe()
    );
    let written: Vec<_> = std::fs::read_dir(&local).unwrap().collect();
    assert!(
        written.is_empty(),
        "the backup went into a local directory: {written:?}"
    );
}

/// Every metadata object on an encrypting target says in clear only what listing, prune
/// and verification need: no file or chunk counts, no bytes added, no parent, no paths.
#[track_caller]
fn assert_clear_metadata_says_no_counts(s3: &S3Server, bucket: &str) {
    let mut seen = 0;
    for (key, _) in bucket_objects(s3, bucket) {
        if !key.ends_with(".json") {
            continue;
        }
        let body = s3.get(bucket, &format!("{PREFIX}/{key}")).expect("listed");
        let meta: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(meta["file_count"], 0, "{key}: {meta:#}");
        assert_eq!(meta["uncompressed_size"], 0, "{key}: {meta:#}");
        assert_eq!(meta["original_path"], "", "{key}: {meta:#}");
        assert_eq!(meta["hostname"], "", "{key}: {meta:#}");
        if let Some(snapshot) = meta.get("snapshot") {
            for field in [
                "added_bytes",
                "chunks",
                "added_chunks",
                "unchanged_files",
                "read_files",
            ] {
                assert_eq!(snapshot[field], 0, "{key}: {field} in clear: {meta:#}");
            }
            assert!(
                snapshot["parent"].is_null(),
                "{key}: parent in clear: {meta:#}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "no snapshot metadata on the target");
}

#[test]
fn a_restore_from_a_target_names_the_newer_backups_it_passes_over_and_exits_3() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(&s3, &bucket, "", "", "");
    let mut stems = Vec::new();
    for round in 0..2 {
        change(&app, round);
        app.run(["create", "--type", "storage"]).assert_code(0);
        stems.push(
            app.list_of("storage")[0]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The newer one's data object is lost on the target.
    let newest = complete_remote(&app, "storage")[0].clone();
    let (data_key, _, _) = crate::offsite::setup::data_objects(&newest)[0].clone();
    s3.delete(&bucket, &format!("{PREFIX}/{data_key}"));

    let fresh = TestApp::new();
    crate::offsite::setup::configure(
        &fresh,
        &[s3_table(&fresh, "remote", s3.endpoint(), &bucket, "")],
    );
    let run = restore_latest_from_remote(&fresh, "storage", false);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    let newest_name = newest["name"].as_str().unwrap();
    assert!(
        run.stderr
            .contains(&format!("passed over the newer {newest_name}")),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("missing"), "{}", run.describe());
    // Named, the incomplete one is refused with its problem, not "no such backup".
    let named = fresh.run(["restore", "--from", "remote", newest_name, "--yes"]);
    assert_eq!(named.code(), Some(2), "{}", named.describe());
    assert!(
        named.stderr.contains("not complete"),
        "{}",
        named.describe()
    );
}

#[test]
fn foreign_keys_under_the_prefix_do_not_take_the_target_down_and_are_never_touched() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = app_on(&s3, &bucket, "", "[offsite.retention]\nkeep_last = 1", "");
    let foreign = [
        "notes//readme.txt",
        "storage//storage_backup_20200101_000000.tar.zst",
        // Named like ours but one level too deep.
        "storage/storage_backup_20200101_000000.tar.zst/x",
    ];
    for key in foreign {
        s3.put(&bucket, &format!("{PREFIX}/{key}"), b"someone else's");
    }
    backups_with_changes(&app, "storage", 2);
    assert_eq!(complete_remote(&app, "storage").len(), 1);
    app.run(["offsite", "verify"]).assert_code(0);
    app.run(["offsite", "prune"]).assert_code(0);
    let held: BTreeSet<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in foreign {
        assert!(held.contains(key), "{key} was touched: {held:?}");
    }
    let fresh = TestApp::new();
    crate::offsite::setup::configure(
        &fresh,
        &[s3_table(&fresh, "remote", s3.endpoint(), &bucket, "")],
    );
    restore_latest_from_remote(&fresh, "storage", false).assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
}
