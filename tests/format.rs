//! The metadata's format (issue 12): backups written by the version-1 build (the fixture
//! in `tests/fixtures/v1`, moved to another directory as a copied backup dir is) still
//! list, verify, restore and rotate; new backups record `format_version` 2 and a
//! `format` object, and readers go by that object, not by the file name.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::util::*;

/// The fixture's backups: (stem, type, data file name relative to the backup dir).
const V1_BACKUPS: &[(&str, &str, &str)] = &[
    (
        "db_backup_20261201_090129",
        "database",
        "database/db_backup_20261201_090129.db",
    ),
    (
        "storage_backup_20261201_090129_2",
        "storage",
        "storage/storage_backup_20261201_090129_2.tar.zst",
    ),
    (
        "full_backup_20261201_090129_3",
        "full",
        "full/full_backup_20261201_090129_3.json",
    ),
    (
        "storage_backup_20261201_090129_4",
        "storage",
        "storage/storage_backup_20261201_090129_4.tar.gz",
    ),
];

/// The media tree the fixture's storage archives hold (see its README).
const V1_FILES: &[(&str, &str)] = &[
    (
        "client_1/images/portrait_1.jpg",
        "jpeg bytes of portrait 1\n",
    ),
    ("client_1/videos/video_1.mp4", "mp4 bytes of video 1\n"),
    ("client_2/nft_markers/portrait_2.fset", "fset marker 2\n"),
];
const V1_LINK: (&str, &str) = (
    "client_2/portrait_link.jpg",
    "../client_1/images/portrait_1.jpg",
);

/// A test app whose backup directory holds a copy of the version-1 fixture, with the
/// private modes a real backup directory has.
fn app_with_v1_backups() -> TestApp {
    let app = TestApp::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/backups");
    for kind in ["database", "storage", "full"] {
        let to = app.kind_dir(kind);
        fs::create_dir_all(&to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o700)).unwrap();
        for f in files_under(&fixture.join(kind)) {
            let dest = to.join(f.file_name().unwrap());
            fs::copy(&f, &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    app
}

/// Restore `backup` into the new `target`, which must succeed.
#[track_caller]
fn restore_to(app: &TestApp, backup: &Path, target: &Path) {
    app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ])
    .assert_code(0);
}

/// The fixture's database: three clients and one portrait.
#[track_caller]
fn assert_v1_database(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM clients ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["client one", "client two", "client three"]);
    let portraits: i64 = conn
        .query_row("SELECT count(*) FROM portraits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(portraits, 1);
}

/// The fixture's media tree, files and symlink, nothing else.
#[track_caller]
fn assert_v1_tree(root: &Path) {
    for (rel, text) in V1_FILES {
        assert_eq!(fs::read_to_string(root.join(rel)).unwrap(), *text, "{rel}");
    }
    let link = root.join(V1_LINK.0);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from(V1_LINK.1));
    assert_eq!(files_under(root).len(), V1_FILES.len() + 1);
}

#[test]
fn version_1_backups_are_listed_complete_where_they_now_lie() {
    let app = app_with_v1_backups();
    let rows = app.list();
    // The four backups and the full backup's two members.
    assert_eq!(rows.len(), 6, "{rows:#?}");
    for (stem, kind, data) in V1_BACKUPS {
        let row = rows
            .iter()
            .find(|r| jstr(r, "path").ends_with(data))
            .unwrap_or_else(|| panic!("{stem} is not listed: {rows:#?}"));
        assert_eq!(row["complete"], true, "{row:#}");
        assert_eq!(jstr(row, "type"), *kind);
        assert_eq!(ju64(row, "format_version"), 1);
        // Found in the copy, not where the metadata says it was made.
        assert_eq!(PathBuf::from(jstr(row, "path")), app.backups.join(data));
    }
}

#[test]
fn version_1_backups_verify() {
    let app = app_with_v1_backups();
    let v = app.run(["verify", "--all"]);
    v.assert_code(0);
    for (_, kind, data) in V1_BACKUPS {
        let name = Path::new(data).file_name().unwrap().to_string_lossy();
        assert!(
            v.stdout
                .lines()
                .any(|l| l.starts_with("OK") && l.contains(kind) && l.contains(&*name)),
            "{name} not verified OK\n{}",
            v.describe()
        );
    }
}

#[test]
fn version_1_backups_restore() {
    let app = app_with_v1_backups();
    let out = app.root.join("restored");
    fs::create_dir(&out).unwrap();

    restore_to(&app, &app.backups.join(V1_BACKUPS[0].2), &out.join("db.db"));
    assert_v1_database(&out.join("db.db"));

    for (i, (_, _, data)) in [V1_BACKUPS[1], V1_BACKUPS[3]].iter().enumerate() {
        let target = out.join(format!("storage_{i}"));
        restore_to(&app, &app.backups.join(data), &target);
        assert_v1_tree(&target);
    }

    let full = out.join("full");
    restore_to(&app, &app.backups.join(V1_BACKUPS[2].2), &full);
    assert_v1_database(&full.join("app_data.db"));
    assert_v1_tree(&full.join("storage"));
}

#[test]
fn rotating_version_1_backups_deletes_exactly_their_files() {
    let app = app_with_v1_backups();
    // Keep one per type: only the older zstd storage backup goes; the full backup's
    // members live with it.
    let report = app
        .run(["--max-backups", "1", "rotate", "--json"])
        .assert_code(0)
        .json();
    let mut deleted: Vec<String> = report["deleted_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let dir = app.kind_dir("storage");
    assert_eq!(
        deleted,
        [
            dir.join("storage_backup_20261201_090129_2.json"),
            dir.join("storage_backup_20261201_090129_2.tar.zst"),
        ]
        .map(|p| p.display().to_string())
    );
    assert_eq!(app.list().len(), 5);
}

#[test]
fn new_backups_record_format_version_2_and_their_format() {
    let app = TestApp::new();
    let expect = [
        (
            "database",
            json!({"kind": "sqlite", "compression": "none", "encryption": null}),
        ),
        (
            "storage",
            json!({"kind": "archive", "compression": "zstd", "encryption": null}),
        ),
        (
            "full",
            json!({"kind": "manifest", "compression": "none", "encryption": null}),
        ),
    ];
    for (kind, format) in expect {
        let meta = app.create(kind);
        assert_eq!(ju64(&meta, "format_version"), 2, "{meta:#}");
        assert_eq!(meta["format"], format, "{kind}: {meta:#}");
        if kind == "full" {
            let member = app
                .list()
                .into_iter()
                .find(|r| r["type"] == "storage" && r["part_of"].as_str() == Some(&stem_of(&meta)))
                .expect("the full backup's storage member");
            assert_eq!(member["format"]["compression"], "zstd");
        }
    }
    let gzip = TestApp::new();
    gzip.write_config("compression = \"gzip\"");
    assert_eq!(gzip.create("storage")["format"]["compression"], "gzip");
}

/// `db_backup_X`, `storage_backup_X`, `full_backup_X`.
fn stem_of(meta: &Value) -> String {
    let prefix = match jstr(meta, "type") {
        "database" => "db",
        other => other,
    };
    format!("{prefix}_backup_{}", jstr(meta, "timestamp"))
}

/// Give a gzip storage backup a `.tar.zst` name, as if a later build named its files
/// differently: the metadata is updated to the new name, its format untouched. Returns
/// the renamed data file and its metadata path.
fn rename_gzip_archive_to_zst(app: &TestApp) -> (PathBuf, PathBuf) {
    app.write_config("compression = \"gzip\"");
    let mut meta = app.create("storage");
    let old = PathBuf::from(jstr(&meta, "backup_path"));
    let new = old.with_file_name(
        old.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.gz", ".tar.zst"),
    );
    fs::rename(&old, &new).unwrap();
    meta["backup_path"] = new.display().to_string().into();
    let meta_path = app
        .kind_dir("storage")
        .join(format!("{}.json", stem_of(&meta)));
    write_json(&meta_path, &meta);
    (new, meta_path)
}

#[test]
fn a_version_2_archive_is_read_by_its_recorded_format_not_its_name() {
    let app = TestApp::new();
    let (archive, _) = rename_gzip_archive_to_zst(&app);
    app.run(["verify".as_ref(), archive.as_os_str()])
        .assert_code(0);
    let target = app.root.join("restored");
    restore_to(&app, &archive, &target);
    assert_same_tree(&app.storage, &target);
}

#[test]
fn a_version_1_archive_is_read_by_its_name() {
    // The same renamed file described by version-1 metadata (no format): read as its
    // name says — zstd — which it is not, so verification fails.
    let app = TestApp::new();
    let (archive, meta_path) = rename_gzip_archive_to_zst(&app);
    let mut meta = read_json(&meta_path);
    meta.as_object_mut().unwrap().remove("format");
    meta["format_version"] = 1.into();
    write_json(&meta_path, &meta);
    let v = app.run(["verify".as_ref(), archive.as_os_str()]);
    v.assert_code(1);
    assert!(v.stdout.contains("FAIL"), "{}", v.describe());
}

#[test]
fn an_encrypted_format_is_refused_by_name_not_misread() {
    let app = TestApp::new();
    let mut meta = app.create("storage");
    meta["format"]["encryption"] = json!({"scheme": "age", "recipients": ["SHA256:test"]});
    let meta_path = app
        .kind_dir("storage")
        .join(format!("{}.json", stem_of(&meta)));
    write_json(&meta_path, &meta);
    let archive = PathBuf::from(jstr(&meta, "backup_path"));
    // Without an identity nothing is read as if it were plaintext: the contents are
    // reported as not checked (exit 3), never as a good archive.
    let v = app.run(["verify".as_ref(), archive.as_os_str()]);
    v.assert_code(3);
    assert!(v.stdout.contains("no identity here"), "{}", v.describe());
    assert!(!v.stdout.starts_with("OK"), "{}", v.describe());
    // With one, the file is read as the age file its metadata says it is: it is not one.
    let key = app.root.join("operator.key");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/age/operator.key"),
        &key,
    )
    .unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let v = app.run([
        "--identity".as_ref(),
        key.as_os_str(),
        "verify".as_ref(),
        archive.as_os_str(),
    ]);
    v.assert_code(1);
    assert!(v.stdout.contains("cannot decrypt"), "{}", v.describe());
    let r = app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        app.root.join("restored").as_os_str(),
        "--yes".as_ref(),
    ]);
    assert_ne!(r.code(), Some(0), "{}", r.describe());
    assert!(r.stderr.contains("cannot decrypt"), "{}", r.describe());
    assert!(!app.root.join("restored").exists());
}
