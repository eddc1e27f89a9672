//! What this server knows about its targets between runs, in `offsite.json` in the backup
//! directory (a [`StateFile`]: atomic, locked, a corrupt one set aside and reported):
//! per target, the last upload and failure, what was still pending, the newest complete
//! remote copy of each type (for staleness without asking the network), where the
//! rotating verification sample stopped, and the multipart uploads in flight — so the
//! next run aborts the ones a crash abandoned.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::StateFile;
use crate::engine::Cancel;
use crate::error::Result;
use crate::kind::BackupKind;

pub const OFFSITE_STATE_FILE: &str = "offsite.json";
/// How long an offsite job waits for another one on the same target (a prune, a verify's
/// repairs, an upload of tens of GB) before it fails naming the holder.
pub const TARGET_LOCK_WAIT: Duration = Duration::from_secs(2 * 60 * 60);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OffsiteState {
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
    /// This server's random id, as targets' owner markers and lock objects name it
    /// (`offsite::writers`); made on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
}

/// A failure as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedFailure {
    pub at: DateTime<Utc>,
    pub error: String,
}

/// A multipart upload started and not yet completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// The end of the last upload job that left nothing pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// The last failed upload job (cleared by a later success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<RecordedFailure>,
    /// When the current run of failures began (for "failing for 3 days").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    /// Bytes uploaded by this server, ever, per type.
    #[serde(default)]
    pub uploaded_bytes: BTreeMap<BackupKind, u64>,
    /// The last successful upload of each type.
    #[serde(default)]
    pub last_upload: BTreeMap<BackupKind, DateTime<Utc>>,
    /// Backups not on the target yet, as the last job left them.
    #[serde(default)]
    pub pending: Vec<String>,
    #[serde(default)]
    pub pending_bytes: u64,
    /// The creation time of the newest complete remote copy of each type.
    #[serde(default)]
    pub newest_remote: BTreeMap<BackupKind, DateTime<FixedOffset>>,
    /// Remote backups the last listing found, and their bytes.
    #[serde(default)]
    pub remote_backups: u64,
    #[serde(default)]
    pub remote_bytes: u64,
    /// The complete remote backups (stems) as this server last left the target: after a
    /// push, a prune, a verification. A later listing without one of them means the
    /// target lost it (emptied, a rooted server, another writer): `offsite verify` says
    /// so and fails, even where a local copy can be sent again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub held: std::collections::BTreeSet<String>,
    /// Multipart uploads in flight (aborted by the next run if still here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_uploads: Vec<OpenUpload>,
    /// The last remote backup whose objects the rotating sample read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify_failure: Option<RecordedFailure>,
}

/// The state file of a backup directory.
#[derive(Clone)]
pub struct OffsiteStore {
    file: std::sync::Arc<StateFile<OffsiteState>>,
}

impl OffsiteStore {
    pub fn new(backup_dir: &Path, mode: u32) -> Self {
        OffsiteStore {
            file: std::sync::Arc::new(StateFile::new(backup_dir.join(OFFSITE_STATE_FILE), mode)),
        }
    }

    pub fn load(&self) -> OffsiteState {
        self.file.load_or_default()
    }

    /// Change one target's record, as one locked step.
    pub fn update<R>(&self, target: &str, change: impl FnOnce(&mut TargetState) -> R) -> Result<R> {
        let updated = self
            .file
            .update(|s| change(s.targets.entry(target.to_string()).or_default()))?;
        Ok(updated.result)
    }

    /// This server's id (made and saved on first use).
    pub fn server_id(&self) -> Result<String> {
        if let Some(id) = self.load().server_id {
            return Ok(id);
        }
        let fresh = crate::engine::snapshot::pack::random_id()?;
        let updated = self
            .file
            .update(|s| s.server_id.get_or_insert(fresh).clone())?;
        Ok(updated.result)
    }

    /// Exclusive use of `target` for one job (`operation`: push, prune, verify): two jobs
    /// on one target would take each other's objects for debris. Another job on the
    /// target (an `offsite prune` from the shell while `create` wants to upload) is waited
    /// for, up to [`TARGET_LOCK_WAIT`], as `--wait` waits for the backup directory; the
    /// lock file names its holder for the error at the deadline.
    pub fn lock_target(
        &self,
        target: &str,
        operation: &str,
        cancel: &Cancel,
    ) -> Result<TargetLock> {
        let dir = self
            .file
            .path()
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let lock = crate::catalog::BackupDirLock::acquire_file_waiting(
            &dir,
            &format!(".offsite-{target}.lock"),
            &format!("offsite {operation} --target {target}"),
            TARGET_LOCK_WAIT,
            &|| cancel.is_cancelled(),
        )?;
        Ok(TargetLock { _lock: lock })
    }

    /// The journal of `target`'s multipart uploads, for its [`super::s3::S3Target`].
    pub fn journal(&self, target: &str) -> UploadJournal {
        UploadJournal {
            store: self.clone(),
            target: target.to_string(),
        }
    }
}

/// Held while a job works on a target.
pub struct TargetLock {
    _lock: crate::catalog::BackupDirLock,
}

/// Records multipart uploads between their start and their end, so one abandoned by a
/// crash is found (and aborted) by the next run: S3 keeps the parts of an unfinished
/// upload, billed, forever, and lists them only with a call not every store offers.
#[derive(Clone)]
pub struct UploadJournal {
    store: OffsiteStore,
    target: String,
}

impl UploadJournal {
    pub fn opened(&self, key: &str, upload_id: &str) {
        let record = OpenUpload {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            started: Utc::now(),
        };
        if let Err(e) = self
            .store
            .update(&self.target, |t| t.open_uploads.push(record))
        {
            tracing::warn!(
                "could not journal a multipart upload: {}",
                crate::error_chain(&e)
            );
        }
    }

    pub fn closed(&self, upload_id: &str) {
        let result = self.store.update(&self.target, |t| {
            t.open_uploads.retain(|u| u.upload_id != upload_id)
        });
        if let Err(e) = result {
            tracing::warn!(
                "could not journal a multipart upload: {}",
                crate::error_chain(&e)
            );
        }
    }

    pub fn open(&self) -> Vec<OpenUpload> {
        self.store
            .load()
            .targets
            .get(&self.target)
            .map(|t| t.open_uploads.clone())
            .unwrap_or_default()
    }
}
