//! The daemon under pressure (issue "Hardening"): this module owns the tests that load the
//! real `vertex-backup daemon` harder than an operator normally would, and check that it
//! stays correct and bounded:
//!
//! - 200 REST API requests in parallel (50 threads × 4) while a backup runs: no 5xx, no
//!   connection error, 409 for a job already queued or running, never two jobs at once,
//!   and the daemon's peak RSS bounded — and back near its start once the jobs are done;
//! - more idle and half-sent connections than the API holds, under a small open-file
//!   limit: scheduled backups still succeed, idle connections are closed, /health answers;
//! - a storm of 50 SIGHUPs in a second while the config file flips between two valid
//!   schedules (and, in a second test, through broken ones): the daemon keeps running,
//!   ends on the last schedule written, keeps one timer per job and never panics;
//! - reloads right at slot time (a save 150 ms before each slot, SIGHUP at the slot):
//!   no slot of an unchanged schedule is lost, none runs twice.
//!
//! Everything is observed from outside the process: HTTP answers, the daemon's stderr
//! (the worker logs "JOB: job started (…)" / "JOB: job finished (…)" with microsecond
//! timestamps), `backup.log`, the backup files, the notify socket and /proc/PID/status.
//! Waits are polls with deadlines; the only timed sleeps shape the load (the pace of a
//! storm, a save just before a slot), never wait for a result.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::util::*;

mod api_storm;
mod connection_flood;
mod sighup_storm;

const TOKEN: &str = "pressure-token-0123456789abcdef";
/// Deadline for a reload to be visible after SIGHUP (as in tests/daemon.rs).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for something a 2-second schedule must produce (a generous multiple).
const FEW_CYCLES: Duration = Duration::from_secs(30);
/// Deadline for the backups of the API test (a few seconds each in a debug build).
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
/// The bound on the daemon's peak RSS while it serves the burst and backs up.
const PEAK_RSS_LIMIT_KIB: u64 = 150 * 1024;
/// How much more than at start the idle daemon may hold once its jobs are done.
const IDLE_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// `VmRSS` and `VmHWM` (peak RSS) of a process, in KiB, from /proc/PID/status.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The API's base URL from the daemon's "REST API listening on http://ADDR" line.
fn api_base(d: &mut Daemon) -> String {
    d.poll_for(Duration::from_secs(20), "the API to listen", |d| {
        let err = d.stderr();
        let at = err.find("REST API listening on ")?;
        let rest = &err[at + "REST API listening on ".len()..];
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// A client that never reuses a connection (as in tests/api.rs).
fn http_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

/// One job as the daemon's worker logged it.
#[derive(Debug, Clone)]
struct WorkerRun {
    job: String,
    /// "schedule, slot …", "catch-up, slot …" or "requested through the API".
    why: String,
    slot: Option<DateTime<FixedOffset>>,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    ok: Option<bool>,
}

/// The worker's runs from the daemon's stderr, in order. An error says where two jobs
/// overlapped: a start before the previous job's finish, or a finish of another job.
fn worker_runs(stderr: &str) -> Result<Vec<WorkerRun>, String> {
    let mut runs: Vec<WorkerRun> = Vec::new();
    for line in stderr.lines() {
        let (head, start) = if let Some((h, rest)) = line.split_once(": job started (") {
            (h, Some(rest))
        } else if let Some((h, _)) = line.split_once(": job finished (") {
            (h, None)
        } else {
            continue;
        };
        let at = line
            .split_whitespace()
            .next()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("no timestamp on {line:?}"))?;
        let job = head
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let running = runs.last().filter(|r| r.finished.is_none());
        match start {
            Some(rest) => {
                if let Some(r) = running {
                    return Err(format!(
                        "{job} started at {at} while {} (started {}) was still running",
                        r.job, r.started
                    ));
                }
                let why = rest.trim_end_matches(')').to_string();
                let slot = why.split_once("slot ").map(|(_, s)| {
                    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %:z")
                        .unwrap_or_else(|e| panic!("bad slot in {line:?}: {e}"))
                });
                runs.push(WorkerRun {
                    job,
                    why,
                    slot,
                    started: at,
                    finished: None,
                    ok: None,
                });
            }
            None => {
                let r = runs
                    .last_mut()
                    .filter(|r| r.finished.is_none() && r.job == job)
                    .ok_or_else(|| format!("{job} finished at {at} without having started"))?;
                r.finished = Some(at);
                r.ok = Some(line.contains("job finished (ok)"));
            }
        }
    }
    Ok(runs)
}

/// [`worker_runs`], which must show one job at a time.
fn runs_of(d: &Daemon) -> Vec<WorkerRun> {
    worker_runs(&d.stderr())
        .unwrap_or_else(|e| panic!("two jobs ran at once: {e}\n{}", d.describe()))
}

/// The lines of `text` containing `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// No panic, no crashed job, no two jobs on the backup directory's lock.
fn assert_no_panic(d: &Daemon) {
    let logs = d.logs();
    for bad in ["panicked", "the job crashed", "holds the lock"] {
        assert!(
            !logs.contains(bad),
            "the logs show {bad:?}\n{}",
            d.describe()
        );
    }
}
