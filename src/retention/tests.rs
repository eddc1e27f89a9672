use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn utc() -> Timezone {
    Timezone::Named(chrono_tz::UTC)
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<FixedOffset> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .unwrap()
        .fixed_offset()
}

fn db(id: &str, created: DateTime<FixedOffset>) -> Candidate {
    Candidate {
        id: id.into(),
        kind: BackupKind::Database,
        created,
        complete: true,
        part_of: None,
        pre_restore: false,
        set_aside: false,
    }
}

fn policy(keep_last: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last,
        keep_daily: None,
        keep_weekly: None,
        keep_monthly: None,
        keep_within: None,
        keep_pre_restore: 1,
    }
}

fn ids(d: &[Decision]) -> Vec<&str> {
    let mut v: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
    v.sort();
    v
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

#[test]
fn keep_last_keeps_the_newest_n() {
    let b: Vec<_> = (1..=10)
        .map(|d| db(&format!("b{d:02}"), at(2026, 11, d, 2)))
        .collect();
    let plan = apply(&b, &policy(3), now(), utc());
    assert_eq!(ids(&plan.keep), ["b08", "b09", "b10"]);
    assert_eq!(plan.delete.len(), 7);
}

#[test]
fn backups_of_one_second_order_by_their_numeric_suffix() {
    let t = at(2026, 11, 27, 2);
    let mut b = vec![db("db_backup_20261127_020000", t)];
    b.extend((2..=12).map(|n| db(&format!("db_backup_20261127_020000_{n}"), t)));
    let plan = apply(&b, &policy(3), now(), utc());
    assert_eq!(
        ids(&plan.keep),
        [
            "db_backup_20261127_020000_10",
            "db_backup_20261127_020000_11",
            "db_backup_20261127_020000_12"
        ]
    );
}

#[test]
fn incomplete_backups_neither_count_nor_go() {
    let mut b = vec![
        db("good_old", at(2026, 11, 1, 2)),
        db("good_new", at(2026, 11, 2, 2)),
    ];
    for (i, d) in (3..=9).enumerate() {
        let mut c = db(&format!("broken{i}"), at(2026, 11, d, 2));
        c.complete = false;
        b.push(c);
    }
    let plan = apply(&b, &policy(2), now(), utc());
    assert_eq!(
        ids(&plan.keep),
        ["good_new", "good_old"],
        "failed backups must not push good ones out"
    );
    assert!(plan.delete.is_empty());
    assert_eq!(plan.ignored.len(), 7);
}

#[test]
fn parts_of_full_backups_are_not_rotated_on_their_own() {
    let mut b: Vec<_> = (1..=5)
        .map(|d| db(&format!("db{d}"), at(2026, 11, d, 2)))
        .collect();
    let mut part = db("db_part", at(2026, 10, 1, 2));
    part.part_of = Some("full_backup_x".into());
    b.push(part);
    let plan = apply(&b, &policy(2), now(), utc());
    assert!(
        !plan
            .delete
            .iter()
            .chain(plan.keep.iter())
            .any(|d| d.id == "db_part")
    );
}

#[test]
fn daily_buckets_keep_the_newest_of_each_day() {
    // Four backups a day for five days.
    let mut b = Vec::new();
    for d in 20..25 {
        for h in [0, 6, 12, 18] {
            b.push(db(&format!("d{d}h{h:02}"), at(2026, 11, d, h)));
        }
    }
    let p = RetentionPolicy {
        keep_daily: Some(3),
        ..policy(1)
    };
    let plan = apply(&b, &p, now(), utc());
    assert_eq!(ids(&plan.keep), ["d22h18", "d23h18", "d24h18"]);
}

#[test]
fn weekly_and_monthly_buckets() {
    let b: Vec<_> = (0..90)
        .map(|i| {
            let t = at(2026, 9, 1, 2) + chrono::Duration::days(i);
            db(&t.format("%m%d").to_string(), t)
        })
        .collect();
    let p = RetentionPolicy {
        keep_weekly: Some(2),
        keep_monthly: Some(3),
        ..policy(1)
    };
    // The history runs to 11-29, past `now()`: evaluate it after its last backup, so none
    // of it is future-dated.
    let after_the_history = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let plan = apply(&b, &p, after_the_history, utc());
    // Newest is 11-29 (a Sunday): weekly keeps 11-29 and 11-22; monthly keeps the last
    // day of Nov, Oct, Sep.
    assert_eq!(ids(&plan.keep), ["0930", "1031", "1122", "1129"]);
}

#[test]
fn daily_buckets_follow_the_configured_zone() {
    // 22:30 UTC on the 26th is already the 27th in Moscow (+03:00).
    let b = vec![
        db("late", at(2026, 11, 26, 22)),
        db("evening", at(2026, 11, 26, 18)),
    ];
    let p = RetentionPolicy {
        keep_daily: Some(2),
        ..policy(1)
    };
    let moscow = apply(&b, &p, now(), Timezone::Named(chrono_tz::Europe::Moscow));
    assert_eq!(ids(&moscow.keep), ["evening", "late"]);
    let utc_plan = apply(&b, &p, now(), utc());
    assert_eq!(ids(&utc_plan.keep), ["late"]);
}

#[test]
fn keep_within_keeps_recent_backups() {
    let b: Vec<_> = (20..=27)
        .map(|d| db(&format!("d{d}"), at(2026, 11, d, 2)))
        .collect();
    let p = RetentionPolicy {
        keep_within: Some(Duration::from_secs(3 * 86400)),
        ..policy(1)
    };
    let plan = apply(&b, &p, now(), utc());
    assert_eq!(ids(&plan.keep), ["d25", "d26", "d27"]);
}

#[test]
fn pre_restore_copies_never_push_scheduled_backups_out() {
    let mut b = vec![
        db("scheduled_old", at(2026, 11, 1, 2)),
        db("scheduled_new", at(2026, 11, 2, 2)),
    ];
    let mut copy = db("safety", at(2026, 11, 3, 2));
    copy.pre_restore = true;
    b.push(copy);
    let plan = apply(&b, &policy(1), now(), utc());
    assert_eq!(ids(&plan.keep), ["safety", "scheduled_new"]);
    assert_eq!(ids(&plan.delete), ["scheduled_old"]);
}

#[test]
fn types_are_rotated_separately() {
    let mut b: Vec<_> = (1..=3)
        .map(|d| db(&format!("db{d}"), at(2026, 11, d, 2)))
        .collect();
    b.push(Candidate {
        kind: BackupKind::Storage,
        ..db("st1", at(2026, 1, 1, 2))
    });
    let plan = apply(&b, &policy(1), now(), utc());
    assert_eq!(ids(&plan.keep), ["db3", "st1"]);
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    (
        0..3usize,
        0i64..(400 * 24),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.15),
        0u32..1000,
    )
        .prop_map(|(k, hours, complete, part, n)| Candidate {
            id: format!("b{n:04}_{hours}"),
            kind: BackupKind::ALL[k],
            created: (now() - chrono::Duration::hours(hours)).fixed_offset(),
            complete,
            part_of: part.then(|| "full_backup_x".to_string()),
            pre_restore: false,
            set_aside: false,
        })
}

/// Any policy `keep_last` ≥ 1 allows (remote retention's property test uses it too).
pub(crate) fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    (
        1u32..10,
        prop::option::of(1u32..10),
        prop::option::of(1u32..6),
        prop::option::of(1u32..6),
        prop::option::of(0u64..(30 * 86400)),
    )
        .prop_map(|(l, d, w, m, within)| RetentionPolicy {
            keep_last: l,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_within: within.map(Duration::from_secs),
            keep_pre_restore: 1,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_for_any_history(history in prop::collection::vec(arb_candidate(), 0..60), p in arb_policy()) {
        let mut seen = BTreeSet::new();
        let history: Vec<Candidate> = history.into_iter().filter(|c| seen.insert(c.id.clone())).collect();
        let plan = apply(&history, &p, now(), utc());
        for kind in BackupKind::ALL {
            let complete: Vec<&Candidate> = history.iter()
                .filter(|c| c.kind == kind && c.complete && c.part_of.is_none())
                .collect();
            // The newest complete backup of each type is kept.
            if let Some(newest) = complete.iter().max_by(|a, b| a.created.cmp(&b.created).then_with(|| id_order(&a.id).cmp(&id_order(&b.id)))) {
                prop_assert!(plan.keep.iter().any(|d| d.id == newest.id), "newest {} deleted", newest.id);
            }
            // At least min(keep_last, candidates) are kept.
            let kept = plan.keep.iter().filter(|d| d.kind == kind).count();
            prop_assert!(kept >= complete.len().min(p.keep_last as usize));
        }
        // Only complete, stand-alone backups are ever deleted; keep and delete are disjoint.
        for d in &plan.delete {
            let c = history.iter().find(|c| c.id == d.id).unwrap();
            prop_assert!(c.complete && c.part_of.is_none());
            prop_assert!(!plan.keep.iter().any(|k| k.id == d.id));
        }
        // Every complete stand-alone backup is decided exactly once.
        let decided = plan.keep.len() + plan.delete.len();
        let candidates = history.iter().filter(|c| c.complete && c.part_of.is_none()).count();
        prop_assert_eq!(decided, candidates);
        // Applying the plan again to what is kept deletes nothing more with keep_last alone
        // (the plan is stable): a kept backup stays kept.
        let survivors: Vec<Candidate> = history.iter()
            .filter(|c| !plan.delete.iter().any(|d| d.id == c.id))
            .cloned().collect();
        let again = apply(&survivors, &p, now(), utc());
        prop_assert!(again.delete.is_empty(), "second pass deleted {:?}", again.delete);
    }
}

#[test]
fn a_backup_from_the_future_never_makes_the_one_just_taken_deletable() {
    // One backup dated a year ahead (the clock ran ahead, then NTP corrected it), then
    // the backups of today: with keep_last = 2 the future one must not take a slot.
    let b = vec![
        db("from_the_future", at(2027, 11, 27, 2)),
        db("older", at(2026, 11, 25, 2)),
        db("yesterday", at(2026, 11, 26, 2)),
        db("just_taken", at(2026, 11, 27, 11)),
    ];
    let plan = apply(&b, &policy(2), now(), utc());
    assert_eq!(
        ids(&plan.keep),
        ["from_the_future", "just_taken", "yesterday"]
    );
    assert_eq!(ids(&plan.delete), ["older"]);
    let newest = plan.keep.iter().find(|d| d.id == "just_taken").unwrap();
    assert!(newest.reasons.iter().any(|r| r == "newest"), "{newest:?}");
    let future: Vec<&str> = plan.future_dated().map(|d| d.id.as_str()).collect();
    assert_eq!(future, ["from_the_future"]);
}

#[test]
fn a_future_backup_becomes_ordinary_once_its_date_has_passed() {
    let b = vec![
        db("was_future", at(2026, 11, 27, 2)),
        db("old", at(2026, 11, 20, 2)),
    ];
    let plan = apply(&b, &policy(1), now(), utc());
    assert_eq!(ids(&plan.keep), ["was_future"]);
    assert_eq!(plan.future_dated().count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever backups are dated ahead of `now`, the newest present one and the present
    /// `keep_last` are kept, and nothing from the future is deleted.
    #[test]
    fn future_backups_never_push_present_ones_out(
        history in prop::collection::vec(arb_candidate(), 0..40),
        ahead in prop::collection::vec((0..3usize, 1i64..(400 * 24)), 1..5),
        p in arb_policy(),
    ) {
        let mut seen = BTreeSet::new();
        let mut history: Vec<Candidate> = history.into_iter().filter(|c| seen.insert(c.id.clone())).collect();
        for (i, (k, hours)) in ahead.into_iter().enumerate() {
            history.push(Candidate {
                kind: BackupKind::ALL[k],
                ..db(&format!("future{i}"), (now() + chrono::Duration::hours(hours)).fixed_offset())
            });
        }
        let plan = apply(&history, &p, now(), utc());
        for d in &plan.delete {
            prop_assert!(!d.id.starts_with("future"), "deleted {}", d.id);
        }
        for kind in BackupKind::ALL {
            let present: Vec<&Candidate> = history.iter()
                .filter(|c| c.kind == kind && c.complete && c.part_of.is_none() && !c.id.starts_with("future"))
                .collect();
            if let Some(newest) = present.iter().max_by(|a, b| a.created.cmp(&b.created).then_with(|| id_order(&a.id).cmp(&id_order(&b.id)))) {
                prop_assert!(plan.keep.iter().any(|d| d.id == newest.id), "newest present {} deleted", newest.id);
            }
            let kept_present = plan.keep.iter()
                .filter(|d| d.kind == kind && !d.id.starts_with("future"))
                .count();
            prop_assert!(kept_present >= present.len().min(p.keep_last as usize));
        }
    }
}

fn safety(
    id: &str,
    kind: BackupKind,
    set_aside: bool,
    created: DateTime<FixedOffset>,
) -> Candidate {
    Candidate {
        kind,
        pre_restore: true,
        set_aside,
        ..db(id, created)
    }
}

#[test]
fn keep_pre_restore_keeps_the_newest_of_each_kind() {
    let mut b = vec![db("scheduled", at(2026, 11, 1, 2))];
    for d in 1..=3 {
        b.push(safety(
            &format!("copy{d}"),
            BackupKind::Database,
            false,
            at(2026, 11, d, 3),
        ));
        b.push(safety(
            &format!("tree{d}"),
            BackupKind::Storage,
            true,
            at(2026, 11, d, 3),
        ));
        b.push(safety(
            &format!("aside{d}"),
            BackupKind::Database,
            true,
            at(2026, 11, d, 3),
        ));
    }
    let plan = apply(&b, &policy(7), now(), utc());
    assert_eq!(ids(&plan.keep), ["aside3", "copy3", "scheduled", "tree3"]);
    assert_eq!(
        ids(&plan.delete),
        ["aside1", "aside2", "copy1", "copy2", "tree1", "tree2"]
    );
    let tree = plan.keep.iter().find(|d| d.id == "tree3").unwrap();
    assert_eq!(
        tree.explained,
        ["pre-restore copy, newest (keep_pre_restore)"]
    );
}

#[test]
fn keep_pre_restore_zero_deletes_every_copy_but_no_scheduled_backup() {
    let b = vec![
        db("scheduled", at(2026, 11, 1, 2)),
        safety("copy", BackupKind::Database, false, at(2026, 11, 2, 3)),
        safety("tree", BackupKind::Storage, true, at(2026, 11, 2, 3)),
    ];
    let p = RetentionPolicy {
        keep_pre_restore: 0,
        ..policy(1)
    };
    let plan = apply(&b, &p, now(), utc());
    assert_eq!(ids(&plan.keep), ["scheduled"]);
    assert_eq!(ids(&plan.delete), ["copy", "tree"]);
}

#[test]
fn every_keep_reason_is_explained_in_words() {
    let b: Vec<_> = (25..=27)
        .map(|d| db(&format!("d{d}"), at(2026, 11, d, 2)))
        .collect();
    let p = RetentionPolicy {
        keep_daily: Some(2),
        keep_weekly: Some(1),
        keep_monthly: Some(1),
        keep_within: Some(Duration::from_secs(86400)),
        ..policy(1)
    };
    let plan = apply(&b, &p, now(), utc());
    let newest = plan.keep.iter().find(|d| d.id == "d27").unwrap();
    assert_eq!(
        newest.explained,
        [
            "newest good backup of its type (never deleted)",
            "one of the last 1 (keep_last)",
            "daily bucket 2026-11-27 (keep_daily)",
            "weekly bucket 2026-W48 (keep_weekly)",
            "monthly bucket 2026-11 (keep_monthly)",
            "taken within the last 1day (keep_within)",
        ]
    );
    let second = plan.keep.iter().find(|d| d.id == "d26").unwrap();
    assert_eq!(second.explained, ["daily bucket 2026-11-26 (keep_daily)"]);
    let gone = plan.delete.iter().find(|d| d.id == "d25").unwrap();
    assert_eq!(gone.explained, ["beyond policy: no keep rule covers it"]);
}
