//! Descriptors of the live database's files that this process never closes.
//!
//! POSIX locks belong to the process and the file, not to the descriptor: closing any
//! descriptor of a file drops every lock the process holds on it — SQLite's too, those of
//! a backup job's connection reading the same database in this daemon. SQLite itself never
//! closes a descriptor while one of its connections holds a lock (it parks it). The
//! replicator keeps its own descriptors of the database file (the base is read through
//! it) and of its `-shm` index (the commit point is read through it); they are parked
//! here for the life of the process, one per file (device and inode), and shared by every
//! replicator that opens the same file again — after a reload, after an error, or when a
//! replaced file is opened. A file replaced at its path keeps its old descriptor (and so
//! its space on disk) until the daemon restarts.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

type FileKey = (u64, u64);

static HELD: Mutex<Vec<(FileKey, Arc<File>)>> = Mutex::new(Vec::new());

fn find(held: &[(FileKey, Arc<File>)], key: FileKey) -> Option<Arc<File>> {
    held.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, f)| Arc::clone(f))
}

/// The process's descriptor of the file at `path` (read-only), opened the first time.
pub fn hold(path: &Path) -> io::Result<Arc<File>> {
    // Looked up by a `stat` of the path: no descriptor is opened for a file already held.
    let meta = std::fs::metadata(path)?;
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(file) = find(&held, (meta.dev(), meta.ino())) {
        return Ok(file);
    }
    let file = File::open(path)?;
    // The path may have been replaced between the `stat` and the open: the descriptor is
    // filed under the file it did open. Never closed, even on an error here.
    let opened = match file.metadata() {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) => {
            std::mem::forget(file);
            return Err(e);
        }
    };
    if let Some(existing) = find(&held, opened) {
        std::mem::forget(file);
        return Ok(existing);
    }
    let file = Arc::new(file);
    held.push((opened, Arc::clone(&file)));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_descriptor_per_file_whatever_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.db");
        std::fs::write(&path, b"x").expect("write");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let a = hold(&path).expect("hold");
        let b = hold(&link).expect("hold through the link");
        assert!(Arc::ptr_eq(&a, &b));
        // A file replaced at the path is another file: its own descriptor.
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, b"y").expect("write the new file");
        let c = hold(&path).expect("hold the new file");
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(hold(&dir.path().join("missing.db")).is_err());
    }
}
