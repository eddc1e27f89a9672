//! `restore` and `verify` against the real binary (docs/design.md §3): round trips of database,
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

mod browse;
mod by_name;
mod confirmation;
mod corruption;
mod hostile_archives;
mod partial;
mod round_trips;
mod xattrs;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// The data file a metadata names (for a full backup: its manifest).
pub(crate) fn data_path(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// The name `list` prints for a backup: its data file's (a full backup's manifest's).
fn listed_name(meta: &Value) -> String {
    data_path(meta)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Give the app's storage tree a symlink, a subdirectory, an empty directory and files
/// with distinct modes, then fixed mtimes on everything.
pub(crate) fn build_tree(app: &TestApp) {
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
pub(crate) fn change_tree(app: &TestApp) {
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
pub(crate) fn change_db(app: &TestApp) {
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
pub(crate) fn live_dump(app: &TestApp) -> Vec<String> {
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
pub(crate) struct Live {
    db_dir: BTreeMap<PathBuf, Node>,
    db_sha256: String,
    storage: BTreeMap<PathBuf, Node>,
    root_names: Vec<String>,
}

pub(crate) fn live(app: &TestApp) -> Live {
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
pub(crate) fn assert_live_unchanged(app: &TestApp, before: &Live, what: &str) {
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
