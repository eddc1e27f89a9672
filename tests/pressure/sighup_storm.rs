//! SIGHUP storms (50 reloads in a second, broken configs among them) and saves just
//! before a slot: one consistent schedule, no slot lost or doubled.

use super::*;

// ---------------------------------------------------------------------------------------
// 2. SIGHUP storms

/// Schedule A: database every 2 s, storage off.
const EVERY_2S: &str = "*/2 * * * * *";

fn schedule_a(app: &TestApp, extra: &str) -> String {
    schedule_config(app, "", &[("database", EVERY_2S)], extra)
}

/// Schedule B: storage every 2 s, database off.
fn schedule_b(app: &TestApp, extra: &str) -> String {
    schedule_config(app, "", &[("storage", EVERY_2S)], extra)
}

/// Send `count` SIGHUPs paced evenly over `over`, calling `before(i)` before signal `i`
/// (to rewrite the config). The pacing shapes the load; nothing waits on it. Returns when
/// the last signal was sent.
fn sighup_storm(
    d: &mut Daemon,
    count: usize,
    over: Duration,
    mut before: impl FnMut(&mut Daemon, usize),
) -> DateTime<Utc> {
    let took = paced(count, over, |i| {
        before(d, i);
        d.signal(libc::SIGHUP);
    });
    eprintln!(
        "pressure/sighup: {count} SIGHUPs sent in {took:.3?} (pid {})",
        d.pid()
    );
    Utc::now()
}

/// Call `step(i)` for i in 0..count, evenly spread over `over`; returns the time taken.
fn paced(count: usize, over: Duration, mut step: impl FnMut(usize)) -> Duration {
    let start = Instant::now();
    for i in 0..count {
        let at = start + over.mul_f64(i as f64 / count as f64);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        step(i);
    }
    start.elapsed()
}

/// After a storm whose last write was schedule B (sent at `last_signal`): B is what runs.
///
/// The proof is behavioural. A storage run whose slot is later than the last signal was
/// fired by the timetable after every reload that could have read an older file, so from
/// its start on only B can be in effect: every later run must be a scheduled storage
/// run, one per slot (no second timer from a stacked reload, which would show as a second
/// run of a slot or as a "skipped" warning), and no database backup may land. The
/// daemon's own `STATUS=` line and `status --json` must agree.
fn assert_ends_on_schedule_b(d: &mut Daemon, last_signal: DateTime<Utc>) {
    let fired_after = |r: &WorkerRun| {
        r.job == "storage"
            && r.why.starts_with("schedule")
            && r.slot.is_some_and(|s| s > last_signal)
    };
    let first = d.poll_for(
        FEW_CYCLES,
        "a finished storage run for a slot after the last SIGHUP",
        |d| {
            runs_of(d)
                .into_iter()
                .position(|r| fired_after(&r) && r.finished.is_some())
        },
    );
    let app = d.app;
    let databases = app.list_of("database").len();
    let runs = d.poll_for(FEW_CYCLES, "three more storage runs", |d| {
        let runs = runs_of(d);
        (runs
            .iter()
            .skip(first + 1)
            .filter(|r| r.finished.is_some())
            .count()
            >= 3)
            .then_some(runs)
    });
    let after: Vec<&WorkerRun> = runs.iter().skip(first).collect();
    let mut slots = Vec::new();
    for r in &after {
        assert!(
            r.job == "storage" && r.why.starts_with("schedule, slot "),
            "only scheduled storage runs after the storm, got {r:?}\n{}",
            d.describe()
        );
        let slot = r.slot.expect("slot");
        assert_eq!(
            slot.second() % 2,
            0,
            "a slot not on schedule B's */2 seconds: {r:?}"
        );
        assert!(
            !slots.contains(&slot),
            "slot {slot} fired twice\n{}",
            d.describe()
        );
        slots.push(slot);
    }
    eprintln!(
        "pressure/sighup: after the storm (pid {}), storage ran for slots {:?}",
        d.pid(),
        slots
            .iter()
            .map(|s| s.format("%H:%M:%S").to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        app.list_of("database").len(),
        databases,
        "a database backup landed after the storm\n{}",
        d.describe()
    );
    // One timer: every skip after the first post-storm run is a slot a slow run covered.
    let stderr = d.stderr();
    if let Err(e) = skips_one_timer_explains(&stderr, &after, Utc::now()) {
        panic!("{e} (two timers?)\n{}", d.describe());
    }

    // The daemon's own view: the latest STATUS= names storage as the next job.
    let messages = d.notify.messages();
    let status = messages
        .iter()
        .rev()
        .find_map(|m| m.lines().find(|l| l.starts_with("STATUS=")))
        .unwrap_or_else(|| panic!("no STATUS= at all\n{}", d.describe()));
    assert!(
        status.starts_with("STATUS=next: storage at "),
        "{status}\n{}",
        d.describe()
    );
    // And `status --json` reads the same schedule from the file.
    let status = app.status_json();
    let schedule_of = |job: &str| jstr(&status_job(&status, job), "schedule").to_string();
    assert_eq!(schedule_of("storage"), EVERY_2S);
    assert_eq!(schedule_of("database"), "off");
}

/// The "job skipped" lines logged after `runs[0]` started, checked against one timer of
/// schedule B. A timer fires each */2 slot once, and the queue refuses a firing ("storage
/// job skipped") only while the previous run is still queued or running: a slow run (one
/// that outlasts 2 s on a loaded machine) costs the slots it covers, so each skip is a
/// slot after `runs[0]`'s, up to `now` (taken after `stderr` was read), that has no run.
/// A second timer fires every slot again, so it shows as more skips than such slots (or
/// as a slot run twice, which the caller checks); any skip of another job is a timer
/// that should not exist. Returns the number of skips.
fn skips_one_timer_explains(
    stderr: &str,
    runs: &[&WorkerRun],
    now: DateTime<Utc>,
) -> Result<usize, String> {
    let first = runs.first().ok_or("no run to start from")?;
    let from = stderr
        .find(&format!("{}: job started ({})", first.job, first.why))
        .ok_or_else(|| format!("no start line for {first:?}"))?;
    let skipped = lines_with(&stderr[from..], " job skipped");
    if let Some(other) = skipped
        .iter()
        .find(|l| !l.contains(&format!("{} job skipped", first.job)))
    {
        return Err(format!(
            "another job than {} was skipped after the storm: {other}",
            first.job
        ));
    }
    let slot0 = first.slot.ok_or("the first run has no slot")?.timestamp();
    let slots_since = (now.timestamp() - slot0).div_euclid(2);
    let ran_since = runs
        .iter()
        .filter(|r| r.slot.is_some_and(|s| s.timestamp() > slot0))
        .count() as i64;
    let free_slots = slots_since - ran_since;
    if skipped.len() as i64 > free_slots {
        return Err(format!(
            "{} skips after the storm, but only {free_slots} of the {slots_since} slots since \
             the first run's ({}) have no run: a slot fired more than once\n{}",
            skipped.len(),
            first.why,
            skipped.join("\n")
        ));
    }
    Ok(skipped.len())
}

/// Figures for the record: signals seen, reloads done and rejected.
fn report_reloads(label: &str, d: &Daemon) -> (usize, usize, usize) {
    let stderr = d.stderr();
    let log = d.app.backup_log();
    let seen = lines_with(&stderr, "SIGHUP: reloading the configuration").len();
    let reloaded = lines_with(&log, "configuration reloaded").len();
    let rejected = lines_with(&log, "configuration change REJECTED").len();
    // A reload that caught a file written in place half-way (empty, or cut after a
    // line) may load something else than the schedules written: counted, for the record.
    let other = lines_with(&log, "configuration reloaded")
        .iter()
        .filter(|l| {
            let runs = l.split("next runs: ").nth(1).unwrap_or_default();
            runs.trim().is_empty() || runs.split(", ").count() != 1
        })
        .count();
    eprintln!(
        "pressure/{label}: {seen} SIGHUPs logged by the daemon, {reloaded} reloads \
         ({other} of a half-written file), {rejected} rejected"
    );
    (seen, reloaded, rejected)
}

#[test]
fn fifty_sighups_in_a_second_leave_the_last_schedule_with_one_timer_and_no_panic() {
    let app = TestApp::new();
    // Only SIGHUP reloads here: no file watch to mix in.
    let extra = "watch_config = false\n";
    let (a, b) = (schedule_a(&app, extra), schedule_b(&app, extra));
    app.write_config_raw(&a);
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup under A", |d| {
        !d.app.list_of("database").is_empty()
    });

    // The file flips B, A, B, …, each replaced by rename so every read sees a whole
    // file; the last write (i = 49) is B.
    let last = sighup_storm(&mut d, 50, Duration::from_millis(950), |d, i| {
        d.app
            .replace_config_by_rename(if i % 2 == 1 { &b } else { &a });
    });
    assert!(d.proc.is_running(), "{}", d.describe());

    assert_ends_on_schedule_b(&mut d, last);
    let (seen, reloaded, rejected) = report_reloads("sighup-storm", &d);
    assert!(seen >= 1 && reloaded >= 1, "{}", d.describe());
    assert_eq!(
        rejected,
        0,
        "every config written was valid and whole\n{}",
        d.describe()
    );
    assert_no_panic(&d);
    d.stop();
}

#[test]
fn a_sighup_storm_through_broken_configs_ends_on_the_last_valid_one() {
    let app = TestApp::new();
    // The file watch stays on (the default): saved edits reload too, debounced, on top of
    // the signals. Edits are written in place, as a script would.
    let (a, b) = (schedule_a(&app, ""), schedule_b(&app, ""));
    let bad_cron = schedule_config(&app, "", &[("storage", "0 99 * * *")], "");
    let bad_toml = format!("{b}\n[schedule\nbroken = \n");
    app.write_config_raw(&a);
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first database backup under A", |d| {
        !d.app.list_of("database").is_empty()
    });

    // 25 signals flipping A and B; in the middle a broken config, seen rejected; 24 more
    // through broken and valid configs; the last write (i = 49) is B.
    let last = sighup_storm(&mut d, 50, Duration::from_millis(950), |d, i| {
        let text = match i {
            0..25 => [&b, &a][i % 2],
            25 => &bad_cron,
            49 => &b,
            _ => [&bad_toml, &a, &bad_cron, &b][i % 4],
        };
        if i == 26 {
            // Signal 25 came with the broken cron line: it must have been read and
            // rejected, naming the line, before the storm goes on.
            d.poll(RELOAD_TIMEOUT, "the broken cron line to be rejected", |d| {
                lines_with(&d.app.backup_log(), "configuration change REJECTED")
                    .iter()
                    .any(|l| l.contains("0 99 * * *"))
            });
        }
        fs::write(&d.app.config, text).expect("write config");
    });
    assert!(d.proc.is_running(), "{}", d.describe());

    assert_ends_on_schedule_b(&mut d, last);
    let (_, reloaded, rejected) = report_reloads("broken-storm", &d);
    assert!(reloaded >= 1 && rejected >= 1, "{}", d.describe());
    for line in lines_with(&app.backup_log(), "configuration change REJECTED") {
        assert!(line.contains("WARNING"), "a rejection is a warning: {line}");
    }
    assert_no_panic(&d);
    d.stop();
}

/// Reloads that keep a job's schedule must not cost it a run. A reload rebuilds the
/// timetable from "now"; a slot that came due while the loop was busy (in the 300 ms
/// debounce of a saved edit, or handling a signal before its timer) must still fire.
/// Here the config is saved 150 ms before each of 4 slots of an unchanged `*/2` schedule
/// (so each slot passes during a debounce), and SIGHUP is sent at the slot itself.
#[test]
fn saving_the_config_just_before_each_slot_loses_no_run() {
    let app = TestApp::new();
    let a = schedule_a(&app, "");
    app.write_config_raw(&a);
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "a first scheduled database run", |d| {
        runs_of(d).iter().any(|r| r.finished.is_some())
    });

    let wait_until = |t: DateTime<Utc>| {
        if let Ok(wait) = (t - Utc::now()).to_std() {
            thread::sleep(wait);
        }
    };
    // The next even second at least 0.5 s away, then the 3 after it.
    let now = Utc::now();
    let first = DateTime::from_timestamp(now.timestamp() + 2 - now.timestamp() % 2, 0)
        .expect("time")
        + chrono::Duration::seconds(if now.timestamp_subsec_millis() > 500 {
            2
        } else {
            0
        });
    let targets: Vec<DateTime<Utc>> = (0..4)
        .map(|i| first + chrono::Duration::seconds(2 * i))
        .collect();
    for (i, slot) in targets.iter().enumerate() {
        // By rename, so every read sees a whole file; a comment changes, so each save is
        // a real change.
        wait_until(*slot - chrono::Duration::milliseconds(150));
        d.app
            .replace_config_by_rename(&format!("{a}# saved before slot {i}\n"));
        wait_until(*slot);
        d.signal(libc::SIGHUP);
    }
    let last = *targets.last().expect("slots");
    let runs = d.poll_for(FEW_CYCLES, "the run of the last targeted slot", |d| {
        let runs = runs_of(d);
        runs.iter()
            .any(|r| r.finished.is_some() && r.slot.is_some_and(|s| s >= last))
            .then_some(runs)
    });
    let ran: Vec<DateTime<Utc>> = runs
        .iter()
        .filter(|r| r.job == "database" && r.why.starts_with("schedule"))
        .filter_map(|r| r.slot.map(|s| s.with_timezone(&Utc)))
        .collect();
    let lost: Vec<String> = targets
        .iter()
        .filter(|t| !ran.contains(t))
        .map(|t| t.format("%H:%M:%S").to_string())
        .collect();
    let (_, reloaded, rejected) = report_reloads("edits", &d);
    eprintln!(
        "pressure/edits: slots {:?}, lost {lost:?}",
        targets
            .iter()
            .map(|t| t.format("%H:%M:%S").to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        lost.is_empty(),
        "slots of the unchanged */2 schedule never ran: {lost:?}\n{}",
        d.describe()
    );
    // And none ran twice.
    let mut unique = ran.clone();
    unique.dedup();
    assert_eq!(unique, ran, "a slot ran twice\n{}", d.describe());
    assert!(reloaded >= 4, "{}", d.describe());
    assert_eq!(rejected, 0, "{}", d.describe());
    assert_no_panic(&d);
    d.stop();
}

/// The parser the tests rely on: overlapping runs are an error, not silently paired.
#[test]
fn worker_run_parser_reports_overlap() {
    let ok = "2026-01-01T00:00:00.100000Z  INFO storage: job started (schedule, slot 2026-01-01 00:00:00 +00:00)\n\
              2026-01-01T00:00:00.200000Z  INFO storage: job finished (ok) after 0.100 s\n\
              2026-01-01T00:00:00.300000Z  INFO database: job started (requested through the API)\n\
              2026-01-01T00:00:00.400000Z  INFO database: job finished (FAILED) after 0.100 s\n";
    let runs = worker_runs(ok).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].slot.unwrap().second(), 0);
    assert_eq!(runs[1].ok, Some(false));
    let overlap = "2026-01-01T00:00:00.100000Z  INFO storage: job started (requested through the API)\n\
                   2026-01-01T00:00:00.200000Z  INFO full: job started (requested through the API)\n";
    assert!(worker_runs(overlap).is_err());
    let crossed = "2026-01-01T00:00:00.100000Z  INFO storage: job started (requested through the API)\n\
                   2026-01-01T00:00:00.200000Z  INFO full: job finished (ok) after 0.1 s\n";
    assert!(worker_runs(crossed).is_err());
}

/// The skip check: a slow run's skipped slots pass, a second timer's do not.
#[test]
fn skips_after_a_storm_are_judged_by_slots_not_by_speed() {
    let run = |slot: &str, start: &str, finish: &str| {
        format!(
            "2026-01-01T00:00:{start}Z  INFO storage: job started (schedule, slot 2026-01-01 00:00:{slot} +00:00)\n\
             2026-01-01T00:00:{finish}Z  INFO storage: job finished (ok) after 0.1 s\n"
        )
    };
    let skip = |at: &str| {
        format!(
            "2026-01-01T00:00:{at}Z  WARN storage job skipped: the previous run is still queued or running\n"
        )
    };
    let at = |s: u32| DateTime::from_timestamp(1_767_225_600 + i64::from(s), 500_000_000).unwrap();
    let judge = |log: &str, now: u32| {
        let runs = worker_runs(log).unwrap();
        skips_one_timer_explains(log, &runs.iter().collect::<Vec<_>>(), at(now))
    };

    // A run of slot :00 that took 2.3 s cost slot :02; the runs of :04 and :06 follow.
    let slow = [
        run("00", "00.100000", "02.400000"),
        skip("02.000100"),
        run("04", "04.000200", "04.100000"),
        run("06", "06.000200", "06.100000"),
    ]
    .concat();
    assert_eq!(judge(&slow, 6), Ok(1));
    // Fast runs, but every slot fired twice: the second firing is refused each time.
    let two_timers = [
        run("00", "00.000100", "00.100000"),
        skip("00.000300"),
        run("02", "02.000100", "02.100000"),
        skip("02.000300"),
        run("04", "04.000100", "04.100000"),
        skip("04.000300"),
    ]
    .concat();
    assert!(judge(&two_timers, 4).is_err());
    // A skip of another job: its timer should not exist.
    let database = [
        run("00", "00.000100", "00.100000"),
        "2026-01-01T00:00:01.000000Z  WARN database job skipped: the previous run is still queued or running\n".to_string(),
        run("02", "02.000100", "02.100000"),
    ]
    .concat();
    assert!(judge(&database, 4).is_err());
}
