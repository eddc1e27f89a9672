use super::*;
use chrono::TimeZone;

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path().join("backups"), 0o600, 0o700);
    c.prepare().unwrap();
    (dir, c)
}

fn meta(kind: BackupKind, ts: &str, data: &Path, size: u64) -> BackupMetadata {
    let mut m = placeholder_metadata(kind, ts);
    m.backup_path = data.display().to_string();
    m.file_size = size;
    m.checksum = "00".into();
    m.created_at = "2026-11-27T02:00:00+01:00".into();
    m.format_version = FORMAT_VERSION;
    m
}

fn write_db_backup(c: &Catalog, ts: &str) -> PathBuf {
    let data = c.data_path(BackupKind::Database, ts, "db");
    fs::write(&data, b"data").unwrap();
    let m = meta(BackupKind::Database, ts, &data, 4);
    write_atomic(
        &c.meta_path(BackupKind::Database, ts),
        &serde_json::to_vec(&m).unwrap(),
        0o600,
    )
    .unwrap();
    data
}

#[test]
fn directories_are_private() {
    let (_t, c) = catalog();
    for d in [c.root().to_path_buf(), c.kind_dir(BackupKind::Storage)] {
        assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700);
    }
}

#[test]
fn same_second_gets_a_distinct_timestamp_within_the_directories_a_backup_writes() {
    let (_t, c) = catalog();
    let now = Local.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap();
    let first = c.allocate_timestamp(BackupKind::Storage, now);
    assert_eq!(first, "20261127_020000");
    fs::write(
        c.data_path(BackupKind::Storage, &first, "tar.zst.partial"),
        b"",
    )
    .unwrap();
    // The second storage backup of that second is `_2`; a full (whose storage part goes
    // there too) as well; a database backup has that second to itself.
    assert_eq!(
        c.allocate_timestamp(BackupKind::Storage, now),
        "20261127_020000_2"
    );
    assert_eq!(
        c.allocate_timestamp(BackupKind::Full, now),
        "20261127_020000_2"
    );
    assert_eq!(
        c.allocate_timestamp(BackupKind::Database, now),
        "20261127_020000"
    );
    // After rotation freed the lower names, a new backup still sorts as the newest.
    fs::write(
        c.data_path(BackupKind::Storage, "20261127_020000_3", "tar.zst"),
        b"",
    )
    .unwrap();
    fs::remove_file(c.data_path(BackupKind::Storage, &first, "tar.zst.partial")).unwrap();
    assert_eq!(
        c.allocate_timestamp(BackupKind::Storage, now),
        "20261127_020000_4"
    );
    // A database part of a full taken in that second makes the next database backup `_2`.
    fs::write(
        c.data_path(BackupKind::Database, "20261127_020000", "db"),
        b"",
    )
    .unwrap();
    assert_eq!(
        c.allocate_timestamp(BackupKind::Database, now),
        "20261127_020000_2"
    );
}

#[test]
fn listing_separates_complete_backups_from_leftovers() {
    let (_t, c) = catalog();
    write_db_backup(&c, "20261127_020000");
    // Data without metadata, and a partial: not backups.
    fs::write(
        c.data_path(BackupKind::Database, "20261127_030000", "db"),
        b"x",
    )
    .unwrap();
    fs::write(
        c.data_path(BackupKind::Storage, "20261127_030000", "tar.zst.partial"),
        b"x",
    )
    .unwrap();
    // Metadata whose data file is gone: listed, but not complete.
    let gone = c.data_path(BackupKind::Database, "20261127_040000", "db");
    let m = meta(BackupKind::Database, "20261127_040000", &gone, 4);
    write_atomic(
        &c.meta_path(BackupKind::Database, "20261127_040000"),
        &serde_json::to_vec(&m).unwrap(),
        0o600,
    )
    .unwrap();

    let l = c.list().unwrap();
    assert_eq!(l.leftovers.len(), 2, "{:?}", l.leftovers);
    let complete: Vec<_> = l
        .backups
        .iter()
        .filter(|b| b.is_complete())
        .map(|b| b.stem.clone())
        .collect();
    assert_eq!(complete, vec!["db_backup_20261127_020000"]);
    let broken = l.find_stem("db_backup_20261127_040000").unwrap();
    assert!(broken.problem.as_deref().unwrap().contains("missing"));
}

#[test]
fn size_mismatch_and_foreign_path_are_problems() {
    let (_t, c) = catalog();
    let data = write_db_backup(&c, "20261127_020000");
    fs::write(&data, b"longer data").unwrap();
    let l = c.list().unwrap();
    assert!(l.backups[0].problem.as_deref().unwrap().contains("bytes"));

    let m = meta(
        BackupKind::Database,
        "20261127_050000",
        Path::new("/etc/passwd"),
        4,
    );
    write_atomic(
        &c.meta_path(BackupKind::Database, "20261127_050000"),
        &serde_json::to_vec(&m).unwrap(),
        0o600,
    )
    .unwrap();
    let l = c.list().unwrap();
    let e = l.find_stem("db_backup_20261127_050000").unwrap();
    assert!(
        e.problem
            .as_deref()
            .unwrap()
            .contains("different data file")
    );
}

#[test]
fn clean_leftovers_removes_only_crash_debris() {
    let (_t, c) = catalog();
    write_db_backup(&c, "20261127_020000");
    let dir = c.kind_dir(BackupKind::Database);
    // Crash between the data rename and the metadata rename.
    fs::write(dir.join("db_backup_20261127_030000.db"), b"x").unwrap();
    fs::write(dir.join("db_backup_20261127_030000.json.partial"), b"{").unwrap();
    // A data file somebody put there by hand: not ours to delete; nor a stranger's partial.
    fs::write(dir.join("db_backup_20200101_000000.db"), b"x").unwrap();
    fs::write(dir.join("operator_notes.partial"), b"x").unwrap();
    let removed = c.clean_leftovers().unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(dir.join("operator_notes.partial").exists());
    assert!(dir.join("db_backup_20200101_000000.db").exists());
    assert!(dir.join("db_backup_20261127_020000.db").exists());
}

#[test]
fn sqlite_side_files_of_a_killed_copy_are_leftovers_and_cleaned() {
    let (_t, c) = catalog();
    write_db_backup(&c, "20261127_020000");
    let dir = c.kind_dir(BackupKind::Database);
    // A run killed while SQLite had the copy open (switching it out of WAL mode).
    for name in [
        "db_backup_20261127_030000.db.partial",
        "db_backup_20261127_030000.db.partial-wal",
        "db_backup_20261127_030000.db.partial-shm",
        "db_backup_20261127_030000.db.partial-journal",
    ] {
        fs::write(dir.join(name), b"x").unwrap();
    }
    // Not ours: a stranger's file with a similar suffix is shown as "not a backup" (like
    // any `.partial`) but never deleted.
    fs::write(dir.join("notes.partial-wal"), b"x").unwrap();
    let l = c.list().unwrap();
    assert_eq!(l.leftovers.len(), 5, "{:?}", l.leftovers);
    assert_eq!(l.backups.len(), 1);
    let removed = c.clean_leftovers().unwrap();
    assert_eq!(removed.len(), 4, "{removed:?}");
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "db_backup_20261127_020000.db",
            "db_backup_20261127_020000.json",
            "notes.partial-wal"
        ]
    );
}

#[test]
fn parts_whose_manifest_never_landed_are_leftovers_not_backups() {
    let (_t, c) = catalog();
    // A full run killed after landing both parts, before its manifest.
    let stem = "full_backup_20261127_020000";
    let ts = "20261127_020000";
    let db = c.data_path(BackupKind::Database, ts, "db");
    fs::write(&db, b"data").unwrap();
    let mut m = meta(BackupKind::Database, ts, &db, 4);
    m.part_of = Some(stem.into());
    write_atomic(
        &c.meta_path(BackupKind::Database, ts),
        &serde_json::to_vec(&m).unwrap(),
        0o600,
    )
    .unwrap();
    write_db_backup(&c, "20261127_030000");

    let l = c.list().unwrap();
    let stems: Vec<&str> = l.backups.iter().map(|b| b.stem.as_str()).collect();
    assert_eq!(stems, ["db_backup_20261127_030000"]);
    assert_eq!(l.leftovers.len(), 2, "{:?}", l.leftovers);
    assert!(l.find_path(&db).is_none());

    let removed = c.clean_leftovers().unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!db.exists());
    assert_eq!(c.list().unwrap().backups.len(), 1);
}

/// How many verdicts each recorder process writes in
/// `two_processes_recording_verdicts_lose_neither`.
const RECORDER_ROUNDS: u32 = 50;
const RECORDER_DIR_VAR: &str = "VERTEX_TEST_RECORDER_DIR";
const RECORDER_WHO_VAR: &str = "VERTEX_TEST_RECORDER_WHO";

fn recorder_stem(who: u32, i: u32) -> String {
    format!("db_backup_20261127_0{who}00{i:02}")
}

/// The child of `two_processes_recording_verdicts_lose_neither` (this test binary run
/// again): records one verdict per call for its own backups. Run as an ordinary test,
/// without the variables, it does nothing.
#[test]
fn verdict_recorder_child() {
    let (Ok(root), Ok(who)) = (
        std::env::var(RECORDER_DIR_VAR),
        std::env::var(RECORDER_WHO_VAR),
    ) else {
        return;
    };
    let who: u32 = who.parse().unwrap();
    let c = Catalog::new(root, 0o600, 0o700);
    for i in 0..RECORDER_ROUNDS {
        let verdict = Verdict {
            // One recorder's verdicts are failures: exactly what must never be lost.
            ok: who == 2,
            at: "2026-11-27T03:00:00+01:00".into(),
            failure: (who != 2).then(|| "checksum differs".to_string()),
            checksum: None,
        };
        c.record_verdicts([(recorder_stem(who, i), verdict)])
            .unwrap();
    }
}

#[test]
fn two_processes_recording_verdicts_lose_neither() {
    let (_t, c) = catalog();
    for who in [1, 2] {
        for i in 0..RECORDER_ROUNDS {
            write_db_backup(&c, &format!("20261127_0{who}00{i:02}"));
        }
    }
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = [1, 2]
        .into_iter()
        .map(|who| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "catalog::tests::verdict_recorder_child",
                    "--test-threads=1",
                ])
                .env(RECORDER_DIR_VAR, c.root())
                .env(RECORDER_WHO_VAR, who.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let verdicts = c.load_verdicts();
    for who in [1, 2] {
        for i in 0..RECORDER_ROUNDS {
            let stem = recorder_stem(who, i);
            let v = verdicts.backups.get(&stem);
            assert!(v.is_some(), "the verdict of {stem} was lost");
            assert_eq!(verdicts.failed(&stem), who == 1, "{stem}");
        }
    }
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_journal_starts_afresh() {
    let (_t, c) = catalog();
    fs::write(c.state_file().path(), b"{\"runs\": {\"full\": tru").unwrap();
    c.journal("rotate", true, "rotate: done", Outcome::default());
    let aside: Vec<_> = fs::read_dir(c.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vertex-backup.state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read(c.root().join(&aside[0])).unwrap(),
        b"{\"runs\": {\"full\": tru"
    );
    let state = c.state_file().load().unwrap();
    assert!(state.set_aside.is_none());
    assert!(state.value.get("rotate").unwrap().last_success.is_some());
    let log = fs::read_to_string(c.root().join(LOG_FILE)).unwrap();
    assert!(log.contains("INFO - rotate: done"), "{log}");
}

#[test]
fn a_failure_of_a_backup_rewritten_while_it_was_verified_is_not_recorded() {
    let (_t, c) = catalog();
    write_db_backup(&c, "20261127_020000");
    let stem = "db_backup_20261127_020000".to_string();
    let failed = |seen: &str| Verdict {
        ok: false,
        at: "2026-11-27T03:00:00+01:00".into(),
        failure: Some("pack missing".into()),
        checksum: Some(seen.into()),
    };
    // Verified as it was before a repack rewrote it ("00" is its checksum now).
    c.record_verdicts([(stem.clone(), failed("ff"))]).unwrap();
    assert!(!c.load_verdicts().failed(&stem));
    // Verified as it is: the failure stands.
    c.record_verdicts([(stem.clone(), failed("00"))]).unwrap();
    assert!(c.load_verdicts().failed(&stem));
}
