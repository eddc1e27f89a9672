//! What happened last, per backup type and per scheduled job: the last success and the
//! last failure (with the failing step and error). `stats`, `status`, staleness alerts
//! and catch-up read it. Kept by the [`StateFile`] store: a missing file reads as "nothing
//! known yet"; a corrupt one is moved aside and reported. [`Catalog::journal`] records an
//! operation's outcome here and in `backup.log` in one call.

use std::collections::BTreeMap;

use chrono::{Local, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::Catalog;
use super::store::StateFile;

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

impl Catalog {
    /// `vertex-backup.state.json`.
    pub fn state_file(&self) -> StateFile<CatalogState> {
        StateFile::new(self.root.join(STATE_FILE), self.file_mode)
    }

    /// The state as it is now (a corrupt file is set aside and reported).
    pub fn load_state(&self) -> CatalogState {
        self.state_file().load_or_default()
    }

    /// Record an operation's outcome under `key`: its `backup.log` line (INFO when `ok`,
    /// else ERROR) and its state record (`last_success` or `last_failure`, stamped now).
    /// Never fails the operation: a state file that cannot be written is logged.
    pub fn journal(&self, key: &str, ok: bool, line: &str, outcome: Outcome) {
        let log = self.log();
        if ok {
            log.info(line);
        } else {
            log.error(line);
        }
        let outcome = Outcome {
            at: Local::now().to_rfc3339_opts(SecondsFormat::Secs, false),
            ..outcome
        };
        let recorded = self.state_file().update(|state| {
            if ok {
                state.record_success(key, outcome);
            } else {
                state.record_failure(key, outcome);
            }
        });
        if let Err(e) = recorded {
            let why = crate::error_chain(&e);
            log.warn(&format!("could not save the state file: {why}"));
            tracing::warn!("could not save the state file: {why}");
        }
    }
}
