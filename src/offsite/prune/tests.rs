//! Property tests of remote retention over random listings: whatever the policy, the
//! created times and which uploads are incomplete, the plan never deletes the newest
//! complete remote backup of a type, never an incomplete one, and holds every backup
//! with an object still under Object Lock (any of its objects, by that object's own
//! retain-until). And `prune` itself against an in-memory target that refuses deletes
//! as locked without saying so beforehand: held and reported, not a failed prune.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::{lock_candidates, plan};
use crate::catalog::BackupMetadata;
use crate::config::Timezone;
use crate::error::RemoteFailure;
use crate::kind::BackupKind;
use crate::offsite::RemoteListing;
use crate::offsite::target::{ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored};
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
        let unlocked = plan(&listing, &policy, now(), tz, &BTreeMap::new());
        // One object of each backup locked — its data or its metadata, in turn — until
        // the metadata's upload + the lock; the others not at all.
        let lock = lock_days.map(chrono::Duration::days);
        let locks: BTreeMap<String, DateTime<Utc>> = listing
            .backups
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let until = b.uploaded? + lock?;
                Some((b.objects[i % b.objects.len()].key.clone(), until))
            })
            .collect();
        let held = plan(&listing, &policy, now(), tz, &locks);
        // What the caller is told to ask about covers every backup retention deletes.
        let asked: BTreeSet<String> =
            lock_candidates(&listing, &policy, now(), tz).into_iter().collect();
        for d in &unlocked.delete {
            let b = listing.find(&d.id).expect("a planned backup is listed");
            prop_assert!(b.objects.iter().all(|o| asked.contains(&o.key)), "{} not asked", b.stem);
        }
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
            let is_locked = b.objects.iter().any(|o| locks.get(&o.key).is_some_and(|u| *u > now()));
            let in_held = held.delete.iter().any(|d| d.id == b.stem);
            let in_unlocked = unlocked.delete.iter().any(|d| d.id == b.stem);
            prop_assert!(!(is_locked && in_held), "locked {} deleted", b.stem);
            prop_assert_eq!(in_held, in_unlocked && !is_locked, "{}", b.stem);
        }
    }
}

/// An in-memory target that cannot tell locks beforehand (no HEAD dates) and refuses to
/// delete the keys in `locked`, as a server enforcing retention on plain deletes does.
struct RefusingTarget {
    objects: std::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    locked: BTreeSet<String>,
}

impl crate::offsite::Target for RefusingTarget {
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .map(|(key, bytes)| ObjectInfo {
                key: key.clone(),
                size: bytes.len() as u64,
                modified: Some(now()),
            })
            .collect())
    }
    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>> {
        Ok(self.objects.lock().unwrap().get(key).map(|b| ObjectHead {
            size: b.len() as u64,
            sha256: None,
        }))
    }
    fn put(&self, _: &str, _: &mut dyn std::io::Read, _: Option<&str>) -> RemoteResult<Stored> {
        unreachable!("prune puts nothing")
    }
    fn get(&self, key: &str) -> RemoteResult<Box<dyn std::io::Read + Send + '_>> {
        let bytes = self.objects.lock().unwrap().get(key).cloned();
        bytes
            .map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn std::io::Read + Send>)
            .ok_or_else(|| RemoteError::new(RemoteFailure::Missing, key))
    }
    fn delete(&self, key: &str) -> RemoteResult<()> {
        if self.locked.contains(key) {
            return Err(RemoteError::new(
                RemoteFailure::Locked,
                format!("{key} is locked"),
            ));
        }
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn clean_interrupted(&self) -> RemoteResult<Vec<String>> {
        Ok(Vec::new())
    }
}

#[test]
fn a_delete_refused_as_locked_is_held_and_reported_not_a_failed_prune() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config::parse(
        "[[offsite]]\nname = \"t\"\nurl = \"/nowhere\"\n[offsite.retention]\nkeep_last = 1\n",
        None,
        dir.path(),
        &|_| None,
    )
    .unwrap();
    // Three database backups a day apart; keep_last = 1 deletes the two older.
    let mut objects = BTreeMap::new();
    let mut stems = Vec::new();
    for day in 1..=3 {
        let created = now() - chrono::Duration::days(4 - day);
        let ts = created.format("%Y%m%d_%H%M%S").to_string();
        let stem = format!("db_backup_{ts}");
        let meta = serde_json::json!({
            "timestamp": ts, "type": "database", "original_path": "/data",
            "backup_path": format!("/b/database/{stem}.db"), "file_size": 3,
            "checksum": format!("sum-{stem}"), "created_at": created.to_rfc3339(),
            "file_count": 1,
        });
        objects.insert(format!("database/{stem}.db"), b"abc".to_vec());
        objects.insert(
            format!("database/{stem}.json"),
            serde_json::to_vec(&meta).unwrap(),
        );
        stems.push(stem);
    }
    let (oldest, middle, newest) = (&stems[0], &stems[1], &stems[2]);
    // The oldest one's metadata refuses (the backup stays whole); the middle one's data
    // does, after its metadata went (the backup is gone, its data left as debris).
    let locked: BTreeSet<String> = [
        format!("database/{oldest}.json"),
        format!("database/{middle}.db"),
    ]
    .into();
    let target = RefusingTarget {
        objects: std::sync::Mutex::new(objects),
        locked: locked.clone(),
    };
    let remote = crate::offsite::Remote {
        config: &config.offsite[0],
        target: Box::new(target),
        store: crate::offsite::OffsiteStore::new(dir.path(), 0o600),
        seal: None,
    };
    let report = super::prune(&config, &remote, false, &crate::engine::Cancel::new())
        .expect("a refused delete does not fail the prune");
    let ids = |d: &[crate::retention::Decision]| -> Vec<String> {
        d.iter().map(|d| d.id.clone()).collect()
    };
    assert_eq!(
        ids(&report.plan.delete),
        vec![middle.clone()],
        "{report:#?}"
    );
    let held: Vec<_> = report
        .plan
        .keep
        .iter()
        .filter(|d| d.id == *oldest)
        .collect();
    assert_eq!(held.len(), 1, "{report:#?}");
    assert_eq!(held[0].reasons, vec!["locked".to_string()]);
    assert_eq!(
        report
            .locked_objects
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        locked
    );
    assert_eq!(
        report.deleted_objects,
        vec![format!("database/{middle}.json")]
    );
    assert!(report.freed_bytes <= 3, "{report:#?}");
    // Stays whole: both its objects are there, and the newest is untouched.
    let left: BTreeSet<String> = remote
        .target
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for key in [
        format!("database/{oldest}.json"),
        format!("database/{oldest}.db"),
        format!("database/{middle}.db"),
        format!("database/{newest}.db"),
        format!("database/{newest}.json"),
    ] {
        assert!(left.contains(&key), "{key} is gone: {left:?}");
    }
    assert_eq!(left.len(), 5, "{left:?}");
}
