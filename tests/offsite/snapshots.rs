//! Snapshots offsite (issue 16) against the real S3 server: a push sends only the packs a
//! target lacks, then the entry list and the metadata; the remote listing needs every pack;
//! remote prune keeps the packs a kept snapshot lists and deletes the rest; a fresh server
//! restores the newest snapshot from the bucket; to an encrypting target every pack goes up
//! once as age ciphertext, and a fresh server restores it only with an identity.

use std::collections::BTreeSet;
use std::fs;

use crate::offsite::encrypted::{encryption_section, identity};
use crate::offsite::setup::{bucket_objects, configure, remote_backups, s3_table};
use crate::util::{S3Server, TestApp, assert_same_tree, s3_server};

const SNAPSHOTS: &str = "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"";

/// An app backing up snapshots to `bucket`, with `extra` sections (retention, encryption).
fn snapshot_app(s3: &S3Server, bucket: &str, table_extra: &str, extra: &str) -> TestApp {
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 6, 300 << 10);
    app.write_storage_file("client_2/images/a.jpg", b"small image");
    let table = s3_table(&app, "remote", s3.endpoint(), bucket, table_extra);
    app.write_config_raw(&app.config_text(SNAPSHOTS, &format!("{extra}\n{table}")));
    app
}

/// `restore --from remote --latest storage --yes` on `fresh` with the fixture identity
/// `key` (`operator.key`, `escrow.key`), which must succeed.
fn restore_latest_storage_with(fresh: &TestApp, key: &str) {
    let keys = tempfile::tempdir().unwrap();
    let id = identity(keys.path(), key);
    fresh
        .run([
            "--identity".as_ref(),
            id.as_os_str(),
            "restore".as_ref(),
            "--from".as_ref(),
            "remote".as_ref(),
            "--latest".as_ref(),
            "storage".as_ref(),
            "--yes".as_ref(),
        ])
        .assert_code(0);
}

fn packs_in(objects: &[(String, u64)]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|(k, _)| k.starts_with("store/packs/"))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn a_push_sends_only_new_packs_and_remote_prune_keeps_what_a_kept_snapshot_needs() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = snapshot_app(&s3, &bucket, "[offsite.retention]\nkeep_last = 2\n", "");
    app.run(["create", "--type", "storage"]).assert_code(0);
    let first = packs_in(&bucket_objects(&s3, &bucket));
    assert!(!first.is_empty());

    // One new file: the second push adds exactly one pack, the first snapshot's stay.
    app.write_storage_file("client_3/new.bin", &crate::util::random_bytes(7, 200 << 10));
    app.run(["create", "--type", "storage"]).assert_code(0);
    let second = packs_in(&bucket_objects(&s3, &bucket));
    assert!(second.is_superset(&first), "{first:?} → {second:?}");
    assert_eq!(second.len(), first.len() + 1, "{second:?}");

    // The third snapshot after deleting the old videos: keep_last = 2 drops the first,
    // whose packs the second still lists — so they stay; nothing the kept ones list goes.
    fs::remove_dir_all(app.storage.join("client_1")).unwrap();
    app.run(["create", "--type", "storage"]).assert_code(0);
    let remote = remote_backups(&app, "remote");
    assert_eq!(remote.len(), 2, "{remote:#?}");
    let listed: BTreeSet<String> = remote
        .iter()
        .flat_map(|b| b["objects"].as_array().unwrap().clone())
        .map(|o| o["key"].as_str().unwrap().to_string())
        .filter(|k| k.starts_with("store/packs/"))
        .collect();
    let held = packs_in(&bucket_objects(&s3, &bucket));
    assert_eq!(
        held, listed,
        "every pack held is listed by a kept snapshot, and back"
    );
    assert!(
        held.is_superset(&first),
        "the second snapshot still needs the first's packs"
    );

    // The disaster: a fresh server restores the newest snapshot from the bucket.
    let fresh = TestApp::new();
    configure(
        &fresh,
        &[s3_table(&fresh, "remote", s3.endpoint(), &bucket, "")],
    );
    fresh
        .run([
            "restore", "--from", "remote", "--latest", "storage", "--yes",
        ])
        .assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
}

#[test]
fn an_encrypting_target_gets_each_pack_once_as_ciphertext_and_restores_only_with_a_key() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = snapshot_app(&s3, &bucket, "", &encryption_section());
    // A marker in a file's bytes: no object in the bucket may show it.
    let marker = "MARKERsnapshotPLAINTEXTz81";
    app.write_storage_file("client_2/notes.txt", marker.repeat(50).as_bytes());
    app.run(["create", "--type", "storage"]).assert_code(0);
    let first = bucket_objects(&s3, &bucket);
    app.write_storage_file("client_2/more.txt", b"one more file");
    app.run(["create", "--type", "storage"]).assert_code(0);
    let objects = bucket_objects(&s3, &bucket);
    let packs = packs_in(&objects);
    assert!(packs.iter().all(|k| k.ends_with(".pack.age")), "{packs:?}");
    // The first snapshot's packs were not sent again (same keys, same sizes).
    for (key, size) in first.iter().filter(|(k, _)| k.starts_with("store/packs/")) {
        assert!(
            objects.contains(&(key.clone(), *size)),
            "{key} was rewritten"
        );
    }
    assert_eq!(packs.len(), packs_in(&first).len() + 1, "{packs:?}");
    for (key, _) in &objects {
        let bytes = s3
            .get(&bucket, &format!("{}/{key}", crate::offsite::setup::PREFIX))
            .expect("a listed object");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(marker), "{key} shows the plaintext");
        if !key.ends_with(".json") {
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{key} is not age"
            );
        }
    }
    let remote = remote_backups(&app, "remote");
    assert_eq!(remote.len(), 2, "{remote:#?}");
    assert!(remote.iter().all(|b| b["problem"].is_null()), "{remote:#?}");

    let fresh = TestApp::new();
    let table = s3_table(&fresh, "remote", s3.endpoint(), &bucket, "");
    fresh.write_config_raw(
        &fresh.config_text(SNAPSHOTS, &format!("{}\n{table}", encryption_section())),
    );
    let before = crate::util::snapshot_tree(&fresh.storage);
    let refused = fresh.run([
        "restore", "--from", "remote", "--latest", "storage", "--yes",
    ]);
    assert_ne!(refused.code(), Some(0), "{}", refused.describe());
    crate::util::assert_tree_matches(&before, &fresh.storage);
    restore_latest_storage_with(&fresh, "escrow.key");
    assert_same_tree(&app.storage, &fresh.storage);
}

#[test]
fn an_entry_list_in_parts_goes_up_with_its_packs_once_and_a_fresh_server_restores_it() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = snapshot_app(&s3, &bucket, "", &encryption_section());
    // About 1 000 entries: the entry list is cut into parts, stored in packs of their own.
    app.write_small_files("tree", 40, 25);
    let first = app.create("storage");
    assert!(
        first["snapshot"]["list_parts"].as_u64().unwrap_or(0) >= 10,
        "{first:#}"
    );
    let objects = bucket_objects(&s3, &bucket);
    let packs = packs_in(&objects);
    // Every pack the snapshot lists went up: the packs of parts with the data's.
    assert_eq!(
        packs.len(),
        first["snapshot"]["packs"].as_array().unwrap().len(),
        "{packs:?}"
    );
    // Nothing changed: the second snapshot's push sends no pack (its parts are the
    // first's), only its small entry list and metadata.
    let second = app.create("storage");
    assert_eq!(
        second["snapshot"]["added_list_parts"].as_u64().unwrap_or(0),
        0
    );
    assert_eq!(packs_in(&bucket_objects(&s3, &bucket)), packs);
    let remote = remote_backups(&app, "remote");
    assert_eq!(remote.len(), 2, "{remote:#?}");
    assert!(remote.iter().all(|b| b["problem"].is_null()), "{remote:#?}");

    let fresh = TestApp::new();
    let table = s3_table(&fresh, "remote", s3.endpoint(), &bucket, "");
    fresh.write_config_raw(
        &fresh.config_text(SNAPSHOTS, &format!("{}\n{table}", encryption_section())),
    );
    restore_latest_storage_with(&fresh, "operator.key");
    assert_same_tree(&app.storage, &fresh.storage);
}
