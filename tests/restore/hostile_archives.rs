//! Hand-made hostile archives (absolute paths, `..`, links out and files through them,
//! hard links out, devices, FIFOs): refused, nothing written outside the target.

use super::*;

// ---------------------------------------------------------------------------------------
// 4. Hostile archives

/// A tar header with `name` and `link` written byte for byte (the `tar` crate refuses to
/// set absolute or `..` paths itself, which is exactly what these archives need).
fn raw_header(name: &[u8], kind: EntryType, size: u64, link: &[u8]) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let old = h.as_old_mut();
    assert!(name.len() < old.name.len() && link.len() < old.linkname.len());
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    h
}

/// One entry of a hand-made archive.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn build_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Directory, 0, b""),
                    &[][..],
                )
                .unwrap(),
            E::File(p, data) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Regular, data.len() as u64, b""),
                    *data,
                )
                .unwrap(),
            E::Symlink(p, t) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Symlink, 0, t.as_bytes()),
                    &[][..],
                )
                .unwrap(),
            E::Hardlink(p, t) => b
                .append(
                    &raw_header(p.as_bytes(), EntryType::Link, 0, t.as_bytes()),
                    &[][..],
                )
                .unwrap(),
            E::Char(p, major, minor) => {
                let mut h = raw_header(p.as_bytes(), EntryType::Char, 0, b"");
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap()
            }
            E::Fifo(p) => b
                .append(&raw_header(p.as_bytes(), EntryType::Fifo, 0, b""), &[][..])
                .unwrap(),
        }
    }
    b.into_inner().unwrap()
}

/// Place `tar_bytes` into the catalog as an uncompressed storage backup with metadata
/// shaped like a real one (taken from a real backup); returns the archive's path.
fn plant_storage_backup(app: &TestApp, tar_bytes: &[u8]) -> PathBuf {
    plant_storage_backup_of(app, tar_bytes, 1)
}

/// [`plant_storage_backup`] with the metadata's `file_count` (files and links) given.
fn plant_storage_backup_of(app: &TestApp, tar_bytes: &[u8], file_count: u64) -> PathBuf {
    let real = app.create("storage");
    let ts = "20200101_000000";
    let dir = app.kind_dir("storage");
    let archive = dir.join(format!("storage_backup_{ts}.tar"));
    fs::write(&archive, tar_bytes).unwrap();
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o600)).unwrap();
    let mut m = real.clone();
    let obj = m.as_object_mut().unwrap();
    obj.remove("part_of");
    obj.remove("reason");
    m["timestamp"] = ts.into();
    m["backup_path"] = archive.to_string_lossy().into_owned().into();
    m["file_size"] = (tar_bytes.len() as u64).into();
    m["uncompressed_size"] = (tar_bytes.len() as u64).into();
    m["checksum"] = sha256_file(&archive).into();
    m["compression"] = "none".into();
    // Readers take the compression from the format object (format_version 2).
    m["format"]["compression"] = "none".into();
    m["created_at"] = "2020-01-01T00:00:00+00:00".into();
    m["file_count"] = file_count.into();
    write_json(&dir.join(format!("storage_backup_{ts}.json")), &m);
    // The catalog takes it as a complete backup.
    let row = app
        .list_of("storage")
        .into_iter()
        .find(|r| jstr(r, "timestamp") == ts)
        .expect("the planted backup is listed");
    assert_eq!(row["complete"], true, "{row:#}");
    archive
}

/// Names that a hostile archive tries to create outside the tree.
const PROBE_NAMES: &[&str] = &["escape", "passwd", "outside_probe", "hostile_probe"];

/// Everything under the temp root but the backup directory and the area restores go
/// into (whose own mtime a staging directory changes), to prove nothing else changed.
fn snapshot_outside(app: &TestApp, area: &Path) -> BTreeMap<PathBuf, Node> {
    let area_rel = area.strip_prefix(&app.root).unwrap().to_path_buf();
    snapshot_tree(&app.root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("backups") && p != &area_rel)
        .collect()
}

/// Restore (to a new `--target`) and verify the archive made of `entries`: both must
/// fail on an unsafe entry, and nothing may appear anywhere.
fn hostile_case(entries: &dyn Fn(&Path) -> Vec<u8>, reason: &str) {
    let app = TestApp::new();
    // A sentinel a hard link could try to reach, and the area that receives the target.
    let outside = app.root.join("outside");
    fs::write(&outside, b"sentinel\n").unwrap();
    let area = app.root.join("area");
    fs::create_dir(&area).unwrap();
    let target = area.join("restored");
    let archive = plant_storage_backup(&app, &entries(&app.root));
    let etc_before = snapshot_names(Path::new("/etc"));
    let before = snapshot_outside(&app, &area);

    let v = app.run(["verify".as_ref(), archive.as_os_str()]);
    v.assert_code(1);
    assert!(
        v.stdout.contains("entries safe"),
        "verify does not name the `entries safe` check\n{}",
        v.describe()
    );
    assert!(v.stdout.contains(reason), "{}", v.describe());

    let r = app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ]);
    assert!(
        r.code().is_some_and(|c| c != 0),
        "a hostile archive was restored\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("unsafe entry") && r.stderr.contains(reason),
        "the error does not explain the unsafe entry ({reason:?})\n{}",
        r.describe()
    );

    assert!(!target.exists(), "the target was created");
    let in_area: Vec<PathBuf> = fs::read_dir(&area)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        in_area.is_empty(),
        "left in the target's parent: {in_area:#?}"
    );
    let after = snapshot_outside(&app, &area);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "changed outside the target: {changed:#?}"
    );
    // Nothing named like a probe, and no link, device or FIFO, anywhere in the temp root.
    let mut all = files_under(app.path());
    all.extend(dirs_under(app.path()));
    for p in &all {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !PROBE_NAMES.contains(&name.as_ref()),
            "{} was written",
            p.display()
        );
        let ft = fs::symlink_metadata(p).unwrap().file_type();
        assert!(
            !(ft.is_symlink() || ft.is_char_device() || ft.is_block_device() || ft.is_fifo()),
            "{} ({ft:?}) was created",
            p.display()
        );
    }
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(m.nlink(), 1, "a hard link to the sentinel was made");
    assert_eq!(fs::read(&outside).unwrap(), b"sentinel\n");
    assert!(!Path::new("/abs").exists(), "/abs was created");
    assert_eq!(
        snapshot_names(Path::new("/etc")),
        etc_before,
        "/etc changed"
    );
    // The live data is untouched too.
    assert!(pre_restore_rows(&app).is_empty());
    assert!(restore_leftovers(&app.root).is_empty());
}

#[test]
fn hostile_archive_with_a_parent_dir_entry_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("../escape", b"escaped\n"),
            ])
        },
        "..",
    );
}

#[test]
fn hostile_archive_with_a_nested_parent_dir_entry_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("storage/../../escape", b"escaped\n"),
            ])
        },
        "..",
    );
}

#[test]
fn hostile_archive_with_an_absolute_entry_is_rejected() {
    assert!(!Path::new("/abs").exists(), "/abs exists before the test");
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File("/abs/file", b"absolute\n"),
            ])
        },
        "absolute",
    );
}

#[test]
fn hostile_archive_with_an_absolute_entry_into_the_temp_root_is_rejected() {
    hostile_case(
        &|root| {
            let p = format!("{}/escape", root.display());
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::File(&p, b"absolute\n"),
            ])
        },
        "absolute",
    );
}

/// The classic: a symlink to a system directory, then a file "inside" it. (The file's
/// name is one that /etc does not have, so a broken extractor could not damage the host.)
#[test]
fn hostile_archive_with_a_symlink_to_etc_and_a_file_through_it_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Symlink("storage/link", "/etc"),
                E::File("storage/link/hostile_probe", b"root::0:0::/root:/bin/sh\n"),
            ])
        },
        "outside",
    );
}

/// The same through an absolute link into the temp root, with the file named `passwd`.
#[test]
fn hostile_archive_with_an_absolute_symlink_and_a_passwd_through_it_is_rejected() {
    hostile_case(
        &|root| {
            let t = root.display().to_string();
            build_tar(&[
                E::Dir("storage/"),
                E::Symlink("storage/link", &t),
                E::File("storage/link/passwd", b"root::0:0::/root:/bin/sh\n"),
            ])
        },
        "outside",
    );
}

#[test]
fn hostile_archive_with_a_symlink_climbing_out_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Symlink("storage/up", "../../.."),
                E::File("storage/up/escape", b"escaped\n"),
            ])
        },
        "outside",
    );
}

#[test]
fn hostile_archive_with_a_hardlink_out_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Hardlink("storage/hl", "../../outside"),
                E::File("storage/hl", b"overwritten\n"),
            ])
        },
        "hard link",
    );
}

#[test]
fn hostile_archive_with_a_device_node_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Char("storage/null", 1, 3),
            ])
        },
        "device",
    );
}

#[test]
fn hostile_archive_with_a_fifo_is_rejected() {
    hostile_case(
        &|_| {
            build_tar(&[
                E::Dir("storage/"),
                E::File("storage/ok.txt", b"ok\n"),
                E::Fifo("storage/fifo"),
            ])
        },
        "FIFO",
    );
}

// ---------------------------------------------------------------------------------------
// Verify and restore judge an archive the same way (issue 13, item 15)

/// `verify` fails naming `needle`, and `restore --target` refuses for the same reason
/// before creating anything.
pub(super) fn refused_by_both(entries: &[u8], file_count: u64, needle: &str) {
    let app = TestApp::new();
    let archive = plant_storage_backup_of(&app, entries, file_count);
    let v = app.run(["verify".as_ref(), archive.as_os_str()]);
    v.assert_code(1);
    assert!(
        v.stdout.contains(needle),
        "verify passed or did not say {needle:?}\n{}",
        v.describe()
    );
    let area = app.root.join("area");
    fs::create_dir(&area).unwrap();
    let target = area.join("restored");
    let r = app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ]);
    r.assert_code(1);
    assert!(
        r.stderr.contains(needle),
        "restore did not say {needle:?}\n{}",
        r.describe()
    );
    assert!(!target.exists(), "the target was created\n{}", r.describe());
    assert_eq!(
        fs::read_dir(&area).unwrap().count(),
        0,
        "left in the target's parent"
    );
}

#[test]
fn verify_fails_an_archive_with_a_hard_link_to_a_later_entry() {
    let tar = build_tar(&[
        E::Dir("storage/"),
        E::Hardlink("storage/early", "storage/later"),
        E::File("storage/later", b"data\n"),
    ]);
    refused_by_both(
        &tar,
        2,
        "hard link to something that is not a file extracted before it",
    );
}

#[test]
fn verify_fails_an_archive_with_a_file_then_a_directory_of_the_same_name() {
    let tar = build_tar(&[
        E::Dir("storage/"),
        E::File("storage/x", b"file\n"),
        E::Dir("storage/x/"),
    ]);
    refused_by_both(&tar, 1, "collides with a file");
}

#[test]
fn verify_fails_an_archive_whose_root_is_a_file_with_entries_inside_it() {
    let tar = build_tar(&[
        E::File("storage", b"a file named as the root\n"),
        E::File("storage/inside", b"x\n"),
    ]);
    refused_by_both(&tar, 2, "a parent of it in the archive is a link or a file");
}

/// The tar end-of-archive marker is two zero blocks; cut them off (and with them any
/// entries after the cut), and the reader used to stop quietly as if it had seen them.
fn without_end_marker(mut tar: Vec<u8>) -> Vec<u8> {
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|&b| b == 0) {
        tar.truncate(tar.len() - 512);
    }
    tar
}

#[test]
fn verify_fails_an_archive_cut_at_an_entry_boundary() {
    let tar = without_end_marker(build_tar(&[
        E::Dir("storage/"),
        E::File("storage/a", b"kept\n"),
    ]));
    refused_by_both(&tar, 1, "end-of-archive marker");
}

#[test]
fn verify_fails_an_archive_with_fewer_files_than_its_metadata_records() {
    let tar = build_tar(&[E::Dir("storage/"), E::File("storage/a", b"kept\n")]);
    refused_by_both(
        &tar,
        2,
        "metadata records 2 files and links, the archive holds 1",
    );
}

/// An archive without a single top-level directory whose entry has the name the restore
/// used for its own staging directory (`.tree`): verify passes it, so restore must too.
#[test]
fn an_archive_with_an_entry_named_like_the_staging_root_restores_as_verify_says() {
    let app = TestApp::new();
    let tar = build_tar(&[
        E::Dir("a/"),
        E::File("a/f", b"f\n"),
        E::File(".tree", b"named like the root\n"),
    ]);
    let archive = plant_storage_backup_of(&app, &tar, 2);
    app.run(["verify".as_ref(), archive.as_os_str()])
        .assert_code(0);
    let target = app.root.join("restored");
    app.run([
        "restore".as_ref(),
        archive.as_os_str(),
        "--target".as_ref(),
        target.as_os_str(),
        "--yes".as_ref(),
    ])
    .assert_code(0);
    assert_eq!(
        fs::read(target.join(".tree")).unwrap(),
        b"named like the root\n"
    );
    assert_eq!(fs::read(target.join("a/f")).unwrap(), b"f\n");
}
