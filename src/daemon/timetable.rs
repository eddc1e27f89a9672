//! When each job fires next, as pure bookkeeping over an injected `now`: the daemon's
//! loop asks what is due, and when to wake. A job's following time is computed from the
//! slot that fired (not from "now", so a timer waking a hair early cannot fire the same
//! slot twice), and slots that passed while we were busy or suspended are coalesced into
//! one run — as after downtime, catch-up runs a job once, not once per missed slot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::{Config, JobSchedule, Timezone};
use crate::kind::JobName;
use crate::schedule::{next_runs, previous_run};

#[derive(Debug, Clone)]
pub struct Timetable {
    tz: Timezone,
    schedules: BTreeMap<JobName, JobSchedule>,
    next: BTreeMap<JobName, DateTime<Utc>>,
}

fn next_after(schedule: &JobSchedule, tz: Timezone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_runs(schedule, tz, after, 1)
        .first()
        .map(|t| t.with_timezone(&Utc))
}

impl Timetable {
    /// Every enabled job's first slot strictly after `now`.
    pub fn new(config: &Config, now: DateTime<Utc>) -> Timetable {
        let tz = config.schedule.timezone;
        let mut schedules = BTreeMap::new();
        let mut next = BTreeMap::new();
        for job in JobName::ALL {
            let s = config.schedule_of(job).clone();
            if let Some(t) = next_after(&s, tz, now) {
                next.insert(job, t);
            }
            schedules.insert(job, s);
        }
        Timetable {
            tz,
            schedules,
            next,
        }
    }

    /// The earliest next slot of any job.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.next.values().min().copied()
    }

    pub fn next_of(&self, job: JobName) -> Option<DateTime<Utc>> {
        self.next.get(&job).copied()
    }

    /// The jobs due at `now`, each once with the slot it fires for, in a stable order
    /// (full before database before storage before rotate before verify). Their next slots
    /// move past `now`.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<(JobName, DateTime<Utc>)> {
        let mut due = Vec::new();
        for (job, slot) in self.next.iter_mut() {
            if *slot > now {
                continue;
            }
            due.push((*job, *slot));
            let schedule = &self.schedules[job];
            let mut following = next_after(schedule, self.tz, *slot);
            // Coalesce slots missed while busy or suspended.
            while let Some(t) = following {
                if t > now {
                    break;
                }
                following = next_after(schedule, self.tz, t);
            }
            match following {
                Some(t) => *slot = t,
                None => *slot = DateTime::<Utc>::MAX_UTC,
            }
        }
        due
    }
}

/// Jobs whose most recent slot at or before `now` is newer than their last recorded run:
/// the server was down when they were due. A job never run before is not caught up (its
/// first run is the next slot), like systemd's `Persistent=true`.
pub fn catch_up(
    config: &Config,
    last_runs: &BTreeMap<JobName, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<(JobName, DateTime<Utc>)> {
    if !config.schedule.catch_up {
        return Vec::new();
    }
    let tz = config.schedule.timezone;
    JobName::ALL
        .into_iter()
        .filter_map(|job| {
            let prev = previous_run(config.schedule_of(job), tz, now)?.with_timezone(&Utc);
            let last = last_runs.get(&job)?;
            (*last < prev).then_some((job, prev))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    fn config(schedule: &str) -> Config {
        let text = format!("[schedule]\ntimezone = \"UTC\"\n{schedule}");
        Config::parse(&text, None, Path::new("/srv"), &|_| None).unwrap()
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, h, m, s).unwrap()
    }

    const ONLY_DB: &str = "full = \"off\"\nstorage = \"off\"\nrotate = \"off\"\nverify = \"off\"\n";

    #[test]
    fn default_schedule_is_the_seeds_crontab() {
        let c = config("");
        let tt = Timetable::new(&c, t(1, 0, 0));
        assert_eq!(tt.next_of(JobName::Full), Some(t(2, 0, 0)));
        assert_eq!(tt.next_of(JobName::Database), Some(t(6, 0, 0)));
        assert_eq!(tt.next_of(JobName::Rotate), Some(t(4, 0, 0)));
        assert_eq!(tt.next_wake(), Some(t(2, 0, 0)));
    }

    #[test]
    fn a_slot_fires_once_and_the_next_comes_from_it() {
        let c = config(&format!("{ONLY_DB}database = \"*/2 * * * * *\"\n"));
        let mut tt = Timetable::new(&c, t(10, 0, 0));
        assert_eq!(tt.next_wake(), Some(t(10, 0, 2)));
        assert!(tt.take_due(t(10, 0, 1)).is_empty());
        assert_eq!(
            tt.take_due(t(10, 0, 2)),
            vec![(JobName::Database, t(10, 0, 2))]
        );
        // Woken again in the same second: nothing fires twice.
        assert!(tt.take_due(t(10, 0, 2)).is_empty());
        assert_eq!(tt.next_wake(), Some(t(10, 0, 4)));
    }

    #[test]
    fn missed_slots_are_coalesced_into_one_run() {
        let c = config(&format!("{ONLY_DB}database = \"*/2 * * * * *\"\n"));
        let mut tt = Timetable::new(&c, t(10, 0, 0));
        // A long job (or a suspended VM) kept us away for a minute.
        let due = tt.take_due(t(10, 1, 0));
        assert_eq!(due, vec![(JobName::Database, t(10, 0, 2))]);
        assert_eq!(tt.next_wake(), Some(t(10, 1, 2)));
    }

    #[test]
    fn disabled_jobs_never_fire() {
        let c = config(
            "full = \"off\"\ndatabase = \"off\"\nstorage = \"off\"\nrotate = \"off\"\nverify = \"off\"\n",
        );
        let tt = Timetable::new(&c, t(10, 0, 0));
        assert_eq!(tt.next_wake(), None);
    }

    #[test]
    fn catch_up_runs_a_missed_job_once() {
        let c = config("");
        let now = t(9, 30, 0);
        let mut last = BTreeMap::new();
        // Full last ran yesterday at 02:00: today's 02:00 was missed.
        last.insert(JobName::Full, t(2, 0, 0) - chrono::Duration::days(1));
        // Database ran at 06:00 today: nothing missed.
        last.insert(JobName::Database, t(6, 0, 5));
        let due = catch_up(&c, &last, now);
        assert_eq!(due, vec![(JobName::Full, t(2, 0, 0))]);
    }

    #[test]
    fn catch_up_can_be_turned_off_and_skips_never_run_jobs() {
        let mut last = BTreeMap::new();
        last.insert(JobName::Full, t(2, 0, 0) - chrono::Duration::days(3));
        assert!(catch_up(&config("catch_up = false\n"), &last, t(9, 0, 0)).is_empty());
        assert_eq!(catch_up(&config(""), &BTreeMap::new(), t(9, 0, 0)), vec![]);
    }

    #[test]
    fn berlin_daily_job_runs_once_on_both_dst_days() {
        let text = "[schedule]\ntimezone = \"Europe/Berlin\"\ndatabase = \"off\"\nstorage = \"off\"\nrotate = \"off\"\nverify = \"off\"\nfull = \"30 2 * * *\"\n";
        let c = Config::parse(text, None, Path::new("/srv"), &|_| None).unwrap();
        for (start, days) in [
            (Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap(), 4),
            (Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap(), 4),
        ] {
            let mut tt = Timetable::new(&c, start);
            let mut fired = Vec::new();
            // Walk the clock minute by minute over four days.
            let mut now = start;
            while now < start + chrono::Duration::days(days) {
                fired.extend(tt.take_due(now).into_iter().map(|(_, slot)| slot));
                now += chrono::Duration::minutes(1);
            }
            let dates: Vec<_> = fired
                .iter()
                .map(|s| s.with_timezone(&chrono_tz::Europe::Berlin).date_naive())
                .collect();
            let mut unique = dates.clone();
            unique.dedup();
            assert_eq!(dates.len(), days as usize, "one run per day: {fired:?}");
            assert_eq!(
                unique.len(),
                dates.len(),
                "never twice on one day: {fired:?}"
            );
        }
    }
}
