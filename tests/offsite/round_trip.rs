//! Round trips of every backup type through an S3 target, a path target and an SFTP
//! target (a real `sshd` on loopback): `create`
//! uploads (objects checked behind the code's back: size, `x-amz-meta-sha256`, the local
//! file's checksum), `offsite list` shows the backup complete, and a FRESH installation
//! (empty backup directory, same target) restores it from there: media byte-identical,
//! database with the same rows (WAL header bytes may differ, so rows are compared).

use std::path::Path;

use crate::offsite::setup::{
    assert_s3_objects_match, configure, data_objects, path_table, remote_backups, s3_table,
};
use crate::util::{
    TestApp, add_clients, assert_same_tree, dump_db, s3_server, sha256_file, ssh_server,
};

/// Where the round trip goes.
enum Via {
    S3,
    Path,
    Sftp,
}

/// An installation whose data differs from a fresh `TestApp`'s (more clients, one more
/// media file), so a restore that brought nothing back cannot pass.
fn distinct_app() -> TestApp {
    let app = TestApp::new();
    add_clients(&mut app.open_db(), 7, 200);
    app.write_storage_file(
        "client_9/videos/only_here.mp4",
        &crate::util::random_bytes(99, 70_000),
    );
    app
}

fn round_trip(kind: &str, via: Via, into_target: bool) {
    let s3 = match via {
        Via::S3 => match s3_server() {
            Some(s3) => Some(s3),
            None => return,
        },
        Via::Path | Via::Sftp => None,
    };
    let ssh = match via {
        Via::Sftp => match ssh_server() {
            Some(server) => Some(server),
            None => return,
        },
        Via::S3 | Via::Path => None,
    };
    let bucket = s3.as_ref().map(|s| s.new_bucket());
    let nas = tempfile::tempdir().expect("target dir");
    // The directory the target's objects land in, read behind the code's back.
    let dir = match &ssh {
        Some(server) => server.directory("vertex-ar"),
        None => nas.path().to_path_buf(),
    };
    let table_for = |app: &TestApp| match (&s3, &bucket, &ssh) {
        (Some(s3), Some(b), _) => s3_table(app, "remote", s3.endpoint(), b, ""),
        (_, _, Some(server)) => server.table("remote", &dir, ""),
        _ => path_table("remote", nas.path(), ""),
    };

    let app = distinct_app();
    configure(&app, &[table_for(&app)]);
    app.run(["create", "--type", kind]).assert_code(0);
    let backups = remote_backups(&app, "remote");
    assert_eq!(backups.len(), 1, "{backups:#?}");
    let backup = &backups[0];
    assert_eq!(backup["type"], kind, "{backup:#}");
    assert!(backup["problem"].is_null(), "{backup:#}");
    match (&s3, &bucket) {
        (Some(s3), Some(b)) => assert_s3_objects_match(s3, b, backup, Some(&app.backups)),
        _ => {
            for (key, sha, size) in data_objects(backup) {
                let copy = dir.join(&key);
                assert_eq!(sha256_file(&copy), sha, "{key} on the target");
                assert_eq!(sha256_file(&app.backups.join(&key)), sha, "{key} locally");
                assert_eq!(copy.metadata().expect("stat").len(), size, "{key}");
            }
        }
    }

    // The disaster: a new server, only the config with the target.
    let fresh = TestApp::new();
    configure(&fresh, &[table_for(&fresh)]);
    let restored_to = fresh.root.join("restored");
    let mut args = vec!["restore", "--from", "remote", "--latest", kind, "--yes"];
    let target_arg = restored_to.to_string_lossy().into_owned();
    if into_target {
        args.extend(["--target", &target_arg]);
    }
    fresh.run(&args).assert_code(0);

    let want_db = dump_db(&app.open_db());
    let want_media: &Path = &app.storage;
    match (kind, into_target) {
        ("full", false) => {
            assert_eq!(
                dump_db(&fresh.open_db()),
                want_db,
                "the database came back different"
            );
            assert_same_tree(want_media, &fresh.storage);
        }
        ("database", false) => {
            assert_eq!(
                dump_db(&fresh.open_db()),
                want_db,
                "the database came back different"
            );
        }
        ("database", true) => {
            let conn = rusqlite::Connection::open(&restored_to).expect("open the restored db");
            assert_eq!(dump_db(&conn), want_db, "the database came back different");
        }
        ("storage", false) => assert_same_tree(want_media, &fresh.storage),
        ("storage", true) => assert_same_tree(want_media, &restored_to),
        other => panic!("no check for {other:?}"),
    }
}

#[test]
fn a_full_backup_round_trips_through_s3_to_a_fresh_server() {
    round_trip("full", Via::S3, false);
}

#[test]
fn a_database_backup_round_trips_through_s3_to_a_fresh_server() {
    round_trip("database", Via::S3, false);
}

#[test]
fn a_storage_backup_round_trips_through_s3_into_a_target_directory() {
    round_trip("storage", Via::S3, true);
}

#[test]
fn a_full_backup_round_trips_through_a_path_target_to_a_fresh_server() {
    round_trip("full", Via::Path, false);
}

#[test]
fn a_database_backup_round_trips_through_a_path_target_into_a_new_file() {
    round_trip("database", Via::Path, true);
}

#[test]
fn a_storage_backup_round_trips_through_a_path_target_to_a_fresh_server() {
    round_trip("storage", Via::Path, false);
}

#[test]
fn a_full_backup_round_trips_through_an_sftp_target_to_a_fresh_server() {
    round_trip("full", Via::Sftp, false);
}

#[test]
fn a_database_backup_round_trips_through_an_sftp_target_into_a_new_file() {
    round_trip("database", Via::Sftp, true);
}

#[test]
fn a_storage_backup_round_trips_through_an_sftp_target_into_a_target_directory() {
    round_trip("storage", Via::Sftp, true);
}
