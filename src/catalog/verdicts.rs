//! The last verification verdict per backup, kept in `vertex-backup.verify.json`. Written
//! by `verify` and the daemon's restore drill — without the lock, so a long verification
//! never blocks a backup (last writer wins) — and read by retention: a backup known to
//! have failed verification is never counted as one of the good ones to keep.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use crate::error::Result;

pub const VERDICTS_FILE: &str = "vertex-backup.verify.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    /// RFC 3339.
    pub at: String,
    /// The failed check and its detail, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Keyed by backup stem.
    #[serde(default)]
    pub backups: BTreeMap<String, Verdict>,
}

impl Verdicts {
    pub fn load(path: &Path) -> Verdicts {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path, mode: u32) -> Result<()> {
        write_atomic(
            path,
            &serde_json::to_vec_pretty(self).unwrap_or_default(),
            mode,
        )
    }

    /// True when the last verification of `stem` failed.
    pub fn failed(&self, stem: &str) -> bool {
        self.backups.get(stem).is_some_and(|v| !v.ok)
    }

    /// Forget verdicts of backups that no longer exist.
    pub fn retain_existing(&mut self, exists: impl Fn(&str) -> bool) {
        self.backups.retain(|k, _| exists(k));
    }
}
