//! The journal of the containers a run stopped, in the backup directory: written
//! (`.partial` + fsync + rename) before the first container is stopped and removed once
//! every one runs again, so a run killed (or a machine that lost power) while the app was
//! down leaves word of what to start; the next run, or the daemon's start, starts them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Its name in the backup directory.
pub const JOURNAL_FILE: &str = "containers-stopped.json";
/// Far more than any real journal: a damaged or foreign file is not read whole.
const JOURNAL_LIMIT: u64 = 1024 * 1024;
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedJournal {
    pub version: u32,
    /// What they were stopped for: `storage`, `full`, `restore`.
    pub stopped_for: String,
    /// When (RFC 3339).
    pub at: String,
    /// The process that stopped them.
    pub pid: u32,
    /// The engine they run on.
    pub host: String,
    pub containers: Vec<StoppedContainer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedContainer {
    pub id: String,
    pub name: String,
}

impl StoppedJournal {
    pub fn new(stopped_for: &str, host: &str, containers: Vec<StoppedContainer>) -> Self {
        StoppedJournal {
            version: VERSION,
            stopped_for: stopped_for.to_string(),
            at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            pid: std::process::id(),
            host: host.to_string(),
            containers,
        }
    }
}

pub fn path(backup_dir: &Path) -> PathBuf {
    backup_dir.join(JOURNAL_FILE)
}

/// The journal a run left, if any. A file that does not parse is an error saying so (the
/// caller warns and sets it aside: who to start is then unknown, and said).
pub fn read(backup_dir: &Path) -> Result<Option<StoppedJournal>> {
    use std::io::Read;
    let file = path(backup_dir);
    let mut text = Vec::new();
    match std::fs::File::open(&file) {
        Ok(f) => f
            .take(JOURNAL_LIMIT)
            .read_to_end(&mut text)
            .map_err(|e| Error::io("read", &file, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &file, e)),
    };
    match serde_json::from_slice::<StoppedJournal>(&text) {
        Ok(j) if j.version == VERSION => Ok(Some(j)),
        Ok(j) => Err(Error::Refused(format!(
            "{} is of version {}, which this build does not read",
            file.display(),
            j.version
        ))),
        Err(e) => Err(Error::Refused(format!(
            "{} does not parse ({e}): which containers an earlier run stopped is unknown; check `docker ps -a`",
            file.display()
        ))),
    }
}

/// Write it durably before anything is stopped; `None` removes it (all running again).
pub fn write(backup_dir: &Path, journal: Option<&StoppedJournal>, mode: u32) -> Result<()> {
    let file = path(backup_dir);
    match journal {
        Some(j) if !j.containers.is_empty() => {
            let json = serde_json::to_vec_pretty(j)
                .map_err(|e| Error::Internal(format!("serialize the containers journal: {e}")))?;
            crate::catalog::write_atomic(&file, &json, mode)
        }
        _ => match std::fs::remove_file(&file) {
            Ok(()) => crate::catalog::sync_dir(backup_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &file, e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let j = StoppedJournal::new(
            "storage",
            "unix:///run/docker.sock",
            vec![StoppedContainer {
                id: "a".repeat(64),
                name: "app".into(),
            }],
        );
        write(dir.path(), Some(&j), 0o600).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(j));
        write(dir.path(), None, 0o600).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        std::fs::write(path(dir.path()), b"{ damaged").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");
    }
}
