//! The store's garbage, deterministically: what a killed run leaves (an orphaned part of
//! a full snapshot, whose packs older snapshots share) is cleaned without a pack anyone
//! still lists, and `rotate` deletes the packs only the snapshots it deleted listed.

use super::*;

/// `--max-backups N rotate --json`, which must succeed.
#[track_caller]
fn rotate(app: &TestApp, keep: u32) -> Value {
    app.run(["--max-backups", &keep.to_string(), "rotate", "--json"])
        .assert_code(0)
        .json()
}

/// A full snapshot whose manifest never landed (a `create --type full` killed between
/// its parts' commit and the manifest's, or a `rotate` killed right after unlinking the
/// manifest) leaves two orphaned parts; the next run's cleaning deletes them, but not
/// the packs they share with the snapshot taken before.
#[test]
fn an_orphaned_part_of_a_full_snapshot_is_cleaned_without_the_packs_older_snapshots_list() {
    let app = snapshot_app();
    let tree = snapshot_tree(&app.storage);
    let older = app.create("storage");
    let full = app.create("full");
    let member = app
        .list_of("storage")
        .into_iter()
        .find(|r| r["part_of"].is_string())
        .expect("the full backup's storage part");
    assert_eq!(
        packs_of(&member),
        packs_of(&older),
        "the full backup's storage part reuses the older snapshot's pack"
    );
    fs::remove_file(tree_of(&full)).unwrap();

    let next = app.run(["create", "--type", "database", "--json"]);
    next.assert_code(0);
    let rows = app.list();
    assert!(
        rows.iter().all(|r| r["part_of"].is_null()),
        "an orphaned part is still listed: {rows:#?}"
    );
    for id in packs_of(&older) {
        assert!(
            pack_path(&app, &id).exists(),
            "cleaning the orphaned parts deleted pack {id}, which {} lists\n{}",
            name_of(&older),
            next.describe()
        );
    }
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
    let dest = app.root.join("restored");
    restore_to(&app, &tree_of(&older), &dest, &[]);
    assert_tree_matches(&tree, &dest);
    assert_store_exact(&app, "after cleaning the orphaned parts");
}

/// Three snapshots: A (file x), B (x unchanged, y added), C (x rewritten). Keeping one
/// deletes A and B; the pack of x's first version, listed by A and B only, must go with
/// them — not wait for the next run's cleaning.
#[test]
fn rotate_deletes_the_packs_only_the_snapshots_it_deleted_listed() {
    let app = snapshot_app();
    let a = app.create("storage");
    app.write_storage_file("client_3/y.bin", &random_bytes(31, 40_000));
    let b = app.create("storage");
    app.write_storage_file("client_1/images/portrait_1.jpg", &random_bytes(32, 20_000));
    app.write_storage_file("client_2/images/portrait_2.jpg", &random_bytes(33, 20_000));
    app.write_storage_file("client_1/videos/video_1.mp4", &random_bytes(34, 50_000));
    app.write_storage_file("client_2/videos/video_2.mp4", &random_bytes(35, 50_000));
    app.write_storage_file("client_1/nft_markers/portrait_1.fset", b"new marker 1\n");
    app.write_storage_file("client_2/nft_markers/portrait_2.fset", b"new marker 2\n");
    let c = app.create("storage");
    let only_old: BTreeSet<String> = packs_of(&a)
        .union(&packs_of(&b))
        .filter(|p| !packs_of(&c).contains(*p))
        .cloned()
        .collect();
    assert!(
        !only_old.is_empty(),
        "A and B share no pack C does not need"
    );

    let report = rotate(&app, 1);
    let deleted: BTreeSet<String> = report["deleted_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    for id in &only_old {
        let path = pack_path(&app, id).display().to_string();
        assert!(
            deleted.contains(&path) && !Path::new(&path).exists(),
            "rotate deleted {} and {} but kept pack {id}, which only they listed:\n{report:#}",
            name_of(&a),
            name_of(&b)
        );
    }
    assert_store_exact(&app, "right after the rotate");
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
}
