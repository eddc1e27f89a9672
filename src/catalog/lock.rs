//! One mutating operation per backup directory (docs/design.md §2). The lock is an OS file lock
//! (`flock`) on `.vertex-backup.lock`, so it dies with its process: a crash can never
//! leave it stuck. The file's text names the holder for the error a second caller sees.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

pub const LOCK_FILE: &str = ".vertex-backup.lock";

/// The longest pause between two attempts while waiting: a released lock is taken within
/// a second, without spinning on the file.
const MAX_POLL_PAUSE: Duration = Duration::from_secs(1);

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

    /// Take the lock, waiting up to `wait` for its holder to finish (`--wait`: a cron job
    /// overlapping a long backup). Who holds it is logged once; at the deadline the error
    /// is the same [`Error::Locked`] `acquire` gives at once.
    pub fn acquire_waiting(
        dir: &Path,
        operation: &str,
        wait: Option<Duration>,
    ) -> Result<BackupDirLock> {
        match wait {
            None => Self::acquire(dir, operation),
            Some(wait) => Self::acquire_file_waiting(dir, LOCK_FILE, operation, wait, &|| false),
        }
    }

    /// [`Self::acquire_file`], waiting up to `wait` for the holder (logged once) unless
    /// `cancelled` says to stop ([`Error::Cancelled`]). Polls with a bounded backoff
    /// rather than blocking in `flock` on a helper thread, which could not be abandoned
    /// at the deadline without taking the lock behind our back later.
    pub fn acquire_file_waiting(
        dir: &Path,
        file_name: &str,
        operation: &str,
        wait: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<BackupDirLock> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        let mut announced = false;
        loop {
            match Self::acquire_file(dir, file_name, operation) {
                Err(Error::Locked { dir, holder }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Locked { dir, holder });
                    }
                    if cancelled() {
                        return Err(Error::Cancelled);
                    }
                    if !announced {
                        tracing::warn!(
                            "{} is locked ({holder}): waiting up to {} for it",
                            dir.join(file_name).display(),
                            humantime::format_duration(wait)
                        );
                        announced = true;
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(MAX_POLL_PAUSE);
                }
                other => return other,
            }
        }
    }

    /// The same protocol on another lock file in `dir` (the daemon's own lock).
    pub fn acquire_file(dir: &Path, file_name: &str, operation: &str) -> Result<BackupDirLock> {
        let path = dir.join(file_name);
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
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

/// The holder a locked file names, or "holder unknown" (written between its open and
/// its stamp, or by a version that did not stamp).
fn read_holder(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    match holder.trim() {
        "" => "holder unknown".into(),
        h => h.to_string(),
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

    #[test]
    fn waiting_gets_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = BackupDirLock::acquire(dir.path(), "create full").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            BackupDirLock::acquire_waiting(&root, "rotate", Some(Duration::from_secs(60)))
        });
        rx.recv().unwrap();
        drop(first);
        let taken = waiter.join().unwrap().unwrap();
        assert!(taken.path().ends_with(LOCK_FILE));
    }

    #[test]
    fn waiting_fails_at_the_deadline_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = BackupDirLock::acquire(dir.path(), "create full").unwrap();
        let began = Instant::now();
        let err =
            BackupDirLock::acquire_waiting(dir.path(), "rotate", Some(Duration::from_millis(300)))
                .unwrap_err();
        assert!(began.elapsed() >= Duration::from_millis(300));
        assert!(matches!(&err, Error::Locked { holder, .. } if holder.contains("create full")));
    }
}
