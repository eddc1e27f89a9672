//! The small JSON files beside the backups that remember what the backups themselves cannot
//! say — the run state, the verification verdicts, the daemon's run history — kept by one
//! typed store, [`StateFile`]:
//! - writes are atomic (`.partial`, fsync, rename, directory fsync: [`write_atomic`]);
//! - updates are serialized across processes by a lock of the file's own (`.NAME.lock`),
//!   not the backup-directory lock, so a `verify` never waits for a running backup, and
//!   readers never take any lock: they see the old or the new file, never half of one;
//! - a file that does not parse is never silently read as "nothing known": it is moved
//!   aside as `NAME.corrupt-YYYYMMDDTHHMMSS`, kept for the operator, and reported
//!   ([`report`]: a warning on stderr, and in the daemon an event).

use std::fs::{self, File};
use std::io::ErrorKind;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::atomic::{sync_dir, write_atomic};
use crate::error::{Error, IoContext, Result};

/// A state file that could not be parsed, and where it was moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub file: PathBuf,
    pub moved_to: PathBuf,
    /// Why it could not be read (the parser's message).
    pub cause: String,
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the state file {} is corrupt ({}); it was moved aside as {} and starts afresh",
            self.file.display(),
            self.cause,
            self.moved_to.display()
        )
    }
}

/// What a load found: the value, and the corrupt file it moved aside first, if any.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    pub set_aside: Option<SetAside>,
}

/// What an update returned, and the corrupt file it moved aside first, if any.
#[derive(Debug)]
pub struct Updated<R> {
    pub result: R,
    pub set_aside: Option<SetAside>,
}

/// Where set-aside reports go besides the return value. Engine code has no event channel
/// (it is synchronous and shared by the CLI and the daemon), so the daemon registers one
/// here for as long as it runs; without one, the report is a `tracing` warning (stderr).
type Reporter = Arc<dyn Fn(&SetAside) + Send + Sync>;
static REPORTER: Mutex<Option<Reporter>> = Mutex::new(None);

/// Send every set-aside report to `reporter` until the guard is dropped.
pub fn report_set_asides_to(reporter: impl Fn(&SetAside) + Send + Sync + 'static) -> ReporterGuard {
    *REPORTER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(reporter));
    ReporterGuard(())
}

/// Unregisters the reporter when dropped.
#[must_use = "the reporter is unregistered when the guard is dropped"]
pub struct ReporterGuard(());

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        *REPORTER.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Tell the operator a state file was set aside: to the registered reporter (the daemon
/// turns it into an event, which is also logged), else as a warning on stderr.
pub fn report(set_aside: &SetAside) {
    let reporter = REPORTER.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match reporter {
        Some(r) => r(set_aside),
        None => tracing::warn!("{set_aside}"),
    }
}

/// One JSON state file of type `T`; a missing file reads as `T::default()`.
#[derive(Debug, Clone)]
pub struct StateFile<T> {
    path: PathBuf,
    mode: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Default> StateFile<T> {
    /// `path`, written with `mode`.
    pub fn new(path: PathBuf, mode: u32) -> Self {
        StateFile {
            path,
            mode,
            _type: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock that serializes updates: `.NAME.lock` beside the file.
    pub fn lock_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path.with_file_name(format!(".{name}.lock"))
    }

    /// Read the file without waiting for anyone. A corrupt file is moved aside (under the
    /// update lock, so a writer's fresh file is never the one moved) and reported.
    pub fn load(&self) -> Result<Loaded<T>> {
        match self.read()? {
            Parsed::Value(value) => Ok(Loaded {
                value,
                set_aside: None,
            }),
            Parsed::Corrupt(_) => {
                let _lock = self.lock()?;
                self.load_locked()
            }
        }
    }

    /// The value, reporting a corrupt file and reading an unreadable one as the default
    /// (with a warning): for readers that show the state, never for read-modify-write.
    pub fn load_or_default(&self) -> T {
        match self.load() {
            Ok(loaded) => loaded.value,
            Err(e) => {
                tracing::warn!("{}", crate::error_chain(&e));
                T::default()
            }
        }
    }

    /// Read, change with `change`, write back — as one step against every other process
    /// updating the same file. An unreadable file (not: corrupt) fails the update rather
    /// than be overwritten.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> Result<Updated<R>> {
        let _lock = self.lock()?;
        let Loaded {
            mut value,
            set_aside,
        } = self.load_locked()?;
        let result = change(&mut value);
        let bytes = serde_json::to_vec_pretty(&value).map_err(|e| {
            Error::io(
                "serialize the state file",
                &self.path,
                std::io::Error::other(e),
            )
        })?;
        write_atomic(&self.path, &bytes, self.mode)?;
        Ok(Updated { result, set_aside })
    }

    fn read(&self) -> Result<Parsed<T>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(match serde_json::from_slice(&bytes) {
                Ok(value) => Parsed::Value(value),
                Err(e) => Parsed::Corrupt(e.to_string()),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Parsed::Value(T::default())),
            Err(e) => Err(Error::io("read the state file", &self.path, e)),
        }
    }

    /// [`Self::load`] for a caller holding the update lock: the file cannot change under
    /// it, so a corrupt one is safe to move aside.
    fn load_locked(&self) -> Result<Loaded<T>> {
        match self.read()? {
            Parsed::Value(value) => Ok(Loaded {
                value,
                set_aside: None,
            }),
            Parsed::Corrupt(cause) => {
                let set_aside = self.move_aside(cause)?;
                report(&set_aside);
                Ok(Loaded {
                    value: T::default(),
                    set_aside: Some(set_aside),
                })
            }
        }
    }

    /// Rename the file to `NAME.corrupt-YYYYMMDDTHHMMSS` (`-N` appended if a file of that
    /// second is already there), durably.
    fn move_aside(&self, cause: String) -> Result<SetAside> {
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
        let base = {
            let mut s = self.path.as_os_str().to_owned();
            s.push(format!(".corrupt-{stamp}"));
            PathBuf::from(s)
        };
        let mut moved_to = base.clone();
        let mut n = 1;
        while moved_to.exists() {
            n += 1;
            let mut s = base.as_os_str().to_owned();
            s.push(format!("-{n}"));
            moved_to = PathBuf::from(s);
        }
        fs::rename(&self.path, &moved_to).ctx("move aside the corrupt state file", &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(SetAside {
            file: self.path.clone(),
            moved_to,
            cause,
        })
    }

    /// Wait for the update lock (held only for one small read-modify-write).
    fn lock(&self) -> Result<File> {
        let path = self.lock_path();
        let file = super::lock::open_lock_file(&path)?;
        file.lock().ctx("lock", &path)?;
        Ok(file)
    }
}

enum Parsed<T> {
    Value(T),
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Map = BTreeMap<String, u32>;

    fn store(dir: &Path) -> StateFile<Map> {
        StateFile::new(dir.join("s.json"), 0o600)
    }

    #[test]
    fn a_missing_file_is_the_default_and_an_update_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.load().unwrap().value, Map::new());
        s.update(|m| m.insert("a".into(), 1)).unwrap();
        assert_eq!(s.load().unwrap().value, Map::from([("a".into(), 1)]));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        fs::write(s.path(), b"{\"a\": 1,").unwrap();
        let loaded = s.load().unwrap();
        let aside = loaded.set_aside.expect("reported");
        assert_eq!(loaded.value, Map::new());
        assert_eq!(aside.file, s.path());
        let name = aside.moved_to.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("s.json.corrupt-"), "{name}");
        assert_eq!(fs::read(&aside.moved_to).unwrap(), b"{\"a\": 1,");
        assert!(!s.path().exists());
        // Reported once: the next load finds nothing to set aside.
        assert!(s.load().unwrap().set_aside.is_none());
    }

    #[test]
    fn an_update_of_a_corrupt_file_keeps_it_and_writes_fresh_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        fs::write(s.path(), b"not json").unwrap();
        let first = s.update(|m| m.insert("a".into(), 1)).unwrap();
        assert!(first.set_aside.is_some());
        fs::write(s.path(), b"again not json").unwrap();
        let second = s.update(|m| m.insert("b".into(), 2)).unwrap();
        let moved = second.set_aside.unwrap().moved_to;
        assert_ne!(
            moved,
            first.set_aside.unwrap().moved_to,
            "nothing overwritten"
        );
        assert_eq!(fs::read(&moved).unwrap(), b"again not json");
        assert_eq!(s.load().unwrap().value, Map::from([("b".into(), 2)]));
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = store(dir.path());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.update(|m| m.insert(format!("{t}-{i}"), i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store(dir.path()).load().unwrap().value.len(), 200);
    }
}
