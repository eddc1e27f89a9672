//! Cron arithmetic in the configured time zone: when does a job fire next, and when did
//! it last fire. Used by `check-config` and `status` now, and by the daemon's loop.
//! Times are computed from the previous slot, never from "now", so no slot is skipped.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, Utc};

use crate::config::{Config, JobSchedule, Timezone};
use crate::kind::{BackupKind, JobName};

/// The next `n` fire times strictly after `after`, in the zone's offset.
pub fn next_runs(
    schedule: &JobSchedule,
    tz: Timezone,
    after: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<FixedOffset>> {
    let Some(cron) = schedule.cron() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    let mut cursor = after;
    for _ in 0..n {
        let next = match tz {
            Timezone::Local => cron
                .find_next_occurrence(&cursor.with_timezone(&Local), false)
                .map(|t| t.fixed_offset()),
            Timezone::Named(z) => cron
                .find_next_occurrence(&cursor.with_timezone(&z), false)
                .map(|t| t.fixed_offset()),
        };
        match next {
            Ok(t) => {
                cursor = t.with_timezone(&Utc);
                out.push(t);
            }
            Err(_) => break,
        }
    }
    out
}

/// The most recent fire time at or before `at`, if any.
pub fn previous_run(
    schedule: &JobSchedule,
    tz: Timezone,
    at: DateTime<Utc>,
) -> Option<DateTime<FixedOffset>> {
    let cron = schedule.cron()?;
    match tz {
        Timezone::Local => cron
            .find_previous_occurrence(&at.with_timezone(&Local), true)
            .ok()
            .map(|t| t.fixed_offset()),
        Timezone::Named(z) => cron
            .find_previous_occurrence(&at.with_timezone(&z), true)
            .ok()
            .map(|t| t.fixed_offset()),
    }
}

/// `[alerts] max_age` for `kind`, or derived from the schedule: 1.5 × the shortest
/// interval of the jobs producing it (a daily backup is stale after 36 h, one missed run).
/// `None` when nothing produces it on a schedule and no limit is configured.
pub fn max_age(config: &Config, kind: BackupKind, now: DateTime<Utc>) -> Option<Duration> {
    max_age_explained(config, kind, now).map(|(limit, _)| limit)
}

/// [`max_age`] with where it comes from, in words for `status`: `"[alerts] max_age"`, or
/// `"1.5 × the full job's interval of 1d"` when derived from the schedule.
pub fn max_age_explained(
    config: &Config,
    kind: BackupKind,
    now: DateTime<Utc>,
) -> Option<(Duration, String)> {
    if let Some(d) = config.alerts.max_age.of(kind) {
        return Some((d, "[alerts] max_age".to_string()));
    }
    // The jobs whose runs leave a fresh backup of `kind` (a full backup makes all three).
    JobName::ALL
        .into_iter()
        .filter(|job| job.refreshes().contains(&kind))
        .filter_map(|job| {
            let runs = next_runs(config.schedule_of(job), config.schedule.timezone, now, 2);
            match runs.as_slice() {
                [a, b] => (*b - *a).to_std().ok().map(|interval| (interval, job)),
                _ => None,
            }
        })
        .min_by_key(|(interval, _)| *interval)
        .map(|(interval, job)| {
            (
                interval + interval / 2,
                format!(
                    "1.5 × the {job} job's interval of {}",
                    crate::units::format_duration(interval)
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn berlin() -> Timezone {
        Timezone::Named(chrono_tz::Europe::Berlin)
    }

    #[test]
    fn daily_job_fires_once_per_day_across_spring_forward() {
        // Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29.
        let s = JobSchedule::parse("30 2 * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let runs = next_runs(&s, berlin(), start, 4);
        let days: Vec<String> = runs.iter().map(|t| t.format("%m-%d").to_string()).collect();
        assert_eq!(days, ["03-28", "03-29", "03-30", "03-31"], "{runs:?}");
        // 02:30 does not exist on the 29th: the job still runs that day, once.
        assert_eq!(runs[2].format("%H:%M %:z").to_string(), "02:30 +02:00");
    }

    #[test]
    fn daily_job_fires_once_across_fall_back() {
        // On 2026-10-25 Berlin repeats 02:00–03:00; a 02:30 job must run once.
        let s = JobSchedule::parse("30 2 * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        let runs = next_runs(&s, berlin(), start, 3);
        let days: Vec<String> = runs.iter().map(|t| t.format("%m-%d").to_string()).collect();
        assert_eq!(days, ["10-25", "10-26", "10-27"], "{runs:?}");
    }

    #[test]
    fn offset_follows_dst() {
        let s = JobSchedule::parse("0 2 * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let runs = next_runs(&s, berlin(), start, 5);
        // Before the change 02:00 is +01:00; after it, 02:00 local is +02:00, not 03:00.
        assert_eq!(runs[0].format("%H:%M %:z").to_string(), "02:00 +01:00");
        assert_eq!(runs[4].format("%H:%M %:z").to_string(), "02:00 +02:00");
    }

    #[test]
    fn previous_slot() {
        let s = JobSchedule::parse("0 */6 * * *").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 8, 15, 0).unwrap();
        let tz = Timezone::Named(chrono_tz::UTC);
        assert_eq!(
            previous_run(&s, tz, at)
                .unwrap()
                .format("%H:%M")
                .to_string(),
            "06:00"
        );
        assert!(previous_run(&JobSchedule::Off, tz, at).is_none());
    }
}
