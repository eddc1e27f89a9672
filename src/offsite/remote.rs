//! What a target holds, read as backups: the same layout and the same rule as the backup
//! directory — a backup exists only when its metadata object is there and every object
//! it names is there with the size it records (a full backup: its manifest and both
//! members). Everything else (a data object whose metadata never landed, the members of
//! a full backup whose manifest never did) is debris of an interrupted upload: never
//! listed, completed or removed by the next push.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use super::target::{ObjectInfo, RemoteResult, Target};
use crate::catalog::{BackupEntry, BackupMetadata, PackRef, PartRole};
use crate::kind::BackupKind;
use crate::retention::Candidate;

/// One object a remote backup consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteObject {
    pub key: String,
    pub role: PartRole,
    /// Bytes and SHA-256 as the metadata records them (data objects).
    pub size: u64,
    pub sha256: Option<String>,
    /// A snapshot's pack: other snapshots may list it too, so it goes with the last.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Where it goes in the backup directory when that is not `key`: a snapshot's entry
    /// list uploaded again under a versioned name after repacking (see
    /// [`super::data_object`]) goes back under the local name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
}

impl RemoteObject {
    /// Its path relative to the backup directory.
    pub fn local_path(&self) -> &str {
        self.local.as_deref().unwrap_or(&self.key)
    }
}

/// One backup on a target.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteBackup {
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// `db_backup_20261201_020000`.
    pub stem: String,
    /// The name `list` would print for the local copy (`db_backup_….db`).
    pub name: String,
    pub created: Option<DateTime<FixedOffset>>,
    /// When its metadata object landed (what Object Lock counts from).
    pub uploaded: Option<DateTime<Utc>>,
    /// Data bytes (a full backup: its members').
    pub size: u64,
    pub checksum: String,
    /// Every object, data first, its own metadata last (the order of upload).
    pub objects: Vec<RemoteObject>,
    /// Why it is not a complete backup, if it is not.
    pub problem: Option<String>,
    /// A full backup whose manifest records a member by the checksum it had before
    /// repacking rewrote it (a push stopped between the member and the manifest): a
    /// complete copy, which the next push brings up to date.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub behind_its_members: bool,
    #[serde(skip)]
    pub metadata: BackupMetadata,
}

impl RemoteBackup {
    pub fn is_complete(&self) -> bool {
        self.problem.is_none()
    }

    /// Whether this is a copy of the local backup `entry`: the same name and checksum,
    /// or — a sealed (encrypted) copy, whose checksums are of ciphertext made at upload
    /// and so differ from a plain local backup's — the same name, which no two backups
    /// share. Nothing of the local content is kept in clear to compare with. A local
    /// snapshot repacked since its upload has another checksum but the same files: the
    /// one it had then still matches.
    pub fn copy_of(&self, entry: &BackupEntry) -> bool {
        self.stem == entry.stem
            && (entry.metadata.has_or_had_checksum(&self.checksum)
                || self.metadata.sealed.is_some())
    }
}

/// What a target holds.
#[derive(Debug, Clone, Default)]
pub struct RemoteListing {
    /// Top-level backups (not the members of a full one), newest first.
    pub backups: Vec<RemoteBackup>,
    /// Every object by key.
    pub objects: BTreeMap<String, ObjectInfo>,
    /// A snapshot's metadata object could not be read: which packs it needs is unknown,
    /// so no pack is debris and no shared pack is pruned until it can be.
    pub unreadable_snapshot: bool,
    /// Every pack some metadata object on the target records (a full backup's members
    /// too, complete or not), by key, where the object is there at the recorded size:
    /// what a push may reuse instead of sending the pack again. A pack is never
    /// rewritten while a record of it stands — an encrypted one would come out as other
    /// ciphertext and break every backup that records the old.
    pub packs: BTreeMap<String, PackRef>,
    /// Stems whose metadata object is listed but could not be read or parsed: their
    /// objects cannot be attributed, so none of them is debris.
    pub unreadable: std::collections::BTreeSet<(BackupKind, String)>,
}

impl RemoteListing {
    /// List the target and read every metadata object (small) it holds.
    pub fn read(target: &dyn Target) -> RemoteResult<RemoteListing> {
        let objects: BTreeMap<String, ObjectInfo> = target
            .list()?
            .into_iter()
            .map(|o| (o.key.clone(), o))
            .collect();
        let mut parsed: Vec<(String, Result<BackupMetadata, String>)> = Vec::new();
        for key in objects.keys().filter(|k| metadata_key(k).is_some()) {
            let mut body = Vec::new();
            let read = target.get(key).and_then(|mut r| {
                std::io::Read::read_to_end(&mut r, &mut body).map_err(|e| {
                    super::target::RemoteError::new(
                        crate::error::RemoteFailure::Network,
                        format!("read {key}: {e}"),
                    )
                })
            });
            let meta = match read {
                Ok(_) => serde_json::from_slice::<BackupMetadata>(&body)
                    .map_err(|e| format!("its metadata object is not valid: {e}")),
                Err(e) if e.failure == crate::error::RemoteFailure::Missing => {
                    // Listed, gone when read: a prune or push racing this one, or damage.
                    // Its objects are not debris: it may come back, and it may be the
                    // only copy of its backup.
                    parsed.push((key.clone(), Err("its metadata object vanished".into())));
                    continue;
                }
                Err(e) => return Err(e),
            };
            parsed.push((key.clone(), meta));
        }
        Ok(RemoteListing::assemble(objects, parsed))
    }

    /// The listing from the objects and their parsed metadata. Pure.
    pub fn assemble(
        objects: BTreeMap<String, ObjectInfo>,
        parsed: Vec<(String, Result<BackupMetadata, String>)>,
    ) -> RemoteListing {
        let mut singles: Vec<RemoteBackup> = Vec::new();
        let unreadable_snapshot = parsed
            .iter()
            .any(|(key, meta)| meta.is_err() && is_snapshot_key(key));
        let mut unreadable = std::collections::BTreeSet::new();
        for (key, meta) in parsed {
            let Some((kind, stem)) = metadata_key(&key) else {
                continue;
            };
            if meta.is_err() {
                unreadable.insert((kind, stem.to_string()));
            }
            singles.push(single(kind, stem, &key, meta, &objects));
        }
        let packs = recorded_packs(&singles, &objects);
        let mut backups = Vec::new();
        for b in singles.iter().filter(|b| b.metadata.part_of.is_none()) {
            let mut b = b.clone();
            if b.kind == BackupKind::Full {
                add_members(&mut b, &singles);
            }
            backups.push(b);
        }
        backups.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.stem.cmp(&a.stem)));
        RemoteListing {
            backups,
            objects,
            unreadable_snapshot,
            packs,
            unreadable,
        }
    }

    /// What a push just stored, so that the rest of the same push knows it is there (a
    /// pack several pending snapshots share goes up once).
    pub fn note_put(&mut self, key: &str, size: u64, pack: Option<PackRef>) {
        self.objects.insert(
            key.to_string(),
            ObjectInfo {
                key: key.to_string(),
                size,
                modified: Some(Utc::now()),
            },
        );
        if let Some(pack) = pack {
            self.packs.insert(key.to_string(), pack);
        }
    }

    /// The record of the pack at `key`, when the target holds it at the recorded size.
    pub fn recorded_pack(&self, key: &str) -> Option<&PackRef> {
        let record = self.packs.get(key)?;
        (self.objects.get(key)?.size == record.size).then_some(record)
    }

    pub fn find(&self, stem: &str) -> Option<&RemoteBackup> {
        self.backups.iter().find(|b| b.stem == stem)
    }

    /// Whether the local backup `entry` is on the target, complete and the same backup
    /// ([`RemoteBackup::copy_of`]).
    pub fn holds(&self, entry: &BackupEntry) -> bool {
        self.find(&entry.stem)
            .is_some_and(|r| r.is_complete() && r.copy_of(entry))
    }

    /// What retention needs to know about each remote backup.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.backups
            .iter()
            .filter_map(|b| {
                Some(Candidate {
                    id: b.stem.clone(),
                    kind: b.kind,
                    created: b.created?,
                    complete: b.is_complete(),
                    part_of: None,
                    pre_restore: b.metadata.is_pre_restore(),
                    set_aside: false,
                })
            })
            .collect()
    }

    /// The newest complete remote copy of each type.
    pub fn newest(&self) -> BTreeMap<BackupKind, DateTime<FixedOffset>> {
        let mut newest = BTreeMap::new();
        for b in self.backups.iter().filter(|b| b.is_complete()) {
            let Some(created) = b.created else { continue };
            for kind in refreshed_by(b.kind) {
                let e = newest.entry(*kind).or_insert(created);
                if created > *e {
                    *e = created;
                }
            }
        }
        newest
    }

    /// Objects that belong to no listed backup: debris of interrupted uploads (and
    /// anything else someone put under the prefix, which is never touched).
    pub fn debris(&self) -> Vec<&ObjectInfo> {
        let owned: std::collections::BTreeSet<&str> = self
            .backups
            .iter()
            .flat_map(|b| b.objects.iter().map(|o| o.key.as_str()))
            .collect();
        let packs = format!("{}/packs/", crate::catalog::STORE_DIR);
        let any_unreadable = self.unreadable_snapshot || !self.unreadable.is_empty();
        self.objects
            .values()
            .filter(|o| !owned.contains(o.key.as_str()) && ours(&o.key))
            .filter(|o| !(any_unreadable && o.key.starts_with(&packs)))
            .filter(|o| !self.unattributable(&o.key))
            .collect()
    }
}

impl RemoteListing {
    /// Whether `key` may belong to a backup whose metadata object is listed but could not
    /// be read (a 404 while listing, a flipped byte): the object of a stem we cannot
    /// read, or — with any full backup's manifest unreadable — any member's object.
    fn unattributable(&self, key: &str) -> bool {
        let Some((dir, file)) = key.split_once('/') else {
            return false;
        };
        self.unreadable.iter().any(|(kind, stem)| {
            *kind == BackupKind::Full
                || (kind.dir_name() == dir
                    && file
                        .strip_prefix(stem.as_str())
                        .is_some_and(|rest| rest.starts_with('.')))
        })
    }
}

/// The pack records of every parsed metadata object whose pack is there at the recorded
/// size. Two records of one key that disagree: the one that matches the object wins.
fn recorded_packs(
    singles: &[RemoteBackup],
    objects: &BTreeMap<String, ObjectInfo>,
) -> BTreeMap<String, PackRef> {
    let mut packs = BTreeMap::new();
    for b in singles {
        let sealed = b.metadata.format().is_ok_and(|f| f.is_encrypted());
        for pack in b.metadata.snapshot.iter().flat_map(|s| &s.packs) {
            if !crate::catalog::valid_pack_id(&pack.id) {
                continue;
            }
            let key = crate::catalog::pack_name(&pack.id, sealed);
            if objects.get(&key).is_some_and(|o| o.size == pack.size) {
                packs.entry(key).or_insert_with(|| pack.clone());
            }
        }
    }
    packs
}

/// A full backup is also a database and a storage backup, as locally.
fn refreshed_by(kind: BackupKind) -> &'static [BackupKind] {
    crate::kind::JobName::creating(kind).refreshes()
}

/// `database/db_backup_X.json` → (database, `db_backup_X`).
pub fn metadata_key(key: &str) -> Option<(BackupKind, &str)> {
    let (dir, file) = key.split_once('/')?;
    let kind = BackupKind::ALL.into_iter().find(|k| k.dir_name() == dir)?;
    let stem = file.strip_suffix(".json")?;
    kind.prefixes().find_map(|p| stem.strip_prefix(p))?;
    Some((kind, stem))
}

/// Whether `key` is a snapshot's metadata object (`storage/storage_snapshot_….json`).
fn is_snapshot_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(dir, file)| {
        BackupKind::ALL.into_iter().any(|k| {
            k.dir_name() == dir && k.snapshot_prefix().is_some_and(|p| file.starts_with(p))
        })
    })
}

/// Whether `key` is named exactly as one of our objects: `KIND/PREFIX<timestamp>…` one
/// level below a type's directory, or `store/packs/ab/<32 hex>.pack[.age]` under its
/// id's first two digits. Anything else under the prefix (`notes//readme.txt`,
/// `storage/storage_backup_X.tar.zst/x`) is someone else's and never touched.
fn ours(key: &str) -> bool {
    if key.chars().any(char::is_control) {
        return false;
    }
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [store, packs, shard, file] if *store == crate::catalog::STORE_DIR && *packs == "packs" => {
            let id = file
                .strip_suffix(".pack")
                .or_else(|| file.strip_suffix(".pack.age"));
            id.is_some_and(|id| crate::catalog::valid_pack_id(id) && id.get(..2) == Some(*shard))
        }
        [dir, file] => BackupKind::ALL.into_iter().any(|k| {
            k.dir_name() == *dir
                && k.prefixes().any(|p| {
                    file.strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
        }),
        _ => false,
    }
}

/// One metadata object and the data object it names.
fn single(
    kind: BackupKind,
    stem: &str,
    key: &str,
    meta: Result<BackupMetadata, String>,
    objects: &BTreeMap<String, ObjectInfo>,
) -> RemoteBackup {
    let metadata_object = RemoteObject {
        key: key.to_string(),
        role: PartRole::Metadata,
        size: 0,
        sha256: None,
        shared: false,
        local: None,
    };
    let uploaded = objects.get(key).and_then(|o| o.modified);
    let metadata = match meta {
        Ok(m) => m,
        Err(problem) => {
            return RemoteBackup {
                kind,
                stem: stem.to_string(),
                name: format!("{stem}.json"),
                created: None,
                uploaded,
                size: 0,
                checksum: String::new(),
                objects: vec![metadata_object],
                problem: Some(problem),
                behind_its_members: false,
                metadata: placeholder(kind, stem),
            };
        }
    };
    let mut objects_of = Vec::new();
    let mut problem = None;
    let mut name = format!("{stem}.json");
    if kind != BackupKind::Full {
        let file = std::path::Path::new(&metadata.backup_path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !file.starts_with(stem) {
            problem = Some(format!(
                "its metadata names a different data file ({file:?})"
            ));
        }
        let object = match &metadata.data_object {
            None => file.clone(),
            Some(o) if super::data_object::valid(stem, &file, o) => o.clone(),
            Some(o) => {
                problem = problem.or_else(|| {
                    Some(format!(
                        "its metadata names a data object {o:?} that is not its own"
                    ))
                });
                file.clone()
            }
        };
        let data_key = format!("{}/{object}", kind.dir_name());
        problem = problem.or_else(|| match objects.get(&data_key) {
            None => Some(format!("its data object {data_key} is missing")),
            Some(o) if o.size != metadata.file_size => Some(format!(
                "its data object is {} bytes but the metadata says {}",
                o.size, metadata.file_size
            )),
            Some(_) => None,
        });
        objects_of.push(RemoteObject {
            key: data_key,
            role: PartRole::Data,
            size: metadata.file_size,
            sha256: Some(metadata.checksum.clone()),
            shared: false,
            local: (object != file).then(|| format!("{}/{file}", kind.dir_name())),
        });
        // A snapshot's packs: complete only with every one there at its size.
        let sealed = metadata.format().is_ok_and(|f| f.is_encrypted());
        for pack in metadata.snapshot.iter().flat_map(|s| &s.packs) {
            if !crate::catalog::valid_pack_id(&pack.id) {
                problem = problem
                    .or_else(|| Some(format!("it names a pack {:?} that is no pack id", pack.id)));
                continue;
            }
            let key = crate::catalog::pack_name(&pack.id, sealed);
            problem = problem.or_else(|| match objects.get(&key) {
                None => Some(format!("its pack {key} is missing")),
                Some(o) if o.size != pack.size => Some(format!(
                    "its pack {key} is {} bytes but the metadata says {}",
                    o.size, pack.size
                )),
                Some(_) => None,
            });
            objects_of.push(RemoteObject {
                key,
                role: PartRole::Data,
                size: pack.size,
                sha256: Some(pack.checksum.clone()),
                shared: true,
                local: None,
            });
        }
        name = file;
    }
    objects_of.push(metadata_object);
    RemoteBackup {
        kind,
        stem: stem.to_string(),
        name,
        created: metadata.created(),
        uploaded,
        size: metadata.file_size,
        checksum: metadata.checksum.clone(),
        objects: objects_of,
        problem,
        behind_its_members: false,
        metadata,
    }
}

/// A full backup: its members' objects before its manifest, and complete only if each
/// member is complete, its own, and has the checksum the manifest records.
fn add_members(full: &mut RemoteBackup, all: &[RemoteBackup]) {
    let mut objects = Vec::new();
    let mut problem = full.problem.clone();
    let mut size = 0;
    for part in &full.metadata.parts {
        let member = all.iter().find(|b| {
            b.kind == part.kind && b.name == part.file_name && b.metadata.part_of.is_some()
        });
        let why = match member {
            None => Some(format!(
                "its {} part {} is missing",
                part.kind, part.file_name
            )),
            Some(m) if m.problem.is_some() => Some(format!(
                "its {} part {}: {}",
                part.kind,
                part.file_name,
                m.problem.as_deref().unwrap_or_default()
            )),
            Some(m) if m.metadata.part_of.as_deref() != Some(full.stem.as_str()) => Some(format!(
                "its {} part {} is not marked as part of it",
                part.kind, part.file_name
            )),
            Some(m) if m.checksum != part.checksum => {
                if m.metadata.has_or_had_checksum(&part.checksum) {
                    full.behind_its_members = true;
                    None
                } else {
                    Some(format!(
                        "its {} part's checksum differs from the manifest",
                        part.kind
                    ))
                }
            }
            Some(_) => None,
        };
        if let Some(m) = member {
            objects.extend(m.objects.iter().cloned());
            size += m.size;
        }
        problem = problem.or(why);
    }
    // Data first, then the members' metadata, the manifest last.
    objects.sort_by_key(|o| o.role == PartRole::Metadata);
    objects.append(&mut full.objects);
    full.objects = objects;
    full.size = size;
    full.problem = problem;
}

fn placeholder(kind: BackupKind, stem: &str) -> BackupMetadata {
    let ts = kind
        .prefixes()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
    serde_json::from_value(serde_json::json!({
        "timestamp": ts, "type": kind, "original_path": "", "backup_path": "",
        "file_size": 0, "checksum": "", "created_at": "", "file_count": 0,
    }))
    .unwrap_or_else(|_| unreachable!("a literal metadata object parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(
        kind: BackupKind,
        ts: &str,
        file: &str,
        size: u64,
        part_of: Option<&str>,
    ) -> BackupMetadata {
        let mut m = placeholder(kind, &format!("{}{ts}", kind.prefix()));
        m.backup_path = format!("/b/{}/{file}", kind.dir_name());
        m.file_size = size;
        m.checksum = format!("sum-{file}");
        m.created_at = format!("2026-11-{}T02:00:00+00:00", &ts[6..8]);
        m.part_of = part_of.map(str::to_string);
        m
    }

    fn obj(key: &str, size: u64) -> (String, ObjectInfo) {
        (
            key.to_string(),
            ObjectInfo {
                key: key.to_string(),
                size,
                modified: None,
            },
        )
    }

    #[test]
    fn a_backup_lists_only_when_every_object_is_there() {
        let objects: BTreeMap<_, _> = [
            obj("database/db_backup_20261101_020000.db", 10),
            obj("database/db_backup_20261101_020000.json", 1),
            obj("database/db_backup_20261102_020000.db", 4),
            obj("database/db_backup_20261102_020000.json", 1),
            obj("database/db_backup_20261103_020000.db", 7),
        ]
        .into_iter()
        .collect();
        let parsed = vec![
            (
                "database/db_backup_20261101_020000.json".to_string(),
                Ok(meta(
                    BackupKind::Database,
                    "20261101_020000",
                    "db_backup_20261101_020000.db",
                    10,
                    None,
                )),
            ),
            (
                "database/db_backup_20261102_020000.json".to_string(),
                Ok(meta(
                    BackupKind::Database,
                    "20261102_020000",
                    "db_backup_20261102_020000.db",
                    9,
                    None,
                )),
            ),
        ];
        let l = RemoteListing::assemble(objects, parsed);
        assert_eq!(l.backups.len(), 2);
        assert!(l.find("db_backup_20261101_020000").unwrap().is_complete());
        let short = l.find("db_backup_20261102_020000").unwrap();
        assert!(short.problem.as_deref().unwrap().contains("4 bytes"));
        let debris: Vec<&str> = l.debris().iter().map(|o| o.key.as_str()).collect();
        assert_eq!(debris, vec!["database/db_backup_20261103_020000.db"]);
        assert_eq!(l.candidates().iter().filter(|c| c.complete).count(), 1);
    }

    #[test]
    fn a_full_backup_needs_its_manifest_and_members() {
        let db = meta(
            BackupKind::Database,
            "20261105_020000",
            "db_backup_20261105_020000.db",
            3,
            Some("full_backup_20261105_020000"),
        );
        let st = meta(
            BackupKind::Storage,
            "20261105_020000",
            "storage_backup_20261105_020000.tar.zst",
            5,
            Some("full_backup_20261105_020000"),
        );
        let mut full = meta(
            BackupKind::Full,
            "20261105_020000",
            "full_backup_20261105_020000.json",
            8,
            None,
        );
        for m in [&db, &st] {
            full.parts.push(crate::catalog::PartRef {
                kind: m.kind,
                file_name: std::path::Path::new(&m.backup_path)
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .into(),
                backup_path: m.backup_path.clone(),
                file_size: m.file_size,
                checksum: m.checksum.clone(),
            });
        }
        let keys = [
            obj("database/db_backup_20261105_020000.db", 3),
            obj("database/db_backup_20261105_020000.json", 1),
            obj("storage/storage_backup_20261105_020000.tar.zst", 5),
            obj("storage/storage_backup_20261105_020000.json", 1),
        ];
        let members = vec![
            (
                "database/db_backup_20261105_020000.json".to_string(),
                Ok(db),
            ),
            (
                "storage/storage_backup_20261105_020000.json".to_string(),
                Ok(st),
            ),
        ];
        // Without the manifest: nothing is listed, every object is debris.
        let l = RemoteListing::assemble(keys.clone().into_iter().collect(), members.clone());
        assert!(l.backups.is_empty());
        assert_eq!(l.debris().len(), 4);
        let mut with = keys.to_vec();
        with.push(obj("full/full_backup_20261105_020000.json", 1));
        let mut parsed = members;
        parsed.push((
            "full/full_backup_20261105_020000.json".to_string(),
            Ok(full),
        ));
        let l = RemoteListing::assemble(with.into_iter().collect(), parsed);
        assert_eq!(l.backups.len(), 1);
        let f = &l.backups[0];
        assert!(f.is_complete(), "{:?}", f.problem);
        assert_eq!(f.objects.len(), 5);
        assert_eq!(
            f.objects.last().unwrap().key,
            "full/full_backup_20261105_020000.json"
        );
        assert_eq!(f.size, 8);
        assert!(l.debris().is_empty());
        assert_eq!(l.newest().len(), 3);
    }
}
