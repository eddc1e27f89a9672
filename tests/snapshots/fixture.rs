//! Snapshots written by an earlier build (the fixture in `tests/fixtures/snapshot_v1`,
//! moved to another directory as a copied backup directory is) still list, verify with
//! every chunk read back, restore to the contents recorded below, diff, and take a new
//! snapshot on top.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::*;

const S1: &str = "storage_snapshot_20261201_171026";
const S2: &str = "storage_snapshot_20261201_171026_2";
const S3: &str = "storage_snapshot_20261201_171026_3";
const DB: &str = "db_snapshot_20261201_171026_3";
const FULL: &str = "full_backup_20261201_171026_3";

/// The fixture's media tree at the first snapshot (`second`: at the second and third):
/// every entry with its kind, content, mode and mtime, as `snapshot_tree` shows it.
fn expected_tree(second: bool) -> BTreeMap<PathBuf, Node> {
    const T1: i64 = 1_700_000_000;
    const T2: i64 = 1_700_086_400;
    let dir = |mode, mtime| Node {
        kind: NodeKind::Dir,
        mode: Some(mode),
        mtime: Some(mtime),
    };
    let file = |content: &[u8], mode, mtime| Node {
        kind: NodeKind::File {
            len: content.len() as u64,
            sha256: hex::encode(Sha256::digest(content)),
        },
        mode: Some(mode),
        mtime: Some(mtime),
    };
    let mut t = BTreeMap::new();
    let mut put = |path: &[u8], node: Node| {
        t.insert(PathBuf::from(OsStr::from_bytes(path)), node);
    };
    put(b"", dir(0o755, T1));
    put(b"client_1", dir(0o755, T1));
    put(b"client_1/images", dir(0o755, if second { T2 } else { T1 }));
    put(
        b"client_1/images/portrait_1.jpg",
        file(b"jpeg bytes of portrait 1\n", 0o644, T1),
    );
    if second {
        put(
            b"client_1/images/portrait_3.jpg",
            file(b"portrait 3\n", 0o644, T2),
        );
    }
    put(b"client_1/videos", dir(0o755, T1));
    put(
        b"client_1/videos/video_1.mp4",
        file(b"mp4 bytes of video 1\n", 0o644, T1),
    );
    put(
        b"client_1/videos/video_1_twin.mp4",
        file(b"mp4 bytes of video 1\n", 0o644, T1),
    );
    put(b"client_2", dir(0o750, T1));
    put(b"client_2/caf\xe9.txt", file(b"caf\xe9\n", 0o644, T1));
    put(b"client_2/nft_markers", dir(0o755, T1));
    put(
        b"client_2/nft_markers/portrait_2.fset",
        if second {
            file(b"fset marker 2, second version\n", 0o600, T2)
        } else {
            file(b"fset marker 2\n", 0o600, T1)
        },
    );
    put(
        b"client_2/portrait_link.jpg",
        Node {
            kind: NodeKind::Symlink {
                target: PathBuf::from("../client_1/images/portrait_1.jpg"),
            },
            mode: None,
            mtime: None,
        },
    );
    t
}

/// A snapshot app whose backup directory holds a copy of the fixture, with the private
/// modes a real backup directory has.
fn app_with_snapshot_v1() -> TestApp {
    let app = snapshot_app();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snapshot_v1/backups");
    for f in files_under(&fixture) {
        let rel = f.strip_prefix(&fixture).unwrap();
        let dest = app.backups.join(rel);
        let mut dir = dest.parent().unwrap().to_path_buf();
        fs::create_dir_all(&dir).unwrap();
        while dir != app.backups {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            dir.pop();
        }
        fs::copy(&f, &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
    }
    app
}

/// The listed row of `stem`.
#[track_caller]
fn row<'a>(rows: &'a [Value], stem: &str) -> &'a Value {
    rows.iter()
        .find(|r| stem_of(r) == stem)
        .unwrap_or_else(|| panic!("{stem} is not listed: {rows:#?}"))
}

#[test]
fn snapshots_written_by_an_earlier_build_list_verify_restore_and_diff() {
    let app = app_with_snapshot_v1();
    let rows = app.list();
    assert_eq!(rows.len(), 5, "{rows:#?}");
    for (stem, kind, parent, part_of) in [
        (S1, "storage", None, None),
        (S2, "storage", Some(S1), None),
        (S3, "storage", Some(S2), Some(FULL)),
        (DB, "database", None, Some(FULL)),
    ] {
        let r = row(&rows, stem);
        assert_eq!(r["complete"], true, "{r:#}");
        assert_eq!(jstr(r, "type"), kind, "{r:#}");
        assert_eq!(r["format"]["kind"], "snapshot", "{r:#}");
        assert_eq!(snap(r)["parent"].as_str(), parent, "{r:#}");
        assert_eq!(r["part_of"].as_str(), part_of, "{r:#}");
        // Found in the copy, not where the metadata says it was made.
        assert_eq!(
            Path::new(jstr(r, "path")),
            app.kind_dir(kind).join(format!("{stem}.tree.zst")),
            "{r:#}"
        );
    }
    assert_eq!(row(&rows, FULL)["complete"], true);
    assert_store_exact(&app, "the fixture as copied");

    // Every chunk read back and hashed; the database through SQLite's integrity check.
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    assert_eq!(
        reports.keys().cloned().collect::<Vec<_>>(),
        [
            format!("{FULL}.json"),
            format!("{S1}.tree.zst"),
            format!("{S2}.tree.zst")
        ],
        "verify --all covers the full backup's parts through it"
    );

    let out = tempfile::tempdir_in(&app.root).unwrap();
    for (stem, second) in [(S1, false), (S2, true), (S3, true)] {
        let dest = out.path().join(stem);
        restore_to(
            &app,
            &app.kind_dir("storage").join(format!("{stem}.tree.zst")),
            &dest,
            &[],
        );
        assert_eq!(snapshot_tree(&dest), expected_tree(second), "{stem}");
        let (a, b) = (
            fs::metadata(dest.join("client_1/videos/video_1.mp4")).unwrap(),
            fs::metadata(dest.join("client_1/videos/video_1_twin.mp4")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{stem}: the twin is not a hard link");
    }
    let full = out.path().join("full");
    restore_to(
        &app,
        &app.kind_dir("full").join(format!("{FULL}.json")),
        &full,
        &[],
    );
    assert_eq!(snapshot_tree(&full.join("storage")), expected_tree(true));
    let conn = Connection::open(full.join("app_data.db")).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM clients ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["client one", "client two", "client three"]);
    let image: String = conn
        .query_row("SELECT image_path FROM portraits WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(image, "storage/client_1/images/portrait_1.jpg");
    drop(conn);
    let db = out.path().join("db.db");
    restore_to(
        &app,
        &app.kind_dir("database").join(format!("{DB}.tree.zst")),
        &db,
        &[],
    );
    assert_eq!(dump_db_file(&db), dump_db_file(&full.join("app_data.db")));

    let d = app.run(["diff", &format!("{S1}.tree.zst"), &format!("{S2}.tree.zst")]);
    d.assert_code(0);
    assert_eq!(
        d.stdout.lines().collect::<Vec<_>>(),
        [
            "U  client_1/images",
            "+  client_1/images/portrait_3.jpg",
            "M  client_2/nft_markers/portrait_2.fset",
            &format!(
                "1 added, 0 removed, 1 modified, 1 metadata only ({S1}.tree.zst → {S2}.tree.zst)"
            ),
        ],
        "{}",
        d.describe()
    );
    let same = app.run(["diff", &format!("{S2}.tree.zst"), &format!("{S3}.tree.zst")]);
    same.assert_code(0);
    assert_eq!(
        same.stdout.lines().next(),
        Some(
            format!(
                "0 added, 0 removed, 0 modified, 0 metadata only ({S2}.tree.zst → {S3}.tree.zst)"
            )
            .as_str()
        ),
        "{}",
        same.describe()
    );
}

#[test]
fn a_new_snapshot_on_top_of_an_earlier_builds_store_keeps_what_the_old_ones_need() {
    let app = app_with_snapshot_v1();
    let tree = snapshot_tree(&app.storage);
    let meta = app.create("storage");
    // The newest complete storage snapshot (the full backup's part) is its parent; no
    // file of this tree is in it, so all are read.
    assert_eq!(snap(&meta)["parent"], S3, "{meta:#}");
    assert_eq!(ju64(snap(&meta), "unchanged_files"), 0, "{meta:#}");
    app.create("full");
    assert_store_exact(&app, "after new snapshots on top of the fixture");
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
    let dest = app.root.join("restored");
    restore_to(&app, &tree_of(&meta), &dest, &[]);
    assert_tree_matches(&tree, &dest);
    let old = app.root.join("old");
    restore_to(
        &app,
        &app.kind_dir("storage").join(format!("{S1}.tree.zst")),
        &old,
        &[],
    );
    assert_eq!(snapshot_tree(&old), expected_tree(false));
}

#[test]
fn repair_indexes_an_earlier_builds_packs_from_their_entry_lists_and_changes_nothing_else() {
    let app = app_with_snapshot_v1();
    let before: Vec<String> = app.list().iter().map(stem_of).collect();
    let r = app.run(["repair", "--json"]);
    r.assert_code(0);
    let report = r.json();
    // Its packs have no trailer: the entry lists index them, every one.
    assert_eq!(report["index"]["from_trailers"], 0, "{report:#}");
    assert_eq!(report["index"]["from_entry_lists"], 3, "{report:#}");
    assert!(
        report["damaged_packs"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        report["backups"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let after: Vec<String> = app.list().iter().map(stem_of).collect();
    assert_eq!(before, after);
    assert_store_exact(&app, "after repair of the fixture");
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
}
