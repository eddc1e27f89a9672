//! Hostile media trees (issue 8): file names with newlines, tabs, escape sequences,
//! leading dashes and bytes that are not UTF-8, 255-byte components, long paths and link
//! targets, sparse files, hard links, symlink loops, FIFOs and sockets. Backup and restore
//! must round-trip everything tar can carry, skip the rest with a warning, and never let
//! a name forge a line in the output or the operation log.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::util::*;

/// A name from raw bytes (may be invalid UTF-8).
fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Sparse file: 16 MiB apparent size, 8 KiB of data at the start, the middle and the end.
const SPARSE_LEN: u64 = 16 << 20;

/// Build the hostile tree under `storage/hostile`; returns the paths that must be
/// skipped with a warning: the FIFO and the socket (tar cannot carry them) and the links
/// that leave the tree (restore would refuse them).
fn build_hostile_tree(app: &TestApp) -> Vec<PathBuf> {
    let root = app.storage.join("hostile");
    fs::create_dir_all(&root).unwrap();
    let file = |rel: &OsStr, bytes: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        p
    };
    file(name(b"line\nbreak.jpg"), b"newline in the name");
    file(
        name(b"forged\nBackup completed successfully\n.jpg"),
        b"a name that tries to forge a log line",
    );
    file(name(b"tab\there.mp4"), b"tab");
    file(name(b"-rf"), b"leading dash");
    file(name(b"--help"), b"two leading dashes");
    file(name(b"esc\x1b[31mred.png"), b"terminal escape");
    file(name(b"caf\xe9-latin1.jpg"), b"not UTF-8");
    file(
        name(b"\xff\xfe/inner.bin"),
        b"directory named with invalid bytes",
    );
    file(name("клиент/фото 1.jpg".as_bytes()), b"unicode");
    let long255 = vec![b'x'; 255];
    file(name(&long255), b"255-byte component");
    let mut deep = Vec::new();
    for i in 0..6 {
        deep.extend_from_slice(format!("level-{i}-{}/", "d".repeat(40)).as_bytes());
    }
    deep.extend_from_slice(&[b'y'; 255]);
    let deep_file = file(name(&deep), b"a path of about 540 bytes");

    // Sparse: holes between three 8 KiB islands of data.
    let sparse = root.join("sparse.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&sparse).unwrap();
        f.set_len(SPARSE_LEN).unwrap();
        for at in [0, SPARSE_LEN / 2, SPARSE_LEN - 8192] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&random_bytes(at + 1, 8192)).unwrap();
        }
    }

    // Hard links: one inode under three names, one of them with a hostile name.
    let first = file(name(b"links/original.mp4"), &random_bytes(7, 30_000));
    fs::hard_link(&first, root.join("links/second.mp4")).unwrap();
    fs::hard_link(&first, root.join(name(b"links/third\nname.mp4"))).unwrap();

    // Symlinks: long target, loops, dangling, to a hostile name.
    fs::create_dir_all(root.join("symlinks")).unwrap();
    // A long relative target (> 100 bytes: a GNU long-link entry).
    let long_target = Path::new("..").join(deep_file.strip_prefix(&root).unwrap());
    symlink(&long_target, root.join("symlinks/long-target")).unwrap();
    symlink("loop-b", root.join("symlinks/loop-a")).unwrap();
    symlink("loop-a", root.join("symlinks/loop-b")).unwrap();
    symlink("self", root.join("symlinks/self")).unwrap();
    symlink("..", root.join("symlinks/parent")).unwrap();
    symlink("does-not-exist", root.join("symlinks/dangling")).unwrap();
    symlink(
        name(b"../line\nbreak.jpg"),
        root.join(name(b"symlinks/to\tnewline")),
    )
    .unwrap();

    // Links that leave the tree: restore refuses them, so the backup skips them.
    let absolute = root.join("symlinks/absolute");
    symlink(&deep_file, &absolute).unwrap();
    let escaping = root.join("symlinks/escaping");
    symlink("../../../outside", &escaping).unwrap();

    // What tar cannot carry.
    let fifo = root.join(name(b"pipe\nBackup completed successfully"));
    mkfifo(&fifo);
    let socket = root.join("app.sock");
    drop(UnixListener::bind(&socket).unwrap());
    vec![fifo, socket, absolute, escaping]
}

fn without(
    mut tree: std::collections::BTreeMap<PathBuf, Node>,
    root: &Path,
    skipped: &[PathBuf],
) -> std::collections::BTreeMap<PathBuf, Node> {
    for s in skipped {
        let rel = s.strip_prefix(root).unwrap();
        assert!(tree.remove(rel).is_some(), "{rel:?} not in the snapshot");
    }
    tree
}

#[test]
fn hostile_names_and_special_files_round_trip_or_are_skipped_with_a_warning() {
    let app = TestApp::new();
    let skipped = build_hostile_tree(&app);
    let expected = without(snapshot_tree(&app.storage), &app.storage, &skipped);

    // The backup: exit 3 (complete, with warnings) for the FIFO and the socket.
    let r = app.run(["create", "--type", "storage"]);
    r.assert_code(3);
    let listed = app.list_of("storage");
    assert_eq!(listed.len(), 1, "{}", r.describe());
    let meta = &listed[0];
    let archive = PathBuf::from(jstr(meta, "backup_path"));
    for what in ["FIFO", "socket", "symlinks/absolute", "symlinks/escaping"] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(what) && l.contains("skipped")),
            "no warning about the {what}\n{}",
            r.describe()
        );
    }
    // A name cannot forge a line: every output line that mentions the forged text is a
    // warning that shows the newline escaped, and the log's success line is our own.
    let forged = "Backup completed successfully";
    for l in r.stderr.lines().filter(|l| l.contains(forged)) {
        assert!(
            l.starts_with("warning:") && l.contains("\\nBackup completed successfully"),
            "a file name produced the output line {l:?}\n{}",
            r.describe()
        );
    }
    let log = app.backup_log();
    for l in log.lines().filter(|l| l.contains(forged)) {
        assert!(
            !l.trim_start().starts_with(forged) && !l.starts_with("\\n"),
            "a file name forged the backup.log line {l:?}\n{log}"
        );
    }
    assert!(
        !r.stderr.contains('\u{1b}') && !log.contains('\u{1b}'),
        "a terminal escape from a file name reached the output"
    );

    // The archive is standard: GNU tar reads it, and its extraction equals the tree.
    let by_tar = app.root.join("by-gnu-tar");
    fs::create_dir(&by_tar).unwrap();
    tool(
        "tar",
        [
            "--zstd".as_ref(),
            "-xf".as_ref(),
            archive.as_os_str(),
            "-C".as_ref(),
            by_tar.as_os_str(),
        ],
    )
    .assert_code(0);
    assert_tree_matches(&expected, &by_tar.join("storage"));

    // Our verify and restore agree.
    app.run(["verify".as_ref(), archive.as_os_str()])
        .assert_code(0);
    let target = app.root.join("restored");
    let r = app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(0);
    let restored_root = if target.join("storage").is_dir() {
        target.join("storage")
    } else {
        target.clone()
    };
    assert_tree_matches(&expected, &restored_root);

    // Hard links come back as one inode; the sparse file does not take its full size.
    let links = restored_root.join("hostile/links");
    let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
    let first = ino(links.join("original.mp4"));
    assert_eq!(ino(links.join("second.mp4")), first, "hard link lost");
    assert_eq!(
        ino(links.join(name(b"third\nname.mp4"))),
        first,
        "hard link lost"
    );
    let sparse = fs::metadata(restored_root.join("hostile/sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_LEN);
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "the restored sparse file allocates {} bytes for 24 KiB of data",
        sparse.blocks() * 512
    );
}

#[test]
fn a_storage_root_that_is_a_symlink_loop_fails_naming_it() {
    let app = TestApp::new();
    fs::remove_dir_all(&app.storage).unwrap();
    symlink("storage", &app.storage).unwrap();
    let r = app.run(["create", "--type", "storage"]);
    assert!(
        matches!(r.code(), Some(1) | Some(2)),
        "a self-referencing storage symlink must be an error\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains(app.storage.to_str().unwrap()),
        "the error does not name the storage path\n{}",
        r.describe()
    );
    assert!(app.partial_files().is_empty() && app.backup_files().is_empty());
}

/// Metadata edited by hand or by an attacker: a database backup claiming to be a storage
/// backup, a storage backup whose `backup_path` points at another file. `verify` fails
/// both, `restore` refuses both, and nothing live changes.
#[test]
fn tampered_metadata_type_and_path_are_caught_by_verify_and_refused_by_restore() {
    let app = TestApp::new();
    let db_meta = app.create("database");
    let st_meta = app.create("storage");
    let db_data = PathBuf::from(jstr(&db_meta, "backup_path"));
    let st_data = PathBuf::from(jstr(&st_meta, "backup_path"));
    let db_json = db_data.with_extension("json");
    let st_json = st_data.with_extension("").with_extension("json");

    let mut j = read_json(&db_json);
    j["type"] = "storage".into();
    write_json(&db_json, &j);
    let mut j = read_json(&st_json);
    j["backup_path"] = app.db.to_str().unwrap().into();
    write_json(&st_json, &j);

    let live_db = sha256_file(&app.db);
    let live_tree = snapshot_tree(&app.storage);
    let r = app.run(["verify", "--all"]);
    r.assert_code(1);
    assert!(
        r.stdout.contains("says type storage") && r.stdout.contains("different data file"),
        "verify does not explain both tamperings\n{}",
        r.describe()
    );
    for data in [&db_data, &st_data] {
        let r = app.run(["restore".as_ref(), data.as_os_str(), "--yes".as_ref()]);
        assert!(
            matches!(r.code(), Some(1) | Some(2)),
            "restore of tampered {data:?} was not refused\n{}",
            r.describe()
        );
    }
    assert_eq!(sha256_file(&app.db), live_db, "the live database changed");
    assert_tree_matches(&live_tree, &app.storage);
}
