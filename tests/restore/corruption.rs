//! Corrupt, truncated and edited backups are refused before anything live changes; a
//! damaged live database is repaired, kept aside.

use super::*;

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
