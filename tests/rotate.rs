//! `rotate` and `create --max-backups` against the real binary (README.md, Retention): the newest
//! backups kept and the oldest deleted with their metadata, `--dry-run` printing the same
//! plan and deleting nothing, parts of full backups living and dying with them, broken
//! backups neither counted nor deleted, and leftovers of crashed runs cleaned — only ours.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// `db_backup_<timestamp>` and the like: the id retention uses.
fn stem(meta: &Value) -> String {
    let prefix = match jstr(meta, "type") {
        "database" => "db_backup_",
        "storage" => "storage_backup_",
        _ => "full_backup_",
    };
    format!("{prefix}{}", jstr(meta, "timestamp"))
}

/// The data file a metadata names (for a full backup: its manifest).
fn data_path(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// The metadata file beside a backup's data.
fn meta_path(app: &TestApp, meta: &Value) -> PathBuf {
    app.kind_dir(jstr(meta, "type"))
        .join(format!("{}.json", stem(meta)))
}

/// The ids in one list of a rotation plan (`keep`, `delete`, `ignored`).
fn plan_ids(report: &Value, list: &str) -> BTreeSet<String> {
    report["plan"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no plan.{list} in {report:#}"))
        .iter()
        .map(|d| jstr(d, "id").to_string())
        .collect()
}

fn ids(metas: &[&Value]) -> BTreeSet<String> {
    metas.iter().map(|m| stem(m)).collect()
}

/// `rotate --max-backups N [--dry-run] --json`, which must succeed.
#[track_caller]
fn rotate(app: &TestApp, keep: u32, dry_run: bool) -> Value {
    let keep = keep.to_string();
    let mut args = vec!["--max-backups", keep.as_str(), "rotate", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    app.run(args).assert_code(0).json()
}

/// The stems of the backups of `kind` on disk, from `list --json`.
fn listed(app: &TestApp, kind: &str) -> BTreeSet<String> {
    app.list_of(kind).iter().map(stem).collect()
}

#[track_caller]
fn assert_exists(paths: &[PathBuf]) {
    for p in paths {
        assert!(p.exists(), "{} was deleted", p.display());
    }
}

#[track_caller]
fn assert_gone(paths: &[PathBuf]) {
    for p in paths {
        assert!(!p.exists(), "{} was not deleted", p.display());
    }
}

/// Data and metadata of a backup (and for a full backup, of its parts too).
fn files_of(app: &TestApp, meta: &Value) -> Vec<PathBuf> {
    let mut v = vec![meta_path(app, meta)];
    if jstr(meta, "type") == "full" {
        for p in meta["parts"].as_array().unwrap() {
            let kind = jstr(p, "type");
            let file = app.kind_dir(kind).join(jstr(p, "file_name"));
            let prefix = if kind == "database" {
                "db_backup_"
            } else {
                "storage_backup_"
            };
            v.push(
                app.kind_dir(kind)
                    .join(format!("{prefix}{}.json", jstr(meta, "timestamp"))),
            );
            v.push(file);
        }
    } else {
        v.push(data_path(meta));
    }
    v
}

// ---------------------------------------------------------------------------------------
// 8. keep_last, and --dry-run

#[test]
fn rotate_keeps_the_newest_and_dry_run_shows_the_same_plan_first() {
    let app = TestApp::new();
    let made: Vec<Value> = (0..6).map(|_| app.create("database")).collect();
    let oldest: Vec<&Value> = made[..3].iter().collect();
    let newest: Vec<&Value> = made[3..].iter().collect();
    let everything = snapshot_tree(&app.backups);

    // The dry run: the plan, and not one byte changed.
    let dry = rotate(&app, 3, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(plan_ids(&dry, "delete"), ids(&oldest), "{dry:#}");
    assert_eq!(plan_ids(&dry, "keep"), ids(&newest), "{dry:#}");
    assert!(plan_ids(&dry, "ignored").is_empty(), "{dry:#}");
    assert!(
        dry["deleted_files"].as_array().unwrap().is_empty(),
        "{dry:#}"
    );
    let text = app.run(["--max-backups", "3", "rotate", "--dry-run"]);
    text.assert_code(0);
    for m in &oldest {
        assert!(
            text.stdout
                .lines()
                .any(|l| l.starts_with("would delete") && l.contains(&stem(m))),
            "the dry run does not show {} as to be deleted\n{}",
            stem(m),
            text.describe()
        );
    }
    assert!(text.stdout.contains("dry run"), "{}", text.describe());
    assert_tree_matches(&everything, &app.backups);

    // The real run does exactly what the dry run said.
    let real = rotate(&app, 3, false);
    assert_eq!(real["dry_run"], false);
    assert_eq!(
        real["plan"], dry["plan"],
        "the real plan differs from the dry run"
    );
    let deleted: BTreeSet<PathBuf> = real["deleted_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    let expected: BTreeSet<PathBuf> = oldest.iter().flat_map(|m| files_of(&app, m)).collect();
    assert_eq!(deleted, expected);
    for m in &oldest {
        assert_gone(&files_of(&app, m));
    }
    for m in &newest {
        assert_exists(&files_of(&app, m));
    }
    assert_eq!(listed(&app, "database"), ids(&newest));
    let on_disk = files_under(&app.kind_dir("database"));
    assert_eq!(on_disk.len(), 6, "{on_disk:#?}");

    // A second run has nothing left to do.
    let again = rotate(&app, 3, false);
    assert!(plan_ids(&again, "delete").is_empty(), "{again:#}");
    assert_eq!(listed(&app, "database"), ids(&newest));
}

/// Backups made within one second are told apart by their `_N` suffix, numerically:
/// `_10` is newer than `_9`.
#[test]
fn rotate_orders_backups_of_one_second_by_their_numeric_suffix() {
    let app = TestApp::new();
    let real = app.create("database");
    let dir = app.kind_dir("database");
    let data = fs::read(data_path(&real)).unwrap();
    // Twelve backups stamped with the same second: base, _2 … _12.
    let base = "20200101_000000";
    let mut stamps = vec![base.to_string()];
    stamps.extend((2..=12).map(|n| format!("{base}_{n}")));
    for ts in &stamps {
        let file = dir.join(format!("db_backup_{ts}.db"));
        fs::write(&file, &data).unwrap();
        let mut m = real.clone();
        m["timestamp"] = ts.as_str().into();
        m["backup_path"] = file.to_string_lossy().into_owned().into();
        m["created_at"] = "2020-01-01T00:00:00+00:00".into();
        write_json(&dir.join(format!("db_backup_{ts}.json")), &m);
    }
    fs::remove_file(data_path(&real)).unwrap();
    fs::remove_file(meta_path(&app, &real)).unwrap();
    assert_eq!(app.list_of("database").len(), 12);

    let report = rotate(&app, 3, false);
    let want_kept: BTreeSet<String> = ["_10", "_11", "_12"]
        .iter()
        .map(|s| format!("db_backup_{base}{s}"))
        .collect();
    assert_eq!(
        plan_ids(&report, "keep"),
        want_kept,
        "kept the wrong ones of one second\n{report:#}"
    );
    assert_eq!(listed(&app, "database"), want_kept);
}

// ---------------------------------------------------------------------------------------
// 9. Full backups and their parts; broken backups

#[test]
fn parts_of_a_kept_full_backup_survive_and_go_with_their_full_backup() {
    let app = TestApp::new();
    let full1 = app.create("full");
    let dbs: Vec<Value> = (0..3).map(|_| app.create("database")).collect();
    let sts: Vec<Value> = (0..2).map(|_| app.create("storage")).collect();

    let report = rotate(&app, 1, false);
    assert_eq!(
        plan_ids(&report, "delete"),
        ids(&[&dbs[0], &dbs[1], &sts[0]]),
        "{report:#}"
    );
    assert_eq!(
        plan_ids(&report, "keep"),
        ids(&[&full1, &dbs[2], &sts[1]]),
        "{report:#}"
    );
    // The parts of the kept full backup are still there and it still verifies.
    assert_exists(&files_of(&app, &full1));
    app.run(["verify".as_ref(), data_path(&full1).as_os_str()])
        .assert_code(0);
    assert_gone(&files_of(&app, &dbs[0]));
    assert_gone(&files_of(&app, &dbs[1]));
    assert_gone(&files_of(&app, &sts[0]));
    assert_exists(&files_of(&app, &dbs[2]));
    assert_exists(&files_of(&app, &sts[1]));

    // A newer full backup pushes the first out, and its parts go with it.
    let full2 = app.create("full");
    let report = rotate(&app, 1, false);
    assert_eq!(plan_ids(&report, "delete"), ids(&[&full1]), "{report:#}");
    let deleted: BTreeSet<PathBuf> = report["deleted_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    let expected: BTreeSet<PathBuf> = files_of(&app, &full1).into_iter().collect();
    assert_eq!(expected.len(), 5, "manifest + 2 parts × (data, metadata)");
    assert_eq!(deleted, expected);
    assert_gone(&files_of(&app, &full1));
    assert_exists(&files_of(&app, &full2));
    assert_exists(&files_of(&app, &dbs[2]));
    assert_exists(&files_of(&app, &sts[1]));
    app.run(["verify", "--all"]).assert_code(0);
    let left = app.list().len();
    assert_eq!(
        left, 5,
        "full2 with its 2 parts, the newest database and storage"
    );
}

#[test]
fn a_backup_without_its_data_is_neither_counted_nor_deleted() {
    let app = TestApp::new();
    let good = app.create("database");
    let broken = app.create("database");
    fs::remove_file(data_path(&broken)).unwrap();

    let dry = rotate(&app, 1, true);
    let report = rotate(&app, 1, false);
    assert_eq!(report["plan"], dry["plan"]);
    assert_eq!(plan_ids(&report, "keep"), ids(&[&good]), "{report:#}");
    assert!(plan_ids(&report, "delete").is_empty(), "{report:#}");
    assert_eq!(plan_ids(&report, "ignored"), ids(&[&broken]), "{report:#}");
    assert_exists(&files_of(&app, &good));
    assert!(
        meta_path(&app, &broken).exists(),
        "the broken backup's metadata was deleted"
    );
}

#[test]
fn a_backup_that_failed_verification_never_pushes_a_good_one_out() {
    let app = TestApp::new();
    let older = app.create("database");
    let good = app.create("database");
    let bad = app.create("database");
    let p = data_path(&bad);
    let len = fs::metadata(&p).unwrap().len();
    flip_byte(&p, len / 2);
    let v = app.run(["verify".as_ref(), p.as_os_str()]);
    v.assert_code(1);
    assert!(v.stdout.contains("checksum"), "{}", v.describe());

    let dry = rotate(&app, 1, true);
    let report = rotate(&app, 1, false);
    assert_eq!(report["plan"], dry["plan"]);
    assert_eq!(plan_ids(&report, "keep"), ids(&[&good]), "{report:#}");
    assert_eq!(plan_ids(&report, "delete"), ids(&[&older]), "{report:#}");
    assert_eq!(plan_ids(&report, "ignored"), ids(&[&bad]), "{report:#}");
    assert_exists(&files_of(&app, &good));
    assert_exists(&files_of(&app, &bad));
    assert_gone(&files_of(&app, &older));
}

/// The newest backup is the bad one and the only other is good: with keep_last = 1 the
/// good one stays.
#[test]
fn with_keep_last_one_a_bad_newest_backup_keeps_the_older_good_one() {
    let app = TestApp::new();
    let good = app.create("database");
    let bad = app.create("database");
    let p = data_path(&bad);
    let len = fs::metadata(&p).unwrap().len();
    flip_byte(&p, len / 2);
    app.run(["verify".as_ref(), p.as_os_str()]).assert_code(1);

    let report = rotate(&app, 1, false);
    assert_eq!(plan_ids(&report, "keep"), ids(&[&good]), "{report:#}");
    assert!(plan_ids(&report, "delete").is_empty(), "{report:#}");
    assert_exists(&files_of(&app, &good));
    assert_exists(&files_of(&app, &bad));
    // And the good one verifies.
    app.run(["verify".as_ref(), data_path(&good).as_os_str()])
        .assert_code(0);
}

// ---------------------------------------------------------------------------------------
// 10. create --max-backups

#[test]
fn create_with_max_backups_rotates_after_each_backup() {
    let app = TestApp::new();
    // Start right after a second boundary, so the runs very likely share one second and
    // their names differ only by the `_N` suffix (correct code passes either way).
    poll_until(Duration::from_secs(5), "a fresh second", || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
            < 100
    });
    let mut made: Vec<Value> = Vec::new();
    for i in 0..4 {
        let r = app.run([
            "create",
            "--type",
            "database",
            "--max-backups",
            "2",
            "--json",
        ]);
        r.assert_code(0);
        let meta = r.json();
        let now_listed = listed(&app, "database");
        assert!(
            now_listed.contains(&stem(&meta)),
            "run {}: the backup just created ({}) was deleted by its own rotation; left: {now_listed:?}; made so far: {:?}",
            i + 1,
            stem(&meta),
            made.iter().map(stem).collect::<Vec<_>>()
        );
        assert!(now_listed.len() <= 2, "{now_listed:?}");
        made.push(meta);
    }
    eprintln!("made: {:?}", made.iter().map(stem).collect::<Vec<_>>());
    let newest: Vec<&Value> = made[2..].iter().collect();
    assert_eq!(listed(&app, "database"), ids(&newest));
    let on_disk = files_under(&app.kind_dir("database"));
    assert_eq!(on_disk.len(), 4, "{on_disk:#?}");
}

/// A new backup made in the same second as an existing `…_2` (the base name being free,
/// e.g. after rotation deleted it) must still be the newest: listed first and kept by
/// rotation. Deterministic: a `_2` backup is planted for every second of a window.
#[test]
fn a_new_backup_is_newer_than_every_backup_of_its_second() {
    use chrono::{Local, SecondsFormat, Timelike};
    let app = TestApp::new();
    let template = app.create("database");
    let dir = app.kind_dir("database");
    let data = fs::read(data_path(&template)).unwrap();
    fs::remove_file(data_path(&template)).unwrap();
    fs::remove_file(meta_path(&app, &template)).unwrap();
    let start = Local::now().with_nanosecond(0).unwrap();
    let mut planted = Vec::new();
    for off in -1..=30 {
        let t = start + chrono::Duration::seconds(off);
        let ts = format!("{}_2", t.format("%Y%m%d_%H%M%S"));
        let file = dir.join(format!("db_backup_{ts}.db"));
        fs::write(&file, &data).unwrap();
        let mut m = template.clone();
        m["timestamp"] = ts.as_str().into();
        m["backup_path"] = file.to_string_lossy().into_owned().into();
        m["created_at"] = t.to_rfc3339_opts(SecondsFormat::Secs, false).into();
        write_json(&dir.join(format!("db_backup_{ts}.json")), &m);
        planted.push(format!("db_backup_{ts}"));
    }

    let new = app.create("database");
    let second = &jstr(&new, "timestamp")[..15];
    let twin = format!("db_backup_{second}_2");
    assert!(
        planted.contains(&twin),
        "the backup was made outside the planted window"
    );
    // Keep only the planted backup of the same second.
    for p in &planted {
        if p != &twin {
            fs::remove_file(dir.join(format!("{p}.db"))).unwrap();
            fs::remove_file(dir.join(format!("{p}.json"))).unwrap();
        }
    }
    let rows = app.list_of("database");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        stem(&rows[0]),
        stem(&new),
        "the backup just made is not listed as the newest (it is named {}, beside {twin})",
        stem(&new)
    );
    let report = rotate(&app, 1, false);
    assert_eq!(
        plan_ids(&report, "keep"),
        ids(&[&new]),
        "rotation does not keep the backup just made\n{report:#}"
    );
    assert_exists(&files_of(&app, &new));
}

// ---------------------------------------------------------------------------------------
// 11. Leftovers

#[test]
fn rotate_removes_our_leftovers_and_nothing_else() {
    let app = TestApp::new();
    let real = app.create("database");
    let db_dir = app.kind_dir("database");
    let st_dir = app.kind_dir("storage");
    // Ours: a partial data file, and a data file whose metadata never landed.
    let ours = vec![
        db_dir.join("db_backup_20200101_000000.db.partial"),
        st_dir.join("storage_backup_20200101_000000.tar.zst.partial"),
        db_dir.join("db_backup_20200101_000001.json.partial"),
        db_dir.join("db_backup_20200101_000001.db"),
    ];
    // Not ours: someone else's files that merely end in .partial.
    let foreign = vec![
        db_dir.join("operator_notes.partial"),
        db_dir.join("copy_of_app.db.partial"),
        st_dir.join("upload.tar.zst.partial"),
        app.backups.join("elsewhere.partial"),
    ];
    for (i, p) in ours.iter().chain(&foreign).enumerate() {
        fs::write(p, random_bytes(i as u64, 100)).unwrap();
    }

    // A dry run touches none of them.
    let everything = snapshot_tree(&app.backups);
    rotate(&app, 5, true);
    assert_tree_matches(&everything, &app.backups);

    let report = rotate(&app, 5, false);
    let cleaned: BTreeSet<PathBuf> = report["cleaned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert_gone(&ours);
    assert_exists(&foreign);
    assert_eq!(cleaned, ours.iter().cloned().collect(), "{report:#}");
    assert_exists(&files_of(&app, &real));
    assert_eq!(listed(&app, "database"), ids(&[&real]));
}

/// A `.json.partial` whose backup's metadata did land (it is a complete backup) must not
/// take the data file with it.
#[test]
fn rotate_keeps_a_complete_backup_beside_a_stale_metadata_partial() {
    let app = TestApp::new();
    let real = app.create("database");
    let stale = meta_path(&app, &real).with_extension("json.partial");
    fs::write(&stale, b"{").unwrap();
    let report = rotate(&app, 5, false);
    assert!(!stale.exists(), "{report:#}");
    assert_exists(&files_of(&app, &real));
    app.run(["verify".as_ref(), data_path(&real).as_os_str()])
        .assert_code(0);
}

// ---------------------------------------------------------------------------------------
// Clock skew and symlinks (issue 13)

/// A backup dated a year ahead (a clock that ran ahead, then NTP corrected it) must not
/// take the place of the newest: with keep_last = 2 the backup just taken survives the
/// rotation after it, the future one is kept and reported by `list`, `status` and the
/// rotation's log line.
#[test]
fn a_backup_from_the_future_never_makes_the_one_just_taken_deletable() {
    let app = TestApp::new();
    let old = app.create("database");
    let kept = app.create("database");
    let ahead = app.create("database");
    // Move `ahead` a year into the future: its metadata's created_at and timestamp, and
    // its files' names.
    let dir = app.kind_dir("database");
    let future_ts = "20991231_235959";
    let mut meta: Value =
        serde_json::from_slice(&fs::read(meta_path(&app, &ahead)).unwrap()).unwrap();
    let new_data = dir.join(format!("db_backup_{future_ts}.db"));
    fs::rename(data_path(&ahead), &new_data).unwrap();
    fs::remove_file(meta_path(&app, &ahead)).unwrap();
    meta["created_at"] = Value::from("2099-12-31T23:59:59+00:00");
    meta["timestamp"] = Value::from(future_ts);
    meta["backup_path"] = Value::from(new_data.display().to_string());
    fs::write(
        dir.join(format!("db_backup_{future_ts}.json")),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();

    let just_taken = app
        .run([
            "--max-backups",
            "2",
            "create",
            "--type",
            "database",
            "--json",
        ])
        .assert_code(0)
        .json();
    let names: BTreeSet<String> = app.list().iter().map(stem).collect();
    assert!(
        names.contains(&stem(&just_taken)),
        "the backup just taken was deleted: {names:?}"
    );
    assert!(
        names.contains(&format!("db_backup_{future_ts}")),
        "{names:?}"
    );
    assert!(
        names.contains(&stem(&kept)),
        "keep_last counts present backups: {names:?}"
    );
    assert!(
        !names.contains(&stem(&old)),
        "the oldest is beyond keep_last: {names:?}"
    );

    let list = app.run(["list"]).assert_code(0).stdout.clone();
    let row = list
        .lines()
        .find(|l| l.contains(future_ts))
        .unwrap_or_default();
    assert!(row.contains("DATED IN THE FUTURE"), "{list}");
    let status = app.run(["status"]).stdout.clone();
    assert!(
        status.contains("dated in the future") && status.contains(future_ts),
        "{status}"
    );
    let status_json = app.status_json();
    let newest = &status_json["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| jstr(t, "type") == "database")
        .unwrap()["newest"];
    assert_eq!(
        newest.as_str(),
        Some(jstr(&just_taken, "backup_path").rsplit('/').next().unwrap())
    );
    assert!(
        app.backup_log().contains("dated in the future"),
        "{}",
        app.backup_log()
    );
}

/// A backup whose data file is a symlink frees nothing when rotated but the link: the
/// report must not count the target's size.
#[test]
fn rotating_a_symlinked_backup_reports_only_what_is_freed() {
    let app = TestApp::new();
    let first = app.create("database");
    app.create("database");
    let data = data_path(&first);
    let elsewhere = app.path().join("kept-elsewhere.db");
    fs::rename(&data, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &data).unwrap();
    let report = rotate(&app, 1, false);
    assert!(
        plan_ids(&report, "delete").contains(&stem(&first)),
        "{report:#}"
    );
    assert_eq!(report["freed_bytes"], 0, "{report:#}");
    assert!(elsewhere.exists());
}
