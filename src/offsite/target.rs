//! Where backup objects live off this machine: one small interface (list, head, put
//! streaming, get streaming, delete) in front of every kind of target, as restic's
//! `Backend` and Litestream's `ReplicaClient`. Keys are relative to the target's root and
//! use the backup directory's own names (`database/db_backup_X.db`), so a remote copy
//! is the same layout under another root. Implementations: [`super::path::PathTarget`]
//! (a mounted path) and [`super::s3::S3Target`] (S3-compatible object storage); tests and
//! later targets (SFTP) plug in here.
//!
//! Object Lock (S3) is part of the interface, with defaults for targets that have none:
//! what a target writes is locked until its [`Target::write_horizon`], and a push
//! extends the objects a new backup reuses to at least that ([`Target::extend_retention`]).
//!
//! Every `put` is atomic — the object is either all there under its key or not at all —
//! and checks the bytes it sent against the SHA-256 the caller expects before making the
//! object visible, so a file that changed under the reader never lands as a good copy.

use std::io::Read;

use chrono::{DateTime, Utc};

use crate::error::RemoteFailure;

/// `key`'s segments, checked: relative, no empty, `.` or `..` segment — what every target
/// requires before a key becomes a path (a key is never trusted to stay under the root).
pub fn key_segments(key: &str) -> RemoteResult<Vec<&str>> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(RemoteError::new(
            RemoteFailure::Other,
            format!("`{key}` is not an object key"),
        ));
    }
    Ok(key.split('/').collect())
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// One object with what it carries about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// Our SHA-256 of its bytes, where the target keeps it with the object
    /// (`x-amz-meta-sha256` on S3; path targets keep none: the remote metadata has it).
    pub sha256: Option<String>,
}

/// What `put` sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// A target's failure, before it is given the target's name and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub failure: RemoteFailure,
    pub detail: String,
}

impl RemoteError {
    pub fn new(failure: RemoteFailure, detail: impl Into<String>) -> Self {
        RemoteError {
            failure,
            detail: detail.into(),
        }
    }

    /// Classify an I/O error of a path target.
    pub fn io(e: &std::io::Error, what: &str) -> Self {
        use std::io::ErrorKind as K;
        let failure = match e.kind() {
            K::StorageFull | K::QuotaExceeded => RemoteFailure::Full,
            K::NotFound => RemoteFailure::Missing,
            K::PermissionDenied | K::ReadOnlyFilesystem => RemoteFailure::Credentials,
            K::TimedOut | K::Interrupted | K::ConnectionReset | K::ConnectionAborted => {
                RemoteFailure::Network
            }
            _ => RemoteFailure::Other,
        };
        RemoteError::new(failure, format!("{what}: {e}"))
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// Where backup objects live. Blocking: the engine is synchronous; an implementation
/// that speaks HTTP keeps its own small runtime inside.
pub trait Target: Send + Sync {
    /// Every object under the target's root, keys relative to it.
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>>;
    /// The objects whose keys start with `prefix` (a directory: `vertex-backup/locks/`).
    fn list_under(&self, prefix: &str) -> RemoteResult<Vec<ObjectInfo>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|o| o.key.starts_with(prefix))
            .collect())
    }
    /// One object's size and carried checksum; `None` when it does not exist.
    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>>;
    /// Store `data` under `key`, atomically. With `sha256`, the bytes read must hash to it
    /// or nothing is stored ([`RemoteFailure::Mismatch`]); the target also keeps it with
    /// the object where it can.
    fn put(&self, key: &str, data: &mut dyn Read, sha256: Option<&str>) -> RemoteResult<Stored>;
    /// [`Target::put`] of a local file, which a target may read at any offset (an S3
    /// target streams its parts from it instead of holding them in memory).
    fn put_file(
        &self,
        key: &str,
        mut file: std::fs::File,
        sha256: Option<&str>,
    ) -> RemoteResult<Stored> {
        self.put(key, &mut file, sha256)
    }
    /// The object's bytes, streamed.
    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>>;
    /// Remove `key`; a key already gone is not an error.
    fn delete(&self, key: &str) -> RemoteResult<()>;
    /// Remove every key of `keys` (gone already is not an error); returns the requests it
    /// took (S3: one `DeleteObjects` per 1000 keys; elsewhere one per key).
    fn delete_many(&self, keys: &[String]) -> RemoteResult<u64> {
        for key in keys {
            self.delete(key)?;
        }
        Ok(keys.len() as u64)
    }
    /// Remove what interrupted uploads left (a path target's `.partial` files, an S3
    /// target's unfinished multipart uploads); returns what was removed.
    fn clean_interrupted(&self) -> RemoteResult<Vec<String>>;
    /// Whether every object this tool puts carries its SHA-256 (so one without was not
    /// put by us).
    fn carries_checksums(&self) -> bool {
        false
    }
    /// Until when an object written at `modified` cannot be deleted, judged by the config
    /// alone (S3 Object Lock: `modified` + `object_lock`). Only a guess, for where the
    /// target cannot tell ([`Target::retain_until`] is `None`): a push may have extended
    /// the object since, and the config may have changed.
    fn locked_until(&self, _modified: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
    /// The retain-until date every object this target writes now is given (S3 Object
    /// Lock: the date its client sends with each write); `None` on a target that writes
    /// without a lock. A backup uploaded now is protected until then, so every object it
    /// needs must be retained at least as long.
    fn write_horizon(&self) -> Option<DateTime<Utc>> {
        None
    }
    /// Until when `key` (its current version) is retained under Object Lock, as the
    /// target itself says (S3: HEAD); a legal hold reads as [`DateTime::<Utc>::MAX_UTC`],
    /// since it holds until someone releases it. `None`: no lock, no such object, or a
    /// target that cannot tell (path targets, or credentials HEAD shows no lock to).
    fn retain_until(&self, _key: &str) -> RemoteResult<Option<DateTime<Utc>>> {
        Ok(None)
    }
    /// Retain `key` (its current version) until `until` or later: never shortened.
    /// Returns whether the retention changed. A target without locks has nothing to do.
    fn extend_retention(&self, _key: &str, _until: DateTime<Utc>) -> RemoteResult<bool> {
        Ok(false)
    }
}
