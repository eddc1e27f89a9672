//! Noticing that backups have silently stopped: per type, when the newest complete backup
//! is older than `max_age`, one `stale` event; when a fresh one lands, one `recovered`.
//! No repeats in between. This is the alert that catches a dead scheduler or a job that
//! fails before it can report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::catalog::Listing;
use crate::config::Config;
use crate::events::Event;
use crate::kind::BackupKind;
pub use crate::schedule::max_age;

/// Remembers which types are currently alerted, so each state change is told once.
#[derive(Debug, Default)]
pub struct StaleTracker {
    alerted: BTreeMap<BackupKind, bool>,
    /// Baseline for "no backup ever": the daemon's start.
    since: Option<DateTime<Utc>>,
}

impl StaleTracker {
    pub fn new(started: DateTime<Utc>) -> Self {
        StaleTracker {
            alerted: BTreeMap::new(),
            since: Some(started),
        }
    }

    /// Compare the newest complete backup of each type with its limit; return the events
    /// for types that just went stale or just recovered.
    pub fn check(
        &mut self,
        config: &Config,
        listing: &Listing,
        last_failures: &BTreeMap<BackupKind, String>,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for kind in BackupKind::ALL {
            let Some(limit) = max_age(config, kind, now) else {
                self.alerted.remove(&kind);
                continue;
            };
            let newest = listing
                .newest_present(kind, now)
                .and_then(|b| b.created.map(|c| (b, c)));
            let reference = newest
                .map(|(_, c)| c.with_timezone(&Utc))
                .or(self.since)
                .unwrap_or(now);
            let age = (now - reference).to_std().unwrap_or_default();
            let stale = age > limit;
            let was = self.alerted.get(&kind).copied().unwrap_or(false);
            if stale && !was {
                events.push(Event::Stale {
                    kind,
                    age: newest.map(|_| age),
                    max_age: limit,
                    last_success: newest.map(|(b, _)| b.metadata.created_at.clone()),
                    last_failure: last_failures.get(&kind).cloned(),
                });
            } else if !stale
                && was
                && let Some((b, _)) = newest
            {
                events.push(Event::Recovered {
                    kind,
                    backup: b
                        .data_path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
            self.alerted.insert(kind, stale);
        }
        events
    }

    /// When the next type goes stale if nothing lands before: the time to check again.
    pub fn next_deadline(
        &self,
        config: &Config,
        listing: &Listing,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        BackupKind::ALL
            .iter()
            .filter(|k| !self.alerted.get(k).copied().unwrap_or(false))
            .filter_map(|kind| {
                let limit = chrono::Duration::from_std(max_age(config, *kind, now)?).ok()?;
                let newest = listing.newest_present(*kind, now).and_then(|b| b.created);
                let reference = newest.map(|c| c.with_timezone(&Utc)).or(self.since)?;
                Some(reference + limit + chrono::Duration::seconds(1))
            })
            .min()
    }

    pub fn is_stale(&self, kind: BackupKind) -> bool {
        self.alerted.get(&kind).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        Config::parse(text, None, Path::new("/srv"), &|_| None).unwrap()
    }

    #[test]
    fn derived_limits_follow_the_schedule() {
        let c = config("[schedule]\ntimezone = \"UTC\"\n");
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        assert_eq!(
            max_age(&c, BackupKind::Full, now),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            max_age(&c, BackupKind::Database, now),
            Some(Duration::from_secs(9 * 3600))
        );
        // Storage comes weekly and with every daily full backup.
        assert_eq!(
            max_age(&c, BackupKind::Storage, now),
            Some(Duration::from_secs(36 * 3600))
        );
        let off = config(
            "[schedule]\nfull = \"off\"\nstorage = \"off\"\n[alerts]\nmax_age = { database = \"7h\" }\n",
        );
        assert_eq!(max_age(&off, BackupKind::Storage, now), None);
        assert_eq!(
            max_age(&off, BackupKind::Database, now),
            Some(Duration::from_secs(7 * 3600))
        );
    }

    #[test]
    fn stale_is_told_once_and_recovery_once() {
        let c = config(
            "[schedule]\nfull = \"off\"\nstorage = \"off\"\n[alerts]\nmax_age = { database = \"1h\" }\n",
        );
        let start = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let mut t = StaleTracker::new(start);
        let empty = Listing::default();
        let none = BTreeMap::new();
        assert!(
            t.check(&c, &empty, &none, start + chrono::Duration::minutes(30))
                .is_empty()
        );
        let ev = t.check(&c, &empty, &none, start + chrono::Duration::minutes(61));
        assert!(
            matches!(
                ev.as_slice(),
                [Event::Stale {
                    kind: BackupKind::Database,
                    ..
                }]
            ),
            "{ev:?}"
        );
        assert!(
            t.check(&c, &empty, &none, start + chrono::Duration::minutes(90))
                .is_empty(),
            "no repeat"
        );
        assert!(t.is_stale(BackupKind::Database));
    }
}
