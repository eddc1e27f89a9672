//! `offsite::s3_api`, the hand-signed S3 client, against moto: listing keys `object_store`
//! refuses (`vx/notes//readme.txt`), following pages, versions and delete markers on an
//! Object Lock bucket, reading an older version, extending a version's retention (never
//! shortening it) and a locked version's delete coming back as `Locked`.

use std::io::Read;

use chrono::{Duration, Utc};
use vertex_backup::config::{Config, OffsiteTarget};
use vertex_backup::error::RemoteFailure;
use vertex_backup::offsite::s3_api::{RetentionChange, S3Api};

use crate::offsite::setup::{PREFIX, s3_table};
use crate::util::{PrivateS3, TestApp, s3_server};

/// The `[[offsite]]` target for `bucket` at `endpoint`, as the config parser makes it.
fn target(app: &TestApp, endpoint: &str, bucket: &str) -> OffsiteTarget {
    let text = app.config_text("", &s3_table(app, "remote", endpoint, bucket, ""));
    let config = Config::parse(&text, Some(app.config.clone()), app.path(), &|_| None)
        .unwrap_or_else(|e| panic!("the test config does not parse: {e}\n{text}"));
    config.offsite[0].clone()
}

fn read_all(api: &S3Api, key: &str, version: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    api.get_object(key, version)
        .unwrap_or_else(|e| panic!("get {key} {version:?}: {e}"))
        .read_to_end(&mut body)
        .unwrap_or_else(|e| panic!("read {key} {version:?}: {e}"));
    body
}

#[test]
fn lists_keys_object_store_refuses_and_reads_them() {
    let Some(s3) = s3_server() else { return };
    let app = TestApp::new();
    let bucket = s3.new_bucket();
    s3.put_with_meta(
        &bucket,
        &format!("{PREFIX}/notes//readme.txt"),
        b"foreign",
        &[("sha256", "not-ours")],
    );
    s3.put(&bucket, &format!("{PREFIX}/media/a b+c é.jpg"), b"odd name");
    s3.put(&bucket, &format!("{PREFIX}/database/db_backup_1.db"), b"db");
    // Beside the prefix, not under it.
    s3.put(&bucket, &format!("{PREFIX}y/not-ours"), b"x");
    s3.put(&bucket, "elsewhere/x", b"x");
    let api = S3Api::open(&target(&app, s3.endpoint(), &bucket)).expect("open");

    let listed = api.list_objects("").expect("list through the foreign key");
    let mut keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("database/db_backup_1.db", 2),
            ("media/a b+c é.jpg", 8),
            ("notes//readme.txt", 7)
        ],
        "{listed:?}"
    );
    let age = Utc::now() - listed[0].last_modified;
    assert!(age < Duration::minutes(10), "{listed:?}");
    let notes = api.list_objects("notes/").expect("list notes/");
    assert_eq!(notes.len(), 1, "{notes:?}");

    assert_eq!(read_all(&api, "notes//readme.txt", None), b"foreign");
    assert_eq!(read_all(&api, "media/a b+c é.jpg", None), b"odd name");
    let head = api.head_object("notes//readme.txt", None).unwrap().unwrap();
    assert_eq!((head.size, head.sha256.as_deref()), (7, Some("not-ours")));
    assert_eq!(head.retain_until, None);
    assert_eq!(api.head_object("notes/readme.txt", None).unwrap(), None);
    let missing = api.get_object("notes/readme.txt", None).err().unwrap();
    assert_eq!(missing.failure, RemoteFailure::Missing, "{missing}");
    // A key a URL cannot carry unchanged is refused, never sent as another key.
    let dotted = api.delete_object("notes/../database/db_backup_1.db", None);
    assert_eq!(dotted.unwrap_err().failure, RemoteFailure::Other);
    assert!(
        s3.head(&bucket, &format!("{PREFIX}/database/db_backup_1.db"))
            .is_some()
    );

    api.delete_object("notes//readme.txt", None)
        .expect("delete");
    api.delete_object("notes//readme.txt", None)
        .expect("delete again: already gone");
    assert_eq!(
        s3.get(&bucket, &format!("{PREFIX}/notes//readme.txt")),
        None
    );

    let nowhere = S3Api::open(&target(&app, s3.endpoint(), "never-created-s3-api")).unwrap();
    let e = nowhere.list_objects("").unwrap_err();
    assert_eq!(e.failure, RemoteFailure::Missing, "{e}");
}

#[test]
fn versions_delete_markers_and_retention_on_a_locked_bucket() {
    let Some(s3) = s3_server() else { return };
    let app = TestApp::new();
    let bucket = s3.new_locked_bucket();
    let api = S3Api::open(&target(&app, s3.endpoint(), &bucket)).expect("open");
    let key = "database/db_backup_1.db";
    let full = format!("{PREFIX}/{key}");
    let version_now = || {
        let head = api.head_object(key, None).unwrap().expect("the object");
        head.version_id
            .expect("a versioned bucket names the version")
    };
    s3.put(&bucket, &full, b"first");
    let first = version_now();
    s3.put(&bucket, &full, b"second, longer");
    let second = version_now();
    assert_ne!(first, second);
    s3.delete(&bucket, &full);
    assert_eq!(api.head_object(key, None).unwrap(), None, "deleted");

    let versions = api.list_object_versions("").expect("list versions");
    let markers: Vec<_> = versions.iter().filter(|v| v.delete_marker).collect();
    let stored: Vec<_> = versions.iter().filter(|v| !v.delete_marker).collect();
    assert_eq!((stored.len(), markers.len()), (2, 1), "{versions:#?}");
    assert!(versions.iter().all(|v| v.key == key), "{versions:#?}");
    assert!(
        markers[0].is_latest && markers[0].size == 0,
        "{versions:#?}"
    );
    let sizes: Vec<(&str, u64, bool)> = stored
        .iter()
        .map(|v| (v.version_id.as_str(), v.size, v.is_latest))
        .collect();
    assert!(sizes.contains(&(first.as_str(), 5, false)), "{versions:#?}");
    assert!(
        sizes.contains(&(second.as_str(), 14, false)),
        "{versions:#?}"
    );

    // The current object is a delete marker; its versions are still there to read.
    assert_eq!(read_all(&api, key, Some(&first)), b"first");
    assert_eq!(read_all(&api, key, Some(&second)), b"second, longer");
    assert_eq!(
        api.head_object(key, Some(&markers[0].version_id)).unwrap(),
        None
    );

    // Retention: extended, never shortened.
    let until = Utc::now() + Duration::days(2);
    let until = until - Duration::nanoseconds(until.timestamp_subsec_nanos().into());
    let change = api
        .put_object_retention(key, Some(&first), "COMPLIANCE", until)
        .expect("put retention");
    assert_eq!(
        change,
        RetentionChange::Extended {
            retain_until: until
        }
    );
    let head = api
        .head_object(key, Some(&first))
        .unwrap()
        .expect("version");
    assert_eq!(head.retain_until, Some(until), "{head:?}");
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert_eq!(head.version_id.as_deref(), Some(first.as_str()));
    let shorter = api
        .put_object_retention(key, Some(&first), "COMPLIANCE", until - Duration::days(1))
        .expect("a shorter retention is not an error");
    assert_eq!(
        shorter,
        RetentionChange::Kept {
            retain_until: until
        }
    );
    let head = api
        .head_object(key, Some(&first))
        .unwrap()
        .expect("version");
    assert_eq!(head.retain_until, Some(until), "shortened: {head:?}");

    // The locked version stays; the unlocked one and the marker go.
    let locked = api.delete_object(key, Some(&first)).unwrap_err();
    assert_eq!(locked.failure, RemoteFailure::Locked, "{locked}");
    assert!(!locked.failure.transient());
    api.delete_object(key, Some(&second))
        .expect("delete an unlocked version");
    api.delete_object(key, Some(&markers[0].version_id))
        .expect("delete the marker");
    let left = api.list_object_versions("").unwrap();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0].version_id, first);
    assert_eq!(
        read_all(&api, key, None),
        b"first",
        "the locked version is current again"
    );
}

#[test]
fn every_page_of_a_listing_is_followed() {
    // A server of its own that pages every 2 keys (moto's MaxKeys default).
    let Some(moto) = PrivateS3::start_with_env(&[("MOTO_S3_DEFAULT_MAX_KEYS", "2")]) else {
        return;
    };
    let s3 = moto.s3();
    let app = TestApp::new();
    let bucket = s3.new_locked_bucket();
    for i in 0..5 {
        s3.put(&bucket, &format!("{PREFIX}/media/{i}//x"), b"12345");
    }
    s3.put(&bucket, &format!("{PREFIX}/media/0//x"), b"123");
    s3.delete(&bucket, &format!("{PREFIX}/media/1//x"));
    let api = S3Api::open(&target(&app, moto.endpoint(), &bucket)).expect("open");
    let listed = api.list_objects("media/").expect("list");
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        keys,
        [
            ("media/0//x", 3),
            ("media/2//x", 5),
            ("media/3//x", 5),
            ("media/4//x", 5)
        ]
    );
    let versions = api.list_object_versions("media/").expect("list versions");
    assert_eq!(versions.len(), 7, "{versions:#?}");
    let markers = versions.iter().filter(|v| v.delete_marker).count();
    assert_eq!(markers, 1, "{versions:#?}");
    let mut ids: Vec<&str> = versions.iter().map(|v| v.version_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "a version listed twice: {versions:#?}");
}
