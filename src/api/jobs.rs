//! Jobs started through the API: an id per request, so `?wait=false` can answer 202 at
//! once and the admin panel can poll `GET /backups/jobs/{id}`. The last 200 are kept.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

const KEEP: usize = 200;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: u64,
    /// `full`, `database`, `storage`, `restore`, `rotate`.
    pub job: String,
    /// `queued` (waiting or running), `succeeded`, `failed`.
    pub state: String,
    pub submitted_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// What the job answered with, as its POST with wait=true would have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Default)]
pub struct JobRegistry {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, JobRecord>>,
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

impl JobRegistry {
    pub fn add(&self, job: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.insert(
            id,
            JobRecord {
                id,
                job: job.to_string(),
                state: "queued".into(),
                submitted_at: now(),
                finished_at: None,
                result: None,
                detail: None,
            },
        );
        while jobs.len() > KEEP {
            jobs.pop_first();
        }
        id
    }

    pub fn finish(&self, id: u64, ok: bool, result: Option<Value>, detail: Option<String>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = jobs.get_mut(&id) {
            j.state = if ok { "succeeded" } else { "failed" }.into();
            j.finished_at = Some(now());
            j.result = result;
            j.detail = detail;
        }
    }

    pub fn forget(&self, id: u64) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn get(&self, id: u64) -> Option<JobRecord> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}
