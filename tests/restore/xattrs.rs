//! Extended attributes survive a backup and a restore: `user.*` on files and directories,
//! and (as root) a POSIX ACL, through archives — which GNU tar `--xattrs` reads too — and
//! through snapshots, a later unchanged snapshot included (it reuses its parent's entries).
//! An archive that carries a `security.*` attribute is refused before anything is written.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use std::time::Duration;

use super::*;

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn set(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name, a buffer of the value's length.
    let rc = unsafe {
        libc::lsetxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path and name, a buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// A POSIX ACL as the kernel stores it: owner rw, user 65534 r, group r, mask r, other r.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 65534),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const ACL: &str = "system.posix_acl_access";

/// Attributes on a media file (binary value too) and on a directory, plus an ACL as root.
fn mark(app: &TestApp) {
    let file = app.storage.join("client_1/images/portrait.jpg");
    app.write_storage_file("client_1/images/portrait.jpg", b"jpeg bytes");
    set(&file, "user.origin", b"camera 1");
    set(&file, "user.binary", &[0, 1, 2, 255]);
    let dir = app.storage.join("client_1");
    set(&dir, "user.client", "клиент".as_bytes());
    if is_root() {
        set(&file, ACL, &acl());
    }
}

/// The `user.*` attributes `mark` set, found on the `storage` tree under a root.
#[track_caller]
fn assert_user_marked(storage: &Path, ctx: &str) {
    let file = storage.join("client_1/images/portrait.jpg");
    assert_eq!(
        get(&file, "user.origin").as_deref(),
        Some(&b"camera 1"[..]),
        "{ctx}"
    );
    assert_eq!(
        get(&file, "user.binary").as_deref(),
        Some(&[0u8, 1, 2, 255][..]),
        "{ctx}"
    );
    assert_eq!(
        get(&storage.join("client_1"), "user.client").as_deref(),
        Some("клиент".as_bytes()),
        "{ctx}"
    );
}

/// Every attribute `mark` set (the ACL too, as root), found on the restored tree.
#[track_caller]
fn assert_marked(storage: &Path, ctx: &str) {
    assert_user_marked(storage, ctx);
    if is_root() {
        let file = storage.join("client_1/images/portrait.jpg");
        assert_eq!(get(&file, ACL), Some(acl()), "{ctx}: the ACL");
    }
}

/// `restore --latest storage --target DIR/storage`: DIR.
fn restore_latest(app: &TestApp) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("storage");
    app.run([
        "restore".as_ref(),
        "--latest".as_ref(),
        "storage".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ])
    .assert_code(0);
    out
}

fn restore_latest_storage(app: &TestApp, ctx: &str) -> tempfile::TempDir {
    let out = restore_latest(app);
    assert_marked(&out.path().join("storage"), ctx);
    out
}

/// GNU tar `--xattrs --acls` extracting `archive` (zstd) into a new directory.
fn gnu_tar_extract(archive: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    tool(
        "tar",
        [
            "--xattrs".as_ref(),
            "--xattrs-include=*".as_ref(),
            "--acls".as_ref(),
            "--zstd".as_ref(),
            "-xf".as_ref(),
            archive.as_os_str(),
            "-C".as_ref(),
            out.path().as_os_str(),
        ],
    )
    .assert_code(0);
    out
}

#[test]
fn user_attributes_and_acls_survive_archives_and_gnu_tar_reads_them() {
    if !require(
        "root, for the ACL",
        root("set a POSIX ACL for another user"),
    ) {
        return;
    }
    let app = TestApp::new();
    mark(&app);
    let created = app.create("storage");
    restore_latest_storage(&app, "archive");

    // GNU tar reads our PAX records as its own. It keeps ACLs in its own `SCHILY.acl.*`
    // records: the ACL (a raw `system.posix_acl_access` record here) comes back through
    // our restore, above.
    let out = gnu_tar_extract(&data_path(&created));
    assert_user_marked(&out.path().join("storage"), "GNU tar");
}

#[test]
fn user_attributes_and_acls_survive_snapshots_and_their_unchanged_children() {
    if !require(
        "root, for the ACL",
        root("set a POSIX ACL for another user"),
    ) {
        return;
    }
    let app = TestApp::new();
    app.write_config("storage_format = \"snapshot\"");
    mark(&app);
    app.create("storage");
    restore_latest_storage(&app, "snapshot");
    // Nothing changed: a later snapshot takes the file from its parent, attributes too.
    // (A file changed within the second a snapshot starts is read again by the next one:
    // its ctime cannot tell a change in that second; snapshots are taken until one reads
    // nothing.)
    poll_until(
        Duration::from_secs(30),
        "a snapshot that reads no file",
        || {
            let again = app.run(["create", "--type", "storage"]);
            again.assert_code(0);
            again.stdout.contains("0 files read")
        },
    );
    restore_latest_storage(&app, "an unchanged snapshot");
    // `export` writes them as an archive backup would: GNU tar reads them.
    let exported_to = tempfile::tempdir().unwrap();
    let exported = exported_to.path().join("storage.tar.zst");
    app.run([
        "export".as_ref(),
        "--latest".as_ref(),
        "-o".as_ref(),
        exported.as_os_str(),
    ])
    .assert_code(0);
    let out = gnu_tar_extract(&exported);
    assert_user_marked(&out.path().join("storage"), "export, GNU tar");
    // A changed attribute (new ctime) is read again, and `diff` names it.
    let before = app.create("storage");
    set(
        &app.storage.join("client_1/images/portrait.jpg"),
        "user.origin",
        b"camera 2",
    );
    let after = app.create("storage");
    let diff = app.run(["diff", name_of(&before).as_str(), name_of(&after).as_str()]);
    diff.assert_code(0);
    assert!(
        diff.stdout
            .lines()
            .any(|l| l.starts_with('U') && l.contains("client_1/images/portrait.jpg")),
        "{}",
        diff.describe()
    );
    let out = restore_latest(&app);
    assert_eq!(
        get(
            &out.path().join("storage/client_1/images/portrait.jpg"),
            "user.origin"
        )
        .as_deref(),
        Some(&b"camera 2"[..])
    );
}

#[test]
fn an_archive_carrying_a_security_attribute_is_refused_before_anything_is_written() {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = Header::new_gnu();
    dir.set_entry_type(EntryType::Directory);
    dir.set_path("storage/").unwrap();
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_cksum();
    b.append(&dir, &[][..]).unwrap();
    // A file given a capability by a PAX record, as `setcap` would leave it.
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &[1u8, 0, 0, 2][..])])
        .unwrap();
    let mut file = Header::new_gnu();
    file.set_entry_type(EntryType::Regular);
    file.set_path("storage/tool").unwrap();
    file.set_mode(0o755);
    file.set_size(4);
    file.set_cksum();
    b.append(&file, &b"\x7fELF"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    super::hostile_archives::refused_by_both(&bytes, 1, "security.capability");
}
