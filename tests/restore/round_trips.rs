//! Round trips of database, storage and full backups, in place and to `--target`,
//! including a restore seen by a connection the app keeps open.

use super::*;

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
