//! Repacking on targets (issue 25): a target holding snapshots that the local store has
//! since repacked is brought up to date by the next push — only the new packs and entry
//! lists go up (each entry list under a versioned name, `STEM.r1.tree.zst`), each copy's
//! metadata replaced last, so that the target's copy is whole at every moment — and what
//! the copies no longer need (the old packs and entry lists) goes as debris, so the
//! target comes back to about the live data's size too. Over S3 plain, encrypted and
//! under Object Lock, a fresh server restores from the bucket; a push SIGKILLed at each
//! rename and unlink on a path target leaves a copy that restores, and the next push
//! finishes the job.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::faults::crash::{calls_in, strace_usable, traced_run};
use crate::offsite::encrypted::encryption_section;
use crate::offsite::object_lock::api;
use crate::offsite::setup::{
    bucket_objects, path_table, remote_backups, restore_latest_from_remote, s3_table,
};
use crate::snapshots::{SNAPSHOT_LINES, copy_tree, packs_of, store_files, tree_of};
use crate::util::{
    TestApp, assert_same_tree, files_under, name_of, poll_until, require, run, s3_server,
};

/// Writes the config: snapshots, one backup of each type kept locally and on `table`'s
/// target (whose `[offsite.retention]` the table carries), `sections` before it.
fn configure(app: &TestApp, sections: &str, table: &str) {
    let rest = format!("[retention]\nkeep_last = 1\n\n{sections}\n{table}");
    app.write_config_raw(&app.config_text(SNAPSHOT_LINES, &rest));
}

const REMOTE_KEEP_ONE: &str = "[offsite.retention]\nkeep_last = 1\n";

/// Twenty incompressible 100 KiB files, a backup of `kind`, half the files deleted, a
/// second backup — each pushed as it is made — then a rotation that deletes the first and
/// repacks the half-used pack. Returns the second as `list` showed it before the repack.
fn repacked_history(app: &TestApp, kind: &str) -> Value {
    app.write_random_files("client_1/bulk", 20, 100 << 10);
    app.create(kind);
    for i in (0..20).step_by(2) {
        fs::remove_file(app.storage.join(format!("client_1/bulk/file_{i:03}.bin"))).unwrap();
    }
    let second = app.create(kind);
    let report = app.run(["rotate", "--json"]).assert_code(0).json();
    assert!(
        report["repack"]["packs_rewritten"].as_u64() >= Some(1),
        "{report:#}"
    );
    second
}

/// `offsite push --json` for the one target: its push report.
#[track_caller]
fn push(app: &TestApp) -> Value {
    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    json[0]["push"].clone()
}

/// The pack ids among `keys` (`store/packs/ab/ID.pack[.age]`).
fn pack_ids<'k>(keys: impl IntoIterator<Item = &'k String>) -> BTreeSet<String> {
    keys.into_iter()
        .filter(|k| k.starts_with("store/packs/"))
        .filter_map(|k| k.rsplit('/').next()?.split('.').next().map(String::from))
        .collect()
}

/// The ids of every pack the local store's backups list.
fn local_packs(app: &TestApp) -> BTreeSet<String> {
    app.list_of("storage")
        .iter()
        .chain(&app.list_of("database"))
        .flat_map(packs_of)
        .collect()
}

#[test]
fn a_push_after_repacking_sends_only_the_new_packs_and_the_bucket_shrinks_with_the_store() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = TestApp::new();
    let table = s3_table(&app, "remote", s3.endpoint(), &bucket, REMOTE_KEEP_ONE);
    configure(&app, "", &table);
    let second = repacked_history(&app, "storage");
    let stem = tree_of(&second)
        .file_name()
        .and_then(|n| n.to_str()?.strip_suffix(".tree.zst"))
        .expect("a snapshot's entry list")
        .to_string();
    let before: u64 = bucket_objects(&s3, &bucket)
        .iter()
        .filter(|(k, _)| k.starts_with("store/packs/"))
        .map(|(_, s)| s)
        .sum();
    assert!(
        before > 1900 << 10,
        "both halves were on the bucket: {before}"
    );

    let report = push(&app);
    assert_eq!(
        report["uploaded"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    let repacked = report["repacked"].as_array().expect("repacked");
    assert_eq!(repacked.len(), 1, "{report:#}");
    assert_eq!(repacked[0]["name"], stem.as_str(), "{report:#}");
    let sent = repacked[0]["bytes"].as_u64().unwrap();
    assert!(
        sent < 1200 << 10,
        "only the new pack and entry list go up, not the store: {sent}"
    );

    // The bucket holds what the local store holds: the new pack, not the old one; the
    // entry list under its versioned name, the old one gone.
    let objects = bucket_objects(&s3, &bucket);
    let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(pack_ids(&keys), local_packs(&app), "{keys:#?}");
    let after: u64 = objects
        .iter()
        .filter(|(k, _)| k.starts_with("store/packs/"))
        .map(|(_, s)| s)
        .sum();
    let local_bytes: u64 = store_files(&app)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        after, local_bytes,
        "the bucket's packs are the local store's"
    );
    assert!(
        after < before * 6 / 10,
        "{after} of {before} bytes of packs kept"
    );
    assert!(
        keys.contains(&format!("storage/{stem}.r1.tree.zst")),
        "{keys:#?}"
    );
    assert!(
        !keys.contains(&format!("storage/{stem}.tree.zst")),
        "{keys:#?}"
    );
    let remote = remote_backups(&app, "remote");
    assert_eq!(remote.len(), 1, "{remote:#?}");
    assert!(remote[0]["problem"].is_null(), "{remote:#?}");

    // Nothing more to do; the copy checks out with every object read back.
    let again = push(&app);
    assert!(again.get("repacked").is_none(), "{again:#}");
    assert_eq!(again["uploaded"].as_array().map(Vec::len), Some(0));
    app.run(["offsite", "verify", "--target", "remote"])
        .assert_code(0);

    // A fresh server restores it, its entry list back under the local name.
    let fresh = TestApp::new();
    let table = s3_table(&fresh, "remote", s3.endpoint(), &bucket, "");
    configure(&fresh, "", &table);
    fresh
        .run([
            "restore", "--from", "remote", "--latest", "storage", "--yes",
        ])
        .assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
    assert!(
        fresh
            .backups
            .join(format!("storage/{stem}.tree.zst"))
            .is_file(),
        "fetched under another name"
    );
}

#[test]
fn an_encrypted_locked_target_gets_repacked_full_backups_as_new_ciphertext_and_restores_them() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_locked_bucket();
    let app = TestApp::new();
    let lock = |duration: &str| {
        let extra = format!("object_lock = \"{duration}\"\n{REMOTE_KEEP_ONE}");
        let table = s3_table(&app, "remote", s3.endpoint(), &bucket, &extra);
        configure(&app, &encryption_section(), &table);
    };
    // The history goes up under a 3 s lock, run out (on the server's word) before the
    // push that brings the copy up to date under an hour's: the objects it reuses must be
    // locked again, not only the ones it writes.
    lock("3s");
    let second = repacked_history(&app, "full");
    let stem = name_of(&second).trim_end_matches(".json").to_string();
    let client = api(&app);
    let held: Vec<String> = remote_backups(&app, "remote")
        .iter()
        .flat_map(|b| b["objects"].as_array().unwrap().clone())
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    poll_until(
        Duration::from_secs(60),
        "the history's locks run out",
        || {
            held.iter().all(|key| {
                let head = client.head_object(key, None).ok().flatten();
                head.and_then(|h| h.retain_until)
                    .is_none_or(|until| until < Utc::now() - chrono::Duration::seconds(1))
            })
        },
    );
    lock("1h");

    let db_list = |backup: &Value| {
        backup["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| {
                o["key"]
                    .as_str()
                    .unwrap()
                    .starts_with("database/db_snapshot_")
            })
            .map(|o| o["sha256"].clone())
            .expect("the database member's entry list")
    };
    let was = remote_backups(&app, "remote");
    let was = was
        .iter()
        .find(|b| b["stem"] == stem.as_str())
        .expect("the copy");

    let started = Utc::now();
    let report = push(&app);
    let repacked = report["repacked"].as_array().expect("repacked");
    assert_eq!(repacked.len(), 1, "{report:#}");
    assert_eq!(repacked[0]["name"], stem.as_str(), "{report:#}");
    // Whatever else the bucket holds is whole (the first full backup, when its lock kept
    // it from the prune, with the packs repacking replaced).
    let remote = remote_backups(&app, "remote");
    assert!(remote.iter().all(|b| b["problem"].is_null()), "{remote:#?}");
    let copy = remote
        .iter()
        .find(|b| b["stem"] == stem.as_str())
        .expect("the copy");
    // The database member was not repacked: its ciphertext stays (sending it again would
    // put other bytes under the key the copy's old manifest described). What went up: the
    // new pack, the storage member's entry list, the three metadata objects.
    assert_eq!(db_list(copy), db_list(was), "{copy:#}");
    assert_eq!(repacked[0]["objects"], 5, "{report:#}");

    // Every object the copy needs now — written or reused — is ciphertext and locked for
    // the hour; the packs are the local store's (sealed).
    let needed: Vec<String> = copy["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        pack_ids(&needed),
        local_packs(&app),
        "{:#?}",
        app.list_of("storage")
    );
    for key in &needed {
        if !key.ends_with(".json") {
            assert!(key.ends_with(".age"), "{key} is not sealed");
        }
        let head = client
            .head_object(key, None)
            .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
            .unwrap_or_else(|| panic!("{key} is not on the target"));
        let until = head
            .retain_until
            .unwrap_or_else(|| panic!("{key} is not locked"));
        assert!(
            until > started + chrono::Duration::minutes(50),
            "{key} locked only until {until}"
        );
    }
    assert!(
        needed.iter().any(|k| k.ends_with(".r1.tree.zst.age")),
        "{needed:#?}"
    );

    let fresh = TestApp::new();
    let table = s3_table(&fresh, "remote", s3.endpoint(), &bucket, "");
    configure(&fresh, &encryption_section(), &table);
    restore_latest_from_remote(&fresh, "full", true).assert_code(0);
    assert_same_tree(&app.storage, &fresh.storage);
}

/// A fresh installation restores the latest full backup from the path target at `nas`
/// and gets `storage`'s files.
#[track_caller]
fn assert_restores_from(nas: &Path, storage: &Path, ctx: &str) {
    let fresh = TestApp::new();
    configure(&fresh, "", &path_table("nas", nas, ""));
    let r = fresh.run(["restore", "--from", "nas", "--latest", "full", "--yes"]);
    assert_eq!(r.code(), Some(0), "{ctx}: {}", r.describe());
    assert_same_tree(storage, &fresh.storage);
}

const SYSCALLS: [&str; 3] = ["renameat", "unlinkat", "rename"];

#[test]
fn sigkill_at_each_rename_and_unlink_of_a_push_after_repacking_leaves_a_copy_that_restores() {
    if !require("strace, able to trace", strace_usable()) {
        return;
    }
    let app = TestApp::new();
    let nas = app.root.join("nas");
    fs::create_dir(&nas).unwrap();
    configure(&app, "", &path_table("nas", &nas, REMOTE_KEEP_ONE));
    repacked_history(&app, "full");
    let templates = tempfile::tempdir().unwrap();
    let (backups_t, nas_t) = (templates.path().join("b"), templates.path().join("n"));
    copy_tree(&app.backups, &backups_t);
    copy_tree(&nas, &nas_t);
    let reset = || {
        for (dir, template) in [(&app.backups, &backups_t), (&nas, &nas_t)] {
            fs::remove_dir_all(dir).unwrap();
            copy_tree(template, dir);
        }
    };
    let logs = tempfile::tempdir().unwrap();
    let args = ["offsite", "push"];
    let log = logs.path().join("push.strace");
    run(traced_run(&app, &args, &SYSCALLS, None, &log)).assert_code(0);
    let mut landed = Vec::new();
    for syscall in SYSCALLS {
        for n in 1..=calls_in(&log, syscall) {
            reset();
            let ctx = format!("push killed at {syscall} #{n}");
            let klog = logs.path().join(format!("{syscall}-{n}.strace"));
            let r = run(traced_run(
                &app,
                &args,
                &SYSCALLS,
                Some((syscall, n)),
                &klog,
            ));
            if r.signal() == Some(libc::SIGKILL) || r.code() == Some(137) {
                landed.push(ctx.clone());
            } else {
                r.assert_code(0);
            }
            // Right after the kill the target's copy is whole, old or new.
            assert_restores_from(&nas, &app.storage, &ctx);
            // The next push finishes: the target holds exactly the local store's packs.
            let report = push(&app);
            assert_eq!(
                report["uploaded"].as_array().map(Vec::len),
                Some(0),
                "{ctx}"
            );
            let held: Vec<String> = files_under(&nas)
                .iter()
                .map(|p| p.strip_prefix(&nas).unwrap().to_string_lossy().into_owned())
                .collect();
            assert_eq!(pack_ids(&held), local_packs(&app), "{ctx}: {held:#?}");
            // No entry list but those the copy names (the old ones were debris), nothing
            // half written.
            let named: BTreeSet<String> = remote_backups(&app, "nas")
                .iter()
                .flat_map(|b| b["objects"].as_array().unwrap().clone())
                .map(|o| o["key"].as_str().unwrap().to_string())
                .filter(|k| k.contains(".tree.zst"))
                .collect();
            let lists: BTreeSet<String> = held
                .iter()
                .filter(|k| k.contains(".tree.zst"))
                .cloned()
                .collect();
            assert_eq!(lists, named, "{ctx}");
            assert!(
                !held.iter().any(|k| k.contains(".partial")),
                "{ctx}: {held:#?}"
            );
        }
    }
    eprintln!("{} kills landed:\n{}", landed.len(), landed.join("\n"));
    assert!(landed.len() >= 8, "only {} kills landed", landed.len());
}
