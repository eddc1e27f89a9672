//! One mutating operation per backup directory (SPEC §4). The lock is an OS file lock
//! (`flock`) on `.vertex-backup.lock`, so it dies with its process: a crash can never
//! leave it stuck. The file's text names the holder for the error a second caller sees.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub const LOCK_FILE: &str = ".vertex-backup.lock";

/// Held while a backup, restore or rotation mutates the backup directory.
#[derive(Debug)]
pub struct BackupDirLock {
    _file: File,
    path: PathBuf,
}

impl BackupDirLock {
    /// Take the lock or fail at once, naming the holder (pid, operation, start time).
    pub fn acquire(dir: &Path, operation: &str) -> Result<BackupDirLock> {
        Self::acquire_file(dir, LOCK_FILE, operation)
    }

    /// The same protocol on another lock file in `dir` (the daemon's own lock).
    pub fn acquire_file(dir: &Path, file_name: &str, operation: &str) -> Result<BackupDirLock> {
        let path = dir.join(file_name);
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let stamp = format!(
            "pid {} running `{}` since {}",
            std::process::id(),
            operation,
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
        );
        file.set_len(0).ctx("write the lock file", &path)?;
        file.seek(SeekFrom::Start(0))
            .ctx("write the lock file", &path)?;
        file.write_all(stamp.as_bytes())
            .ctx("write the lock file", &path)?;
        Ok(BackupDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Open (creating, 0600, never truncating) a file that is only ever locked. Read-write,
/// because the directory lock records its holder in it.
pub(super) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .ctx("open the lock file", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = BackupDirLock::acquire(dir.path(), "create full").unwrap();
        let err = BackupDirLock::acquire(dir.path(), "rotate").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("create full"), "{msg}");
        drop(first);
        BackupDirLock::acquire(dir.path(), "rotate").unwrap();
    }
}
