//! Entry lists stored in parts (entry-list version 2): a list larger than a few hundred
//! entries is cut at directory boundaries into parts, each a chunk in packs of its own;
//! the next snapshot makes the same part for an unchanged directory and stores nothing
//! of it again. A part that cannot be read fails `verify` naming it, is never inherited
//! (the next snapshot reads those files again), and `repair` keeps every other entry and
//! says how many were lost and between which names.

use super::*;

/// Directories and files per directory of the tree these tests snapshot: about 1 000
/// entries, an entry list of ~300 KB before compression (far past the size that stays
/// inline).
const DIRS: usize = 40;
const FILES: usize = 25;

fn write_many_small_files(app: &TestApp) {
    app.write_small_files("tree", DIRS, FILES);
}

/// `snapshot.<key>` of a snapshot's metadata (0 when absent: it is left out at 0).
fn snap_u64(meta: &Value, key: &str) -> u64 {
    snap(meta)[key].as_u64().unwrap_or(0)
}

/// The parts an entry list names, in order: (pack, offset, stored, zstd, entries).
fn parts_of(meta: &Value) -> Vec<(String, usize, usize, bool, u64)> {
    let plain = zstd::decode_all(fs::File::open(tree_of(meta)).unwrap()).unwrap();
    String::from_utf8(plain)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["t"] == "part")
        .map(|v| {
            let c = &v["chunk"];
            (
                c[1].as_str().unwrap().to_string(),
                c[2].as_u64().unwrap() as usize,
                c[3].as_u64().unwrap() as usize,
                c[5] == 1,
                v["entries"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The entry paths one part holds (read out of its pack as the test's own check).
fn entries_of_part(app: &TestApp, part: &(String, usize, usize, bool, u64)) -> Vec<String> {
    let (pack, offset, stored, zstd, _) = part;
    let bytes = fs::read(pack_path(app, pack)).unwrap();
    let mut plain = bytes[*offset..offset + stored].to_vec();
    if *zstd {
        plain = zstd::decode_all(&plain[..]).unwrap();
    }
    String::from_utf8(plain)
        .unwrap()
        .lines()
        .map(|l| jstr(&serde_json::from_str::<Value>(l).unwrap(), "path").to_string())
        .collect()
}

#[test]
fn an_unchanged_directory_is_stored_once_and_a_change_stores_only_its_part() {
    let app = snapshot_app();
    write_many_small_files(&app);
    let s1 = app.create("storage");
    let parts = snap_u64(&s1, "list_parts");
    assert!(parts >= 10, "a list of ~1 000 entries is cut: {s1:#}");
    assert_eq!(snap_u64(&s1, "added_list_parts"), parts, "{s1:#}");
    let cut = parts_of(&s1);
    assert_eq!(cut.len() as u64, parts);
    // Cut where a directory begins: no part holds two directories' files unless it
    // holds whole directories (a part begins at a directory or inside a large one).
    for part in &cut {
        let names = entries_of_part(&app, part);
        assert_eq!(
            names.len() as u64,
            part.4,
            "the part holds what its line says"
        );
    }
    assert!(
        ju64(&s1, "file_size") < 16 << 10,
        "the list itself holds only the parts' lines: {s1:#}"
    );
    let packs_after_first = packs_on_disk(&app);

    // Nothing changed: no part stored, no pack written, and the same parts listed.
    let s2 = app.create("storage");
    assert_eq!(snap_u64(&s2, "added_list_parts"), 0, "{s2:#}");
    assert_eq!(snap_u64(&s2, "list_parts"), parts);
    assert_eq!(snap_u64(&s2, "added_bytes"), 0, "{s2:#}");
    assert_eq!(packs_on_disk(&app), packs_after_first, "a pack was written");
    assert_eq!(parts_of(&s2), cut);

    // One file of one directory changed: the parts of the other directories are found.
    app.write_storage_file("tree/d17/f004.txt", b"changed, and longer than it was\n");
    let s3 = app.create("storage");
    let added = snap_u64(&s3, "added_list_parts");
    assert!(
        (1..=2).contains(&added),
        "only the changed directory's part is stored again: {s3:#}"
    );
    assert_eq!(snap_u64(&s3, "read_files"), 1, "{s3:#}");
    let d = app.run(["diff", &name_of(&s2), &name_of(&s3)]);
    d.assert_code(0);
    assert!(
        d.stdout.contains("tree/d17/f004.txt") && d.stdout.contains("1 modified"),
        "{}",
        d.describe()
    );
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
    let target = app.path().join("restored");
    restore_to(&app, &tree_of(&s3), &target, &[]);
    assert_same_tree(&app.storage, &target);
    assert_store_exact(&app, "after three snapshots with parts");
}

#[test]
fn a_damaged_part_is_named_never_inherited_and_repair_keeps_every_other_entry() {
    let app = snapshot_app();
    write_many_small_files(&app);
    let s1 = app.create("storage");
    let cut = parts_of(&s1);
    // Damage one part in the middle: a byte of its stored bytes flipped.
    let victim = &cut[cut.len() / 2];
    let lost_names = entries_of_part(&app, victim);
    flip_byte(
        &pack_path(&app, &victim.0),
        (victim.1 + victim.2 / 2) as u64,
    );

    // The next snapshot cannot walk its parent past the damage: it reads the files after
    // it again and says so (a backup with a warning: exit 3). The parts before it read
    // back right, but their pack is not as recorded: none is taken out of it.
    let r = app.run(["create", "--type", "storage", "--json"]);
    assert_eq!(r.code(), Some(3), "{}", r.describe());
    assert!(
        r.stdout.contains("could not be read to its end") && r.stdout.contains(&victim.0),
        "{}",
        r.describe()
    );
    let s2 = r.json();
    assert!(!packs_of(&s2).contains(&victim.0), "{s2:#}");
    let s3 = app.create("storage");
    assert!(!packs_of(&s3).contains(&victim.0), "{s3:#}");
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failure_text(&reports[&name_of(&s2)]),
        "",
        "the damage did not spread"
    );
    assert_eq!(
        failure_text(&reports[&name_of(&s3)]),
        "",
        "the damage did not spread"
    );
    let failure = failure_text(&reports[&name_of(&s1)]);
    assert!(
        failure.contains("part") && failure.contains(&victim.0),
        "verify names the part and its pack: {failure}"
    );

    // Repair keeps every other entry of the damaged snapshot and says what it lost.
    let r = app.run(["repair", "--json"]);
    assert_eq!(r.code(), Some(3), "entries were lost: {}", r.describe());
    let report = r.json();
    let repaired = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| jstr(b, "backup") == name_of(&s1))
        .unwrap_or_else(|| panic!("{report:#}"))
        .clone();
    let lost = repaired["lost_files"].to_string();
    assert!(
        lost.contains(&format!("{} entries between", lost_names.len())),
        "repair counts the part's entries and places them: {lost}"
    );
    let new_name = jstr(&repaired, "repaired_as");
    let ls = app.run(["ls", "--json", new_name]).assert_code(0).json();
    let listed: BTreeSet<String> = ls["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{ls:#}"))
        .iter()
        .map(|e| jstr(e, "path").to_string())
        .collect();
    for name in &lost_names {
        assert!(!listed.contains(name), "{name} is gone: {listed:?}");
    }
    let kept: Vec<String> = cut
        .iter()
        .filter(|p| *p != victim)
        .flat_map(|p| entries_of_part(&app, p))
        .filter(|name| !name.is_empty())
        .collect();
    for name in &kept {
        assert!(listed.contains(name), "{name} was kept: {listed:?}");
    }
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
}
