//! What happened last, per backup type and per scheduled job: the last success and the
//! last failure (with the failing step and error). `stats`, `status`, staleness alerts
//! and catch-up read it. Saved atomically beside the backups; a missing or unreadable
//! file reads as "nothing known yet" (the backups themselves remain the truth).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use crate::error::Result;

pub const STATE_FILE: &str = "vertex-backup.state.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    /// RFC 3339 with offset.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Outcome>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    /// Keyed by backup type (`full`, `database`, `storage`) or job name (`rotate`, `verify`).
    #[serde(default)]
    pub runs: BTreeMap<String, RunRecord>,
}

impl CatalogState {
    pub fn load(path: &Path) -> CatalogState {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path, mode: u32) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(path, &bytes, mode)
    }

    pub fn record_success(&mut self, key: &str, outcome: Outcome) {
        self.runs.entry(key.to_string()).or_default().last_success = Some(outcome);
    }

    pub fn record_failure(&mut self, key: &str, outcome: Outcome) {
        self.runs.entry(key.to_string()).or_default().last_failure = Some(outcome);
    }

    pub fn get(&self, key: &str) -> Option<&RunRecord> {
        self.runs.get(key)
    }
}
