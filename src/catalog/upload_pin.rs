//! Backups being uploaded are pinned against local rotation: an upload job writes the
//! stems it is sending to `.uploading-PID` in the backup directory and holds an exclusive
//! lock on that file until it ends. Rotation keeps every stem of a pin file whose lock is
//! held; a pin file whose holder died (lock free) pins nothing and is removed by the
//! next upload. Uploads never take the backup directory's lock, so a long upload never
//! delays a backup, and local retention never waits for offsite beyond the backups in
//! flight.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::Catalog;
use crate::error::{IoContext, Result};

const PIN_PREFIX: &str = ".uploading-";

/// Held while an upload job runs; dropping it unpins.
pub struct UploadPin {
    path: PathBuf,
    _file: File,
}

impl Drop for UploadPin {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Catalog {
    /// Pin `stems` until the returned guard drops.
    pub fn pin_for_upload(&self, stems: &[String]) -> Result<UploadPin> {
        self.prepare()?;
        // Pins of upload jobs that died are stale: nobody holds their lock.
        for (path, held) in self.pin_files() {
            if !held {
                let _ = fs::remove_file(path);
            }
        }
        let path = self
            .root()
            .join(format!("{PIN_PREFIX}{}", std::process::id()));
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .ctx("create the upload pin", &path)?;
        file.lock().ctx("lock the upload pin", &path)?;
        file.write_all(stems.join("\n").as_bytes())
            .ctx("write the upload pin", &path)?;
        Ok(UploadPin { path, _file: file })
    }

    /// The stems live upload jobs have pinned.
    pub fn pinned_for_upload(&self) -> Vec<String> {
        self.pin_files()
            .into_iter()
            .filter(|(_, held)| *held)
            .filter_map(|(path, _)| fs::read_to_string(path).ok())
            .flat_map(|text| {
                text.lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every pin file, and whether a live process holds it.
    fn pin_files(&self) -> Vec<(PathBuf, bool)> {
        let Ok(rd) = fs::read_dir(self.root()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(PIN_PREFIX))
            .map(|e| {
                let path = e.path();
                let held = match File::open(&path) {
                    // A shared lock we can take means no one holds the exclusive one.
                    Ok(f) => match f.try_lock_shared() {
                        Ok(()) => false,
                        Err(std::fs::TryLockError::WouldBlock) => true,
                        Err(_) => true,
                    },
                    Err(_) => false,
                };
                (path, held)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_while_its_guard_lives() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path(), 0o600, 0o700);
        let pin = catalog
            .pin_for_upload(&["db_backup_20261201_020000".to_string()])
            .unwrap();
        // Same process, another file description: flock sees the exclusive lock.
        assert_eq!(
            catalog.pinned_for_upload(),
            vec!["db_backup_20261201_020000".to_string()]
        );
        drop(pin);
        assert!(catalog.pinned_for_upload().is_empty());
    }
}
