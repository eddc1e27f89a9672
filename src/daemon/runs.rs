//! The daemon's memory across restarts: when each job last ran, for catch-up. Kept in
//! `vertex-backup.schedule.json` beside the backups, written atomically after each job.
//! Only the daemon writes it, and only one daemon runs per backup directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::write_atomic;
use crate::error::Result;
use crate::kind::JobName;

pub const SCHEDULE_FILE: &str = "vertex-backup.schedule.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// The slot the run was for (catch-up compares slots). The first start records the
    /// start time as a baseline, without `finished`.
    pub slot: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRuns {
    #[serde(default)]
    pub jobs: BTreeMap<String, JobRun>,
}

impl JobRuns {
    pub fn path(backup_dir: &Path) -> PathBuf {
        backup_dir.join(SCHEDULE_FILE)
    }

    pub fn load(backup_dir: &Path) -> JobRuns {
        std::fs::read(Self::path(backup_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, backup_dir: &Path, mode: u32) -> Result<()> {
        write_atomic(
            &Self::path(backup_dir),
            &serde_json::to_vec_pretty(self).unwrap_or_default(),
            mode,
        )
    }

    /// Last slot each job ran for, for [`super::timetable::catch_up`].
    pub fn last_slots(&self) -> BTreeMap<JobName, DateTime<Utc>> {
        self.jobs
            .iter()
            .filter_map(|(k, r)| Some((JobName::parse(k)?, r.slot)))
            .collect()
    }

    pub fn record(&mut self, job: JobName, run: JobRun) {
        self.jobs.insert(job.as_str().to_string(), run);
    }
}
