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

/// One snapshot in a generated remote history: hours before `now`, which packs of a
/// shared pool it lists (bits of a mask), and the damage done to it on the target.
#[derive(Debug, Clone)]
struct GeneratedSnapshot {
    hours_ago: i64,
    packs: u8,
    /// 0: none; 1: metadata unreadable; 2: its entry list gone; 3: a pack it lists gone;
    /// 4: a pack it lists at the wrong size.
    damage: u8,
}

fn arb_snapshot() -> impl Strategy<Value = GeneratedSnapshot> {
    (
        0i64..(60 * 24),
        1u8..=255,
        prop::sample::select(vec![0u8, 0, 0, 1, 2, 3, 4]),
    )
        .prop_map(|(hours_ago, packs, damage)| GeneratedSnapshot {
            hours_ago,
            packs,
            damage,
        })
}

fn pack_id(i: u32) -> String {
    format!("{:02x}{}", i * 17 + 1, "c".repeat(30))
}

/// The target's objects and parsed metadata for `generated` database snapshots sharing
/// packs from a pool of eight, with their damage, plus a few foreign objects.
fn snapshot_listing(generated: &[GeneratedSnapshot]) -> RemoteListing {
    let mut objects = BTreeMap::new();
    let mut parsed = Vec::new();
    let mut seen = BTreeSet::new();
    fn put(objects: &mut BTreeMap<String, ObjectInfo>, key: String, size: u64) {
        objects.insert(
            key.clone(),
            ObjectInfo {
                key,
                size,
                modified: Some(now()),
            },
        );
    }
    for i in 0..8 {
        put(
            &mut objects,
            crate::catalog::pack_name(&pack_id(i), false),
            1000 + u64::from(i),
        );
    }
    for key in [
        "notes//readme.txt",
        "database/db_snapshot_x/../y",
        "store/packs/zz/x.pack",
    ] {
        put(&mut objects, key.to_string(), 5);
    }
    for g in generated {
        let created = now() - chrono::Duration::hours(g.hours_ago);
        let ts = created.format("%Y%m%d_%H%M%S").to_string();
        if !seen.insert(ts.clone()) {
            continue;
        }
        let stem = format!("db_snapshot_{ts}");
        let packs: Vec<serde_json::Value> = (0..8u32)
            .filter(|i| g.packs & (1 << i) != 0)
            .map(|i| {
                let size = 1000 + u64::from(i) + u64::from(g.damage == 4);
                serde_json::json!({"id": pack_id(i), "size": size, "checksum": "00"})
            })
            .collect();
        let meta: BackupMetadata = serde_json::from_value(serde_json::json!({
            "timestamp": ts, "type": "database", "original_path": "/data",
            "backup_path": format!("/b/database/{stem}.tree.zst"), "file_size": 100,
            "checksum": format!("sum-{stem}"), "created_at": created.to_rfc3339(),
            "file_count": 1,
            "snapshot": {"parent": null, "packs": packs, "added_bytes": 0, "chunks": 0,
                         "added_chunks": 0, "unchanged_files": 0, "read_files": 0},
        }))
        .unwrap();
        if g.damage != 2 {
            put(&mut objects, format!("database/{stem}.tree.zst"), 100);
        }
        let meta_key = format!("database/{stem}.json");
        put(&mut objects, meta_key.clone(), 1);
        if g.damage == 3
            && let Some(first) = (0..8u32).find(|i| g.packs & (1 << i) != 0)
        {
            // Gone for every snapshot that lists it: damage on the target is shared.
            objects.remove(&crate::catalog::pack_name(&pack_id(first), false));
        }
        let parsed_meta = if g.damage == 1 {
            Err("its metadata object is not valid".to_string())
        } else {
            Ok(meta)
        };
        parsed.push((meta_key, parsed_meta));
    }
    RemoteListing::assemble(objects, parsed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the history, the policy and the damage to the listing, remote prune and
    /// debris removal never delete an object a kept backup lists; with any metadata
    /// object unreadable they delete no pack at all; and they never touch a key not
    /// shaped like ours.
    #[test]
    fn remote_prune_never_deletes_what_a_kept_backup_needs_whatever_the_damage(
        generated in prop::collection::vec(arb_snapshot(), 0..14),
        policy in arb_policy(),
    ) {
        // One snapshot per second, as the listing builds them: a later one at the same
        // time is not on the target, so its damage is not either.
        let mut times = BTreeSet::new();
        let generated: Vec<GeneratedSnapshot> = generated
            .into_iter()
            .filter(|g| times.insert(g.hours_ago))
            .collect();
        let listing = snapshot_listing(&generated);
        let tz = Timezone::Named(chrono_tz::UTC);
        let plan = plan(&listing, &policy, now(), tz, &BTreeMap::new());
        let deleted_ids: BTreeSet<&str> = plan.delete.iter().map(|d| d.id.as_str()).collect();
        let kept: BTreeSet<&str> = listing
            .backups
            .iter()
            .filter(|b| !deleted_ids.contains(b.stem.as_str()))
            .flat_map(|b| b.objects.iter().map(|o| o.key.as_str()))
            .collect();
        let any_unreadable = generated.iter().any(|g| g.damage == 1);
        let mut removed: Vec<String> = super::deletions(&listing, &plan)
            .into_iter()
            .flat_map(|(_, keys)| keys)
            .collect();
        removed.extend(listing.debris().into_iter().map(|o| o.key.clone()));
        for key in &removed {
            prop_assert!(!kept.contains(key.as_str()), "{key} is needed by a kept backup");
            prop_assert!(
                !(any_unreadable && key.starts_with("store/packs/")),
                "{key} deleted while a metadata object is unreadable"
            );
            prop_assert!(
                !key.contains("//") && !key.contains("..") && !key.starts_with("notes"),
                "{key} is not ours"
            );
        }
        // An unreadable metadata object's own objects are never removed either.
        for (i, g) in generated.iter().enumerate().filter(|(_, g)| g.damage == 1) {
            let created = now() - chrono::Duration::hours(g.hours_ago);
            let stem = format!("db_snapshot_{}", created.format("%Y%m%d_%H%M%S"));
            prop_assert!(
                !removed.iter().any(|k| k.contains(&stem)),
                "#{i}: an object of the unreadable {stem} was removed"
            );
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
    /// Prune writes only its owner marker and lock object.
    fn put(
        &self,
        key: &str,
        data: &mut dyn std::io::Read,
        _: Option<&str>,
    ) -> RemoteResult<Stored> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        let size = bytes.len() as u64;
        self.objects.lock().unwrap().insert(key.to_string(), bytes);
        Ok(Stored {
            size,
            sha256: String::new(),
        })
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
        target: std::sync::Arc::new(target),
        store: crate::offsite::OffsiteStore::new(dir.path(), 0o600),
        seal: None,
        as_of: None,
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
    // And the owner marker the prune claimed the prefix with (its lock is gone).
    assert!(
        left.contains(crate::offsite::writers::OWNER_KEY),
        "{left:?}"
    );
    assert_eq!(left.len(), 6, "{left:?}");
}
