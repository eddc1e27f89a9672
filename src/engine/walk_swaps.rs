//! Tests of the storage source against a tree changed under it: each swaps an entry on
//! disk between two steps of the source (the walk has listed the directory, not yet
//! looked at the entry), so the interleaving is exact, not a race; and a tree nested
//! deeper than paths can go.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// `root` holding files `a` and `b`, and a secret outside it; the source is past the root
/// and `a`, so the next entry it looks at is `b`.
fn walked_to_b() -> (tempfile::TempDir, PathBuf, StorageSource) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a"), b"first").unwrap();
    fs::write(root.join("b"), b"walked").unwrap();
    fs::write(dir.path().join("secret"), b"not for the archive").unwrap();
    let mut source = StorageSource::stepwise(&root, &[], Cancel::new()).unwrap();
    assert!(source.next().unwrap().unwrap().is_root());
    let a = source.next().unwrap().unwrap();
    assert_eq!(a.rel, Path::new("a"));
    source.finish(a).unwrap();
    (dir, root, source)
}

/// What the rest of the walk yields (relative paths) and its warnings.
fn rest(mut source: StorageSource) -> (Vec<PathBuf>, Vec<String>) {
    let mut rels = Vec::new();
    while let Some(entry) = source.next() {
        let entry = entry.unwrap();
        rels.push(entry.rel.clone());
        source.finish(entry).unwrap();
    }
    (rels, source.into_warnings())
}

fn assert_changed_warning(warnings: &[String], now: &str) {
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("storage/b changed while being backed up")
            && warnings[0].contains(now),
        "{warnings:?}"
    );
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a plain mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_symlink_swapped_in_for_a_walked_file_is_not_followed() {
    let (dir, root, source) = walked_to_b();
    fs::remove_file(root.join("b")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("b")).unwrap();
    let (rels, warnings) = rest(source);
    assert!(rels.is_empty(), "the link's target was archived: {rels:?}");
    assert_changed_warning(&warnings, "now a symlink");
}

#[test]
fn a_fifo_swapped_in_for_a_walked_file_is_skipped_without_blocking() {
    let (_dir, root, source) = walked_to_b();
    fs::remove_file(root.join("b")).unwrap();
    mkfifo(&root.join("b"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(rest(source)));
    // A deadline, not a synchronisation: the walk either finishes at once or hangs in
    // open(2) waiting for a writer, which we then provide so the thread ends.
    let outcome = rx.recv_timeout(Duration::from_secs(20));
    if outcome.is_err() {
        let _writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(root.join("b"));
        panic!("the walk blocked opening a FIFO swapped in for a file");
    }
    let (rels, warnings) = outcome.unwrap();
    assert!(rels.is_empty(), "{rels:?}");
    assert_changed_warning(&warnings, "now a FIFO");
}

#[test]
fn a_directory_swapped_in_for_a_walked_file_is_a_changed_warning() {
    let (_dir, root, source) = walked_to_b();
    fs::remove_file(root.join("b")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    fs::write(root.join("b/inside"), b"x").unwrap();
    let (rels, warnings) = rest(source);
    assert!(rels.is_empty(), "{rels:?}");
    assert_changed_warning(&warnings, "now a directory");
}

#[test]
fn a_file_swapped_between_lstat_and_open_is_not_archived() {
    // The window the open itself must close: `lstat` saw the walked file, then another
    // file (a hard link to the secret, so the same type) took its name.
    let (dir, root, mut source) = walked_to_b();
    let walked = fs::symlink_metadata(root.join("b")).unwrap();
    fs::remove_file(root.join("b")).unwrap();
    fs::hard_link(dir.path().join("secret"), root.join("b")).unwrap();
    let found = source.open_walked(&root.join("b"), &walked).unwrap();
    assert!(found.is_none(), "another file was opened as the walked one");
    let warnings = source.into_warnings();
    assert_changed_warning(&warnings, "replaced by another file");
}

#[test]
fn a_file_swapped_for_a_directory_between_lstat_and_open_is_not_opened() {
    let (_dir, root, mut source) = walked_to_b();
    let walked = fs::symlink_metadata(root.join("b")).unwrap();
    fs::remove_file(root.join("b")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    assert!(
        source
            .open_walked(&root.join("b"), &walked)
            .unwrap()
            .is_none()
    );
    assert_changed_warning(&source.into_warnings(), "now a directory");
}

#[test]
fn a_directory_swapped_for_a_file_is_a_changed_warning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    fs::create_dir_all(root.join("b")).unwrap();
    fs::write(root.join("a"), b"first").unwrap();
    fs::write(root.join("b/inside"), b"x").unwrap();
    let mut source = StorageSource::stepwise(&root, &[], Cancel::new()).unwrap();
    assert!(source.next().unwrap().unwrap().is_root());
    let a = source.next().unwrap().unwrap();
    source.finish(a).unwrap();
    fs::remove_dir_all(root.join("b")).unwrap();
    fs::write(root.join("b"), b"now a file").unwrap();
    let (rels, warnings) = rest(source);
    assert!(rels.is_empty(), "{rels:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("storage/b changed while being backed up"),
        "{warnings:?}"
    );
}

/// `levels` nested directories `d` under `top`, each with a file `f`, made relative to
/// directory handles (a path to the bottom is far longer than `PATH_MAX`).
pub(crate) fn deep_tree(top: &Path, levels: usize) {
    fs::create_dir(top).unwrap();
    let name = CString::new("d").unwrap();
    let file = CString::new("f").unwrap();
    let mut dir = fs::File::open(top).unwrap().into();
    for _ in 0..levels {
        let fd: &OwnedFd = &dir;
        // SAFETY: a valid directory fd and NUL-terminated names; the fds we get are owned.
        unsafe {
            assert_eq!(libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755), 0);
            let f = libc::openat(
                fd.as_raw_fd(),
                file.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            assert!(f >= 0);
            libc::close(f);
            let next = libc::openat(
                fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            assert!(next >= 0);
            dir = OwnedFd::from_raw_fd(next);
        }
    }
}

#[test]
fn a_tree_deeper_than_path_max_is_cut_with_one_short_warning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("after"), b"x").unwrap();
    deep_tree(&root.join("deep"), 5000);
    let source = StorageSource::new(&root, &[], Cancel::new()).unwrap();
    let (rels, warnings) = rest(source);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].len() < 400,
        "a {}-byte warning",
        warnings[0].len()
    );
    assert!(
        warnings[0].contains("storage/deep holds a tree nested deeper"),
        "{warnings:?}"
    );
    assert!(
        rels.contains(&PathBuf::from("after")),
        "the rest of the tree is archived"
    );
    // Down to the limit, every level is there with its file.
    let deepest = rels.iter().map(|r| r.as_os_str().len()).max().unwrap();
    assert!(root.join("x").as_os_str().len() + deepest <= MAX_PATH_BYTES + 1);
    assert!(
        deepest > MAX_PATH_BYTES - root.as_os_str().len() - 8,
        "cut too early: {deepest}"
    );
    let (bytes, files) = estimate(&root, &[]).unwrap();
    assert_eq!(
        files as usize,
        rels.iter()
            .filter(|r| r.ends_with("f") || r.ends_with("after"))
            .count()
    );
    assert_eq!(bytes, 1);
}
