//! A damaged content store: a lost pack fails `verify` of every snapshot that lists it,
//! naming the files it costs (and only those snapshots); a flipped byte is found by
//! `--read-data` (the default only checks each chunk is present) and named by file; and
//! a restore of a damaged snapshot is refused before the live tree is touched.

use crate::restore::{assert_live_unchanged, live};

use super::*;

/// Paths of the regular files under `root`, relative to it, as `verify` names them.
fn relative_files(root: &Path) -> Vec<String> {
    files_under(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_lost_pack_fails_every_snapshot_that_lists_it_naming_its_files() {
    let app = snapshot_app();
    let old_files = relative_files(&app.storage);
    assert!(old_files.len() >= 6, "{old_files:?}");
    let s1 = app.create("storage");
    let lost = packs_of(&s1);
    assert_eq!(lost.len(), 1, "a small tree fills one pack: {s1:#}");
    let lost = lost.into_iter().next().unwrap();
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let s2 = app.create("storage");
    assert!(packs_of(&s2).contains(&lost), "{s2:#}");
    let db = app.create("database");
    assert!(!packs_of(&db).contains(&lost), "{db:#}");

    fs::remove_file(pack_path(&app, &lost)).unwrap();

    let (code, reports) = verify_reports(&app, &["--all"]);
    assert_eq!(code, Some(1), "{reports:#?}");
    assert_eq!(reports.len(), 3, "{reports:#?}");
    for snapshot in [&s1, &s2] {
        let report = &reports[&name_of(snapshot)];
        assert_eq!(report["ok"], false, "{report:#}");
        let why = failure_text(report);
        assert!(
            why.contains(&lost),
            "the failure does not name the pack: {why}"
        );
        for f in &old_files {
            assert!(
                why.contains(f.as_str()),
                "the failure does not name {f}: {why}"
            );
        }
        assert!(
            !why.contains("portrait_3"),
            "a file whose chunks are elsewhere is named: {why}"
        );
        assert!(
            why.contains(&format!("{} file(s) cannot be restored", old_files.len())),
            "{why}"
        );
    }
    assert_eq!(reports[&name_of(&db)]["ok"], true, "{reports:#?}");

    // The text report says the same, one line per snapshot.
    let text = app.run(["verify", "--all"]);
    text.assert_code(1);
    for snapshot in [&s1, &s2] {
        let line = text
            .stdout
            .lines()
            .find(|l| l.contains(&name_of(snapshot)))
            .unwrap_or_else(|| panic!("{} not reported\n{}", name_of(snapshot), text.describe()));
        assert!(line.starts_with("FAIL"), "{line}");
        for f in &old_files {
            assert!(line.contains(f.as_str()), "{line}");
        }
    }
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains(&name_of(&db))),
        "{}",
        text.describe()
    );
    assert!(
        text.stderr.contains("2 of 3 backups FAILED verification"),
        "{}",
        text.describe()
    );
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_read_data_and_a_restore_of_it_is_refused() {
    let app = snapshot_app();
    let tree_1 = snapshot_tree(&app.storage);
    let s1 = app.create("storage");
    // The only new file of the second snapshot: its pack holds that file alone.
    app.write_storage_file("client_9/new.bin", &random_bytes(9, 200_000));
    let s2 = app.create("storage");
    let new: Vec<String> = packs_of(&s2).difference(&packs_of(&s1)).cloned().collect();
    assert_eq!(new.len(), 1, "{s2:#}");
    let pack = pack_path(&app, &new[0]);
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() / 2);

    // The default check reads each pack once and checks its SHA-256: found, named.
    let (code, reports) = verify_reports(&app, &[name_of(&s2).as_str()]);
    assert_eq!(code, Some(1), "{reports:#?}");
    let why = failure_text(&reports[&name_of(&s2)]);
    assert!(
        why.contains("1 file(s) cannot be restored: client_9/new.bin") && why.contains("SHA-256"),
        "the failure does not name the damaged file and pack: {why}"
    );
    // Reading the data back finds it too, names the file and nothing else.
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(1), "{reports:#?}");
    let why = failure_text(&reports[&name_of(&s2)]);
    assert!(
        why.contains("1 file(s) cannot be restored: client_9/new.bin"),
        "the failure does not name the damaged file: {why}"
    );
    assert_eq!(reports[&name_of(&s1)]["ok"], true, "{reports:#?}");

    // A restore of it over the live tree is refused before anything changes.
    let aside = tempfile::tempdir().unwrap();
    let copy = aside.path().join("storage");
    copy_tree(&app.storage, &copy);
    let before = live(&app);
    let r = app.run(["restore", name_of(&s2).as_str(), "--yes"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("client_9/new.bin"),
        "the refusal does not name the damaged file\n{}",
        r.describe()
    );
    assert_same_tree(&copy, &app.storage);
    assert_live_unchanged(
        &app,
        &before,
        "after a refused restore of a damaged snapshot",
    );
    // Into a new target too: refused, and the target not created.
    let dest = app.root.join("elsewhere");
    let r = app.run([
        "restore".as_ref(),
        name_of(&s2).as_ref(),
        "--target".as_ref(),
        dest.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(1);
    assert!(
        !dest.exists(),
        "the refused restore created {}",
        dest.display()
    );
    assert_live_unchanged(&app, &before, "after a refused restore to a target");
    // The undamaged snapshot still restores.
    let good = app.root.join("good");
    restore_to(&app, &tree_of(&s1), &good, &[]);
    assert_tree_matches(&tree_1, &good);
}

#[test]
fn a_lost_pack_is_never_inherited_the_next_snapshot_reads_its_files_again_and_says_so() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    let lost = packs_of(&s1).into_iter().next().expect("a pack");
    fs::remove_file(pack_path(&app, &lost)).unwrap();

    // Nothing changed in the tree, yet every file is read again (its data is gone), the
    // run warns (exit 3), and the new snapshot does not list the lost pack.
    let run = app.run(["create", "--type", "storage", "--json"]);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    assert!(
        run.describe().contains("missing or damaged pack"),
        "{}",
        run.describe()
    );
    let s2 = run.json();
    assert!(!packs_of(&s2).contains(&lost), "{s2:#}");
    assert_eq!(snap(&s2)["unchanged_files"], 0, "{s2:#}");
    let (code, reports) = verify_reports(&app, &["--latest", "storage", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(&s2), &target, &[]);
    assert_same_tree(&app.storage, &target);

    // Healed: the snapshot after it reuses its packs again, without a warning.
    let s3 = app.create("storage");
    assert!(snap(&s3)["unchanged_files"].as_u64().unwrap() > 0, "{s3:#}");
}

#[test]
fn a_snapshot_that_failed_verification_is_no_parent() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    let pack = pack_path(&app, packs_of(&s1).iter().next().expect("a pack"));
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() / 2);
    let (code, _) = verify_reports(&app, &["--latest", "storage", "--read-data"]);
    assert_eq!(code, Some(1));
    // The next snapshot compares with nothing: every file read, no chunk of the damaged
    // one reused, and it verifies.
    let s2 = app.create("storage");
    assert_eq!(snap(&s2)["unchanged_files"], 0, "{s2:#}");
    assert!(packs_of(&s2).is_disjoint(&packs_of(&s1)), "{s2:#}");
    let (code, reports) = verify_reports(&app, &[name_of(&s2).as_str(), "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
}

#[test]
fn verify_reads_each_pack_once_per_run_and_maps_a_bad_one_to_every_snapshot_and_file() {
    if !require(
        "strace, able to trace",
        crate::faults::crash::strace_usable(),
    ) {
        return;
    }
    let app = snapshot_app();
    let s1 = app.create("storage");
    app.write_storage_file("client_9/new.bin", &random_bytes(9, 200_000));
    let s2 = app.create("storage");
    app.write_storage_file("client_9/more.bin", &random_bytes(10, 200_000));
    let s3 = app.create("storage");
    let shared: Vec<String> = packs_of(&s1).into_iter().collect();
    assert_eq!(shared.len(), 1, "{s1:#}");
    for later in [&s2, &s3] {
        assert!(packs_of(later).contains(&shared[0]), "{later:#}");
    }

    // Three snapshots list the first pack: a run reads it (and every other pack) once.
    for args in [
        &["verify", "--all"][..],
        &["verify", "--all", "--read-data"][..],
    ] {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("verify.strace");
        let r = run(crate::faults::crash::strace_command(
            &app, args, "openat", None, &log,
        ));
        r.assert_code(0);
        let trace = fs::read_to_string(&log).unwrap();
        for pack in packs_of(&s3) {
            let opened = trace
                .lines()
                .filter(|l| l.contains(&format!("{pack}.pack\"")))
                .count();
            assert_eq!(
                opened, 1,
                "{args:?}: pack {pack} opened {opened} times:\n{trace}"
            );
        }
    }

    // Damage the shared pack: every snapshot that lists it fails, each naming its files.
    let pack = pack_path(&app, &shared[0]);
    flip_byte(&pack, fs::metadata(&pack).unwrap().len() / 3);
    let (code, reports) = verify_reports(&app, &["--all"]);
    assert_eq!(code, Some(1), "{reports:#?}");
    for snapshot in [&s1, &s2, &s3] {
        let why = failure_text(&reports[&name_of(snapshot)]);
        assert!(
            why.contains("cannot be restored") && why.contains(&shared[0]),
            "{}: {why}",
            name_of(snapshot)
        );
    }
}
