//! The write protocol that makes a backup either complete or absent (docs/design.md §2): data goes
//! to `NAME.partial`, is fsynced, and only then renamed; the directory is fsynced after
//! the rename. A `.partial` file is by construction never a backup, and the next
//! mutating run removes it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

pub const PARTIAL_SUFFIX: &str = ".partial";

/// The temporary name a file is written under before it becomes `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

/// A file being written under its `.partial` name. Dropped without [`PartialFile::finish`]
/// (an error, a cancel), it deletes itself.
#[derive(Debug)]
pub struct PartialFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    keep: bool,
}

impl PartialFile {
    /// Create `final_path.partial` with `mode` (applied explicitly, whatever the umask).
    pub fn create(final_path: &Path, mode: u32) -> Result<(PartialFile, File)> {
        let temp_path = partial_path(final_path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp_path)
            .ctx("create", &temp_path)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .ctx("set permissions on", &temp_path)?;
        Ok((
            PartialFile {
                final_path: final_path.to_path_buf(),
                temp_path,
                keep: false,
            },
            file,
        ))
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Make the data durable under the temporary name (call before [`Self::rename`]).
    pub fn sync(&self, file: &File) -> Result<()> {
        file.sync_all().ctx("fsync", &self.temp_path)
    }

    /// The file was moved into place by other means: do not delete it when dropped.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Rename into place and fsync the directory. After this the file is final.
    pub fn rename(mut self) -> Result<PathBuf> {
        fs::rename(&self.temp_path, &self.final_path).ctx("rename into place", &self.final_path)?;
        self.keep = true;
        if let Some(dir) = self.final_path.parent() {
            sync_dir(dir)?;
        }
        Ok(self.final_path.clone())
    }

    /// Rename into place without the directory's fsync, for a file written every second
    /// whose name only counts together with a state file renamed after it (the
    /// replication stream: a segment, then `position.json`). The data was synced first,
    /// so the name never points at missing bytes; a journaling filesystem (ext4, XFS)
    /// commits renames in the order they were made, so if the later state survives a
    /// power cut this name does too, and if it is lost the state is older and the work
    /// is redone. Each fsync forces a journal commit, which stalls the other writers of
    /// the filesystem for a moment — the app's commits among them: with the directory's
    /// fsync too the app's COMMIT p99 rose by half again (`bench/replication.sh`).
    pub fn rename_ordered(mut self) -> Result<PathBuf> {
        fs::rename(&self.temp_path, &self.final_path).ctx("rename into place", &self.final_path)?;
        self.keep = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// fsync a directory so a rename in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Write `bytes` to a `.partial` file and fsync it; the caller renames it when ready.
pub fn write_partial(final_path: &Path, bytes: &[u8], mode: u32) -> Result<PartialFile> {
    let (partial, mut file) = PartialFile::create(final_path, mode)?;
    file.write_all(bytes).ctx("write", partial.temp_path())?;
    partial.sync(&file)?;
    Ok(partial)
}

/// Replace `path` atomically with `bytes` (small files: metadata, state).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_partial(path, bytes, mode)?.rename().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_partial_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.db");
        {
            let (p, mut f) = PartialFile::create(&target, 0o600).unwrap();
            f.write_all(b"half").unwrap();
            assert!(p.temp_path().exists());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn atomic_write_sets_mode_regardless_of_umask() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.json");
        write_atomic(&target, b"{}", 0o600).unwrap();
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&target).unwrap(), b"{}");
        assert!(!partial_path(&target).exists());
    }
}
