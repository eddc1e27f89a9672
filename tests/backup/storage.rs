//! Storage archives through GNU tar (zstd, gzip, none), a symlinked root, excludes and
//! special files.

use super::*;

// ---------------------------------------------------------------------------------------
// 2. Storage round trip through GNU tar

/// A path (relative to storage) longer than 100 bytes, the old tar name limit.
fn long_rel_path() -> String {
    format!(
        "deep/{}/{}/file_with_a_long_name_beyond_the_ustar_limit.txt",
        "a".repeat(60),
        "b".repeat(60)
    )
}

/// Add every awkward kind of entry to the app's storage tree and give all entries fixed
/// modes and mtimes.
fn build_awkward_tree(app: &TestApp) {
    let s = &app.storage;
    app.write_storage_file(
        "client_1/videos/big_video.mp4",
        &random_bytes(7, (3 << 20) + 123),
    );
    app.write_storage_file("фото/портрет.jpg", &random_bytes(8, 4096));
    app.write_storage_file(
        "фото/подпапка/заметка — примечание.txt",
        "привет\n".as_bytes(),
    );
    app.write_storage_file("empty.bin", b"");
    fs::create_dir_all(s.join("empty_dir")).unwrap();
    fs::create_dir_all(s.join("nested/empty/leaf")).unwrap();
    let long = long_rel_path();
    assert!(long.len() > 100 && format!("storage/{long}").len() > 100);
    app.write_storage_file(&long, b"deep down\n");
    fs::create_dir_all(s.join("links")).unwrap();
    symlink(
        "../client_1/images/portrait_1.jpg",
        s.join("links/latest.jpg"),
    )
    .unwrap();
    let long_target = format!("../{long}");
    assert!(long_target.len() > 100);
    symlink(&long_target, s.join("links/deep_file")).unwrap();
    symlink("does/not/exist", s.join("links/dangling")).unwrap();
    app.write_storage_file("tools/regen.sh", b"#!/bin/sh\necho regen\n");
    app.write_storage_file("private/secret.txt", b"secret\n");
    let modes: &[(&str, u32)] = &[
        ("tools/regen.sh", 0o755),
        ("private/secret.txt", 0o600),
        ("private", 0o700),
        ("client_1/images/portrait_1.jpg", 0o640),
        ("client_2/nft_markers", 0o750),
        ("empty.bin", 0o444),
        ("empty_dir", 0o775),
    ];
    for (rel, mode) in modes {
        fs::set_permissions(s.join(rel), fs::Permissions::from_mode(*mode)).unwrap();
    }
    set_fixed_mtimes(s, 1_600_000_000);
}

fn storage_round_trip(compression: &str, extension: &str) {
    let app = TestApp::new();
    build_awkward_tree(&app);
    app.write_config(&format!("compression = \"{compression}\""));
    let meta = app.create("storage");
    let archive = data_path(&meta);
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("storage_backup_") && name.ends_with(extension),
        "archive name {name}"
    );
    assert_eq!(jstr(&meta, "compression"), compression);

    // Stock GNU tar extracts it, silently, and the tree is identical.
    let dest = app.root.join("extracted");
    fs::create_dir(&dest).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(f) = tar_flag(compression) {
        args.push(f.as_ref());
    }
    args.extend([
        "-xpf".as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        dest.as_os_str(),
    ]);
    let r = tool("tar", args);
    r.assert_code(0);
    assert!(
        r.stderr.trim().is_empty(),
        "tar complained:\n{}",
        r.describe()
    );
    assert_eq!(
        fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        vec![std::ffi::OsString::from("storage")],
        "the archive holds one top directory named like the storage directory"
    );
    assert_same_tree(&app.storage, &dest.join("storage"));

    // Spot checks that do not go through the snapshot code.
    let big = fs::read(dest.join("storage/client_1/videos/big_video.mp4")).unwrap();
    assert_eq!(big, random_bytes(7, (3 << 20) + 123));
    assert_eq!(
        fs::read_link(dest.join("storage/links/latest.jpg")).unwrap(),
        PathBuf::from("../client_1/images/portrait_1.jpg")
    );
    assert_eq!(
        fs::read(dest.join("storage/links/deep_file")).unwrap(),
        b"deep down\n",
        "the long relative symlink resolves inside the extracted tree"
    );
    assert!(dest.join("storage/empty_dir").is_dir());
    assert_eq!(
        fs::read(dest.join("storage").join(long_rel_path())).unwrap(),
        b"deep down\n"
    );
    let m = fs::metadata(dest.join("storage/tools/regen.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);

    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
    for entry in tar_list(&archive, compression) {
        assert!(
            entry == "storage" || entry.starts_with("storage/"),
            "entry {entry:?} is outside storage/"
        );
    }
    if compression == "zstd" {
        let t = tool("zstd", ["-q".as_ref(), "-t".as_ref(), archive.as_os_str()]);
        t.assert_code(0);
    }
    if compression == "gzip" {
        tool("gzip", ["-t".as_ref(), archive.as_os_str()]).assert_code(0);
    }
}

#[test]
fn storage_zstd_archive_round_trips_through_gnu_tar() {
    storage_round_trip("zstd", ".tar.zst");
}

#[test]
fn storage_gzip_archive_round_trips_through_gnu_tar() {
    storage_round_trip("gzip", ".tar.gz");
}

#[test]
fn storage_uncompressed_archive_round_trips_through_gnu_tar() {
    storage_round_trip("none", ".tar");
}

/// Media often lives on another disk, with the configured storage path a symlink to it.
/// The archive must hold the directory's tree, not the link.
#[test]
fn storage_path_that_is_a_symlink_archives_the_directory_behind_it() {
    let app = TestApp::new();
    build_awkward_tree(&app);
    let link = app.root.join("media");
    symlink(&app.storage, &link).unwrap();
    let text = app
        .config_text("", "")
        .replace("storage = \"storage\"", "storage = \"media\"");
    app.write_config_raw(&text);
    let meta = app.create("storage");
    let archive = data_path(&meta);

    let dest = app.root.join("extracted");
    fs::create_dir(&dest).unwrap();
    let r = tool(
        "tar",
        [
            "--zstd".as_ref(),
            "-xpf".as_ref(),
            archive.as_os_str(),
            "-C".as_ref(),
            dest.as_os_str(),
        ],
    );
    r.assert_code(0);
    let top: Vec<PathBuf> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(top.len(), 1, "{top:#?}");
    let m = fs::symlink_metadata(&top[0]).unwrap();
    assert!(
        m.file_type().is_dir(),
        "the archive's top entry {} is not a directory but {:?}",
        top[0].display(),
        m.file_type()
    );
    assert_same_tree(&app.storage, &top[0]);
    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
}

// ---------------------------------------------------------------------------------------
// 9. Excludes

#[test]
fn exclude_globs_keep_files_out_of_the_archive() {
    let app = TestApp::new();
    for rel in [
        "upload.tmp",
        "client_1/images/resize.tmp",
        "cache/thumb.jpg",
        "cache/deep/x.bin",
    ] {
        app.write_storage_file(rel, b"excluded");
    }
    let kept = [
        "client_1/notes.tmp.txt",
        "mycache/keep.bin",
        "client_1/cache.jpg",
        "client_1/images/portrait_1.jpg",
        "client_2/videos/video_2.mp4",
    ];
    for rel in &kept[..3] {
        app.write_storage_file(rel, b"kept");
    }
    app.write_config("exclude = [\"*.tmp\", \"cache/**\"]");
    let meta = app.create("storage");
    let entries = tar_list(&data_path(&meta), "zstd");
    for e in &entries {
        assert!(!e.ends_with(".tmp"), "{e} should be excluded");
        assert!(!e.starts_with("storage/cache/"), "{e} should be excluded");
    }
    for rel in kept {
        let name = format!("storage/{rel}");
        assert!(
            entries.contains(&name),
            "{name} is missing from {entries:#?}"
        );
    }
    // 6 files of the standard tree + 3 kept extras.
    assert_eq!(ju64(&meta, "file_count"), 9, "{entries:#?}");
}

// ---------------------------------------------------------------------------------------
// 10. Special files

#[test]
fn a_fifo_is_skipped_with_a_warning_and_exit_code_3() {
    let app = TestApp::new();
    mkfifo(&app.storage.join("client_1/app.pipe"));
    // A backup that opens the FIFO would block forever: give it a deadline.
    let r = app
        .spawn(["create", "--type", "storage"])
        .wait(Duration::from_secs(120));
    r.assert_code(3);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("app.pipe"),
        "{}",
        r.describe()
    );
    let rows = app.list_of("storage");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(row["complete"], true);
    let warnings = row["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|s| s.contains("app.pipe"))),
        "{row:#}"
    );
    let archive = PathBuf::from(jstr(row, "path"));
    let on_disk: Value =
        serde_json::from_slice(&fs::read(jstr(row, "metadata_path")).unwrap()).unwrap();
    assert!(!on_disk["warnings"].as_array().unwrap().is_empty());
    let entries = tar_list(&archive, "zstd");
    assert!(!entries.iter().any(|e| e.contains("app.pipe")));
    assert!(entries.contains(&"storage/client_1/images/portrait_1.jpg".to_string()));
    assert_eq!(ju64(row, "file_count"), 6);
}
