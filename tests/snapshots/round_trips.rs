//! Round trips of storage snapshots: a tree with every kind of entry restores identically
//! (to `--target`, and only the selected folder with `--path`), `export` gives an archive
//! GNU tar extracts to the same tree, and a second snapshot after an edit reads only the
//! changed and the new file, stores little, and `diff` names exactly what changed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};

use super::*;

/// A name that is not UTF-8 (Latin-1 "café").
const NON_UTF8: &[u8] = b"client_1/images/caf\xe9 portrait.jpg";
/// Cyrillic, an emoji, a numero sign and spaces.
const UNICODE: &str = "клиент_3/фото 🎞 №1.jpg";
/// The file large enough to be cut by content (12.5 MiB of incompressible bytes).
const LARGE: &str = "big/large.bin";
const LARGE_LEN: usize = (25 << 20) / 2;
/// A sparse file: data in its first and last 64 KiB, a hole between.
const SPARSE: &str = "big/sparse.img";
const SPARSE_LEN: u64 = 8 << 20;
const SPARSE_DATA: usize = 64 << 10;
/// A second name of client_1's video.
const TWIN: &str = "client_1/videos/video_1_twin.mp4";
const TWIN_OF: &str = "client_1/videos/video_1.mp4";

/// Bytes a file occupies on disk.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .blocks()
        * 512
}

/// The app's tree plus every kind of entry a media tree can hold, then fixed mtimes on
/// all of it. Returns false (after `require`) when the filesystem keeps no holes.
fn build_rich_tree(app: &TestApp) -> bool {
    let s = &app.storage;
    // `write_storage_file` takes text: the non-UTF-8 name is written here (its
    // directory exists already).
    fs::write(s.join(OsStr::from_bytes(NON_UTF8)), random_bytes(7, 3_000)).unwrap();
    app.write_storage_file(UNICODE, &random_bytes(8, 5_000));
    app.write_storage_file("tools/regen.sh", b"#!/bin/sh\necho regen\n");
    app.write_storage_file("readonly.txt", b"read only\n");
    app.write_storage_file("private/secret.txt", b"secret\n");
    app.write_storage_file("empty.txt", b"");
    fs::create_dir_all(s.join("empty_dir")).unwrap();
    fs::create_dir_all(s.join("links")).unwrap();
    symlink(
        "../client_1/images/portrait_1.jpg",
        s.join("links/latest.jpg"),
    )
    .unwrap();
    symlink("latest.jpg", s.join("links/same_dir.jpg")).unwrap();
    symlink("../client_2", s.join("links/client_2")).unwrap();
    fs::hard_link(s.join(TWIN_OF), s.join(TWIN)).unwrap();
    app.write_storage_file(LARGE, &random_bytes(12, LARGE_LEN));
    let sparse = fs::File::create(s.join(SPARSE)).unwrap();
    sparse.set_len(SPARSE_LEN).unwrap();
    sparse
        .write_all_at(&random_bytes(13, SPARSE_DATA), 0)
        .unwrap();
    sparse
        .write_all_at(
            &random_bytes(14, SPARSE_DATA),
            SPARSE_LEN - SPARSE_DATA as u64,
        )
        .unwrap();
    sparse.sync_all().unwrap();
    drop(sparse);
    for (rel, mode) in [
        ("client_1/nft_markers/portrait_1.fset", 0o600),
        ("tools/regen.sh", 0o755),
        ("readonly.txt", 0o444),
        ("private/secret.txt", 0o600),
        ("private", 0o700),
        ("empty_dir", 0o750),
    ] {
        fs::set_permissions(s.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    set_fixed_mtimes(s, 1_600_000_000);
    let holes = allocated(&s.join(SPARSE)) < SPARSE_LEN / 4;
    require(
        "a filesystem that keeps holes in sparse files (for the test's temp dir)",
        if holes {
            Ok(())
        } else {
            Err(format!(
                "{SPARSE} of {SPARSE_LEN} B takes {} B",
                allocated(&s.join(SPARSE))
            ))
        },
    )
}

/// Regular files under `root` with distinct inodes: the files a snapshot reads (a second
/// name of a file is a hard link entry, not a file of its own).
fn distinct_files(root: &Path) -> u64 {
    let inodes: BTreeSet<u64> = files_under(root)
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .filter(|m| m.file_type().is_file())
        .map(|m| m.ino())
        .collect();
    inodes.len() as u64
}

/// The entries a restore of `tree` must hold, `--path`-selected: those under `prefix`,
/// the directories above it, and the root.
fn selected(tree: &BTreeMap<PathBuf, Node>, prefix: &str) -> BTreeMap<PathBuf, Node> {
    tree.iter()
        .filter(|(rel, _)| rel.starts_with(prefix) || Path::new(prefix).starts_with(rel))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The restored copy of the rich tree is that tree in the ways `assert_same_tree` does not
/// see: the hard link is one inode, and the sparse file is sparse.
#[track_caller]
fn assert_links_and_holes(restored: &Path) {
    let (a, b) = (
        fs::metadata(restored.join(TWIN_OF)).unwrap(),
        fs::metadata(restored.join(TWIN)).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "{TWIN} is not a hard link of {TWIN_OF} in {}",
        restored.display()
    );
    let taken = allocated(&restored.join(SPARSE));
    assert!(
        taken < 1 << 20,
        "{SPARSE} ({SPARSE_LEN} B, {} B of data) takes {taken} B once restored: its hole was filled",
        2 * SPARSE_DATA
    );
}

#[test]
fn a_storage_snapshot_of_every_kind_of_entry_restores_identically() {
    let app = snapshot_app();
    if !build_rich_tree(&app) {
        return;
    }
    let meta = app.create("storage");
    assert_eq!(meta["format"]["kind"], "snapshot", "{meta:#}");
    assert!(name_of(&meta).ends_with(".tree.zst"), "{meta:#}");
    let s = snap(&meta);
    assert!(s["parent"].is_null(), "{meta:#}");
    let files = distinct_files(&app.storage);
    assert_eq!(ju64(s, "read_files"), files, "{meta:#}");
    assert_eq!(ju64(s, "unchanged_files"), 0, "{meta:#}");
    // The large file is cut into several chunks; every other file is one (empty: none).
    assert!(ju64(s, "chunks") >= files - 1 + 3, "{meta:#}");
    // Each pack the metadata lists is there with the size and sha256 it records.
    for p in s["packs"].as_array().unwrap() {
        let path = pack_path(&app, jstr(p, "id"));
        assert_eq!(
            sha256_file(&path),
            jstr(p, "checksum"),
            "{}",
            path.display()
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), ju64(p, "size"));
    }
    app.run(["verify", "--read-data", name_of(&meta).as_str()])
        .assert_code(0);

    let dest = app.root.join("restored");
    restore_to(&app, &tree_of(&meta), &dest, &[]);
    assert_same_tree(&app.storage, &dest);
    assert_links_and_holes(&dest);

    // `ls` shows every entry but the root, the odd names included.
    let ls = app
        .run(["ls", "--json", name_of(&meta).as_str()])
        .assert_code(0)
        .json();
    let entries = ls["entries"].as_array().expect("entries");
    assert_eq!(
        entries.len(),
        snapshot_tree(&app.storage).len() - 1,
        "{ls:#}"
    );
    assert!(
        entries.iter().any(|e| e["path"] == UNICODE),
        "{UNICODE} is not listed: {ls:#}"
    );
}

#[test]
fn path_restores_only_the_selected_folder_of_a_snapshot() {
    let app = snapshot_app();
    if !build_rich_tree(&app) {
        return;
    }
    let at_backup = snapshot_tree(&app.storage);
    let meta = app.create("storage");
    let dest = app.root.join("partial");
    restore_to(&app, &tree_of(&meta), &dest, &["--path", "client_1/"]);
    let want = selected(&at_backup, "client_1/");
    assert!(
        want.keys().any(|p| p.as_os_str().as_bytes() == NON_UTF8)
            && want.contains_key(Path::new(TWIN)),
        "the selection misses the entries it is meant to cover: {want:#?}"
    );
    assert_eq!(snapshot_tree(&dest), want);
    let (a, b) = (
        fs::metadata(dest.join(TWIN_OF)).unwrap(),
        fs::metadata(dest.join(TWIN)).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "{TWIN} is not a hard link once restored");
}

#[test]
fn an_exported_snapshot_extracts_with_gnu_tar_to_the_same_tree() {
    let app = snapshot_app();
    if !build_rich_tree(&app) {
        return;
    }
    let meta = app.create("storage");
    let out = app.root.join("exported.tar.zst");
    let r = app.run([
        "export".as_ref(),
        name_of(&meta).as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    r.assert_code(0);
    assert!(
        r.stdout.contains("tar --zstd -xf"),
        "export does not say how to extract it\n{}",
        r.describe()
    );
    // Written whole or not at all, and private.
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o600);
    // A second export onto the same file is refused; --latest picks the same snapshot.
    app.run([
        "export".as_ref(),
        "--latest".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
    .assert_code(2);
    let latest = app.root.join("latest.tar.zst");
    app.run([
        "export".as_ref(),
        "--latest".as_ref(),
        "-o".as_ref(),
        latest.as_os_str(),
    ])
    .assert_code(0);

    for archive in [&out, &latest] {
        let x = tempfile::tempdir_in(&app.root).unwrap();
        let t = tool(
            "tar",
            [
                "--zstd".as_ref(),
                "-xf".as_ref(),
                archive.as_os_str(),
                "-C".as_ref(),
                x.path().as_os_str(),
            ],
        );
        t.assert_code(0);
        assert_eq!(
            fs::read_dir(x.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            vec![std::ffi::OsString::from("storage")],
            "the archive's top directory is not the storage directory's name"
        );
        assert_same_tree(&app.storage, &x.path().join("storage"));
        let (a, b) = (
            fs::metadata(x.path().join("storage").join(TWIN_OF)).unwrap(),
            fs::metadata(x.path().join("storage").join(TWIN)).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "tar did not see {TWIN} as a hard link");
    }
}

#[test]
fn a_second_snapshot_reads_only_what_changed_and_diff_names_exactly_that() {
    let app = snapshot_app();
    if !build_rich_tree(&app) {
        return;
    }
    let tree_1 = snapshot_tree(&app.storage);
    let first = app.create("storage");
    let files_1 = distinct_files(&app.storage);

    // 64 KiB rewritten in the middle of the large file, in place; one file added.
    let large = fs::OpenOptions::new()
        .write(true)
        .open(app.storage.join(LARGE))
        .unwrap();
    large
        .write_all_at(&random_bytes(99, 64 << 10), (LARGE_LEN / 2) as u64)
        .unwrap();
    drop(large);
    let new_len = 300_000;
    app.write_storage_file("big/new.bin", &random_bytes(98, new_len));
    let tree_2 = snapshot_tree(&app.storage);

    let second = app.create("storage");
    let s = snap(&second);
    assert_eq!(s["parent"], stem_of_meta(&first), "{second:#}");
    assert_eq!(ju64(s, "read_files"), 2, "{second:#}");
    assert_eq!(ju64(s, "unchanged_files"), files_1 - 1, "{second:#}");
    let added = ju64(s, "added_bytes");
    let bound = 2 * (4 << 20) + new_len as u64;
    assert!(
        added < bound,
        "the second snapshot added {added} B for a 64 KiB edit and a {new_len} B file (bound {bound})\n{second:#}"
    );
    // The first snapshot's packs are still needed: the unchanged files' chunks are there.
    assert!(
        packs_of(&first).is_subset(&packs_of(&second)),
        "the second snapshot does not list the packs it shares with the first\n{first:#}\n{second:#}"
    );

    // `diff`: the edited file, the new file, and the directory the new file changed the
    // mtime of (metadata only) — nothing else.
    let d = app.run(["diff", name_of(&first).as_str(), name_of(&second).as_str()]);
    d.assert_code(0);
    let lines: Vec<&str> = d.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "U  big",
            "M  big/large.bin",
            "+  big/new.bin",
            &format!(
                "1 added, 0 removed, 1 modified, 1 metadata only ({} → {})",
                name_of(&first),
                name_of(&second)
            ),
        ],
        "{}",
        d.describe()
    );
    let json = app
        .run([
            "diff",
            "--json",
            name_of(&first).as_str(),
            name_of(&second).as_str(),
        ])
        .assert_code(0)
        .json();
    assert_eq!(
        json,
        serde_json::json!([
            {"change": "metadata", "path": "big", "size": 0},
            {"change": "modified", "path": LARGE, "size": LARGE_LEN},
            {"change": "added", "path": "big/new.bin", "size": new_len},
        ])
    );
    // And the other way round.
    let back = app.run(["diff", name_of(&second).as_str(), name_of(&first).as_str()]);
    back.assert_code(0);
    assert_eq!(
        back.stdout.lines().take(3).collect::<Vec<_>>(),
        ["U  big", "M  big/large.bin", "-  big/new.bin"],
        "{}",
        back.describe()
    );

    // Both restore to the tree each was taken from.
    let dest_2 = app.root.join("restored_2");
    restore_to(&app, &tree_of(&second), &dest_2, &[]);
    assert_tree_matches(&tree_2, &dest_2);
    assert_links_and_holes(&dest_2);
    let dest_1 = app.root.join("restored_1");
    restore_to(&app, &tree_of(&first), &dest_1, &[]);
    assert_tree_matches(&tree_1, &dest_1);
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
}

/// The stem a snapshot's metadata has (`storage_snapshot_<timestamp>`), as a JSON string.
fn stem_of_meta(meta: &Value) -> Value {
    let name = name_of(meta);
    Value::String(
        name.strip_suffix(".tree.zst")
            .unwrap_or_else(|| panic!("{name} is not an entry list"))
            .to_string(),
    )
}

/// A file dated before 1970 (a scan of an old photo keeps its date) restores with that
/// date from a snapshot, and from an archive backup of the same tree, both restored by
/// this program. (GNU tar cannot read such a date from an archive or an export: the tar
/// crate writes it as an unsigned number, which tar refuses as out of range.)
#[test]
fn a_file_dated_before_1970_restores_with_its_date_from_a_snapshot_and_an_archive() {
    let app = snapshot_app();
    let old = app.write_storage_file("client_1/images/scan_1965.jpg", &random_bytes(65, 4_000));
    set_mtime(&old, -157_766_400);
    let snapshot = app.create("storage");
    app.write_config("");
    let archive = app.create("storage");
    assert_eq!(archive["format"]["kind"], "archive", "{archive:#}");
    for (what, meta) in [("snapshot", &snapshot), ("archive", &archive)] {
        let dest = app.root.join(format!("restored-{what}"));
        restore_to(&app, &tree_of(meta), &dest, &[]);
        assert_same_tree(&app.storage, &dest);
        let mtime = fs::metadata(dest.join("client_1/images/scan_1965.jpg"))
            .unwrap()
            .mtime();
        assert_eq!(mtime, -157_766_400, "{what}");
    }
}

#[test]
fn a_snapshot_restores_mtimes_to_the_nanosecond() {
    use std::os::unix::fs::MetadataExt;
    let app = snapshot_app();
    let file = app.write_storage_file("client_1/precise.bin", b"nanoseconds");
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(when)
        .unwrap();
    let s = app.create("storage");
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(&s), &target, &[]);
    let restored = fs::metadata(target.join("client_1/precise.bin")).unwrap();
    assert_eq!(
        (restored.mtime(), restored.mtime_nsec()),
        (1_700_000_000, 123_456_789)
    );
}
