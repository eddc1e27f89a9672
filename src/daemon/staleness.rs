//! Noticing that backups have silently stopped: per type, when the newest complete backup
//! is older than `max_age`, one `stale` event; when a fresh one lands, one `recovered`.
//! No repeats in between. This is the alert that catches a dead scheduler or a job that
//! fails before it can report. The same judgement per offsite target and type
//! ([`OffsiteStaleTracker`]), over the newest complete remote copy the state file records:
//! one `offsite stale` event; the recovery is told by the upload that ends it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::catalog::Listing;
use crate::config::Config;
use crate::events::Event;
use crate::kind::BackupKind;
use crate::offsite::OffsiteState;
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

/// How one target's copies of one type stand against their `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsiteVerdict {
    pub stale: bool,
    /// The age of the newest complete remote copy; `None` when there is none.
    pub age: Option<std::time::Duration>,
}

/// The offsite judgement, pure: stale when the newest complete remote copy is older than
/// `limit`, or, with no copy at all, when `since` (the daemon's start) is — a target that
/// never took a backup is not stale the moment the daemon starts.
pub fn offsite_verdict(
    newest_remote: Option<DateTime<Utc>>,
    since: DateTime<Utc>,
    limit: std::time::Duration,
    now: DateTime<Utc>,
) -> OffsiteVerdict {
    let age_of = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    OffsiteVerdict {
        stale: age_of(newest_remote.unwrap_or(since)) > limit,
        age: newest_remote.map(age_of),
    }
}

/// The (target, type) pairs judged: each type a target takes that has a `max_age`.
fn offsite_pairs(
    config: &Config,
    now: DateTime<Utc>,
) -> Vec<(&str, BackupKind, std::time::Duration)> {
    config
        .offsite
        .iter()
        .flat_map(|t| {
            BackupKind::ALL
                .into_iter()
                .filter(|k| t.takes(*k))
                .filter_map(move |k| Some((t.name.as_str(), k, max_age(config, k, now)?)))
        })
        .collect()
}

fn newest_remote(state: &OffsiteState, target: &str, kind: BackupKind) -> Option<DateTime<Utc>> {
    state
        .targets
        .get(target)?
        .newest_remote
        .get(&kind)
        .map(|t| t.with_timezone(&Utc))
}

/// Remembers which (target, type) pairs are alerted, so each goes stale once.
#[derive(Debug)]
pub struct OffsiteStaleTracker {
    alerted: BTreeSet<(String, BackupKind)>,
    since: DateTime<Utc>,
}

impl OffsiteStaleTracker {
    pub fn new(started: DateTime<Utc>) -> Self {
        OffsiteStaleTracker {
            alerted: BTreeSet::new(),
            since: started,
        }
    }

    /// `OffsiteStale` for each pair that just went stale. A pair that is fresh again is
    /// forgotten silently (the upload that made it fresh said `OffsiteRecovered`), and so
    /// is one whose target or type left the config.
    pub fn check(
        &mut self,
        config: &Config,
        state: &OffsiteState,
        now: DateTime<Utc>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut stale_now = BTreeSet::new();
        for (target, kind, limit) in offsite_pairs(config, now) {
            let verdict =
                offsite_verdict(newest_remote(state, target, kind), self.since, limit, now);
            if !verdict.stale {
                continue;
            }
            let key = (target.to_string(), kind);
            if !self.alerted.contains(&key) {
                events.push(Event::OffsiteStale {
                    target: target.to_string(),
                    kind,
                    age: verdict.age,
                    max_age: limit,
                    pending: state.targets.get(target).map_or(0, |t| t.pending.len()),
                });
            }
            stale_now.insert(key);
        }
        self.alerted = stale_now;
        events
    }

    /// When the next pair not yet alerted goes stale if nothing lands before.
    pub fn next_deadline(
        &self,
        config: &Config,
        state: &OffsiteState,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        offsite_pairs(config, now)
            .into_iter()
            .filter(|(t, k, _)| !self.alerted.contains(&(t.to_string(), *k)))
            .filter_map(|(t, k, limit)| {
                let limit = chrono::Duration::from_std(limit).ok()?;
                let reference = newest_remote(state, t, k).unwrap_or(self.since);
                Some(reference + limit + chrono::Duration::seconds(1))
            })
            .min()
    }

    /// The pairs alerted now.
    pub fn stale(&self) -> &BTreeSet<(String, BackupKind)> {
        &self.alerted
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

    #[test]
    fn offsite_verdict_measures_the_newest_copy_or_the_start() {
        let start = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let hour = Duration::from_secs(3600);
        let at = |m: i64| start + chrono::Duration::minutes(m);
        assert_eq!(
            offsite_verdict(None, start, hour, at(59)),
            OffsiteVerdict {
                stale: false,
                age: None
            },
            "a target with no copy yet gets max_age from the start"
        );
        assert!(offsite_verdict(None, start, hour, at(61)).stale);
        let v = offsite_verdict(Some(at(30)), start, hour, at(80));
        assert_eq!(
            v,
            OffsiteVerdict {
                stale: false,
                age: Some(Duration::from_secs(50 * 60))
            }
        );
        let v = offsite_verdict(Some(at(30)), start, hour, at(91));
        assert!(v.stale, "{v:?}");
        assert_eq!(v.age, Some(Duration::from_secs(61 * 60)));
        // A copy dated ahead of the clock is not stale (and not negative).
        assert_eq!(
            offsite_verdict(Some(at(10)), start, hour, at(0)).age,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn offsite_stale_is_told_once_per_target_and_type_and_again_after_a_fresh_copy() {
        let c = config(
            "[schedule]\nfull = \"off\"\nstorage = \"off\"\n[alerts]\nmax_age = { database = \"1h\" }\n\
             [[offsite]]\nname = \"nas\"\nurl = \"/mnt/nas\"\n\
             [[offsite]]\nname = \"b2\"\nurl = \"s3://bucket/p\"\nupload = [\"storage\"]\n",
        );
        let start = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let at = |m: i64| start + chrono::Duration::minutes(m);
        let mut t = OffsiteStaleTracker::new(start);
        let mut state = OffsiteState::default();
        state.targets.entry("nas".into()).or_default().pending = vec!["a".into(), "b".into()];
        assert!(t.check(&c, &state, at(30)).is_empty());
        assert_eq!(
            t.next_deadline(&c, &state, at(30)),
            Some(at(60) + chrono::Duration::seconds(1))
        );
        let ev = t.check(&c, &state, at(61));
        // b2 takes only storage, which has no max_age here: never judged.
        assert!(
            matches!(
                ev.as_slice(),
                [Event::OffsiteStale { target, kind: BackupKind::Database, age: None, pending: 2, .. }]
                    if target == "nas"
            ),
            "{ev:?}"
        );
        assert!(t.check(&c, &state, at(90)).is_empty(), "no repeat");
        assert_eq!(
            t.next_deadline(&c, &state, at(90)),
            None,
            "alerted pairs wait for news"
        );
        assert!(
            t.stale()
                .contains(&("nas".to_string(), BackupKind::Database))
        );

        // A fresh copy lands: forgotten without an event (the upload told the recovery).
        let fresh = at(100).fixed_offset();
        state
            .targets
            .get_mut("nas")
            .unwrap()
            .newest_remote
            .insert(BackupKind::Database, fresh);
        assert!(t.check(&c, &state, at(101)).is_empty());
        assert!(t.stale().is_empty());
        let ev = t.check(&c, &state, at(161));
        assert!(
            matches!(ev.as_slice(), [Event::OffsiteStale { age: Some(a), .. }] if *a == Duration::from_secs(61 * 60)),
            "{ev:?}"
        );
    }
}
