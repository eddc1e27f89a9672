//! Retention as a pure function: (backups, policy, now) → [`RetentionPlan`]. Nothing here
//! touches the disk, so every rule is tested with a fixed `now`, and `--dry-run` is the
//! plan printed instead of applied.
//!
//! Rules, per backup type (README.md, Retention):
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
//! - a restore's safety copies (its pre-restore database backups in the catalog, and the
//!   storage trees and damaged databases it set aside beside the live data, each kind a
//!   group) are kept by `keep_pre_restore` alone: the newest N of each kind, so restoring
//!   never pushes a scheduled backup out, and tens of GB of old trees do not pile up.

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
    /// A safety copy set aside beside the live data (a replaced storage tree, a damaged
    /// database), not in the catalog: a group of its own under `keep_pre_restore`.
    pub set_aside: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Why it is kept (`last`, `daily`, `weekly`, `monthly`, `within`, `newest`,
    /// `pre-restore`, `future-dated`), or why it goes (`beyond policy`, `beyond
    /// keep_pre_restore`).
    pub reasons: Vec<String>,
    /// The same reasons in words, e.g. "daily bucket 2026-11-30 (keep_daily)".
    pub explained: Vec<String>,
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
    /// How many of each kind of safety copy a restore made are kept (the newest).
    pub keep_pre_restore: u32,
}

impl From<&RetentionSection> for RetentionPolicy {
    fn from(r: &RetentionSection) -> Self {
        RetentionPolicy {
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_within: r.keep_within.map(|d| d.0),
            keep_pre_restore: r.keep_pre_restore,
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
    /// Keep `ids` whatever the policy said (they are being uploaded, or locked on the
    /// target): each moves from `delete` to `keep` with `reason`.
    pub fn hold(&mut self, ids: &[String], reason: &str, explained: &str) {
        let (held, rest): (Vec<Decision>, Vec<Decision>) = std::mem::take(&mut self.delete)
            .into_iter()
            .partition(|d| ids.contains(&d.id));
        self.delete = rest;
        for mut d in held {
            d.reasons = vec![reason.to_string()];
            d.explained = vec![explained.to_string()];
            self.keep.push(d);
        }
    }

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

/// Decide what to keep and what to delete. Each decision carries its reasons twice: as
/// short codes (`reasons`, for scripts) and in words (`explained`, what `rotate --dry-run`
/// prints).
pub fn apply(
    backups: &[Candidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    tz: Timezone,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    for (kind, pre_restore, set_aside) in BackupKind::ALL
        .into_iter()
        .flat_map(|k| [(k, false, false), (k, true, false), (k, true, true)])
    {
        let group = backups
            .iter()
            .filter(|b| b.kind == kind && b.pre_restore == pre_restore && b.set_aside == set_aside);
        let candidates = partition(group, now, &mut plan);
        let decided = if pre_restore {
            pre_restore_reasons(&candidates, policy.keep_pre_restore)
        } else {
            scheduled_reasons(&candidates, policy, now, tz)
        };
        for (c, (codes, words)) in candidates.iter().zip(decided) {
            let d = Decision {
                id: c.id.clone(),
                kind,
                reasons: codes,
                explained: words,
            };
            if d.reasons
                .iter()
                .any(|r| r == BEYOND_POLICY || r == BEYOND_PRE_RESTORE)
            {
                plan.delete.push(d);
            } else {
                plan.keep.push(d);
            }
        }
    }
    plan
}

/// The code of a scheduled backup no rule keeps.
const BEYOND_POLICY: &str = "beyond policy";
/// The code of a safety copy older than the newest `keep_pre_restore`.
const BEYOND_PRE_RESTORE: &str = "beyond keep_pre_restore";

/// Split a group: future-dated ones kept and incomplete ones ignored straight into `plan`;
/// the rest returned as candidates, newest first — within one second by the numeric `_N`
/// suffix (`_10` after `_9`), so the order is total, deterministic and the catalog's.
fn partition<'a>(
    group: impl Iterator<Item = &'a Candidate>,
    now: DateTime<Utc>,
    plan: &mut RetentionPlan,
) -> Vec<&'a Candidate> {
    let mut candidates = Vec::new();
    for b in group.filter(|b| b.part_of.is_none()) {
        if b.complete && is_future(&b.created, now) {
            plan.keep.push(Decision {
                id: b.id.clone(),
                kind: b.kind,
                reasons: vec![FUTURE_DATED.into()],
                explained: vec![
                    "dated in the future (the clock ran ahead): kept, not counted as the newest"
                        .into(),
                ],
            });
        } else if b.complete {
            candidates.push(b);
        } else {
            plan.ignored.push(Decision {
                id: b.id.clone(),
                kind: b.kind,
                reasons: vec!["incomplete or failed verification".into()],
                explained: vec![
                    "incomplete or failed verification: not counted, not deleted".into(),
                ],
            });
        }
    }
    candidates.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| id_order(&b.id).cmp(&id_order(&a.id)))
    });
    candidates
}

/// One candidate's reasons: the codes and the same in words.
type Reasons = (Vec<String>, Vec<String>);

/// A restore's safety copies (newest first): only `keep_pre_restore` decides.
fn pre_restore_reasons(candidates: &[&Candidate], keep: u32) -> Vec<Reasons> {
    (0..candidates.len())
        .map(|i| {
            if i < keep as usize {
                let which = if i == 0 {
                    "newest".to_string()
                } else {
                    format!("one of the newest {keep}")
                };
                (
                    vec!["pre-restore".into()],
                    vec![format!("pre-restore copy, {which} (keep_pre_restore)")],
                )
            } else {
                (
                    vec![BEYOND_PRE_RESTORE.into()],
                    vec![format!(
                        "pre-restore copy older than the newest {keep} (keep_pre_restore = {keep})"
                    )],
                )
            }
        })
        .collect()
}

/// A calendar bucket: (year, day of year | ISO week | month).
type BucketKey = (i32, u32);

/// One calendar rule of the policy: how many buckets it keeps, its label, the bucket a
/// local date falls in, and the bucket's name in words.
struct CalendarRule {
    keep: Option<u32>,
    label: &'static str,
    bucket: fn(NaiveDate) -> BucketKey,
    name: fn(BucketKey) -> String,
}

fn calendar_rules(policy: &RetentionPolicy) -> [CalendarRule; 3] {
    [
        CalendarRule {
            keep: policy.keep_daily,
            label: "daily",
            bucket: |d| (d.year(), d.ordinal()),
            name: |(y, o)| NaiveDate::from_yo_opt(y, o).map_or_else(String::new, |d| d.to_string()),
        },
        CalendarRule {
            keep: policy.keep_weekly,
            label: "weekly",
            bucket: |d| (d.iso_week().year(), d.iso_week().week()),
            name: |(y, w)| format!("{y}-W{w:02}"),
        },
        CalendarRule {
            keep: policy.keep_monthly,
            label: "monthly",
            bucket: |d| (d.year(), d.month()),
            name: |(y, m)| format!("{y}-{m:02}"),
        },
    ]
}

/// Scheduled backups (newest first) under `keep_last`, the calendar buckets and
/// `keep_within`; the newest is always kept.
fn scheduled_reasons(
    candidates: &[&Candidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    tz: Timezone,
) -> Vec<Reasons> {
    let mut reasons: Vec<Reasons> = vec![Default::default(); candidates.len()];
    let mut add = |i: usize, code: &str, words: String| {
        reasons[i].0.push(code.to_string());
        reasons[i].1.push(words);
    };
    if !candidates.is_empty() {
        add(
            0,
            "newest",
            "newest good backup of its type (never deleted)".into(),
        );
    }
    for i in 0..candidates.len().min(policy.keep_last as usize) {
        add(
            i,
            "last",
            format!("one of the last {} (keep_last)", policy.keep_last),
        );
    }
    for rule in calendar_rules(policy) {
        let (label, key, show) = (rule.label, rule.bucket, rule.name);
        let Some(n) = rule.keep else { continue };
        let mut seen = BTreeSet::new();
        for (i, c) in candidates.iter().enumerate() {
            if seen.len() >= n as usize {
                break;
            }
            let k = key(tz.localize(&c.created).date_naive());
            if seen.insert(k) {
                add(
                    i,
                    label,
                    format!("{label} bucket {} (keep_{label})", show(k)),
                );
            }
        }
    }
    if let Some(within) = policy.keep_within {
        let shown = humantime::format_duration(within).to_string();
        let within = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        for (i, c) in candidates.iter().enumerate() {
            if now.signed_duration_since(c.created.with_timezone(&Utc)) <= within {
                add(
                    i,
                    "within",
                    format!("taken within the last {shown} (keep_within)"),
                );
            }
        }
    }
    for r in reasons.iter_mut().filter(|r| r.0.is_empty()) {
        r.0.push(BEYOND_POLICY.into());
        r.1.push("beyond policy: no keep rule covers it".into());
    }
    reasons
}

#[cfg(test)]
pub(crate) mod tests;
