//! S3 Object Lock protecting what a kept remote backup needs, not just what one push
//! wrote (issue 24, defect 2). A snapshot reuses packs uploaded long before, whose lock
//! may have run out: the push that uploads the snapshot extends their retention, so the
//! server's own credentials cannot delete a version the newest snapshot needs. And prune
//! judges each object by its own retain-until (HEAD), not by the config and the upload
//! time of its backup's metadata. Against moto, on buckets created with Object Lock.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use vertex_backup::config::Config;
use vertex_backup::error::RemoteFailure;
use vertex_backup::offsite::s3_api::S3Api;

use crate::offsite::composed::{SNAPSHOTS, change};
use crate::offsite::encrypted::encryption_section;
use crate::offsite::setup::{remote_backups, s3_table};
use crate::util::{S3Server, TestApp, poll_until, s3_server};

/// How the app is configured: `backup_lines` in `[backup]`, `sections` before the one
/// S3 target `remote`, which takes `upload`.
struct Setup<'a> {
    s3: &'a S3Server,
    bucket: &'a str,
    backup_lines: &'a str,
    sections: &'a str,
    upload: &'a str,
}

impl Setup<'_> {
    /// Write the config with `object_lock = lock` and `[offsite.retention] retention`.
    fn write(&self, app: &TestApp, lock: &str, retention: &str) {
        let extra = format!(
            "object_lock = \"{lock}\"\nupload = [\"{}\"]\n[offsite.retention]\n{retention}",
            self.upload
        );
        let table = s3_table(app, "remote", self.s3.endpoint(), self.bucket, &extra);
        let rest = format!("{}\n{table}", self.sections);
        app.write_config_raw(&app.config_text(self.backup_lines, &rest));
    }
}

/// Our own client for the app's target, as the config parser makes it: the same
/// credentials the server has (what ransomware on it would hold).
pub(super) fn api(app: &TestApp) -> S3Api {
    let text = std::fs::read_to_string(&app.config).expect("read the config");
    let config = Config::parse(&text, Some(app.config.clone()), app.path(), &|_| None)
        .unwrap_or_else(|e| panic!("the test config does not parse: {e}\n{text}"));
    S3Api::open(&config.offsite[0]).expect("open the S3 API client")
}

/// The keys of every object `backup` (a row of `offsite list --json`) consists of.
fn object_keys(backup: &Value) -> BTreeSet<String> {
    backup["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_string())
        .collect()
}

fn packs(backup: &Value) -> BTreeSet<String> {
    object_keys(backup)
        .into_iter()
        .filter(|k| k.starts_with("store/packs/"))
        .collect()
}

fn retain_until(api: &S3Api, key: &str) -> DateTime<Utc> {
    let head = api
        .head_object(key, None)
        .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
        .unwrap_or_else(|| panic!("{key} is not on the target"));
    head.retain_until
        .unwrap_or_else(|| panic!("{key} has no retain-until date: {head:?}"))
}

/// `offsite push --json` for the one target: its push report.
#[track_caller]
fn push(app: &TestApp) -> Value {
    let json = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    json[0]["push"].clone()
}

#[test]
fn reused_packs_whose_lock_ran_out_are_locked_again_and_the_servers_keys_cannot_delete_them() {
    let Some(s3) = s3_server() else { return };
    for (sections, what) in [("", "plain"), (encryption_section().as_str(), "encrypted")] {
        let bucket = s3.new_locked_bucket();
        let setup = Setup {
            s3: &s3,
            bucket: &bucket,
            backup_lines: SNAPSHOTS,
            sections,
            upload: "storage",
        };
        reused_packs_are_locked_again(&setup, what);
    }
}

/// Snapshot 1 under a 3 s lock; once that has run out, snapshot 2 (a small change: it
/// reuses snapshot 1's packs); then what protects snapshot 2. `what` names the round.
fn reused_packs_are_locked_again(setup: &Setup<'_>, what: &str) {
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 4, 200 << 10);
    let keep = "keep_last = 10";
    setup.write(&app, "3s", keep);
    let api = api(&app);

    change(&app, 0);
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    push(&app);
    let first = remote_backups(&app, "remote");
    assert_eq!(first.len(), 1, "{first:#?}");
    let first_packs = packs(&first[0]);
    assert!(!first_packs.is_empty(), "{:#}", first[0]);

    // Wait (on the server's own word) until every pack's lock has run out.
    poll_until(
        Duration::from_secs(60),
        "the first snapshot's packs' lock runs out",
        || {
            first_packs
                .iter()
                .all(|k| retain_until(&api, k) < Utc::now() - chrono::Duration::seconds(1))
        },
    );

    // The second snapshot goes up under a longer lock: with 3 s, its own fresh objects
    // would be unlocked again before the attack below could be made, and what is checked
    // would depend on the machine's speed. The packs it reuses carry the first push's
    // 3 s lock, long run out: exactly the defect.
    let lock = chrono::Duration::minutes(10);
    setup.write(&app, "10m", keep);
    change(&app, 1);
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    let before = Utc::now().trunc_subsecs(0);
    let report = push(&app);
    let listed = remote_backups(&app, "remote");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let second = &listed[0];
    assert!(second["problem"].is_null(), "{second:#}");
    let stem = second["stem"].as_str().expect("stem").to_string();
    let second_packs = packs(second);
    let reused: BTreeSet<&String> = first_packs.intersection(&second_packs).collect();
    assert!(
        !reused.is_empty(),
        "{what}: the second snapshot reuses no pack"
    );

    // Every object the second snapshot needs is retained at least as long as its own
    // metadata object (its horizon), and that is the second push's time + the lock.
    let meta_key = object_keys(second)
        .into_iter()
        .find(|k| k.ends_with(".json"))
        .expect("the metadata object");
    let horizon = retain_until(&api, &meta_key);
    assert!(
        horizon >= before + lock,
        "{what}: {horizon} < {before} + {lock}"
    );
    for key in object_keys(second) {
        let until = retain_until(&api, &key);
        assert!(
            until >= horizon,
            "{what}: {key} (reused: {}) is retained until {until}, before its snapshot's horizon {horizon}",
            reused.contains(&key)
        );
    }
    let extended = report["lock_extended"].as_u64();
    assert_eq!(extended, Some(reused.len() as u64), "{what}: {report:#}");

    // Ransomware with the server's credentials deletes every version of every object,
    // by version id: each one the second snapshot needs is refused.
    let needed = object_keys(second);
    let versions = api.list_object_versions("").expect("list the versions");
    let mut refused = BTreeSet::new();
    for v in versions.iter().filter(|v| !v.delete_marker) {
        let outcome = api.delete_object(&v.key, Some(&v.version_id));
        if needed.contains(&v.key) {
            match outcome {
                Ok(()) => panic!("{what}: {} was deleted", v.key),
                Err(e) => assert_eq!(e.failure, RemoteFailure::Locked, "{what}: {}: {e}", v.key),
            }
            refused.insert(v.key.clone());
        }
    }
    assert_eq!(refused, needed, "{what}: {versions:#?}");
    let after = remote_backups(&app, "remote");
    let still = after
        .iter()
        .find(|b| b["stem"] == stem.as_str())
        .unwrap_or_else(|| panic!("{what}: {stem} is gone: {after:#?}"));
    assert!(still["problem"].is_null(), "{what}: {still:#}");
}

#[test]
fn prune_judges_each_object_by_its_own_lock_and_holds_the_locked_ones() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_locked_bucket();
    let app = TestApp::new();
    let setup = Setup {
        s3: &s3,
        bucket: &bucket,
        backup_lines: "",
        sections: "",
        upload: "database",
    };
    setup.write(&app, "1h", "keep_last = 5");
    let api = api(&app);
    for _ in 0..2 {
        app.run(["create", "--type", "database"]).assert_code(0);
    }
    let listed = remote_backups(&app, "remote");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let older = listed[1]["stem"].as_str().expect("stem").to_string();

    // The operator shortens the lock and the remote retention: the objects already up
    // keep the retain-until they were written with (an hour), whatever the config says
    // now, so the older backup is held, not hidden behind delete markers.
    setup.write(&app, "1s", "keep_last = 1");
    let json = app
        .run(["offsite", "prune", "--json"])
        .assert_code(0)
        .json();
    let report = &json[0];
    let plan = &report["plan"];
    assert_eq!(plan["delete"], serde_json::json!([]), "{json:#}");
    let held: Vec<&Value> = plan["keep"]
        .as_array()
        .expect("keep")
        .iter()
        .filter(|d| d["id"] == older.as_str())
        .collect();
    assert_eq!(held.len(), 1, "{json:#}");
    assert_eq!(held[0]["reasons"][0], "locked", "{json:#}");
    assert_eq!(report["deleted_objects"], serde_json::json!([]), "{json:#}");
    assert_eq!(remote_backups(&app, "remote").len(), 2);
    let markers = api.list_object_versions("").expect("versions");
    // (The jobs' own lock objects, deleted when each job ends, leave markers of course.)
    assert!(
        markers
            .iter()
            .filter(|v| !v.key.starts_with("vertex-backup/"))
            .all(|v| !v.delete_marker),
        "prune hid a locked object behind a delete marker: {markers:#?}"
    );
}
