//! Partial restores (`restore --path`, issue 17): exactly the selected subtrees into a
//! `--target`, two paths at once, a path that matches nothing refused with the archive's
//! top-level entries, in place only the selected folder replaced (its previous version
//! kept aside, every sibling untouched down to its inode), a hard link whose data file
//! lies outside the selection, and a corrupt archive refused before anything changes.

use super::*;

/// The entries of `tree` under any of `paths`, plus the directories above them.
fn selected(tree: &BTreeMap<PathBuf, Node>, paths: &[&str]) -> BTreeMap<PathBuf, Node> {
    tree.iter()
        .filter(|(rel, _)| {
            paths
                .iter()
                .any(|p| rel.starts_with(p) || Path::new(p).starts_with(rel))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `--path p` for each of `paths`.
fn path_args(paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| ["--path".to_string(), p.to_string()])
        .collect()
}

fn restore_paths_to_target(kind: Kind, paths: &[&str]) {
    let app = TestApp::new();
    build_tree(&app);
    let at_backup = snapshot_tree(&app.storage);
    let backup = data_path(&app.create(kind.name()));
    change_tree(&app);
    let db_before = live_dump(&app);
    let dest = app.root.join("partial-out");
    let mut args = vec![
        "restore".to_string(),
        backup.display().to_string(),
        "--target".to_string(),
        dest.display().to_string(),
    ];
    args.extend(path_args(paths));
    let r = app.run(&args);
    r.assert_code(0);
    let restored = if kind == Kind::Full {
        dest.join("storage")
    } else {
        dest.clone()
    };
    let want = selected(&at_backup, paths);
    assert!(
        want.len() > paths.len() + 1,
        "the selection is trivial: {want:#?}"
    );
    assert_eq!(
        snapshot_tree(&restored),
        want,
        "the target does not hold exactly the selected subtrees\n{}",
        r.describe()
    );
    if kind == Kind::Full {
        assert_eq!(
            snapshot_names(&dest),
            vec!["storage".to_string()],
            "a partial restore of a full backup restored more than storage paths"
        );
    }
    assert_eq!(live_dump(&app), db_before, "the live database changed");
    assert!(restore_leftovers(&app.root).is_empty());
}

#[test]
fn path_with_target_restores_exactly_the_selected_subtree() {
    restore_paths_to_target(Kind::Storage, &["client_1/"]);
}

#[test]
fn two_paths_of_a_full_backup_restore_both_and_only_storage() {
    restore_paths_to_target(Kind::Full, &["client_1/notes", "tools"]);
}

#[test]
fn a_path_matching_nothing_is_refused_before_anything_is_touched() {
    let app = TestApp::new();
    build_tree(&app);
    let backup = data_path(&app.create("storage"));
    change_tree(&app);
    let before = live(&app);
    for extra in [&[][..], &["--yes"][..]] {
        let dest = app.root.join("never");
        let mut args = vec![
            "restore".to_string(),
            backup.display().to_string(),
            "--path".into(),
            "client_1".into(),
            "--path".into(),
            "client_9/".into(),
        ];
        if extra.is_empty() {
            args.extend(["--target".to_string(), dest.display().to_string()]);
        } else {
            args.push("--yes".into());
        }
        let r = app.run(&args);
        r.assert_code(2);
        let err = &r.stderr;
        assert!(
            err.contains("client_9") && err.contains("client_1/") && err.contains("tools/"),
            "the refusal does not name the path and the top-level entries:\n{}",
            r.describe()
        );
        assert!(!err.contains("--path client_1 "), "{err}");
        assert!(!dest.exists(), "the target was created");
        assert_live_unchanged(&app, &before, "a --path matching nothing");
    }
}

#[test]
fn in_place_partial_restore_replaces_only_that_folder_and_keeps_it_aside() {
    let app = TestApp::new();
    build_tree(&app);
    let at_backup = snapshot_tree(&app.storage);
    let backup = data_path(&app.create("storage"));
    change_tree(&app);
    let changed = snapshot_tree(&app.storage);
    let db_before = live_dump(&app);
    let sibling = |rel: &str| {
        let m = fs::symlink_metadata(app.storage.join(rel)).unwrap();
        (
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    let siblings = ["client_2", "client_3", "tools", "added.txt", "links"];
    let ids_before: Vec<_> = siblings.iter().map(|s| sibling(s)).collect();
    let root_ino = fs::metadata(&app.storage).unwrap().ino();

    // The plan says what is replaced and where the previous version goes.
    let dry = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--path".as_ref(),
        "client_1/".as_ref(),
        "--dry-run".as_ref(),
    ]);
    dry.assert_code(0);
    let plan = format!("{}{}", dry.stdout, dry.stderr);
    assert!(
        plan.contains("replace only client_1") && plan.contains("storage.pre-restore-"),
        "the plan does not say what a partial restore replaces:\n{}",
        dry.describe()
    );
    assert_eq!(
        snapshot_tree(&app.storage),
        changed,
        "--dry-run changed the tree"
    );

    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--path".as_ref(),
        "client_1/".as_ref(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);

    // client_1 as it was at backup time; everything else as it was just before.
    let now = snapshot_tree(&app.storage);
    let (now_c1, now_rest): (BTreeMap<_, _>, BTreeMap<_, _>) = now
        .into_iter()
        .partition(|(k, _)| k.starts_with("client_1"));
    let want_c1: BTreeMap<_, _> = at_backup
        .iter()
        .filter(|(k, _)| k.starts_with("client_1"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        now_c1,
        want_c1,
        "client_1 is not the backup's\n{}",
        r.describe()
    );
    let mut want_rest: BTreeMap<_, _> = changed
        .iter()
        .filter(|(k, _)| !k.starts_with("client_1"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The storage directory's own mtime: a rename inside it changes it, nothing else.
    want_rest.remove(Path::new(""));
    now_rest.get(Path::new("")).expect("the root");
    let now_rest: BTreeMap<_, _> = now_rest
        .into_iter()
        .filter(|(k, _)| k != Path::new(""))
        .collect();
    assert_eq!(now_rest, want_rest, "a path outside --path changed");
    let ids_after: Vec<_> = siblings.iter().map(|s| sibling(s)).collect();
    assert_eq!(
        ids_after, ids_before,
        "a sibling was touched (inode/mtime/ctime)"
    );
    assert_eq!(
        fs::metadata(&app.storage).unwrap().ino(),
        root_ino,
        "the storage directory itself was replaced"
    );

    // The previous client_1, alone, under storage.pre-restore-*/.
    let pre = children_containing(&app.root, "storage.pre-restore-");
    assert_eq!(pre.len(), 1, "{pre:#?}\n{}", r.describe());
    assert_eq!(snapshot_names(&pre[0]), vec!["client_1".to_string()]);
    let want_aside: BTreeMap<_, _> = changed
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("client_1")
                .ok()
                .map(|rel| (rel.to_path_buf(), v.clone()))
        })
        .collect();
    assert_tree_matches(&want_aside, &pre[0].join("client_1"));
    assert_eq!(live_dump(&app), db_before, "the database changed");
    assert!(children_containing(&app.root, ".restore-").is_empty());
    app.run(["verify", "--all"]).assert_code(0);
}

#[test]
fn a_selected_hard_link_to_a_file_outside_the_selection_restores_its_content() {
    let app = TestApp::new();
    build_tree(&app);
    // Sorted first, so the archive carries the data under aaa/ and client_1's name is
    // the link entry.
    let data = random_bytes(7, 50_000);
    let orig = app.write_storage_file("aaa/original.bin", &data);
    fs::hard_link(&orig, app.storage.join("client_1/twin.bin")).unwrap();
    fs::hard_link(&orig, app.storage.join("client_1/notes/twin2.bin")).unwrap();
    let backup = data_path(&app.create("storage"));
    let dest = app.root.join("out");
    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--path".as_ref(),
        "client_1".as_ref(),
        "--target".as_ref(),
        dest.as_os_str(),
    ]);
    r.assert_code(0);
    let twin = dest.join("client_1/twin.bin");
    assert_eq!(fs::read(&twin).unwrap(), data, "{}", r.describe());
    let twin2 = dest.join("client_1/notes/twin2.bin");
    assert_eq!(fs::read(&twin2).unwrap(), data);
    assert_eq!(
        fs::metadata(&twin).unwrap().ino(),
        fs::metadata(&twin2).unwrap().ino(),
        "the two selected links are no longer one file"
    );
    assert!(
        !dest.join("aaa").exists(),
        "the unselected data file was restored"
    );
    assert!(children_containing(&app.root, ".restore-").is_empty());
}

#[test]
fn a_corrupt_archive_is_refused_before_a_partial_restore_touches_anything() {
    let app = TestApp::new();
    build_tree(&app);
    let backup = data_path(&app.create("storage"));
    change_tree(&app);
    let len = fs::metadata(&backup).unwrap().len();
    flip_byte(&backup, len / 2);
    let before = live(&app);
    let r = app.run([
        "restore".as_ref(),
        backup.as_os_str(),
        "--path".as_ref(),
        "client_1".as_ref(),
        "--yes".as_ref(),
    ]);
    r.assert_code(1);
    assert!(r.stderr.contains("checksum"), "{}", r.describe());
    assert_live_unchanged(&app, &before, "a corrupt archive");
}
