//! The copies in-place restores keep: the replaced `storage.pre-restore-*` trees and the
//! pre-restore database backups are listed with their sizes, and rotation keeps only the
//! newest `keep_pre_restore` of each kind (default 1), explaining every decision in words.

use super::*;

fn restore_in_place(app: &TestApp, backup: &Path) {
    app.run(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()])
        .assert_code(0);
}

#[test]
fn rotation_keeps_the_newest_safety_copy_of_each_kind() {
    let app = TestApp::new();
    let full = app.create("full");
    let backup = PathBuf::from(jstr(&full, "backup_path"));
    restore_in_place(&app, &backup);
    restore_in_place(&app, &backup);
    let trees = children_starting(&app.root, "storage.pre-restore-");
    assert_eq!(trees.len(), 2, "{trees:#?}");
    assert_eq!(pre_restore_rows(&app).len(), 2);
    // Which tree is newer: the second restore's name is either of a later second (same
    // length, sorts after) or the first one's with a `_2` suffix (longer).
    let mut by_age = trees.clone();
    by_age.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    let (older, newer) = (by_age[0].clone(), by_age[1].clone());

    let listed = app.run(["list"]);
    listed.assert_code(0);
    assert!(
        listed
            .stdout
            .contains("safety copies set aside by restores: 2")
            && listed.stdout.contains(&older.display().to_string())
            && listed.stdout.contains(&newer.display().to_string()),
        "{}",
        listed.describe()
    );

    let dry = app.run(["rotate", "--dry-run"]);
    dry.assert_code(0);
    let line_of = |path: &Path| {
        dry.stdout
            .lines()
            .find(|l| l.contains(&format!("{}  (", path.display())))
            .unwrap_or_else(|| panic!("no line for {}\n{}", path.display(), dry.describe()))
            .to_string()
    };
    assert!(
        line_of(&older).starts_with("would delete")
            && line_of(&older).contains("older than the newest 1 (keep_pre_restore = 1)"),
        "{}",
        dry.describe()
    );
    assert!(
        line_of(&newer).starts_with("keep")
            && line_of(&newer).contains("pre-restore copy, newest (keep_pre_restore)"),
        "{}",
        dry.describe()
    );
    assert!(
        dry.stdout.contains(
            "newest good backup of its type (never deleted); one of the last 7 (keep_last)"
        ),
        "{}",
        dry.describe()
    );
    assert_eq!(
        children_starting(&app.root, "storage.pre-restore-").len(),
        2
    );

    app.run(["rotate"]).assert_code(0);
    assert_eq!(
        children_starting(&app.root, "storage.pre-restore-"),
        [newer]
    );
    assert_eq!(pre_restore_rows(&app).len(), 1);
    assert_eq!(
        app.list_of("full").len(),
        1,
        "the scheduled backup went too"
    );

    // keep_pre_restore = 0: every copy goes at rotation, no scheduled backup does.
    app.write_config_raw(&format!(
        "{}\n[retention]\nkeep_pre_restore = 0\n",
        app.config_text("", "")
    ));
    app.run(["rotate"]).assert_code(0);
    assert!(children_starting(&app.root, "storage.pre-restore-").is_empty());
    assert!(pre_restore_rows(&app).is_empty());
    assert_eq!(app.list_of("full").len(), 1);
    assert!(app.root.join("storage").is_dir());
}

#[test]
fn a_safety_copy_is_never_the_latest_backup() {
    let app = TestApp::new();
    let good = app.create("database");
    let good_name = Path::new(jstr(&good, "backup_path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The live database goes bad; the restore takes a safety copy of the bad one.
    app.open_db()
        .execute("UPDATE clients SET name = 'damaged'", [])
        .unwrap();
    app.run(["restore", "--latest", "database", "--yes"])
        .assert_code(0);
    assert_eq!(pre_restore_rows(&app).len(), 1);
    // Run again, the same command restores the good backup, not the damage it set aside.
    let again = app.run(["restore", "--latest", "database", "--yes", "--dry-run"]);
    again.assert_code(0);
    assert!(again.stdout.contains(&good_name), "{}", again.describe());
    let verify = app.run(["verify", "--latest", "database"]);
    assert!(
        verify.describe().contains(&good_name),
        "{}",
        verify.describe()
    );
}

#[test]
fn latest_names_each_newer_backup_it_passes_over_and_exits_3() {
    let app = TestApp::new();
    let older = app.create("storage");
    app.write_storage_file("client_1/new.bin", b"newer");
    let newer = app.create("storage");
    // The newest one's data file is lost: it is incomplete.
    std::fs::remove_file(jstr(&newer, "backup_path")).unwrap();
    let target = app.root.join("restored");
    let run = app.run([
        "restore".as_ref(),
        "--latest".as_ref(),
        "storage".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ]);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    let newer_name = Path::new(jstr(&newer, "backup_path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        run.stderr
            .contains(&format!("passed over the newer {newer_name}: incomplete")),
        "{}",
        run.describe()
    );
    let older_name = Path::new(jstr(&older, "backup_path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(run.stdout.contains(&older_name), "{}", run.describe());
}
