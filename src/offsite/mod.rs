//! Offsite copies (docs/design.md §6): every backup replicated to the `[[offsite]]` targets — an
//! S3-compatible bucket, a backup server over SSH or a mounted path — verified there, retained there by the same
//! pure retention as locally, and restorable from there on a new server.
//!
//! - [`target`]: the `Target` interface every kind of target implements; [`path`],
//!   [`s3`] and [`sftp`] implement it; [`transfer`] hashes and paces the bytes on their way.
//! - [`s3_api`]: S3 requests `object_store` cannot make (odd keys, versions, delete
//!   markers, Object Lock retention), signed by hand.
//! - [`encrypt`]: a plain local file read as age ciphertext on its way up, and
//!   [`sealed`]: the clear metadata of an encrypted remote backup, its original sealed
//!   inside (`[encryption]`, docs/design.md §5).
//! - [`remote`]: a target's objects read as backups (complete or not), as the catalog
//!   reads the backup directory.
//! - [`push`]: upload what a target lacks, oldest first, data before metadata, resuming
//!   at object granularity and retrying with capped backoff.
//! - [`locks`]: S3 Object Lock upkeep — what a new backup reuses extended to its lock,
//!   each object's own lock read for prune.
//! - [`prune`]: remote retention (plan, then execute; never the newest complete copy,
//!   never a locked object).
//! - [`check`]: the scheduled `offsite_verify` — sizes and checksums of everything, a
//!   rotating sample read back, repair from the local copy.
//! - [`fetch`]: bring a remote backup into the local backup directory, verified, for the
//!   normal restore path.
//! - [`state`]: what this server remembers about its targets between runs; [`summary`]
//!   reads it for `status` and `stats`.
//!
//! Blocking like the rest of the engine; the S3 and SFTP targets keep their own small
//! runtimes.

pub mod as_of;
pub mod check;
mod data_object;
pub mod encrypt;
pub mod fetch;
mod locks;
pub mod path;
pub mod prune;
pub mod push;
pub mod remote;
pub mod run;
pub mod s3;
pub mod s3_api;
mod s3_parts;
pub mod sealed;
pub mod sftp;
mod sftp_flush;
mod sftp_read;
mod sftp_session;
pub mod state;
pub mod summary;
pub mod target;
pub mod transfer;
mod upload;
pub mod writers;

use std::time::Duration;

use crate::config::{Config, OffsiteTarget, TargetLocation};
use crate::engine::Cancel;
use crate::error::{Error, RemoteFailure, Result};

pub use remote::{RemoteBackup, RemoteListing};
pub use state::{OffsiteState, OffsiteStore, TargetState};
pub use target::{RemoteError, Target};

/// A configured target, opened: its config, its implementation, and the state store.
pub struct Remote<'a> {
    pub config: &'a OffsiteTarget,
    /// Shared with the thread that keeps this job's lock object fresh ([`writers`]).
    pub target: std::sync::Arc<dyn Target>,
    pub store: OffsiteStore,
    /// The recipients every object sent to this target is encrypted to (`[encryption]`
    /// with recipients: `encrypt = "offsite"` and `"all"` both encrypt what leaves);
    /// `None`: objects go as they are locally.
    pub seal: Option<crate::encryption::Recipients>,
    /// Read as it was at this time (`--as-of`, [`as_of`]): read-only, nothing repaired
    /// or recorded.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'a> Remote<'a> {
    pub fn open(config: &Config, target: &'a OffsiteTarget) -> Result<Remote<'a>> {
        let store = OffsiteStore::new(&config.paths.backup_dir, config.backup.file_mode.0);
        let opened: std::sync::Arc<dyn Target> = match &target.location {
            TargetLocation::Path(root) => std::sync::Arc::new(path::PathTarget::new(
                root,
                target.bandwidth_limit,
                config.backup.file_mode.0,
                config.backup.dir_mode.0,
            )),
            TargetLocation::Sftp(_) => std::sync::Arc::new(
                sftp::SftpTarget::open(target, config.backup.file_mode.0, config.backup.dir_mode.0)
                    .map_err(|e| error(target, "connect", e))?,
            ),
            TargetLocation::S3 { .. } => std::sync::Arc::new(
                s3::S3Target::open(target, store.journal(&target.name))
                    .map_err(|e| error(target, "connect", e))?,
            ),
        };
        Ok(Remote {
            config: target,
            target: opened,
            store,
            seal: config.encryption.as_ref().map(|e| e.recipients.clone()),
            as_of: None,
        })
    }

    /// `target` as it was at `at`, from its object versions (`--as-of`): S3 targets only,
    /// a versioned bucket (every Object Lock bucket is one).
    pub fn open_as_of(
        config: &Config,
        target: &'a OffsiteTarget,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Remote<'a>> {
        let TargetLocation::S3 { .. } = &target.location else {
            return Err(Error::Refused(format!(
                "--as-of reads object versions, which only an S3 target keeps: `{}` is not one",
                target.name
            )));
        };
        let mut remote = Remote::open(config, target)?;
        let api = s3_api::S3Api::open(target).map_err(|e| error(target, "connect", e))?;
        let view = as_of::AsOfTarget::open(api, at)
            .map_err(|e| error(target, "list the object versions", e))?;
        remote.target = std::sync::Arc::new(view);
        remote.as_of = Some(at);
        Ok(remote)
    }

    /// A target failure as the operator sees it: which target, doing what.
    pub fn error(&self, op: &str, e: RemoteError) -> Error {
        error(self.config, op, e)
    }

    /// Run `attempt` until it succeeds, fails for good, or the retries are spent; waits
    /// between attempts double from `retry_backoff` up to 30 s. Only transient failures
    /// (network, 5xx, slow-down) are retried: a wrong key stays wrong.
    pub fn with_retries<T>(
        &self,
        op: &str,
        cancel: &Cancel,
        mut attempt: impl FnMut() -> std::result::Result<T, RemoteError>,
    ) -> Result<T> {
        let mut wait = self.config.retry_backoff;
        let mut tries = 0;
        loop {
            cancel.check()?;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if e.failure.transient() && tries < self.config.retries => {
                    tries += 1;
                    tracing::warn!(
                        "offsite {}: {op} failed ({}), retry {tries} of {} in {}",
                        self.config.name,
                        e.detail,
                        self.config.retries,
                        crate::units::format_duration(wait)
                    );
                    pause(wait, cancel)?;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(self.error(op, e)),
            }
        }
    }
}

/// Wait `d`, returning early (as cancelled) when the job is asked to stop.
fn pause(d: Duration, cancel: &Cancel) -> Result<()> {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        cancel.check()?;
        std::thread::sleep((until - std::time::Instant::now()).min(Duration::from_millis(100)));
    }
    cancel.check()
}

pub fn error(target: &OffsiteTarget, op: &str, e: RemoteError) -> Error {
    Error::Offsite {
        target: target.name.clone(),
        url: target.url.clone(),
        op: op.to_string(),
        detail: e.detail,
        failure: e.failure,
    }
}

/// `NAME:db_backup_….db` → the target's name and the backup's name, when `NAME` is a
/// configured target (a local path with a colon stays a local path).
pub fn split_remote_name<'c>(
    config: &'c Config,
    wanted: &str,
) -> Option<(&'c OffsiteTarget, String)> {
    let (name, backup) = wanted.split_once(':')?;
    let target = config.offsite.iter().find(|t| t.name == name)?;
    Some((target, backup.to_string()))
}

/// The failure of an error from a target, if it is one.
pub fn failure_of(e: &Error) -> Option<RemoteFailure> {
    match e {
        Error::Offsite { failure, .. } => Some(*failure),
        _ => None,
    }
}
