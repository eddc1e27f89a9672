//! Property tests of remote retention over random listings: whatever the policy, the
//! created times and which uploads are incomplete, the plan never deletes the newest
//! complete remote backup of a type, never an incomplete one, and holds every backup
//! still under Object Lock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::plan;
use crate::catalog::BackupMetadata;
use crate::config::Timezone;
use crate::kind::BackupKind;
use crate::offsite::RemoteListing;
use crate::offsite::target::ObjectInfo;
use crate::retention::tests::arb_policy;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// One remote backup as generated: its type, hours before `now` it was taken (negative:
/// a clock that ran ahead), whether its data object is all there, and the days before
/// `now` its metadata landed.
#[derive(Debug, Clone)]
struct Generated {
    kind: BackupKind,
    hours_ago: i64,
    complete: bool,
    uploaded_days_ago: i64,
}

fn arb_generated() -> impl Strategy<Value = Generated> {
    (
        prop::sample::select(vec![BackupKind::Database, BackupKind::Storage]),
        -48i64..(400 * 24),
        prop::bool::weighted(0.8),
        0i64..60,
    )
        .prop_map(|(kind, hours_ago, complete, uploaded_days_ago)| Generated {
            kind,
            hours_ago,
            complete,
            uploaded_days_ago,
        })
}

/// The target's objects and parsed metadata for `generated` (one stem per type and hour):
/// an incomplete backup's data object is shorter than its metadata records.
fn listing(generated: &[Generated]) -> RemoteListing {
    let mut objects = BTreeMap::new();
    let mut parsed = Vec::new();
    let mut seen = BTreeSet::new();
    for g in generated {
        let created = now() - chrono::Duration::hours(g.hours_ago);
        let ts = created.format("%Y%m%d_%H%M%S").to_string();
        if !seen.insert((g.kind, ts.clone())) {
            continue;
        }
        let stem = format!("{}{ts}", g.kind.prefix());
        let file = match g.kind {
            BackupKind::Database => format!("{stem}.db"),
            _ => format!("{stem}.tar.zst"),
        };
        let dir = g.kind.dir_name();
        let meta: BackupMetadata = serde_json::from_value(serde_json::json!({
            "timestamp": ts, "type": g.kind, "original_path": "/data",
            "backup_path": format!("/b/{dir}/{file}"), "file_size": 100,
            "checksum": format!("sum-{stem}"), "created_at": created.to_rfc3339(),
            "file_count": 1,
        }))
        .unwrap();
        let data_key = format!("{dir}/{file}");
        let meta_key = format!("{dir}/{stem}.json");
        let size = if g.complete { 100 } else { 40 };
        let uploaded = now() - chrono::Duration::days(g.uploaded_days_ago);
        for (key, size, modified) in [
            (data_key, size, None),
            (meta_key.clone(), 1, Some(uploaded)),
        ] {
            objects.insert(
                key.clone(),
                ObjectInfo {
                    key,
                    size,
                    modified,
                },
            );
        }
        parsed.push((meta_key, Ok(meta)));
    }
    RemoteListing::assemble(objects, parsed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn remote_retention_keeps_the_newest_complete_copy_incomplete_ones_and_locked_ones(
        generated in prop::collection::vec(arb_generated(), 0..50),
        policy in arb_policy(),
        lock_days in prop::option::of(1i64..40),
    ) {
        let listing = listing(&generated);
        let tz = Timezone::Named(chrono_tz::UTC);
        let unlocked = plan(&listing, &policy, now(), tz, &|_| None);
        let lock = lock_days.map(chrono::Duration::days);
        let locked_until = |uploaded: DateTime<Utc>| lock.map(|l| uploaded + l);
        let held = plan(&listing, &policy, now(), tz, &locked_until);
        for p in [&unlocked, &held] {
            let deleted: BTreeSet<&str> = p.delete.iter().map(|d| d.id.as_str()).collect();
            for kind in [BackupKind::Database, BackupKind::Storage] {
                let newest = listing.backups.iter()
                    .filter(|b| b.kind == kind && b.is_complete())
                    .max_by_key(|b| b.created);
                if let Some(newest) = newest {
                    prop_assert!(!deleted.contains(newest.stem.as_str()), "newest {} deleted", newest.stem);
                }
            }
            for b in listing.backups.iter().filter(|b| !b.is_complete()) {
                prop_assert!(!deleted.contains(b.stem.as_str()), "incomplete {} deleted", b.stem);
            }
        }
        // Holding moves only locked backups from delete to keep, and every locked one.
        for b in &listing.backups {
            let is_locked = b.uploaded.and_then(locked_until).is_some_and(|u| u > now());
            let in_held = held.delete.iter().any(|d| d.id == b.stem);
            let in_unlocked = unlocked.delete.iter().any(|d| d.id == b.stem);
            prop_assert!(!(is_locked && in_held), "locked {} deleted", b.stem);
            prop_assert_eq!(in_held, in_unlocked && !is_locked, "{}", b.stem);
        }
    }
}
