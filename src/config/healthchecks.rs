//! The `[healthchecks]` section: dead-man pings per job (the healthchecks.io protocol, a
//! full URL, a bare UUID or a slug under a project's ping key, on hc-ping.com or a
//! self-hosted base URL) and one generic `ping_url` template for other monitors (Uptime
//! Kuma, Cronitor). Sending lives in src/healthchecks.rs; here are the keys, their
//! defaults and their checks.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, HumanDuration, Secret};
use crate::error::Error;
use crate::kind::JobName;

/// The events `ping_url_on` accepts: a job started, succeeded, failed.
pub const PING_EVENTS: &[&str] = &["start", "success", "failure"];

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthchecksSection {
    /// Where bare UUIDs and slugs are pinged: hc-ping.com or a self-hosted instance.
    pub base_url: String,
    /// A project's ping key, for the slug form (`BASE/PING_KEY/SLUG`).
    pub ping_key: Option<Secret>,
    /// Per job: a full URL, a UUID, or a slug (needs `ping_key`). Secrets: anyone with
    /// the URL can ping the check.
    pub full: Option<Secret>,
    pub database: Option<Secret>,
    pub storage: Option<Secret>,
    pub rotate: Option<Secret>,
    pub verify: Option<Secret>,
    pub offsite: Option<Secret>,
    pub offsite_verify: Option<Secret>,
    /// A URL template for any job's events: {job}, {event}, {status}, {state}, {message}.
    pub ping_url: Option<Secret>,
    /// Which events `ping_url` is sent for.
    pub ping_url_on: Vec<String>,
    /// How long one attempt may take.
    pub timeout: HumanDuration,
    /// Attempts per ping before it is dropped (with a warning).
    pub attempts: u32,
}

impl Default for HealthchecksSection {
    fn default() -> Self {
        HealthchecksSection {
            base_url: "https://hc-ping.com".into(),
            ping_key: None,
            full: None,
            database: None,
            storage: None,
            rotate: None,
            verify: None,
            offsite: None,
            offsite_verify: None,
            ping_url: None,
            ping_url_on: vec!["success".into(), "failure".into()],
            timeout: HumanDuration(Duration::from_secs(10)),
            attempts: 3,
        }
    }
}

impl HealthchecksSection {
    /// The check configured for `job`, as written.
    pub fn check_of(&self, job: JobName) -> Option<&Secret> {
        match job {
            JobName::Full => self.full.as_ref(),
            JobName::Database => self.database.as_ref(),
            JobName::Storage => self.storage.as_ref(),
            JobName::Rotate => self.rotate.as_ref(),
            JobName::Verify => self.verify.as_ref(),
            JobName::Offsite => self.offsite.as_ref(),
            JobName::OffsiteVerify => self.offsite_verify.as_ref(),
        }
        .filter(|s| !s.expose().trim().is_empty())
    }

    /// Whether anything is to be pinged at all.
    pub fn enabled(&self) -> bool {
        self.ping_url.is_some() || JobName::ALL.iter().any(|j| self.check_of(*j).is_some())
    }
}

fn is_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A healthchecks.io check UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Config {
    /// `[healthchecks]`: URLs that are URLs, slugs that have a ping key, known events.
    pub(super) fn healthchecks_problems(&self, problems: &mut Vec<Error>) {
        let h = &self.healthchecks;
        if !is_http(&h.base_url) {
            problems.push(self.key_error(
                "healthchecks.base_url",
                "must start with http:// or https:// (e.g. https://hc-ping.com)",
            ));
        }
        if let Some(t) = &h.ping_url
            && !is_http(t.expose())
        {
            problems.push(self.key_error(
                "healthchecks.ping_url",
                "must start with http:// or https://",
            ));
        }
        for job in JobName::ALL {
            let Some(check) = h.check_of(job).map(Secret::expose) else {
                continue;
            };
            let slug = !is_http(check) && !is_uuid(check);
            if slug && h.ping_key.is_none() {
                problems.push(self.key_error(
                    &format!("healthchecks.{job}"),
                    "neither a URL nor a check UUID, so a slug: set [healthchecks] ping_key (the project's ping key) too",
                ));
            } else if slug && check.contains(['/', '?', '#', ' ']) {
                problems.push(self.key_error(
                    &format!("healthchecks.{job}"),
                    "a slug is letters, digits, - and _ (or give the full URL)",
                ));
            }
        }
        for ev in &h.ping_url_on {
            if !PING_EVENTS.contains(&ev.as_str()) {
                problems.push(self.key_error(
                    "healthchecks.ping_url_on",
                    format!(
                        "unknown event `{ev}`; choose from {}",
                        PING_EVENTS.join(", ")
                    ),
                ));
            }
        }
        if !(1..=10).contains(&h.attempts) {
            problems.push(self.key_error("healthchecks.attempts", "from 1 to 10 attempts"));
        }
        if h.timeout.0.is_zero() || h.timeout.0 > Duration::from_secs(120) {
            problems.push(self.key_error(
                "healthchecks.timeout",
                "between 1 s and 2 min per attempt: a ping is small",
            ));
        }
    }
}
