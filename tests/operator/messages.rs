//! The smaller messages an operator reads (issue 26, item 6): counts in words that agree
//! with the number.

use super::*;

#[test]
fn stats_says_one_backup_in_the_singular() {
    let app = TestApp::new();
    app.create("database");
    let one = app.run(["stats"]);
    one.assert_code(0);
    assert!(
        one.stdout.contains("total: 1 backup,"),
        "{}",
        one.describe()
    );
    assert!(
        one.stdout.contains("database: 1 backup,"),
        "{}",
        one.describe()
    );
    assert!(!one.stdout.contains("1 backups"), "{}", one.describe());
    app.create("database");
    let two = app.run(["stats"]);
    assert!(
        two.stdout.contains("database: 2 backups,"),
        "{}",
        two.describe()
    );
}

#[test]
fn check_config_prints_the_storage_and_database_formats() {
    let app = TestApp::new();
    let default = app.run(["check-config"]);
    default.assert_code(0);
    assert!(
        default
            .stdout
            .contains("formats:    storage archive (a tar archive each), database copy"),
        "{}",
        default.describe()
    );
    app.write_config_raw(&app.config_text(
        "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"",
        "",
    ));
    let snapshots = app.run(["check-config"]);
    snapshots.assert_code(0);
    assert!(
        snapshots.stdout.contains("storage snapshot (")
            && snapshots.stdout.contains("database snapshot ("),
        "{}",
        snapshots.describe()
    );
}

/// Without a config file and without a backup directory there is no file to fix: the hint
/// says where a config goes and how to point at the backups instead.
#[test]
fn without_a_config_file_the_hint_does_not_say_fix_the_file() {
    if Path::new(vertex_backup::config::SYSTEM_CONFIG).exists() {
        // This host has a real config: the command would read it.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} exists on the CI host",
            vertex_backup::config::SYSTEM_CONFIG
        );
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("list")
        .current_dir(empty.path())
        .env_remove(vertex_backup::config::CONFIG_ENV);
    let r = run(cmd);
    r.assert_code(2);
    assert!(!r.stderr.contains("fix the file"), "{}", r.describe());
    assert!(
        r.stderr.contains("no config file was found") && r.stderr.contains("--backup-dir"),
        "{}",
        r.describe()
    );
}

/// `diff` refusing a backup speaks of `diff`: a storage archive and a database snapshot
/// get diff's own reason, and nothing about `export` or extracting with tar (a refusal
/// exits 2, as a usage error).
#[test]
fn diff_on_an_archive_or_a_database_snapshot_speaks_of_diff_not_export() {
    let app = TestApp::new();
    app.write_config("database_format = \"snapshot\"");
    let archive = app.create("storage");
    let database = app.create("database");
    let name = |meta: &Value| {
        Path::new(meta["backup_path"].as_str().expect("backup_path"))
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned()
    };
    let (archive, database) = (name(&archive), name(&database));
    let on_archive = app.run(["diff", archive.as_str(), archive.as_str()]);
    on_archive.assert_code(2);
    assert!(
        on_archive
            .stderr
            .contains("`diff` compares storage snapshots")
            && on_archive
                .stderr
                .contains(&format!("vertex-backup ls {archive}")),
        "{}",
        on_archive.describe()
    );
    let on_database = app.run(["diff", database.as_str(), database.as_str()]);
    on_database.assert_code(2);
    assert!(
        on_database
            .stderr
            .contains("holds no storage: `diff` compares"),
        "{}",
        on_database.describe()
    );
    for out in [&on_archive, &on_database] {
        assert!(
            !out.stderr.contains("export") && !out.stderr.contains("tar -xf"),
            "{}",
            out.describe()
        );
    }
    // `export` keeps its own words.
    let export = app.run(["export", archive.as_str(), "-o", "out.tar.zst"]);
    export.assert_code(2);
    assert!(
        export.stderr.contains("`tar -xf` reads it"),
        "{}",
        export.describe()
    );
}

#[test]
fn a_second_suffix_only_when_the_same_type_already_has_that_second() {
    let app = TestApp::new();
    let db = app.create("database");
    let data = PathBuf::from(jstr(&db, "backup_path"));
    // Database backups stamped with every second of the next two minutes: whenever the
    // storage backup below runs, its second has a database backup.
    let start = chrono::Local::now();
    for s in 0..120 {
        let stamp = (start + chrono::Duration::seconds(s)).format("%Y%m%d_%H%M%S");
        let twin = data.with_file_name(format!("db_backup_{stamp}.db"));
        if !twin.exists() {
            fs::copy(&data, &twin).unwrap();
            fs::copy(data.with_extension("json"), twin.with_extension("json")).unwrap();
        }
    }
    let storage = app.create("storage");
    let name = PathBuf::from(jstr(&storage, "backup_path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // storage_backup_YYYYMMDD_HHMMSS.tar.zst: no `_2`, the storage type had no backup then.
    let stem = name.strip_suffix(".tar.zst").unwrap_or(&name);
    assert_eq!(
        stem.len(),
        "storage_backup_20261201_090129".len(),
        "a storage backup took a suffix for a database backup's second: {name}"
    );
    // A second storage backup in the same second as this one would take `_2`: the unit
    // test `same_second_gets_a_distinct_timestamp_within_the_directories_a_backup_writes`.
}

#[test]
fn status_says_where_each_max_age_comes_from() {
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        "[schedule]\ntimezone = \"UTC\"\nfull = \"0 2 * * *\"\ndatabase = \"0 */6 * * *\"\n\
         [alerts]\nmax_age = { storage = \"8d\" }\n",
    ));
    let r = app.run(["status"]);
    let line = |kind: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} line:\n{}", r.describe()))
            .to_string()
    };
    assert!(
        line("database")
            .contains("max_age 9 h 0 min = 1.5 × the database job's interval of 6 h 0 min"),
        "{}",
        r.describe()
    );
    assert!(
        line("full").contains("= 1.5 × the full job's interval of 24 h 0 min"),
        "{}",
        r.describe()
    );
    assert!(
        line("storage").contains("= [alerts] max_age"),
        "{}",
        r.describe()
    );
    let json: Value = app.run(["status", "--json"]).json();
    let types = json["types"].as_array().unwrap();
    assert_eq!(types[2]["max_age_from"], "[alerts] max_age", "{json}");
}
