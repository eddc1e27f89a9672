//! `restore` and `verify` against the real binary (SPEC §5): round trips of database,
//! storage and full backups (data, bytes, modes, mtimes, symlinks), a restore under an
//! open WAL connection, corrupted backups refused with the failing check named and the
//! live data untouched, hostile archives that must not write anything outside the
//! target, `--target`, `--dry-run`, the confirmation rule and the lock.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tar::{EntryType, Header};

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// The data file a metadata names (for a full backup: its manifest).
fn data_path(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// Give the app's storage tree a symlink, a subdirectory, an empty directory and files
/// with distinct modes, then fixed mtimes on everything.
fn build_tree(app: &TestApp) {
    let s = &app.storage;
    fs::create_dir_all(s.join("links")).unwrap();
    symlink(
        "../client_1/images/portrait_1.jpg",
        s.join("links/latest.jpg"),
    )
    .unwrap();
    app.write_storage_file("tools/regen.sh", b"#!/bin/sh\necho regen\n");
    app.write_storage_file("private/secret.txt", b"secret\n");
    app.write_storage_file("client_1/notes/a/b/deep.txt", b"deep\n");
    fs::create_dir_all(s.join("empty_dir")).unwrap();
    for (rel, mode) in [
        ("tools/regen.sh", 0o755),
        ("private/secret.txt", 0o600),
        ("private", 0o700),
        ("client_1/images/portrait_1.jpg", 0o640),
        ("empty_dir", 0o750),
    ] {
        fs::set_permissions(s.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    set_fixed_mtimes(s, 1_600_000_000);
}

/// What happens to a tree after a backup: a file edited, files added, files deleted, a
/// symlink pointed elsewhere, a file's mode changed.
fn change_tree(app: &TestApp) {
    let s = &app.storage;
    fs::write(
        s.join("client_1/nft_markers/portrait_1.fset"),
        b"edited marker\n",
    )
    .unwrap();
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 12_345));
    app.write_storage_file("added.txt", b"added after the backup\n");
    fs::remove_file(s.join("client_2/videos/video_2.mp4")).unwrap();
    fs::remove_file(s.join("client_1/notes/a/b/deep.txt")).unwrap();
    fs::remove_file(s.join("links/latest.jpg")).unwrap();
    symlink(
        "../client_2/images/portrait_2.jpg",
        s.join("links/latest.jpg"),
    )
    .unwrap();
    fs::set_permissions(s.join("tools/regen.sh"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// What the app does to its database after a backup: rows updated, inserted, deleted.
fn change_db(app: &TestApp) {
    let mut conn = app.open_db();
    conn.execute("UPDATE clients SET name = 'renamed' WHERE id = 1", [])
        .unwrap();
    conn.execute("UPDATE portraits SET view_count = view_count + 5", [])
        .unwrap();
    conn.execute("DELETE FROM videos WHERE id = 2", []).unwrap();
    add_clients(&mut conn, 2, 10);
}

/// Every row of the live database (the connection is closed again, so the WAL is
/// checkpointed and the files left as the app would leave them).
fn live_dump(app: &TestApp) -> Vec<String> {
    let conn = app.open_db();
    let d = dump_db(&conn);
    drop(conn);
    d
}

/// Entries directly in the app root whose names show a restore was (partly) applied:
/// staging directories and pre-restore trees.
fn restore_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut v = children_containing(dir, ".restore-");
    v.extend(children_containing(dir, "pre-restore"));
    v
}

/// `list --json` rows that are pre-restore safety copies.
fn pre_restore_rows(app: &TestApp) -> Vec<Value> {
    app.list()
        .into_iter()
        .filter(|r| r.get("reason").and_then(Value::as_str) == Some("pre-restore"))
        .collect()
}

/// Everything live, to prove a failed or refused restore changed nothing: the database
/// directory (file bytes, modes, mtimes), the storage tree, and the names in the root.
#[derive(Debug, PartialEq)]
struct Live {
    db_dir: BTreeMap<PathBuf, Node>,
    db_sha256: String,
    storage: BTreeMap<PathBuf, Node>,
    root_names: Vec<String>,
}

fn live(app: &TestApp) -> Live {
    let mut root_names: Vec<String> = fs::read_dir(&app.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root_names.sort();
    Live {
        db_dir: snapshot_tree(app.db.parent().unwrap()),
        db_sha256: sha256_file(&app.db),
        storage: snapshot_tree(&app.storage),
        root_names,
    }
}

#[track_caller]
fn assert_live_unchanged(app: &TestApp, before: &Live, what: &str) {
    let after = live(app);
    assert_eq!(
        after.db_sha256, before.db_sha256,
        "{what}: the live database file changed"
    );
    assert_eq!(
        after.db_dir, before.db_dir,
        "{what}: the live database directory changed"
    );
    assert_tree_matches(&before.storage, &app.storage);
    assert_eq!(
        after.root_names, before.root_names,
        "{what}: entries appeared or vanished beside the live data"
    );
    let left = restore_leftovers(&app.root);
    assert!(left.is_empty(), "{what}: left behind: {left:#?}");
    let pre = pre_restore_rows(app);
    assert!(
        pre.is_empty(),
        "{what}: a pre-restore backup was taken: {pre:#?}"
    );
}

/// Where a backup comes from and what of the live data it replaces.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Database,
    Storage,
    Full,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Database => "database",
            Kind::Storage => "storage",
            Kind::Full => "full",
        }
    }
    fn has_db(self) -> bool {
        self != Kind::Storage
    }
    fn has_storage(self) -> bool {
        self != Kind::Database
    }
}

// ---------------------------------------------------------------------------------------
// 1. Round trips

fn round_trip(kind: Kind) {
    let app = TestApp::new();
    build_tree(&app);
    let db_at_backup = live_dump(&app);
    let tree_at_backup = snapshot_tree(&app.storage);
    let meta = app.create(kind.name());
    let backup = data_path(&meta);

    change_db(&app);
    change_tree(&app);
    let db_changed = live_dump(&app);
    let tree_changed = snapshot_tree(&app.storage);
    assert_ne!(
        db_changed, db_at_backup,
        "the database changes changed nothing"
    );
    assert_ne!(
        tree_changed, tree_at_backup,
        "the tree changes changed nothing"
    );
    let backups_before = app.list().len();

    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()]);
    r.assert_code(0);

    // The database.
    let conn = app.open_db();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the live database is no longer in WAL mode");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let db_now = live_dump(&app);
    if kind.has_db() {
        assert_eq!(
            db_now,
            db_at_backup,
            "the database does not hold the data of backup time\n{}",
            r.describe()
        );
    } else {
        assert_eq!(db_now, db_changed, "a storage restore changed the database");
    }

    // The tree, and the previous tree beside it.
    let pre_trees = children_containing(&app.root, "storage.pre-restore-");
    if kind.has_storage() {
        assert_tree_matches(&tree_at_backup, &app.storage);
        assert_eq!(pre_trees.len(), 1, "{pre_trees:#?}\n{}", r.describe());
        let name = pre_trees[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let stamp = name.strip_prefix("storage.pre-restore-").unwrap();
        assert!(
            stamp.len() == 15
                && stamp.as_bytes()[8] == b'_'
                && stamp
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 8 || b.is_ascii_digit()),
            "pre-restore tree name {name:?} is not storage.pre-restore-YYYYMMDD_HHMMSS"
        );
        assert_tree_matches(&tree_changed, &pre_trees[0]);
    } else {
        assert!(pre_trees.is_empty(), "{pre_trees:#?}");
        assert_tree_matches(&tree_changed, &app.storage);
    }
    let staging = children_containing(&app.root, ".restore-");
    assert!(staging.is_empty(), "staging left behind: {staging:#?}");

    // The pre-restore safety copy of the database.
    let pre = pre_restore_rows(&app);
    if kind.has_db() {
        assert_eq!(pre.len(), 1, "{pre:#?}");
        assert_eq!(jstr(&pre[0], "type"), "database", "{:#}", pre[0]);
        assert_eq!(pre[0]["complete"], true, "{:#}", pre[0]);
        assert!(
            pre[0].get("part_of").is_none_or(Value::is_null),
            "{:#}",
            pre[0]
        );
        assert_eq!(
            dump_db_file(Path::new(jstr(&pre[0], "path"))),
            db_changed,
            "the pre-restore backup does not hold the database as it was before the restore"
        );
        assert_eq!(app.list().len(), backups_before + 1);
    } else {
        assert!(pre.is_empty(), "{pre:#?}");
        assert_eq!(app.list().len(), backups_before);
    }
    // Everything in the catalog, the safety copy included, verifies.
    app.run(["verify", "--all"]).assert_code(0);
}

#[test]
fn database_restore_round_trips_and_keeps_a_pre_restore_copy() {
    round_trip(Kind::Database);
}

#[test]
fn storage_restore_round_trips_and_keeps_the_previous_tree() {
    round_trip(Kind::Storage);
}

#[test]
fn full_restore_round_trips_database_and_tree() {
    round_trip(Kind::Full);
}

// ---------------------------------------------------------------------------------------
// 2. An open connection

#[test]
fn database_restore_under_an_open_wal_connection_is_seen_by_it() {
    let app = TestApp::new();
    let db_at_backup = live_dump(&app);
    let meta = app.create("database");
    let backup = data_path(&meta);

    // The app's connection stays open throughout.
    let mut conn = app.open_db();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute("UPDATE clients SET name = 'changed by the app'", [])
        .unwrap();
    conn.execute("DELETE FROM videos", []).unwrap();
    add_clients(&mut conn, 5, 10);
    let clients: i64 = conn
        .query_row("SELECT count(*) FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(clients, 8);
    let changed = dump_db(&conn);
    assert_ne!(changed, db_at_backup);
    assert!(
        app.db.with_file_name("app_data.db-wal").exists(),
        "the changes should still be in the WAL"
    );

    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()]);
    r.assert_code(0);

    // The same connection reads the restored data.
    let clients: i64 = conn
        .query_row("SELECT count(*) FROM clients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(clients, 3, "{}", r.describe());
    assert_eq!(dump_db(&conn), db_at_backup);
    // And it can still write.
    conn.execute("UPDATE clients SET name = 'after restore' WHERE id = 1", [])
        .unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    let pre = pre_restore_rows(&app);
    assert_eq!(pre.len(), 1, "{pre:#?}");
    assert_eq!(dump_db_file(Path::new(jstr(&pre[0], "path"))), changed);
}

// ---------------------------------------------------------------------------------------
// 3. Corruption

/// Make a backup of `kind`, change the live data, damage the backup with `corrupt`
/// (which returns the path to hand to verify and restore), then check that `verify` and
/// `restore` both fail naming one of `checks` and that nothing live changed.
fn corruption_case(kind: Kind, checks: &[&str], corrupt: impl FnOnce(&TestApp, &Value) -> PathBuf) {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create(kind.name());
    change_db(&app);
    change_tree(&app);
    let target = corrupt(&app, &meta);
    let before = live(&app);

    // verify names the check.
    let v = app.run(["verify".as_ref(), target.as_os_str(), "--json".as_ref()]);
    v.assert_code(1);
    let reports = v.json();
    let reports = reports.as_array().expect("an array of reports");
    assert_eq!(reports.len(), 1, "{}", v.describe());
    assert_eq!(reports[0]["ok"], false, "{}", v.describe());
    let failed: Vec<&str> = reports[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| jstr(c, "name"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", v.describe());
    assert!(
        checks.contains(&failed[0]),
        "verify failed check {:?}, expected one of {checks:?}\n{}",
        failed[0],
        v.describe()
    );
    let v = app.run(["verify".as_ref(), target.as_os_str()]);
    v.assert_code(1);
    let line = v.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains(failed[0]),
        "verify's line does not name the failed check {:?}\n{}",
        failed[0],
        v.describe()
    );
    assert_live_unchanged(&app, &before, "after verify");

    // restore refuses, naming the check, and changes nothing.
    let r = app.run(["restore".as_ref(), target.as_os_str(), "--yes".as_ref()]);
    assert!(
        r.code().is_some_and(|c| c != 0),
        "restore of a damaged backup succeeded\n{}",
        r.describe()
    );
    assert!(
        checks
            .iter()
            .any(|c| r.stderr.contains(&format!("the {c} check"))),
        "restore's error does not name the failed check (one of {checks:?})\n{}",
        r.describe()
    );
    assert_live_unchanged(&app, &before, "after the refused restore");
}

fn meta_path_of(app: &TestApp, meta: &Value) -> PathBuf {
    let kind = jstr(meta, "type");
    let prefix = match kind {
        "database" => "db_backup_",
        "storage" => "storage_backup_",
        _ => "full_backup_",
    };
    app.kind_dir(kind)
        .join(format!("{prefix}{}.json", jstr(meta, "timestamp")))
}

/// The data file of the `kind` part of a full backup.
fn part_file(app: &TestApp, manifest: &Value, kind: &str) -> PathBuf {
    let part = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| jstr(p, "type") == kind)
        .unwrap_or_else(|| panic!("no {kind} part in {manifest:#}"));
    app.kind_dir(kind).join(jstr(part, "file_name"))
}

fn flip_middle(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    flip_byte(path, len / 2);
}

#[test]
fn corrupt_database_backup_is_refused() {
    corruption_case(Kind::Database, &["checksum"], |_, meta| {
        let p = data_path(meta);
        flip_middle(&p);
        p
    });
}

#[test]
fn corrupt_zstd_archive_is_refused() {
    corruption_case(Kind::Storage, &["checksum"], |_, meta| {
        let p = data_path(meta);
        assert!(p.to_string_lossy().ends_with(".tar.zst"));
        flip_middle(&p);
        p
    });
}

#[test]
fn truncated_archive_is_refused() {
    corruption_case(Kind::Storage, &["complete"], |_, meta| {
        let p = data_path(meta);
        let len = fs::metadata(&p).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        p
    });
}

#[test]
fn full_backup_missing_its_storage_part_is_refused() {
    corruption_case(Kind::Full, &["complete", "parts present"], |app, meta| {
        fs::remove_file(part_file(app, meta, "storage")).unwrap();
        data_path(meta)
    });
}

#[test]
fn edited_metadata_checksum_is_refused() {
    corruption_case(Kind::Database, &["checksum"], |app, meta| {
        let mp = meta_path_of(app, meta);
        let mut m = read_json(&mp);
        let sum = jstr(&m, "checksum").to_string();
        let first = if sum.starts_with('0') { "1" } else { "0" };
        m["checksum"] = Value::String(format!("{first}{}", &sum[1..]));
        write_json(&mp, &m);
        data_path(meta)
    });
}

#[test]
fn edited_full_manifest_parts_list_is_refused() {
    corruption_case(Kind::Full, &["manifest"], |app, meta| {
        let mp = meta_path_of(app, meta);
        let mut m = read_json(&mp);
        let parts = m["parts"].as_array_mut().unwrap();
        let before = parts.len();
        parts.retain(|p| jstr(p, "type") != "storage");
        assert_eq!(parts.len(), before - 1);
        write_json(&mp, &m);
        mp
    });
}

/// A full backup applies nothing unless both parts are good: a damaged archive must stop
/// the database part too.
#[test]
fn full_backup_with_a_corrupt_archive_restores_neither_part() {
    corruption_case(Kind::Full, &["checksum"], |app, meta| {
        flip_middle(&part_file(app, meta, "storage"));
        data_path(meta)
    });
}

#[test]
fn full_backup_with_a_corrupt_database_part_restores_neither_part() {
    corruption_case(Kind::Full, &["checksum"], |app, meta| {
        flip_middle(&part_file(app, meta, "database"));
        data_path(meta)
    });
}

// ---------------------------------------------------------------------------------------
// 4. Hostile archives

/// A tar header with `name` and `link` written byte for byte (the `tar` crate refuses to
/// set absolute or `..` paths itself, which is exactly what these archives need).
fn raw_header(name: &[u8], kind: EntryType, size: u64, link: &[u8]) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let old = h.as_old_mut();
    assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    h
}

/// One entry of a hand-made archive.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn build_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Directory, 0, b""),
                    &[][..],
                )
                .unwrap(),
            E::File(p, data) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Regular, data.len() as u64, b""),
                    *data,
                )
                .unwrap(),
            E::Symlink(p, t) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Symlink, 0, t.as_bytes()),
                    &[][..],
                )
                .unwrap(),
            E::Hardlink(p, t) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Link, 0, t.as_bytes()),
                    &[][..],
                )
                .unwrap(),
            E::Char(p, major, minor) => {
                let mut h = raw_header(p.as_bytes(), EntryType::Char, 0, b"");
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap()
            }
            E::Fifo(p) => b
                .append(&raw_header(p.as_bytes(), EntryType::Fifo, 0, b""), &[][..])
                .unwrap(),
        }
    }
    b.into_inner().unwrap()
}

/// Place `tar_bytes` into the catalog as an uncompressed storage backup with metadata
/// shaped like a real one (taken from a real backup); returns the archive's path.
fn plant_storage_backup(app: &TestApp, tar_bytes: &[u8]) -> PathBuf {
    let real = app.create("storage");
    let ts = "20200101_000000";
    let dir = app.kind_dir("storage");
    let archive = dir.join(format!("storage_backup_{ts}.tar"));
    fs::write(&archive, tar_bytes).unwrap();
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o600)).unwrap();
    let mut m = real.clone();
    let obj = m.as_object_mut().unwrap();
    obj.remove("part_of");
    obj.remove("reason");
    m["timestamp"] = ts.into();
    m["backup_path"] = archive.to_string_lossy().into_owned().into();
    m["file_size"] = (tar_bytes.len() as u64).into();
    m["uncompressed_size"] = (tar_bytes.len() as u64).into();
    m["checksum"] = sha256_file(&archive).into();
    m["compression"] = "none".into();
    m["created_at"] = "2020-01-01T00:00:00+00:00".into();
    m["file_count"] = 1.into();
    write_json(&dir.join(format!("storage_backup_{ts}.json")), &m);
    // The catalog takes it as a complete backup.
    let row = app
        .list_of("storage")
        .into_iter()
        .find(|r| jstr(r, "timestamp") == ts)
        .expect("the planted backup is listed");
    assert_eq!(row["complete"], true, "{row:#}");
    archive
}

/// Names that a hostile archive tries to create outside the tree.
const PROBE_NAMES: &[&str] = &["escape", "passwd", "outside_probe", "hostile_probe"];

/// Everything under the temp root but the backup directory and the area restores go
/// into (whose own mtime a staging directory changes), to prove nothing else changed.
fn snapshot_outside(app: &TestApp, area: &Path) -> BTreeMap<PathBuf, Node> {
    let area_rel = area.strip_prefix(&app.root).unwrap().to_path_buf();
    snapshot_tree(&app.root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("backups") && p != &area_rel)
        .collect()
}

/// Restore (to a new `--target`) and verify the archive made of `entries`: both must
/// fail on an unsafe entry, and nothing may appear anywhere.
fn hostile_case(entries: &dyn Fn(&Path) -> Vec<u8>, reason: &str) {
    let app = TestApp::new();
    // A sentinel a hard link could try to reach, and the area that receives the target.
    let outside = app.root.join("outside");
    fs::write(&outside, b"sentinel\n").unwrap();
    let area = app.root.join("area");
    fs::create_dir(&area).unwrap();
    let target = area.join("restored");
    let archive = plant_storage_backup(&app, &entries(&app.root));
    let etc_before = snapshot_names(Path::new("/etc"));
    let before = snapshot_outside(&app, &area);

    let v = app.run(["verify".as_ref(), archive.as_os_str()]);
    v.assert_code(1);
    assert!(
        v.stdout.contains("entries safe"),
        "verify does not name the `entries safe` check\n{}",
        v.describe()
    );
    assert!(v.stdout.contains(reason), "{}", v.describe());

    let r = app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ]);
    assert!(
        r.code().is_some_and(|c| c != 0),
        "a hostile archive was restored\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("unsafe entry") && r.stderr.contains(reason),
        "the error does not explain the unsafe entry ({reason:?})\n{}",
        r.describe()
    );

    assert!(!target.exists(), "the target was created");
    let in_area: Vec<PathBuf> = fs::read_dir(&area)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        in_area.is_empty(),
        "left in the target's parent: {in_area:#?}"
    );
    let after = snapshot_outside(&app, &area);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "changed outside the target: {changed:#?}"
    );
    // Nothing named like a probe, and no link, device or FIFO, anywhere in the temp root.
    let mut all = files_under(app.path());
    all.extend(dirs_under(app.path()));
    for p in &all {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !PROBE_NAMES.contains(&name.as_ref()),
            "{} was written",
            p.display()
        );
        let ft = fs::symlink_metadata(p).unwrap().file_type();
        assert!(
            !(ft.is_symlink() || ft.is_char_device() || ft.is_block_device() || ft.is_fifo()),
            "{} ({ft:?}) was created",
            p.display()
        );
    }
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(m.nlink(), 1, "a hard link to the sentinel was made");
    assert_eq!(fs::read(&outside).unwrap(), b"sentinel\n");
    assert!(!Path::new("/abs").exists(), "/abs was created");
    assert_eq!(
        snapshot_names(Path::new("/etc")),
        etc_before,
        "/etc changed"
    );
    // The live data is untouched too.
    assert!(pre_restore_rows(&app).is_empty());
    assert!(restore_leftovers(&app.root).is_empty());
}

/// File names directly in `dir`.
fn snapshot_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn hostile_archive_with_a_parent_dir_entry_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("../escape", b"escaped\n"),
            ])
        },
        "..",
    );
}

#[test]
fn hostile_archive_with_a_nested_parent_dir_entry_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("storage/../../escape", b"escaped\n"),
            ])
        },
        "..",
    );
}

#[test]
fn hostile_archive_with_an_absolute_entry_is_rejected() {
    assert!(!Path::new("/abs").exists(), "/abs exists before the test");
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("/abs/file", b"absolute\n"),
            ])
        },
        "absolute",
    );
}

#[test]
fn hostile_archive_with_an_absolute_entry_into_the_temp_root_is_rejected() {
    hostile_case(
        &|root| {
            let p = format!("{}/escape", root.display());
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File(&p, b"absolute\n"),
            ])
        },
        "absolute",
    );
}

/// The classic: a symlink to a system directory, then a file "inside" it. (The file's
/// name is one that /etc does not have, so a broken extractor could not damage the host.)
#[test]
fn hostile_archive_with_a_symlink_to_etc_and_a_file_through_it_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Symlink("storage/link", "/etc"),
                E::File("storage/link/hostile_probe", b"root::0:0::/root:/bin/sh\n"),
            ])
        },
        "outside",
    );
}

/// The same through an absolute link into the temp root, with the file named `passwd`.
#[test]
fn hostile_archive_with_an_absolute_symlink_and_a_passwd_through_it_is_rejected() {
    hostile_case(
        &|root| {
            let t = root.display().to_string();
            build_tar(&[
                E::Dir("storage/"),
                E::Symlink("storage/link", &t),
                E::File("storage/link/passwd", b"root::0:0::/root:/bin/sh\n"),
            ])
        },
        "outside",
    );
}

#[test]
fn hostile_archive_with_a_symlink_climbing_out_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Symlink("storage/up", "../../.."),
                E::File("storage/up/escape", b"escaped\n"),
            ])
        },
        "outside",
    );
}

#[test]
fn hostile_archive_with_a_hardlink_out_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Hardlink("storage/hl", "../../outside"),
                E::File("storage/hl", b"overwritten\n"),
            ])
        },
        "hard link",
    );
}

#[test]
fn hostile_archive_with_a_device_node_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Char("storage/null", 1, 3),
            ])
        },
        "device",
    );
}

#[test]
fn hostile_archive_with_a_fifo_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Fifo("storage/fifo"),
            ])
        },
        "FIFO",
    );
}

// ---------------------------------------------------------------------------------------
// 5. --target

#[test]
fn full_restore_to_a_new_target_leaves_the_live_data_alone() {
    let app = TestApp::new();
    build_tree(&app);
    let db_at_backup = live_dump(&app);
    let tree_at_backup = snapshot_tree(&app.storage);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let before = live(&app);

    let dest = app.root.join("elsewhere");
    let r = app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--target".as_ref(),
        dest.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    assert_eq!(dump_db_file(&dest.join("app_data.db")), db_at_backup);
    assert_tree_matches(&tree_at_backup, &dest.join("storage"));
    let mut names = snapshot_names(&dest);
    names.retain(|n| !n.starts_with("app_data.db-"));
    assert_eq!(names, ["app_data.db", "storage"], "{}", r.describe());

    let after = live(&app);
    assert_eq!(
        after.db_sha256, before.db_sha256,
        "the live database changed"
    );
    assert_eq!(after.db_dir, before.db_dir);
    assert_tree_matches(&before.storage, &app.storage);
    assert!(
        pre_restore_rows(&app).is_empty(),
        "a pre-restore backup was taken"
    );
    assert!(restore_leftovers(&app.root).is_empty());
}

#[test]
fn database_restore_to_a_new_file_leaves_the_live_database_alone() {
    let app = TestApp::new();
    let db_at_backup = live_dump(&app);
    let meta = app.create("database");
    change_db(&app);
    let before = live(&app);
    let dest = app.root.join("copy/restored.db");
    let r = app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--target".as_ref(),
        dest.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    assert_eq!(dump_db_file(&dest), db_at_backup);
    let after = live(&app);
    assert_eq!(after.db_sha256, before.db_sha256);
    assert!(pre_restore_rows(&app).is_empty());
}

/// Run `restore BACKUP --target DEST --yes`, expecting a usage refusal (exit 2) that
/// names DEST and leaves DEST and the live data as they were.
fn assert_target_refused(app: &TestApp, backup: &Path, dest: &Path) {
    let dest_before = snapshot_tree(dest);
    let before = live(app);
    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--target".as_ref(),
        dest.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(2);
    assert!(
        r.stderr.contains(&dest.display().to_string()),
        "the refusal does not name the target\n{}",
        r.describe()
    );
    assert_tree_matches(&dest_before, dest);
    assert_live_unchanged(app, &before, "after a refused --target");
}

#[test]
fn restore_into_a_non_empty_target_is_refused() {
    let app = TestApp::new();
    let storage = app.create("storage");
    let full = app.create("full");
    let database = app.create("database");

    // A storage archive into a directory that holds something.
    let busy = app.root.join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("precious.txt"), b"keep me\n").unwrap();
    assert_target_refused(&app, &data_path(&storage), &busy);

    // A full backup into a directory whose storage/ holds something.
    let dest = app.root.join("full_dest");
    fs::create_dir_all(dest.join("storage")).unwrap();
    fs::write(dest.join("storage/precious.txt"), b"keep me\n").unwrap();
    assert_target_refused(&app, &data_path(&full), &dest);

    // A full backup into a directory that already has the database file.
    let dest = app.root.join("full_dest_db");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("app_data.db"), b"keep me\n").unwrap();
    assert_target_refused(&app, &data_path(&full), &dest);

    // A database backup onto an existing file.
    let file = app.root.join("existing.db");
    fs::write(&file, b"keep me\n").unwrap();
    let before = fs::read(&file).unwrap();
    let r = app.run([
        "restore".as_ref(),
        data_path(&database).as_os_str(),
        "--target".as_ref(),
        file.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(2);
    assert_eq!(fs::read(&file).unwrap(), before);
}

/// `--target DIR` for a full backup is documented as a new directory: one that already
/// holds unrelated files is refused like a non-empty storage target.
#[test]
fn full_restore_into_a_non_empty_directory_is_refused() {
    let app = TestApp::new();
    let full = app.create("full");
    let dest = app.root.join("home");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("unrelated.txt"), b"keep me\n").unwrap();
    assert_target_refused(&app, &data_path(&full), &dest);
}

// ---------------------------------------------------------------------------------------
// 6. --dry-run, confirmation, --no-verify

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let everything = snapshot_tree(app.path());
    let backup = data_path(&meta);

    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--dry-run".as_ref()]);
    r.assert_code(0);
    for want in [
        "restore plan",
        "verify",
        "pre-restore",
        &app.db.display().to_string(),
        "storage.pre-restore-",
    ] {
        assert!(
            r.stdout.contains(want),
            "the plan lacks {want:?}\n{}",
            r.describe()
        );
    }
    assert_tree_matches(&everything, app.path());

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--dry-run".as_ref(),
        "--json".as_ref(),
    ]);
    r.assert_code(0);
    let plan = r.json();
    assert_eq!(plan["type"], "full", "{plan:#}");
    assert_eq!(plan["in_place"], true, "{plan:#}");
    assert_eq!(plan["verify"], true, "{plan:#}");
    assert_eq!(plan["database"]["safety_copy"], true, "{plan:#}");
    assert!(
        jstr(&plan["storage"], "previous_tree").contains("storage.pre-restore-"),
        "{plan:#}"
    );
    assert_tree_matches(&everything, app.path());
}

#[test]
fn in_place_restore_without_yes_and_without_a_terminal_is_refused() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let everything = snapshot_tree(app.path());

    // The runner gives the child /dev/null as stdin: not a terminal.
    let r = app.run(["restore".as_ref(), data_path(&meta).as_os_str()]);
    r.assert_code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.describe());
    assert_tree_matches(&everything, app.path());
}

#[test]
fn no_verify_warns_loudly_and_still_restores() {
    let app = TestApp::new();
    let db_at_backup = live_dump(&app);
    let meta = app.create("database");
    change_db(&app);
    let backup = data_path(&meta);

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--no-verify".as_ref(),
        "--dry-run".as_ref(),
    ]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("--no-verify"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("NO VERIFICATION"), "{}", r.describe());

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--no-verify".as_ref(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("--no-verify"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("NOT verified"), "{}", r.describe());
    assert_eq!(live_dump(&app), db_at_backup);

    // With verification, the same restore says so and no warning is printed.
    let r = app.run(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()]);
    r.assert_code(0);
    assert!(!r.stderr.contains("WARNING"), "{}", r.describe());
    assert!(r.stdout.contains("(verified)"), "{}", r.describe());
}

// ---------------------------------------------------------------------------------------
// 7. The lock

#[test]
fn restore_while_the_lock_is_held_fails_naming_the_holder() {
    let app = TestApp::new();
    build_tree(&app);
    let meta = app.create("full");
    change_db(&app);
    change_tree(&app);
    let before = live(&app);
    let backups_before = app.list().len();

    let lock_path = app.backups.join(".vertex-backup.lock");
    let holder = "pid 4242 running `create full` since 2026-11-27 03:00:00";
    let held = hold_flock(&lock_path, holder);
    let r = app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("pid 4242") && r.stderr.contains("create full"),
        "the error does not name the holder\n{}",
        r.describe()
    );
    assert_live_unchanged(&app, &before, "with the lock held");
    assert_eq!(app.list().len(), backups_before);
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), holder);

    // It was the lock: released, the same restore goes through.
    drop(held);
    app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--yes".as_ref(),
    ])
    .assert_code(0);
}

// ---------------------------------------------------------------------------------------
// A damaged live database is what a restore repairs

/// The live database replaced by junk (plus a stale WAL beside it): SQLite cannot take the
/// usual pre-restore copy, so the damaged file and its WAL are renamed aside
/// (`app_data.db.pre-restore-*`) and the backup is restored into a fresh file.
#[test]
fn restore_over_a_damaged_live_database_keeps_it_aside_and_restores() {
    let app = TestApp::new();
    let at_backup = live_dump(&app);
    let meta = app.create("database");
    let junk = b"this is not a database, it is what a broken disk left behind\n".repeat(100);
    fs::write(&app.db, &junk).unwrap();
    let wal = app.db.with_file_name("app_data.db-wal");
    fs::write(&wal, b"stale wal frames that must not be replayed").unwrap();

    let r = app.run([
        "restore".as_ref(),
        data_path(&meta).as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    assert_eq!(live_dump(&app), at_backup, "{}", r.describe());
    let dir = app.db.parent().unwrap();
    let aside = children_containing(dir, "app_data.db.pre-restore-");
    let main: Vec<_> = aside
        .iter()
        .filter(|p| {
            !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm")
        })
        .collect();
    assert_eq!(
        main.len(),
        1,
        "one damaged copy kept aside: {aside:?}\n{}",
        r.describe()
    );
    assert_eq!(
        fs::read(main[0]).unwrap(),
        junk,
        "the damaged bytes are kept as they were"
    );
    assert!(
        aside.iter().any(|p| p.to_string_lossy().ends_with("-wal")),
        "the stale WAL went aside with its database: {aside:?}"
    );
    assert!(
        app.backup_log().contains("could not be copied"),
        "backup.log does not say why no safety copy was taken\n{}",
        app.backup_log()
    );
}
