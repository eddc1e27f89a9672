//! A point in time made into a database file, ready for the normal restore path: the
//! replicated stream — the backup directory's own, or a target's brought in first —
//! replayed to a time (or its newest state) into a private directory under
//! `replication/`, checked by `integrity_check`, and removed with everything in it when
//! the [`ReplicaFile`] is dropped.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::fetch::{RemoteErr, bring, choose, remote_generations};
use super::restore::{RestoredReplica, restore_to};
use super::store::ReplicaStore;
use crate::encryption::Identities;
use crate::error::{Error, IoContext, Result};
use crate::offsite::target::Target;

const WORK_PREFIX: &str = ".restore-";
/// Restore attempts when a segment went while it was read (the daemon compacting).
const ATTEMPTS: usize = 3;

/// Where the stream is read from.
pub enum StreamSource<'a> {
    /// The backup directory's own `replication/`.
    Local,
    /// A target's copy, with the identity that opens sealed objects.
    Target {
        target: &'a dyn Target,
        identities: Option<&'a Identities>,
        err: RemoteErr<'a>,
    },
}

/// The database replayed to a point, in a private directory removed on drop.
pub struct ReplicaFile {
    pub path: PathBuf,
    pub restored: RestoredReplica,
    dir: PathBuf,
}

impl Drop for ReplicaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The database as of `at` (the newest state when `None`) from `source`.
pub fn prepare(
    store: &ReplicaStore,
    source: StreamSource,
    at: Option<DateTime<Utc>>,
) -> Result<ReplicaFile> {
    store.make_dir(store.root())?;
    let dir = store
        .root()
        .join(format!("{WORK_PREFIX}{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).ctx("remove", &dir)?;
    }
    store.make_dir(&dir)?;
    // Removed on every way out from here.
    let mut file = ReplicaFile {
        path: dir.join("replica.db"),
        restored: RestoredReplica {
            generation: String::new(),
            transactions: 0,
            as_of: DateTime::<Utc>::MIN_UTC,
        },
        dir: dir.clone(),
    };
    file.restored = match source {
        StreamSource::Local => restore_local(store, at, &file.path)?,
        StreamSource::Target {
            target,
            identities,
            err,
        } => {
            let generations = remote_generations(target, identities, err)?;
            let Some(chosen) = choose(&generations, at) else {
                return Err(Error::NoSuchBackup {
                    wanted: match at {
                        Some(t) => format!("the database as of {}", t.to_rfc3339()),
                        None => "the replicated database".into(),
                    },
                    reason: match generations.first() {
                        Some(g) => format!(
                            "the target's replicated stream begins at {}",
                            g.info.started.to_rfc3339()
                        ),
                        None => "the target holds no replicated stream".into(),
                    },
                });
            };
            let fetched = ReplicaStore::new(&dir.join("stream"), store.file_mode(), 0o700);
            bring(target, chosen, identities, &fetched, err)?;
            restore_to(&fetched, at, &file.path)?
        }
    };
    Ok(file)
}

/// The local stream, read again if the daemon's compaction removed a segment meanwhile.
fn restore_local(
    store: &ReplicaStore,
    at: Option<DateTime<Utc>>,
    out: &Path,
) -> Result<RestoredReplica> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match restore_to(store, at, out) {
            Err(e) if attempt < ATTEMPTS && went_away(&e) => continue,
            other => return other,
        }
    }
}

fn went_away(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Removes the private directories of restores that died (older than a day).
pub fn remove_stale_work(store: &ReplicaStore) {
    let Ok(entries) = std::fs::read_dir(store.root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(WORK_PREFIX) && super::store::older_than(&entry, 24 * 3600) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
