//! The store heals: packs end with a trailer listing their chunks, an index of every
//! chunk serves deduplication across all snapshots (a file deleted and added again is not
//! stored twice), and `repair` mends the snapshots whose data is gone — a chunk found in
//! another pack is pointed there, a file with a chunk found nowhere is left out and named
//! — writes the index anew from the trailers, and keeps each damaged original aside.

use super::*;

/// `repair --json [extra…]`: its exit code and report.
fn repair(app: &TestApp, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["repair", "--json"];
    args.extend_from_slice(extra);
    let r = app.run(&args);
    let report = r.json();
    (r.code(), report)
}

fn index_files(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.backups.join("store/index"))
}

/// A backup's stem (`storage_snapshot_TS`), from its metadata.
fn stem(meta: &Value) -> String {
    let name = name_of(meta);
    name.split('.').next().unwrap_or_default().to_string()
}

/// The names of the snapshots of `kind` listed now.
fn names(app: &TestApp, kind: &str) -> Vec<String> {
    app.list_of(kind).iter().map(name_of).collect()
}

#[test]
fn a_file_deleted_and_added_again_is_stored_once_and_every_pack_ends_with_its_trailer() {
    let app = snapshot_app();
    let video = app.storage.join("client_1/videos/video_1.mp4");
    let bytes = fs::read(&video).unwrap();
    let s1 = app.create("storage");
    assert_eq!(
        index_files(&app).len(),
        1,
        "one index file per snapshot that adds packs"
    );
    fs::remove_file(&video).unwrap();
    let s2 = app.create("storage");
    assert_eq!(snap(&s2)["added_chunks"], 0, "{s2:#}");
    // Back again, with a new inode and mtime: its parent does not have it, the index does.
    fs::write(&video, &bytes).unwrap();
    let s3 = app.create("storage");
    assert_eq!(snap(&s3)["read_files"], 1, "{s3:#}");
    assert_eq!(snap(&s3)["added_chunks"], 0, "stored again: {s3:#}");
    assert_eq!(packs_of(&s3), packs_of(&s1), "{s3:#}");
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(&s3), &target, &[]);
    assert_same_tree(&app.storage, &target);
    // Each pack ends with the trailer's magic.
    for id in packs_of(&s1) {
        let pack = fs::read(pack_path(&app, &id)).unwrap();
        assert_eq!(&pack[pack.len() - 8..], b"VXPACKT1", "pack {id}");
    }
}

#[test]
fn repair_points_chunks_at_a_good_copy_and_loses_nothing_when_one_exists() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    let first = packs_of(&s1).into_iter().next().expect("a pack");
    // Cut short: the next snapshot reads every file again and stores its chunks anew.
    let pack = pack_path(&app, &first);
    cut_in_half(&pack);
    let s2 = app.run(["create", "--type", "storage", "--json"]);
    assert_eq!(s2.code(), Some(3), "{}", s2.describe());
    let (code, _) = verify_reports(&app, &[name_of(&s1).as_str()]);
    assert_eq!(code, Some(1));

    let (code, dry) = repair(&app, &["--dry-run"]);
    assert_eq!(code, Some(0), "{dry:#}");
    assert_eq!(dry["backups"][0]["backup"], name_of(&s1), "{dry:#}");
    assert!(dry["backups"][0]["repaired_as"].is_null(), "{dry:#}");
    assert!(
        app.backups.join("damaged").metadata().is_err(),
        "a dry run changed things"
    );

    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let fixed = &report["backups"][0];
    assert_eq!(
        fixed["lost_files"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    // The chunks before the cut still read back right and stay; the rest point at the
    // copies the second snapshot stored.
    assert!(
        fixed["relocated_chunks"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    let name = fixed["repaired_as"].as_str().expect("repaired").to_string();
    assert!(
        name.starts_with(&stem(&s1)),
        "{name} is not in {}'s second",
        stem(&s1)
    );
    // The original is kept aside, no longer listed; every listed snapshot verifies.
    assert!(app.backups.join("damaged").join(stem(&s1)).is_dir());
    assert!(!names(&app, "storage").contains(&name_of(&s1)));
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    let target = app.root.join("restored");
    let repaired = app.list_of("storage");
    let repaired = repaired.iter().find(|r| name_of(r) == name).unwrap();
    restore_to(&app, &tree_of(repaired), &target, &[]);
    assert_same_tree(&app.storage, &target);
    assert_eq!(repaired["repaired"]["from"], name_of(&s1), "{repaired:#}");
    // The damaged pack no snapshot lists any more goes with the next cleaning.
    app.create("storage");
    assert_store_exact(&app, "after repair and a create");
}

#[test]
fn repair_leaves_out_and_names_the_files_whose_data_is_gone_and_the_next_backup_reads_them_again() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let s2 = app.create("storage");
    let new_packs: Vec<String> = packs_of(&s2).difference(&packs_of(&s1)).cloned().collect();
    assert_eq!(new_packs.len(), 1, "{s2:#}");
    fs::remove_file(pack_path(&app, &new_packs[0])).unwrap();

    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(3), "files were lost: {report:#}");
    assert_eq!(
        report["damaged_packs"][0]["pack"],
        new_packs[0].as_str(),
        "{report:#}"
    );
    let backups = report["backups"].as_array().unwrap();
    assert_eq!(
        backups.len(),
        1,
        "only the snapshot that lost data: {report:#}"
    );
    assert_eq!(backups[0]["backup"], name_of(&s2));
    assert_eq!(
        backups[0]["lost_files"],
        serde_json::json!(["client_3/images/portrait_3.jpg"]),
        "{report:#}"
    );
    let text = app.run(["repair", "--dry-run"]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("no snapshot needs repairing"),
        "{}",
        text.describe()
    );

    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    let repaired = app.list_of("storage").into_iter().next().unwrap();
    assert_eq!(repaired["repaired"]["lost_files"], 1, "{repaired:#}");
    let listed = app.run(["list"]);
    assert!(
        listed
            .stdout
            .contains(&format!("repaired from {} (1 file(s) lost)", name_of(&s2))),
        "{}",
        listed.describe()
    );
    assert!(
        repaired["warnings"][0]
            .as_str()
            .unwrap()
            .contains("1 file(s) left out"),
        "{repaired:#}"
    );
    // The next snapshot reads the lost file again (its parent, the repaired one, lacks it).
    let s3 = app.create("storage");
    assert_eq!(snap(&s3)["read_files"], 1, "{s3:#}");
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(&s3), &target, &[]);
    assert_same_tree(&app.storage, &target);
    assert_store_exact(&app, "after repair");
}

#[test]
fn a_lost_index_is_written_anew_from_the_packs_trailers() {
    let app = snapshot_app();
    app.create("storage");
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let s2 = app.create("storage");
    app.create("database");
    let packs = listed_packs(&app.list());
    fs::remove_dir_all(app.backups.join("store/index")).unwrap();

    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["index"]["from_trailers"], packs.len(), "{report:#}");
    assert_eq!(report["index"]["from_entry_lists"], 0, "{report:#}");
    assert!(
        report["backups"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(index_files(&app).len(), 1, "{:?}", index_files(&app));

    // A damaged index file is set aside and written anew by the next backup's upkeep; the
    // backup says so, and deduplication still works from what the rest says.
    let file = &index_files(&app)[0];
    fs::write(file, b"not an index").unwrap();
    let video = app.storage.join("client_3/images/portrait_3.jpg");
    let bytes = fs::read(&video).unwrap();
    fs::remove_file(&video).unwrap();
    fs::write(&video, &bytes).unwrap();
    let run = app.run(["create", "--type", "storage", "--json"]);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    assert!(run.describe().contains("index"), "{}", run.describe());
    let s3 = run.json();
    assert_eq!(snap(&s3)["added_chunks"], 0, "{s3:#}");
    assert_eq!(packs_of(&s3), packs_of(&s2));
    let again = app.run(["create", "--type", "storage"]);
    again.assert_code(0);
}

#[test]
fn a_full_backup_is_repaired_whole_and_restores() {
    let app = snapshot_app();
    let before = app.create("full");
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let full = app.create("full");
    let storage_part = app
        .list_of("storage")
        .into_iter()
        .find(|r| r["part_of"] == stem(&full))
        .unwrap();
    let before_part = app
        .list_of("storage")
        .into_iter()
        .find(|r| r["part_of"] == stem(&before))
        .unwrap();
    let new: Vec<String> = packs_of(&storage_part)
        .difference(&packs_of(&before_part))
        .cloned()
        .collect();
    fs::remove_file(pack_path(&app, &new[0])).unwrap();

    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(3), "{report:#}");
    let fixed = &report["backups"][0];
    assert_eq!(fixed["backup"], name_of(&full), "{report:#}");
    assert_eq!(
        fixed["lost_files"],
        serde_json::json!(["storage: client_3/images/portrait_3.jpg"]),
        "{report:#}"
    );
    let name = fixed["repaired_as"].as_str().unwrap().to_string();
    let fulls = names(&app, "full");
    assert!(
        fulls.contains(&name) && !fulls.contains(&name_of(&full)),
        "{fulls:?}"
    );
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    // `restore --latest full` takes the repaired one: the database and every file that
    // survived, in place.
    let expected = app.root.join("expected");
    copy_tree(&app.storage, &expected);
    fs::remove_file(expected.join("client_3/images/portrait_3.jpg")).unwrap();
    keep_mtime(
        &app.storage.join("client_3/images"),
        &expected.join("client_3/images"),
    );
    app.write_storage_file("client_9/late.jpg", b"written after the backup");
    let r = app.run(["restore", "--latest", "full", "--yes"]);
    r.assert_code(0);
    assert!(r.describe().contains(&name), "{}", r.describe());
    assert_same_tree(&expected, &app.storage);
}

#[test]
fn repair_read_data_salvages_what_still_reads_back_out_of_a_damaged_pack() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    let pack = pack_path(&app, packs_of(&s1).iter().next().unwrap());
    // Files are stored in the walk's order: a byte 30 000 bytes in lies in video_1.mp4
    // (after the 20 000-byte portrait and the small marker).
    flip_byte(&pack, 30_000);
    // By presence and size the pack looks whole: nothing to repair, and it says how it
    // checked.
    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["checked"], "presence and size", "{report:#}");
    assert!(
        report["backups"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    let (code, report) = repair(&app, &["--read-data"]);
    assert_eq!(code, Some(3), "{report:#}");
    let fixed = &report["backups"][0];
    assert_eq!(
        fixed["lost_files"],
        serde_json::json!(["client_1/videos/video_1.mp4"]),
        "{report:#}"
    );
    assert_eq!(fixed["salvaged_chunks"], 5, "{report:#}");
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    // The repaired snapshot restores everything but the lost file.
    let repaired = app.list_of("storage").into_iter().next().unwrap();
    assert!(
        !packs_of(&repaired).contains(&name_of_pack(&pack)),
        "{repaired:#}"
    );
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(&repaired), &target, &[]);
    let expected = app.root.join("expected");
    copy_tree(&app.storage, &expected);
    fs::remove_file(expected.join("client_1/videos/video_1.mp4")).unwrap();
    keep_mtime(
        &app.storage.join("client_1/videos"),
        &expected.join("client_1/videos"),
    );
    assert_same_tree(&expected, &target);
    app.create("storage");
    assert_store_exact(&app, "after a salvage and a create");
}

/// Give `copy` the mtime of `original` (a file removed from the copy changed it).
fn keep_mtime(original: &Path, copy: &Path) {
    tool(
        "touch",
        ["-r".as_ref(), original.as_os_str(), copy.as_os_str()],
    )
    .assert_code(0);
}

/// The id of the pack at `path`.
fn name_of_pack(path: &Path) -> String {
    path.file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".pack")
        .to_string()
}

/// The lines of a plain snapshot's entry list, each part's entries read out of its pack
/// and put inline (as a version-1 list holds them, which version 2 still reads).
fn inline_entry_list(tree: &Path) -> Vec<Value> {
    let store = tree.parent().unwrap().parent().unwrap();
    let plain = zstd::decode_all(fs::File::open(tree).unwrap()).unwrap();
    let mut lines = Vec::new();
    for line in String::from_utf8(plain).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["t"] != "part" {
            lines.push(v);
            continue;
        }
        let c = &v["chunk"];
        let (pack, offset) = (c[1].as_str().unwrap(), c[2].as_u64().unwrap() as usize);
        let stored = c[3].as_u64().unwrap() as usize;
        let bytes =
            fs::read(store.join(format!("store/packs/{}/{pack}.pack", &pack[..2]))).unwrap();
        let mut part = bytes[offset..offset + stored].to_vec();
        if c[5] == 1 {
            part = zstd::decode_all(&part[..]).unwrap();
        }
        for entry in String::from_utf8(part).unwrap().lines() {
            let mut e: Value = serde_json::from_str(entry).unwrap();
            e["t"] = "entry".into();
            lines.push(e);
        }
    }
    lines
}

/// Rewrite a plain snapshot's entry list with `edit` applied to each entry line, and fix
/// up its metadata's checksum and size, as whoever can write the directory could.
fn rewrite_entry_list(app: &TestApp, meta: &Value, edit: &dyn Fn(&mut Value)) {
    use sha2::{Digest, Sha256};
    let tree = tree_of(meta);
    let mut out = String::new();
    for mut v in inline_entry_list(&tree) {
        if v["t"] == "entry" {
            edit(&mut v);
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    let bytes = zstd::encode_all(out.as_bytes(), 3).unwrap();
    fs::write(&tree, &bytes).unwrap();
    let meta_path = app
        .kind_dir(jstr(meta, "type"))
        .join(format!("{}.json", stem(meta)));
    let mut m: Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    m["checksum"] = hex::encode(Sha256::digest(&bytes)).into();
    m["file_size"] = bytes.len().into();
    fs::write(&meta_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn verify_finds_a_chunk_its_pack_trailer_does_not_list_without_reading_data() {
    let app = snapshot_app();
    let s1 = app.create("storage");
    // Point the first file's first chunk one byte later: still inside the pack, so a
    // presence check alone would pass it.
    rewrite_entry_list(&app, &s1, &|v| {
        if v["path"] == "client_1/images/portrait_1.jpg" {
            let c = &mut v["chunks"][0];
            c[2] = (c[2].as_u64().unwrap() + 1).into();
        }
    });
    let (code, reports) = verify_reports(&app, &[name_of(&s1).as_str()]);
    assert_eq!(code, Some(1), "{reports:#?}");
    let why = failure_text(&reports[&name_of(&s1)]);
    assert!(why.contains("client_1/images/portrait_1.jpg"), "{why}");
    assert!(why.contains("trailer lists no chunk"), "{why}");
}

#[test]
fn a_database_snapshot_whose_data_is_gone_is_not_repaired_into_an_empty_one() {
    let app = snapshot_app();
    let db = app.create("database");
    for id in packs_of(&db) {
        fs::remove_file(pack_path(&app, &id)).unwrap();
    }
    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let failed = &report["backups"][0];
    assert_eq!(failed["backup"], name_of(&db), "{report:#}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("database file is gone"),
        "{report:#}"
    );
    // The original stays where it was, failing verification as it should.
    assert!(names(&app, "database").contains(&name_of(&db)));
}

#[test]
fn verify_all_warns_of_an_index_entry_its_pack_trailer_does_not_list() {
    use vertex_backup::engine::snapshot::ids::{ChunkId, PackId};
    use vertex_backup::engine::snapshot::index::{self, IndexedPack};
    use vertex_backup::engine::snapshot::trailer::PackedChunk;
    let app = snapshot_app();
    let s1 = app.create("storage");
    app.run(["verify", "--all"]).assert_code(0);
    // An index file that says the pack holds another chunk at its start: a snapshot
    // deduplicating through it would point at the wrong bytes.
    let pack = &snap(&s1)["packs"][0];
    let wrong = IndexedPack {
        id: PackId::parse(jstr(pack, "id")).unwrap(),
        size: ju64(pack, "size"),
        checksum: [0; 32],
        chunks: vec![PackedChunk {
            id: ChunkId([7; 32]),
            offset: 0,
            stored: 10,
            raw: 10,
            zstd: false,
        }],
    };
    index::write(&app.backups, "sha256", &[wrong], None, (0o600, 0o700)).unwrap();
    let r = app.run(["verify", "--all"]);
    assert_eq!(r.code(), Some(3), "{}", r.describe());
    assert!(
        r.stderr.contains("that their trailers do not"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("vertex-backup repair"),
        "{}",
        r.describe()
    );
    let (code, report) = repair(&app, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    app.run(["verify", "--all"]).assert_code(0);
    assert_store_exact(&app, "after the index was written anew");
}
