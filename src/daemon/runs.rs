//! The daemon's memory across restarts: when each job last ran, for catch-up. Kept in
//! `vertex-backup.schedule.json` beside the backups by the [`StateFile`] store, updated
//! after each job. Only the daemon writes it (one daemon per backup directory); a corrupt
//! file is moved aside and reported, since a silent reset would lose catch-up unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::StateFile;
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

    /// The store of `backup_dir`'s run history, written with `mode`.
    pub fn file(backup_dir: &Path, mode: u32) -> StateFile<JobRuns> {
        StateFile::new(Self::path(backup_dir), mode)
    }

    /// The history as it is now (a corrupt file is set aside and reported).
    pub fn load(backup_dir: &Path) -> JobRuns {
        // Reading never writes the file, so the mode is not used.
        Self::file(backup_dir, 0o600).load_or_default()
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
