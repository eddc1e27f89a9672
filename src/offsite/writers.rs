//! Who writes a target's prefix. A prefix has one owner — the server whose backups it
//! holds — recorded in an owner marker, and every job that changes the prefix (push,
//! prune, verify's repairs) holds a lock object there while it runs, refreshed, as
//! restic and rustic keep lock files in their repositories.
//!
//! Why: the old server coming back after a disaster recovery, or a cloned staging box
//! with the production config, would otherwise write the same prefix as the live server;
//! each would take the other's half-sent packs for debris and delete them, and prune the
//! packs the other skipped as already there. So:
//! - a job refuses a prefix another server owns (`RemoteFailure::Owned`), naming it; the
//!   server that took over runs `vertex-backup offsite claim --target NAME` once;
//! - deleting anything that is not ours beyond doubt (debris, pruned backups, stale
//!   locks) happens only while no other writer's lock is live; otherwise it is postponed
//!   and said, never forced;
//! - a lock is live while refreshed: it is rewritten every [`REFRESH_EVERY`] and stale
//!   [`STALE_AFTER`] after its last write (by the target's clock: the object's
//!   modification time), so a killed job blocks deletions for at most that long.
//!
//! A server is known by a random id kept in `offsite.json` plus a tag of its hostname (a
//! SHA-256 prefix): a copy of the backup directory on another host (a clone) has the same
//! id but another tag, and counts as another writer. The readable hostname goes beside it
//! only on targets that get plaintext; an encrypting target shows no hostname in clear,
//! as its sealed metadata shows none.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Remote;
use super::target::{ObjectInfo, RemoteError, Target};
use crate::engine::Cancel;
use crate::error::{RemoteFailure, Result};

/// The owner marker, relative to the target's root.
pub const OWNER_KEY: &str = "vertex-backup/owner.json";
/// Where lock objects live: `vertex-backup/locks/<server id>-<random>.json`.
pub const LOCKS_DIR: &str = "vertex-backup/locks/";
/// A lock not rewritten for this long belongs to a job that died.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a running job rewrites its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// Marker and lock objects are a few hundred bytes; anything larger is not ours.
const MAX_MARKER_BYTES: u64 = 64 * 1024;

/// This server, as a target knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterId {
    pub server_id: String,
    /// The first 16 hex digits of the SHA-256 of the hostname.
    pub host: String,
}

impl std::fmt::Display for WriterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.server_id.get(..8).unwrap_or(&self.server_id);
        write!(f, "server id {short}…, host tag {}", self.host)
    }
}

/// A writer as the operator reads it: its hostname where the object says it, and its id.
fn describe(writer: &WriterId, hostname: Option<&str>) -> String {
    match hostname {
        Some(h) => format!("{h} ({writer})"),
        None => writer.to_string(),
    }
}

/// `vertex-backup/owner.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerMarker {
    #[serde(flatten)]
    pub owner: WriterId,
    /// Readable, on targets that get plaintext only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub claimed_at: DateTime<Utc>,
    #[serde(default)]
    pub tool_version: String,
}

/// One lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockObject {
    #[serde(flatten)]
    pub writer: WriterId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub pid: u32,
    pub operation: String,
    pub created: DateTime<Utc>,
}

/// Another writer's live lock, as found.
#[derive(Debug, Clone, Serialize)]
pub struct OtherWriter {
    pub key: String,
    /// What its lock says, when it could be read.
    pub writer: Option<String>,
    pub last_written: Option<DateTime<Utc>>,
}

impl std::fmt::Display for OtherWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self.writer.as_deref().unwrap_or("an unreadable lock");
        match self.last_written {
            Some(t) => write!(f, "{who} ({}, written {t})", self.key),
            None => write!(f, "{who} ({})", self.key),
        }
    }
}

/// This server's identity: its id from the offsite state (made on first use) and its
/// hostname.
pub fn this_writer(remote: &Remote) -> Result<WriterId> {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(crate::sys::hostname().as_bytes());
    Ok(WriterId {
        server_id: remote.store.server_id()?,
        host: hex::encode(&digest[..8]),
    })
}

/// This server's hostname as a target may show it: `None` on an encrypting target.
fn shown_hostname(remote: &Remote) -> Option<String> {
    remote.seal.is_none().then(crate::sys::hostname)
}

impl OwnerMarker {
    /// Who owns the prefix, as the operator reads it.
    pub fn who(&self) -> String {
        describe(&self.owner, self.hostname.as_deref())
    }
}

/// The owner marker, if the target has a readable one.
pub fn read_owner(remote: &Remote, cancel: &Cancel) -> Result<Option<OwnerMarker>> {
    let Some(bytes) = read_small(remote, OWNER_KEY, cancel)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        remote.error(
            "read the owner marker",
            RemoteError::new(
                RemoteFailure::Owned,
                format!("{OWNER_KEY} is not an owner marker ({e}): something other than this tool wrote it; remove it or point this target at another prefix"),
            ),
        )
    })
}

/// Make this server the prefix's owner (`offsite claim`, and the first job on a prefix).
pub fn claim(remote: &Remote, me: &WriterId, cancel: &Cancel) -> Result<()> {
    let marker = OwnerMarker {
        owner: me.clone(),
        hostname: shown_hostname(remote),
        claimed_at: Utc::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    put_json(remote, OWNER_KEY, &marker, cancel)
}

/// A job's hold on a target: its lock object, rewritten in the background until dropped.
pub struct Lease<'r> {
    remote: &'r Remote<'r>,
    me: WriterId,
    key: String,
    /// Dropping it stops the refresher.
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Lease<'_> {
    /// The key of this job's own lock object.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Other writers' live locks, listed now (not this job's, not stale). With none, the
    /// stale locks of jobs that died are removed on the way.
    pub fn others(&self, cancel: &Cancel) -> Result<Vec<OtherWriter>> {
        let remote = self.remote;
        let locks = remote.with_retries("list the lock objects", cancel, || {
            remote.target.list_under(LOCKS_DIR)
        })?;
        let now = Utc::now();
        let mut dead: Vec<&ObjectInfo> = stale_locks(locks.iter(), now);
        let mut live = Vec::new();
        for o in live_locks(locks.iter(), &self.key, now) {
            let lock = read_lock(remote, &o.key);
            // This server's jobs on one target run one at a time (the local lock file):
            // another lock of this very server is a job of its that was killed.
            if lock.as_ref().is_some_and(|l| l.writer == self.me) {
                dead.push(o);
                continue;
            }
            live.push(OtherWriter {
                key: o.key.clone(),
                writer: lock.map(|l| {
                    let who = describe(&l.writer, l.hostname.as_deref());
                    format!("{who} pid {} ({})", l.pid, l.operation)
                }),
                last_written: o.modified,
            });
        }
        if live.is_empty() {
            for o in dead {
                match remote.target.delete(&o.key) {
                    Ok(()) => tracing::info!(
                        "offsite {}: removed the stale lock {}",
                        remote.config.name,
                        o.key
                    ),
                    Err(e) => tracing::warn!("could not remove the stale lock {}: {e}", o.key),
                }
            }
        }
        Ok(live)
    }

    /// Why deletions wait, when other writers are live: for reports and logs.
    pub fn postponed(others: &[OtherWriter]) -> Option<String> {
        (!others.is_empty()).then(|| {
            let who: Vec<String> = others.iter().map(ToString::to_string).collect();
            format!(
                "another writer holds a lock on this target: {}; nothing is deleted while it runs (a lock goes stale {} after its last refresh)",
                who.join(", "),
                crate::units::format_duration(STALE_AFTER)
            )
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Err(e) = self.remote.target.delete(&self.key) {
            tracing::warn!(
                "offsite {}: could not remove the lock {} ({e}); it goes stale in {}",
                self.remote.config.name,
                self.key,
                crate::units::format_duration(STALE_AFTER)
            );
        }
    }
}

/// Check the owner marker (claiming an unowned prefix), then write this job's lock and
/// keep it fresh until the lease is dropped. Refused when another server owns the prefix.
pub fn acquire<'r>(remote: &'r Remote<'r>, operation: &str, cancel: &Cancel) -> Result<Lease<'r>> {
    let me = this_writer(remote)?;
    match read_owner(remote, cancel)? {
        None => claim(remote, &me, cancel)?,
        Some(marker) if marker.owner == me => {}
        Some(marker) => {
            return Err(remote.error(
                operation,
                RemoteError::new(
                    RemoteFailure::Owned,
                    format!(
                        "this prefix belongs to another server, {} (claimed {}); this server is {}",
                        marker.who(),
                        marker.claimed_at,
                        describe(&me, shown_hostname(remote).as_deref())
                    ),
                ),
            ));
        }
    }
    let key = format!(
        "{LOCKS_DIR}{}-{}.json",
        me.server_id,
        crate::engine::snapshot::pack::random_id()?
    );
    let lock = LockObject {
        writer: me,
        hostname: shown_hostname(remote),
        pid: std::process::id(),
        operation: operation.to_string(),
        created: Utc::now(),
    };
    put_json(remote, &key, &lock, cancel)?;
    let body = serde_json::to_vec_pretty(&lock)
        .map_err(|e| crate::error::Error::Internal(format!("serialize {key}: {e}")))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let refresher = spawn_refresher(Arc::clone(&remote.target), key.clone(), body, stopped);
    Ok(Lease {
        remote,
        me: lock.writer.clone(),
        key,
        stop: Some(stop),
        refresher,
    })
}

/// Rewrite the lock every [`REFRESH_EVERY`] until `stopped` closes (a timer, not a poll).
/// A failed rewrite is logged: the lock then goes stale, which only lets other writers
/// delete again sooner.
fn spawn_refresher(
    target: Arc<dyn Target>,
    key: String,
    body: Vec<u8>,
    stopped: mpsc::Receiver<()>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("offsite-lock".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                if let Err(e) = target.put(&key, &mut &body[..], None) {
                    tracing::warn!("could not refresh the lock {key}: {e}");
                }
            }
        })
        .ok()
}

/// Lock objects in `objects` written within [`STALE_AFTER`] of `now`, but `own`.
fn live_locks<'a>(
    objects: impl Iterator<Item = &'a ObjectInfo>,
    own: &str,
    now: DateTime<Utc>,
) -> Vec<&'a ObjectInfo> {
    objects
        .filter(|o| is_lock_key(&o.key) && o.key != own)
        .filter(|o| !is_stale(o, now))
        .collect()
}

fn stale_locks<'a>(
    objects: impl Iterator<Item = &'a ObjectInfo>,
    now: DateTime<Utc>,
) -> Vec<&'a ObjectInfo> {
    objects
        .filter(|o| is_lock_key(&o.key) && is_stale(o, now))
        .collect()
}

/// A lock with no modification time counts as live: "could not tell" is not "dead".
fn is_stale(o: &ObjectInfo, now: DateTime<Utc>) -> bool {
    let stale = chrono::Duration::from_std(STALE_AFTER).unwrap_or(chrono::Duration::MAX);
    o.modified.is_some_and(|m| now - m > stale)
}

/// `vertex-backup/locks/<hex>-<hex>.json`, nothing else.
fn is_lock_key(key: &str) -> bool {
    key.strip_prefix(LOCKS_DIR)
        .and_then(|f| f.strip_suffix(".json"))
        .and_then(|f| f.split_once('-'))
        .is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_hexdigit()))
        })
}

fn read_lock(remote: &Remote, key: &str) -> Option<LockObject> {
    let bytes = read_small(remote, key, &Cancel::new()).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// A small object's bytes (`None`: not there), refused past [`MAX_MARKER_BYTES`].
fn read_small(remote: &Remote, key: &str, cancel: &Cancel) -> Result<Option<Vec<u8>>> {
    let op = format!("read {key}");
    remote.with_retries(&op, cancel, || {
        let mut body = Vec::new();
        let reader = match remote.target.get(key) {
            Ok(r) => r,
            Err(e) if e.failure == RemoteFailure::Missing => return Ok(None),
            Err(e) => return Err(e),
        };
        std::io::Read::read_to_end(
            &mut std::io::Read::take(reader, MAX_MARKER_BYTES + 1),
            &mut body,
        )
        .map_err(|e| RemoteError::new(RemoteFailure::Network, format!("read {key}: {e}")))?;
        if body.len() as u64 > MAX_MARKER_BYTES {
            return Err(RemoteError::new(
                RemoteFailure::Owned,
                format!("{key} is larger than any marker this tool writes: not ours"),
            ));
        }
        Ok(Some(body))
    })
}

fn put_json(remote: &Remote, key: &str, value: &impl Serialize, cancel: &Cancel) -> Result<()> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| crate::error::Error::Internal(format!("serialize {key}: {e}")))?;
    let op = format!("write {key}");
    remote.with_retries(&op, cancel, || {
        remote.target.put(key, &mut &body[..], None).map(drop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, minutes_ago: i64, now: DateTime<Utc>) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 100,
            modified: Some(now - chrono::Duration::minutes(minutes_ago)),
        }
    }

    #[test]
    fn locks_are_live_until_stale_and_only_lock_shaped_keys_count() {
        let now = Utc::now();
        let own = "vertex-backup/locks/aa-01.json";
        let objects = [
            object(own, 1, now),
            object("vertex-backup/locks/bb-02.json", 10, now),
            object("vertex-backup/locks/cc-03.json", 31, now),
            object("vertex-backup/locks/../x.json", 1, now),
            object("vertex-backup/locks/not-a-lock.json", 1, now),
            object("storage/storage_backup_20261201_020000.json", 1, now),
        ];
        let live: Vec<&str> = live_locks(objects.iter(), own, now)
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(live, vec!["vertex-backup/locks/bb-02.json"]);
        let stale: Vec<&str> = stale_locks(objects.iter(), now)
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(stale, vec!["vertex-backup/locks/cc-03.json"]);
        // No time: could not tell, so live.
        let unknown = ObjectInfo {
            key: "vertex-backup/locks/dd-04.json".into(),
            size: 1,
            modified: None,
        };
        assert_eq!(live_locks([&unknown].into_iter(), own, now).len(), 1);
        assert!(stale_locks([&unknown].into_iter(), now).is_empty());
    }
}
