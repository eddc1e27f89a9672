//! Choosing the backup: by its name as `list` prints it, `--latest [TYPE]` and `--at TIME`
//! (read in `[schedule] timezone`) for `restore` and `verify`, and the errors for a name
//! that is not there or a time before every backup.

use super::*;

/// Set a backup's recorded creation time (its metadata's `created_at`), so two backups
/// taken within the same second are days apart for `--at`.
fn set_created(meta: &Value, created_at: &str) {
    let path = PathBuf::from(jstr(meta, "backup_path"));
    let meta_path = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => path,
        _ => path.with_extension("json"),
    };
    let mut doc: Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    doc["created_at"] = Value::String(created_at.into());
    fs::write(&meta_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

fn clients_in(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM clients", [], |r| r.get(0))
        .unwrap()
}

/// Two database backups, 3 and 5 clients, recorded as taken on 1 and 20 November 10:00 UTC;
/// the schedule's zone is Europe/Berlin (UTC+1 in November).
fn two_database_backups(app: &TestApp) -> (String, String) {
    app.write_config_raw(&app.config_text("", "[schedule]\ntimezone = \"Europe/Berlin\"\n"));
    let older = app.create("database");
    set_created(&older, "2026-11-01T10:00:00+00:00");
    add_clients(&mut app.open_db(), 2, 64);
    let newer = app.create("database");
    set_created(&newer, "2026-11-20T10:00:00+00:00");
    (listed_name(&older), listed_name(&newer))
}

#[test]
fn restore_by_name_latest_and_at_picks_the_backup_meant() {
    let app = TestApp::new();
    let (older, newer) = two_database_backups(&app);
    let out = app.root.join("out");
    fs::create_dir(&out).unwrap();

    // The name exactly as `list` prints it, not a path.
    let listed: Vec<String> = app
        .list()
        .iter()
        .map(|r| jstr(r, "name").to_string())
        .collect();
    assert!(listed.contains(&older), "{listed:?} lacks {older}");
    let by_name = out.join("by_name.db");
    app.run([
        "restore",
        older.as_str(),
        "--target",
        by_name.to_str().unwrap(),
        "--yes",
    ])
    .assert_code(0);
    assert_eq!(
        clients_in(&by_name),
        3,
        "restore by name took the wrong backup"
    );

    let latest = out.join("latest.db");
    app.run([
        "restore",
        "--latest",
        "database",
        "--target",
        latest.to_str().unwrap(),
        "--yes",
    ])
    .assert_code(0);
    assert_eq!(
        clients_in(&latest),
        5,
        "--latest database did not take {newer}"
    );

    // 2026-11-10 12:00 Berlin lies between the two: the older one.
    let between = out.join("between.db");
    let r = app.run([
        "restore",
        "--at",
        "2026-11-10 12:00",
        "--type",
        "database",
        "--target",
        between.to_str().unwrap(),
        "--yes",
        "--json",
    ]);
    r.assert_code(0);
    assert!(
        jstr(&r.json(), "backup").ends_with(&older),
        "{}",
        r.describe()
    );
    assert_eq!(clients_in(&between), 3);

    // 11:30 Berlin is 10:30 UTC, just after the older one (10:00 UTC): the zone counts.
    let r = app.run([
        "restore",
        "--at",
        "2026-11-01 11:30",
        "--type",
        "database",
        "--dry-run",
        "--json",
    ]);
    r.assert_code(0);
    assert!(r.stdout.contains(&older), "{}", r.describe());

    // RFC 3339 after both: the newer one.
    let r = app.run([
        "restore",
        "--at",
        "2026-11-21T00:00:00Z",
        "--type",
        "database",
        "--dry-run",
        "--json",
    ]);
    r.assert_code(0);
    assert!(r.stdout.contains(&newer), "{}", r.describe());
}

#[test]
fn at_before_every_backup_names_the_oldest() {
    let app = TestApp::new();
    let (older, _) = two_database_backups(&app);
    // 10:30 Berlin is 09:30 UTC, before the older one.
    let r = app.run([
        "restore",
        "--at",
        "2026-11-01 10:30",
        "--type",
        "database",
        "--dry-run",
    ]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("the oldest is") && r.stderr.contains(&older),
        "{}",
        r.describe()
    );
    let r = app.run(["restore", "--at", "last tuesday", "--dry-run"]);
    r.assert_code(2);
    assert!(r.stderr.contains("YYYY-MM-DD HH:MM"), "{}", r.describe());
}

#[test]
fn verify_by_name_and_by_latest_type() {
    let app = TestApp::new();
    let (older, newer) = two_database_backups(&app);
    let r = app.run(["verify", older.as_str(), "--json"]);
    r.assert_code(0);
    let reports = r.json();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 1, "{}", r.describe());
    assert!(
        r.stdout.contains(&older) && !r.stdout.contains(&newer),
        "{}",
        r.describe()
    );

    let r = app.run(["verify", "--latest", "database", "--json"]);
    r.assert_code(0);
    assert!(
        r.stdout.contains(&newer) && !r.stdout.contains(&older),
        "{}",
        r.describe()
    );
}

#[test]
fn an_unknown_name_is_a_usage_error_pointing_at_list() {
    let app = TestApp::new();
    app.create("database");
    for args in [
        vec!["restore", "db_backup_20000101_000000.db", "--yes"],
        vec!["verify", "db_backup_20000101_000000.db"],
        vec!["ls", "storage_backup_20000101_000000.tar.zst"],
    ] {
        let r = app.run(&args);
        r.assert_code(2);
        assert!(
            r.stderr.contains("db_backup_20000101_000000")
                || r.stderr.contains("storage_backup_20000101_000000"),
            "{}",
            r.describe()
        );
        assert!(r.stderr.contains("vertex-backup list"), "{}", r.describe());
    }
    // No full backup at all: --latest (full by default) says so.
    let r = app.run(["restore", "--latest", "--dry-run"]);
    r.assert_code(2);
    assert!(r.stderr.contains("full"), "{}", r.describe());
}

#[test]
fn latest_and_at_skip_a_backup_that_failed_verification() {
    let app = TestApp::new();
    let (older, newer) = two_database_backups(&app);
    let newer_path = app.kind_dir("database").join(&newer);
    let mut bytes = fs::read(&newer_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newer_path, bytes).unwrap();
    app.run(["verify", newer.as_str()]).assert_code(1);

    // Passed over, and said: the newer one is named with why, and the exit code is 3.
    let r = app.run(["restore", "--latest", "database", "--dry-run", "--json"]);
    r.assert_code(3);
    assert!(
        r.stdout.contains(&older) && !r.stdout.contains(&newer),
        "--latest took the backup that failed verification\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains(&format!(
            "passed over the newer {newer}: it failed its last verification"
        )),
        "{}",
        r.describe()
    );
    let r = app.run([
        "restore",
        "--at",
        "2026-11-21T00:00:00Z",
        "--type",
        "database",
        "--dry-run",
        "--json",
    ]);
    r.assert_code(3);
    assert!(
        r.stdout.contains(&older) && !r.stdout.contains(&newer),
        "{}",
        r.describe()
    );
}
