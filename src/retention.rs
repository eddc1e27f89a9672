//! Retention as a pure function: (backups, policy, now) → [`RetentionPlan`]. Nothing here
//! touches the disk, so every rule is tested with a fixed `now`, and `--dry-run` is the
//! plan printed instead of applied.
//!
//! Rules, per backup type (SPEC §6):
//! - only complete, stand-alone backups are candidates: parts of a full backup live and
//!   die with their full backup; incomplete ones (and ones that failed verification) are
//!   never counted and never deleted here;
//! - keep the newest `keep_last`; keep the newest backup of each of the last
//!   `keep_daily` days, `keep_weekly` ISO weeks, `keep_monthly` months (calendar buckets
//!   in the configured zone, like restic's `forget`); keep everything within `keep_within`;
//! - the newest complete backup of a type is always kept, whatever the policy says;
//! - a backup dated after `now` (made while the clock ran ahead) is kept, reported, and
//!   neither counts as the newest nor fills a `keep_last` or calendar slot: one backup
//!   from the future must never make a present one (the one just taken) deletable. Once
//!   the clock passes its date it is an ordinary candidate again;
//! - a restore's pre-restore safety copies form their own group under the same policy, so
//!   restoring never pushes a scheduled backup out (the one just restored included).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc};
use serde::Serialize;

use crate::config::{RetentionSection, Timezone};
use crate::kind::BackupKind;

/// What retention needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The backup's stem, e.g. `db_backup_20261127_020000`.
    pub id: String,
    pub kind: BackupKind,
    pub created: DateTime<FixedOffset>,
    pub complete: bool,
    /// Set for the parts of a full backup.
    pub part_of: Option<String>,
    /// A restore's safety copy: retained as its own group, so it never takes the place of
    /// a scheduled backup (nor the other way round).
    pub pre_restore: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Why it is kept (`last`, `daily`, `weekly`, `monthly`, `within`, `newest`), or why
    /// it goes (`beyond policy`).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    pub keep: Vec<Decision>,
    pub delete: Vec<Decision>,
    /// Backups left alone because they are incomplete (never counted, never deleted here).
    pub ignored: Vec<Decision>,
}

/// The policy, checked: `keep_last` ≥ 1 is enforced by the config.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<Duration>,
}

impl From<&RetentionSection> for RetentionPolicy {
    fn from(r: &RetentionSection) -> Self {
        RetentionPolicy {
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_within: r.keep_within.map(|d| d.0),
        }
    }
}

/// The reason a backup dated after `now` is kept (and what `list` and events call it).
pub const FUTURE_DATED: &str = "future-dated";

/// Whether `created` lies after `now`: the clock that dated it ran ahead of today's.
pub fn is_future(created: &DateTime<FixedOffset>, now: DateTime<Utc>) -> bool {
    created.with_timezone(&Utc) > now
}

impl RetentionPlan {
    /// Backups kept only because they are dated after `now`.
    pub fn future_dated(&self) -> impl Iterator<Item = &Decision> {
        self.keep
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r == FUTURE_DATED))
    }
}

/// `db_backup_20261127_020000_10` → ("db_backup_20261127_020000", 10).
fn id_order(id: &str) -> (&str, u32) {
    match id.rsplit_once('_') {
        // A suffix follows the 6-digit time; the time itself has 6 digits.
        Some((head, n)) if n.len() < 6 && n.chars().all(|c| c.is_ascii_digit()) => {
            (head, n.parse().unwrap_or(0))
        }
        _ => (id, 1),
    }
}

/// Decide what to keep and what to delete.
pub fn apply(
    backups: &[Candidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    tz: Timezone,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    for (kind, pre_restore) in BackupKind::ALL
        .into_iter()
        .flat_map(|k| [(k, false), (k, true)])
    {
        let mut candidates: Vec<&Candidate> = Vec::new();
        for b in backups
            .iter()
            .filter(|b| b.kind == kind && b.pre_restore == pre_restore)
        {
            if b.part_of.is_some() {
                continue;
            }
            if b.complete && is_future(&b.created, now) {
                plan.keep.push(Decision {
                    id: b.id.clone(),
                    kind,
                    reasons: vec![FUTURE_DATED.into()],
                });
            } else if b.complete {
                candidates.push(b);
            } else {
                plan.ignored.push(Decision {
                    id: b.id.clone(),
                    kind,
                    reasons: vec!["incomplete or failed verification".into()],
                });
            }
        }
        // Newest first; within one second by the numeric `_N` suffix (`_10` after `_9`),
        // so the order is total, deterministic and the catalog's.
        candidates.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| id_order(&b.id).cmp(&id_order(&a.id)))
        });

        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); candidates.len()];
        if let Some(first) = reasons.first_mut() {
            first.push("newest".into());
        }
        for r in reasons.iter_mut().take(policy.keep_last as usize) {
            r.push("last".into());
        }
        let mut bucket = |n: Option<u32>, label: &str, key: &dyn Fn(NaiveDate) -> (i32, u32)| {
            let Some(n) = n else { return };
            let mut seen = BTreeSet::new();
            for (i, c) in candidates.iter().enumerate() {
                if seen.len() >= n as usize {
                    break;
                }
                if seen.insert(key(tz.localize(&c.created).date_naive())) {
                    reasons[i].push(label.to_string());
                }
            }
        };
        bucket(policy.keep_daily, "daily", &|d| (d.year(), d.ordinal()));
        bucket(policy.keep_weekly, "weekly", &|d| {
            let w = d.iso_week();
            (w.year(), w.week())
        });
        bucket(policy.keep_monthly, "monthly", &|d| (d.year(), d.month()));
        if let Some(within) = policy.keep_within {
            let within = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
            for (i, c) in candidates.iter().enumerate() {
                if now.signed_duration_since(c.created.with_timezone(&Utc)) <= within {
                    reasons[i].push("within".into());
                }
            }
        }
        for (c, r) in candidates.iter().zip(reasons) {
            let d = Decision {
                id: c.id.clone(),
                kind,
                reasons: if r.is_empty() {
                    vec!["beyond policy".into()]
                } else {
                    r
                },
            };
            if d.reasons == ["beyond policy"] {
                plan.delete.push(d);
            } else {
                plan.keep.push(d);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests;
