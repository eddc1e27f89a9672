//! The backup directory on disk (docs/design.md §2): its layout and file names, listing what is
//! there (complete backups with their [`BackupParts`], and leftovers that are not),
//! deleting a backup's parts in the safe order, and cleaning what crashed runs left. Mutations assume the caller holds the
//! [`BackupDirLock`]; listing never takes it.

mod atomic;
pub mod choice;
mod format;
mod labels;
mod lock;
mod metadata;
mod oplog;
mod packs;
mod parts;
mod restore_staging;
mod rewrite;
mod state;
mod stats;
mod store;
mod upload_pin;
mod verdicts;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Local};

pub use atomic::{
    PARTIAL_SUFFIX, PartialFile, partial_path, sync_dir, write_atomic, write_partial,
};
pub use format::{Encryption, Format, FormatKind};
pub use labels::{entry_notes, leftover_note, running_operation};
pub use lock::{BackupDirLock, LOCK_FILE};
pub use metadata::{BackupMetadata, FORMAT_VERSION, PackRef, PartRef, RepairNote, SnapshotInfo};
pub use oplog::{LOG_FILE, OperationLog};
pub use packs::{SNAPSHOT_TREE_EXT, SNAPSHOT_TREE_SEALED_EXT, STORE_DIR, pack_name, valid_pack_id};
pub use parts::{BackupParts, Part, PartRole};
pub use restore_staging::{RESTORE_STAGING_FILE, RestoreStaging, node_id};
pub use rewrite::{REWRITE_JOURNAL, STAGED_SUFFIX, staged_path};
pub use state::{CatalogState, Outcome, RunRecord, STATE_FILE};
pub use stats::{KindStats, Stats};
pub use store::{
    Loaded, ReporterGuard, SetAside, StateFile, Updated, report, report_set_asides_to,
};
pub use upload_pin::UploadPin;
pub use verdicts::{VERDICTS_FILE, Verdict, Verdicts};

use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

/// Data file extensions recognised per kind (storage: by compression).
fn data_extensions(kind: BackupKind) -> &'static [&'static str] {
    match kind {
        // Longest first, so `strip_data_ext` takes `.tar.zst.age` whole.
        BackupKind::Database => &[
            ".db.age",
            ".db",
            SNAPSHOT_TREE_SEALED_EXT,
            SNAPSHOT_TREE_EXT,
        ],
        BackupKind::Storage => &[
            SNAPSHOT_TREE_SEALED_EXT,
            SNAPSHOT_TREE_EXT,
            ".tar.zst.age",
            ".tar.gz.age",
            ".tar.age",
            ".tar.zst",
            ".tar.gz",
            ".tar",
        ],
        BackupKind::Full => &[],
    }
}

/// A backup directory.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
    file_mode: u32,
    dir_mode: u32,
    /// How long [`Catalog::lock`] waits for another holder (`--wait`); `None`: not at all.
    lock_wait: Option<std::time::Duration>,
}

/// One backup found on disk. `problem` is `None` when it is complete: data and metadata
/// both present and consistent (for a full backup, its parts too).
#[derive(Debug, Clone)]
pub struct BackupEntry {
    pub kind: BackupKind,
    /// File name without extension: `db_backup_20240101_120000`.
    pub stem: String,
    pub meta_path: PathBuf,
    /// The data file; for a full backup, the manifest itself.
    pub data_path: PathBuf,
    pub metadata: BackupMetadata,
    /// Every file of the backup, metadata first; a full backup's include its members'.
    pub parts: BackupParts,
    pub created: Option<DateTime<FixedOffset>>,
    pub problem: Option<String>,
}

impl BackupEntry {
    /// The fingerprints of the keys that open this backup's encrypted data (a full
    /// backup's: its members'), in order, each once; empty when nothing is encrypted.
    pub fn recipients(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for part in self.parts.data() {
            let encryption = part.format.as_ref().and_then(|f| f.encryption.as_ref());
            for key in encryption
                .map(|e| e.recipients.as_slice())
                .unwrap_or_default()
            {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        keys
    }

    /// The backup's own data file (not a member's), with its format; `None` for a full
    /// backup and for one whose metadata names no usable data file.
    pub fn data_part(&self) -> Option<&Part> {
        self.parts.data().find(|p| p.of == self.stem)
    }
    pub fn is_complete(&self) -> bool {
        self.problem.is_none()
    }
    pub fn part_of(&self) -> Option<&str> {
        self.metadata.part_of.as_deref()
    }
    /// Bytes on disk: data (for a full backup, the sum of its parts as recorded).
    pub fn size(&self) -> u64 {
        self.metadata.file_size
    }
}

/// One backup as `list --json` and `GET /backups/list` show it: the metadata plus where
/// it is and whether it is complete.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ListRow<'a> {
    pub name: String,
    pub path: String,
    pub metadata_path: String,
    pub complete: bool,
    pub problem: Option<&'a str>,
    /// Fingerprints of the keys that open it (a full backup's: its parts'); absent when
    /// it is not encrypted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<String>,
    /// The size to show: a snapshot's logical size (its files' bytes), an archive's or a
    /// database copy's file size (`file_size` stays the data file's own).
    pub size: u64,
    /// Snapshots: what this one added to the content store when it was made (a full
    /// backup: its parts together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_to_store: Option<u64>,
    #[serde(flatten)]
    pub metadata: &'a BackupMetadata,
}

impl<'a> ListRow<'a> {
    pub fn new(e: &'a BackupEntry, listing: &Listing) -> Self {
        ListRow {
            name: e
                .data_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: e.data_path.display().to_string(),
            metadata_path: e.meta_path.display().to_string(),
            complete: e.is_complete(),
            problem: e.problem.as_deref(),
            encrypted_to: e.recipients(),
            size: e.metadata.shown_size(),
            added_to_store: listing.added_to_store(e),
            metadata: &e.metadata,
        }
    }
}

/// Everything in a backup directory.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Newest first.
    pub backups: Vec<BackupEntry>,
    /// Files that are not (or not yet) backups: `.partial` files, data without metadata,
    /// and a killed restore's temporary tree.
    pub leftovers: Vec<PathBuf>,
}

impl Listing {
    pub fn of_kind(&self, kind: BackupKind) -> impl Iterator<Item = &BackupEntry> {
        self.backups.iter().filter(move |b| b.kind == kind)
    }
    /// The newest complete backup of `kind` (a restore's safety copy is none) that is not
    /// dated after `now`: one from the
    /// future (a clock that ran ahead) never counts as the newest, or it would hide for
    /// as long as the skew that every backup since is missing.
    pub fn newest_present(
        &self,
        kind: BackupKind,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<&BackupEntry> {
        // A restore's safety copy is no backup: it never makes a type look fresh.
        self.of_kind(kind)
            .filter(|b| b.is_complete() && !b.metadata.is_pre_restore())
            .find(|b| {
                b.created
                    .is_some_and(|c| !crate::retention::is_future(&c, now))
            })
    }
    /// Backups dated after `now`, which `list`, `status` and the daemon report.
    pub fn future_dated(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl Iterator<Item = &BackupEntry> {
        self.backups.iter().filter(move |b| {
            b.created
                .is_some_and(|c| crate::retention::is_future(&c, now))
        })
    }
    /// What a snapshot (or a full backup of snapshots: its parts together) added to the
    /// content store when it was made; `None` for archives and database copies.
    pub fn added_to_store(&self, e: &BackupEntry) -> Option<u64> {
        // A copy fetched sealed from an encrypted target was made elsewhere: what it added
        // there is not recorded in clear, and it added nothing here.
        if e.metadata.sealed.is_some() {
            return None;
        }
        if let Some(s) = &e.metadata.snapshot {
            return Some(s.added_bytes);
        }
        if e.kind != BackupKind::Full {
            return None;
        }
        self.backups
            .iter()
            .filter(|b| b.part_of() == Some(e.stem.as_str()))
            .filter_map(|b| b.metadata.snapshot.as_ref().map(|s| s.added_bytes))
            .reduce(|a, b| a + b)
    }
    pub fn find_stem(&self, stem: &str) -> Option<&BackupEntry> {
        self.backups.iter().find(|b| b.stem == stem)
    }
    /// The entry whose data file or metadata file is `path`.
    pub fn find_path(&self, path: &Path) -> Option<&BackupEntry> {
        self.backups
            .iter()
            .find(|b| b.data_path == path || b.meta_path == path)
    }
}

impl Catalog {
    pub fn new(root: impl Into<PathBuf>, file_mode: u32, dir_mode: u32) -> Self {
        Catalog {
            root: root.into(),
            file_mode,
            dir_mode,
            lock_wait: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn file_mode(&self) -> u32 {
        self.file_mode
    }
    pub fn dir_mode(&self) -> u32 {
        self.dir_mode
    }
    pub fn kind_dir(&self, kind: BackupKind) -> PathBuf {
        self.root.join(kind.dir_name())
    }
    pub fn log(&self) -> OperationLog {
        OperationLog::new(self.root.join(LOG_FILE), self.file_mode)
    }

    /// Create the backup directory and its kind subdirectories with `dir_mode`.
    pub fn prepare(&self) -> Result<()> {
        for dir in std::iter::once(self.root.clone())
            .chain(BackupKind::ALL.iter().map(|k| self.kind_dir(*k)))
        {
            if !dir.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(self.dir_mode)
                    .create(&dir)
                    .ctx("create the backup directory", &dir)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(self.dir_mode))
                    .ctx("set permissions on", &dir)?;
            }
        }
        Ok(())
    }

    pub fn lock(&self, operation: &str) -> Result<BackupDirLock> {
        self.prepare()?;
        let lock = BackupDirLock::acquire_waiting(&self.root, operation, self.lock_wait)?;
        // Whoever holds the lock first finishes a repack's committed rewrite: every
        // operation then sees each backup wholly old or wholly new.
        self.finish_committed_rewrite()?;
        Ok(lock)
    }

    /// This catalog, its [`Catalog::lock`] waiting up to `wait` for another holder.
    pub fn with_lock_wait(mut self, wait: Option<std::time::Duration>) -> Self {
        self.lock_wait = wait;
        self
    }

    /// A timestamp token for a new backup of `kind` made at `now`: `YYYYMMDD_HHMMSS`, or,
    /// when that second already has backups in the directories this one writes to (a
    /// full backup's manifest and parts: all three; a database or storage backup: its
    /// own), one more than their highest `_N` — never a lower number freed by rotation, so
    /// a newer backup always sorts as newer. A storage backup in the second of a database
    /// backup keeps the plain name: the suffix says "the second of this type".
    pub fn allocate_timestamp(&self, kind: BackupKind, now: DateTime<Local>) -> String {
        self.allocate_in_second(kind, &now.format("%Y%m%d_%H%M%S").to_string())
    }

    /// A free timestamp in the second `base` (`YYYYMMDD_HHMMSS`): `base` itself, or with
    /// the next `_N` (a repaired backup takes its damaged original's second).
    pub fn allocate_in_second(&self, kind: BackupKind, base: &str) -> String {
        let mut highest: Option<u32> = None;
        let written: &[BackupKind] = match kind {
            BackupKind::Full => &BackupKind::ALL,
            BackupKind::Database => &[BackupKind::Database],
            BackupKind::Storage => &[BackupKind::Storage],
        };
        for &kind in written {
            let Ok(rd) = fs::read_dir(self.kind_dir(kind)) else {
                continue;
            };
            let stems: Vec<String> = kind.prefixes().map(|p| format!("{p}{base}")).collect();
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(rest) = name
                    .to_str()
                    .and_then(|n| stems.iter().find_map(|s| n.strip_prefix(s.as_str())))
                else {
                    continue;
                };
                let n = if rest.starts_with('.') {
                    Some(1)
                } else {
                    rest.strip_prefix('_')
                        .and_then(|r| r.split('.').next())
                        .and_then(|d| d.parse::<u32>().ok())
                };
                if let Some(n) = n {
                    highest = Some(highest.map_or(n, |h| h.max(n)));
                }
            }
        }
        match highest {
            None => base.to_string(),
            Some(h) => format!("{base}_{}", h + 1),
        }
    }

    /// Path of the data file of a new backup.
    pub fn data_path(&self, kind: BackupKind, timestamp: &str, extension: &str) -> PathBuf {
        self.kind_dir(kind)
            .join(format!("{}{timestamp}.{extension}", kind.prefix()))
    }

    /// Path of the metadata (for full: the manifest) of a backup.
    pub fn meta_path(&self, kind: BackupKind, timestamp: &str) -> PathBuf {
        self.kind_dir(kind)
            .join(format!("{}{timestamp}.json", kind.prefix()))
    }

    /// Everything on disk. Never takes the lock; a backup being written shows up only as
    /// leftovers until its metadata lands — a full backup's parts until its manifest does.
    pub fn list(&self) -> Result<Listing> {
        self.finish_rewrite_if_unlocked();
        let (mut listing, orphans) = self.list_with_orphans()?;
        // A killed restore's temporary tree, wherever its target was.
        if let Some(staging) = RestoreStaging::load(&self.root)
            && staging.temp().exists()
        {
            listing.leftovers.push(staging.temp());
        }
        for orphan in orphans {
            // An orphan's data file may be gone already (metadata-only debris).
            listing.leftovers.extend(
                orphan
                    .parts
                    .iter()
                    .filter(|p| p.role == PartRole::Metadata || p.path.exists())
                    .map(|p| p.path.clone()),
            );
        }
        Ok(listing)
    }

    /// The listing, and apart from it the parts of full backups whose manifest is not
    /// there. Such a part is complete on its own, but it is debris: its run died between
    /// landing the parts and the manifest (or a rotation between deleting the manifest and
    /// the parts). Listed as a backup, it would vanish at the next run's cleaning — so it
    /// never is one; [`Self::clean_leftovers`] removes it.
    fn list_with_orphans(&self) -> Result<(Listing, Vec<BackupEntry>)> {
        let mut listing = Listing::default();
        for kind in BackupKind::ALL {
            let dir = self.kind_dir(kind);
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read the backup directory", &dir, e)),
            };
            let mut names: Vec<String> = Vec::new();
            for entry in rd {
                let entry = entry.ctx("read the backup directory", &dir)?;
                match entry.file_name().into_string() {
                    Ok(n) => names.push(n),
                    Err(_) => listing.leftovers.push(entry.path()),
                }
            }
            names.sort();
            for name in &names {
                let path = dir.join(name);
                if name.ends_with(PARTIAL_SUFFIX) || is_sqlite_side_file_of_partial(name) {
                    listing.leftovers.push(path);
                    continue;
                }
                let Some((prefix, rest)) = kind
                    .prefixes()
                    .find_map(|p| name.strip_prefix(p).map(|rest| (p, rest)))
                else {
                    continue;
                };
                if let Some(ts) = rest.strip_suffix(".json") {
                    listing
                        .backups
                        .push(self.load_entry(kind, prefix, ts, &path));
                } else if data_extensions(kind).iter().any(|ext| name.ends_with(ext)) {
                    let stem = strip_data_ext(kind, name);
                    if !names.iter().any(|n| n == &format!("{stem}.json")) {
                        listing.leftovers.push(path);
                    }
                }
            }
        }
        let full_dir = self.kind_dir(BackupKind::Full);
        let (orphans, backups): (Vec<BackupEntry>, Vec<BackupEntry>) =
            listing.backups.into_iter().partition(|b| {
                b.kind != BackupKind::Full
                    && b.part_of()
                        .is_some_and(|full| !full_dir.join(format!("{full}.json")).exists())
            });
        listing.backups = backups;
        let snapshot = listing.backups.clone();
        for entry in listing
            .backups
            .iter_mut()
            .filter(|b| b.kind == BackupKind::Full)
        {
            add_member_parts(entry, &snapshot);
            // Full backups are complete only if every part is.
            if entry.problem.is_none() {
                entry.problem = full_problem(entry, &snapshot);
            }
        }
        listing.backups.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| {
                    timestamp_order(&b.metadata.timestamp)
                        .cmp(&timestamp_order(&a.metadata.timestamp))
                })
                .then_with(|| b.stem.cmp(&a.stem))
        });
        Ok((listing, orphans))
    }

    fn load_entry(
        &self,
        kind: BackupKind,
        prefix: &str,
        ts: &str,
        meta_path: &Path,
    ) -> BackupEntry {
        let stem = format!("{prefix}{ts}");
        let parsed = fs::read(meta_path)
            .map_err(|e| format!("cannot read its metadata: {e}"))
            .and_then(|b| {
                serde_json::from_slice::<BackupMetadata>(&b)
                    .map_err(|e| format!("its metadata is not valid: {e}"))
            });
        let mut parts = BackupParts::default();
        parts.push(Part::metadata(kind, &stem, meta_path));
        let metadata = match parsed {
            Ok(m) => m,
            Err(problem) => {
                return BackupEntry {
                    kind,
                    stem,
                    meta_path: meta_path.to_path_buf(),
                    data_path: meta_path.to_path_buf(),
                    metadata: placeholder_metadata(kind, ts),
                    parts,
                    created: None,
                    problem: Some(problem),
                };
            }
        };
        let format = metadata.format();
        let (data_file, data_problem) = if kind == BackupKind::Full {
            (None, None)
        } else {
            data_file(kind, &stem, meta_path, &metadata)
        };
        // The first problem found is the one shown.
        let problem = (metadata.format_version > FORMAT_VERSION)
            .then(|| {
                format!(
                    "its metadata is format_version {}, newer than this build reads ({FORMAT_VERSION})",
                    metadata.format_version
                )
            })
            .or(data_problem)
            .or_else(|| format.as_ref().err().cloned())
            .or_else(|| {
                (metadata.kind != kind).then(|| {
                    format!(
                        "its metadata says type {} but it lies in {}/",
                        metadata.kind,
                        kind.dir_name()
                    )
                })
            });
        if let Some(p) = &data_file {
            parts.push(Part::data(
                kind,
                &stem,
                p,
                metadata.file_size,
                &metadata.checksum,
                format.clone().ok(),
            ));
        }
        // A snapshot's packs: shared with other snapshots, deleted with the last of them.
        if let (Some(info), Ok(f)) = (&metadata.snapshot, &format)
            && f.is_snapshot()
        {
            for pack in info.packs.iter().filter(|p| valid_pack_id(&p.id)) {
                parts.push(Part::pack(kind, &stem, &self.root, pack, f.is_encrypted()));
            }
        }
        BackupEntry {
            kind,
            stem,
            meta_path: meta_path.to_path_buf(),
            // A full backup's data is its manifest.
            data_path: data_file.unwrap_or_else(|| meta_path.to_path_buf()),
            created: metadata.created(),
            metadata,
            parts,
            problem,
        }
    }

    /// Delete a backup: exactly its parts, in their order — metadata first (so it stops
    /// being a backup at once), then data; a full backup's members with it. A shared part
    /// stays while another backup of `listing` still lists it.
    pub fn delete(&self, entry: &BackupEntry, listing: &Listing) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        // The others that still exist: a rotation deletes several backups from one
        // listing, and a pack the earlier ones left to a later one must go with it.
        let others: Vec<&BackupEntry> = listing
            .backups
            .iter()
            .filter(|b| b.stem != entry.stem && b.part_of() != Some(entry.stem.as_str()))
            .filter(|b| !entry.parts.iter().any(|p| p.shared) || b.meta_path.exists())
            .collect();
        for part in entry.parts.iter() {
            let still_listed =
                part.shared && others.iter().any(|b| b.parts.contains_path(&part.path));
            if !still_listed {
                remove_if_exists(&part.path, &mut removed)?;
            }
            // The metadata's removal is durable before any pack goes: a power cut must
            // never bring back a snapshot whose packs are gone.
            if part.role == PartRole::Metadata
                && let Some(dir) = part.path.parent()
            {
                sync_dir(dir)?;
            }
        }
        for kind in BackupKind::ALL {
            let _ = sync_dir(&self.kind_dir(kind));
        }
        Ok(removed)
    }

    /// Remove what crashed runs left: `.partial` files (and the `-wal`, `-shm`, `-journal`
    /// files SQLite keeps beside a database copy still under its `.partial` name), data
    /// files whose metadata was still `.partial`, and parts of a full backup whose
    /// manifest never landed; and a killed restore's temporary tree, after bringing its
    /// swap to one end or the other; and a killed repack's rewrite, finished when it was
    /// committed, else its staged files.
    /// Only call while holding the lock: then no live run can be writing any of these.
    pub fn clean_leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut removed: Vec<PathBuf> = RestoreStaging::repair(&self.root)?.into_iter().collect();
        // A repack's committed rewrite first: until it is finished, its backups are half
        // old, half new, and the sweep below would not see the packs they list.
        removed.extend(self.finish_rewrite()?);
        for kind in BackupKind::ALL {
            let dir = self.kind_dir(kind);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let names: Vec<String> = rd
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            for name in &names {
                // Only names we write: an operator's `notes.partial` is not ours to delete.
                if !kind.prefixes().any(|p| name.starts_with(p)) {
                    continue;
                }
                if is_sqlite_side_file_of_partial(name) {
                    remove_if_exists(&dir.join(name), &mut removed)?;
                    continue;
                }
                if let Some(base) = name.strip_suffix(PARTIAL_SUFFIX) {
                    remove_if_exists(&dir.join(name), &mut removed)?;
                    // `X.json.partial` means X's data may have landed without metadata.
                    if let Some(stem) = base.strip_suffix(".json") {
                        for ext in data_extensions(kind) {
                            let data = dir.join(format!("{stem}{ext}"));
                            if !dir.join(format!("{stem}.json")).exists() {
                                remove_if_exists(&data, &mut removed)?;
                            }
                        }
                    }
                }
            }
        }
        let (_, orphans) = self.list_with_orphans()?;
        for orphan in &orphans {
            // Metadata first: the part stops looking like a backup at once. Its packs may
            // be other snapshots' too: the sweep below deletes those no one lists.
            for part in orphan.parts.iter().filter(|p| !p.shared) {
                remove_if_exists(&part.path, &mut removed)?;
            }
        }
        // Packs only once every leftover that could list them is gone.
        let (listing, _) = self.list_with_orphans()?;
        removed.extend(self.sweep_store(&listing)?);
        Ok(removed)
    }
}

fn remove_if_exists(path: &Path, removed: &mut Vec<PathBuf>) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            removed.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("delete", path, e)),
    }
}

/// `X.partial` when `name` is one of the files SQLite creates beside a database it has
/// open (`X.partial-wal`, `X.partial-shm`, `X.partial-journal`): a database copy is
/// written under its `.partial` name, and a run killed while SQLite had it open leaves
/// these behind.
fn is_sqlite_side_file_of_partial(name: &str) -> bool {
    SQLITE_SIDE_SUFFIXES
        .iter()
        .filter_map(|sfx| name.strip_suffix(sfx))
        .any(|base| base.ends_with(PARTIAL_SUFFIX))
}

/// The files SQLite keeps beside a database `NAME`: `NAME-wal`, `NAME-shm`, `NAME-journal`.
pub const SQLITE_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// `path` with a SQLite side-file suffix appended (works for any bytes in the name).
pub fn sqlite_side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The data file `metadata` names, looked up by name beside `meta_path` (the directory
/// may have moved since it was written), and why it is not usable. `None`: the metadata
/// names no data file of this backup.
fn data_file(
    kind: BackupKind,
    stem: &str,
    meta_path: &Path,
    metadata: &BackupMetadata,
) -> (Option<PathBuf>, Option<String>) {
    let named = Path::new(&metadata.backup_path)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_default()
        .to_string();
    let expected = data_extensions(kind)
        .iter()
        .any(|ext| named == format!("{stem}{ext}"));
    if !expected {
        return (
            None,
            Some(format!(
                "its metadata names a different data file ({named:?})"
            )),
        );
    }
    let path = meta_path.with_file_name(&named);
    let problem = match fs::metadata(&path) {
        Err(_) => Some(format!("its data file {named} is missing")),
        Ok(m) if m.len() != metadata.file_size => Some(format!(
            "its data file is {} bytes but the metadata says {}",
            m.len(),
            metadata.file_size
        )),
        Ok(_) => None,
    };
    (Some(path), problem)
}

/// What is wrong with the members of a complete full backup's manifest, if anything:
/// each must be there, complete, marked as its part, with the checksum it records.
fn full_problem(full: &BackupEntry, all: &[BackupEntry]) -> Option<String> {
    for part in &full.metadata.parts {
        let part_stem = strip_data_ext(part.kind, &part.file_name);
        let problem = match all
            .iter()
            .find(|b| b.kind == part.kind && b.stem == part_stem)
        {
            None => format!("its {} part {} is missing", part.kind, part.file_name),
            Some(p) if p.problem.is_some() => format!(
                "its {} part {}: {}",
                part.kind,
                part.file_name,
                p.problem.as_deref().unwrap_or_default()
            ),
            // Its parts are deleted with it: they must say they are its own.
            Some(p) if p.part_of() != Some(full.stem.as_str()) => format!(
                "its {} part {} is not marked as part of it",
                part.kind, part.file_name
            ),
            // A member repacking rewrote still is the backup the manifest recorded (a
            // full backup fetched from a target whose push stopped between the two).
            Some(p) if !p.metadata.has_or_had_checksum(&part.checksum) => {
                format!(
                    "its {} part's checksum differs from the manifest",
                    part.kind
                )
            }
            Some(_) => continue,
        };
        return Some(problem);
    }
    None
}

/// A full backup's parts: its manifest, then the parts of each member backup — those its
/// manifest names first, in its order, then any other backup claiming to be part of it
/// (so deleting the full backup leaves none of them behind).
fn add_member_parts(full: &mut BackupEntry, all: &[BackupEntry]) {
    let members = all
        .iter()
        .filter(|b| b.kind != BackupKind::Full && b.part_of() == Some(full.stem.as_str()));
    let mut ordered: Vec<&BackupEntry> = Vec::new();
    for named in &full.metadata.parts {
        let stem = strip_data_ext(named.kind, &named.file_name);
        if let Some(m) = members
            .clone()
            .find(|b| b.kind == named.kind && b.stem == stem)
        {
            ordered.push(m);
        }
    }
    for m in members {
        if !ordered.iter().any(|o| o.stem == m.stem && o.kind == m.kind) {
            ordered.push(m);
        }
    }
    for m in ordered {
        full.parts.extend(&m.parts);
    }
}

/// `db_backup_X.db` → `db_backup_X`.
fn strip_data_ext(kind: BackupKind, name: &str) -> String {
    data_extensions(kind)
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
        .to_string()
}

/// Orders `YYYYMMDD_HHMMSS` and `YYYYMMDD_HHMMSS_N` numerically on the suffix.
pub fn timestamp_order(ts: &str) -> (String, u32) {
    match ts.get(..15) {
        Some(base) => (
            base.to_string(),
            ts.get(16..).and_then(|n| n.parse().ok()).unwrap_or(1),
        ),
        None => (ts.to_string(), 0),
    }
}

fn placeholder_metadata(kind: BackupKind, ts: &str) -> BackupMetadata {
    BackupMetadata {
        timestamp: ts.to_string(),
        kind,
        original_path: String::new(),
        backup_path: String::new(),
        file_size: 0,
        checksum: String::new(),
        created_at: String::new(),
        file_count: 0,
        format_version: 0,
        format: Some(Format::of_kind(kind, crate::config::Compression::None)),
        checksum_algorithm: "sha256".into(),
        compression: None,
        duration_ms: 0,
        uncompressed_size: 0,
        content_size: 0,
        tool_version: String::new(),
        hostname: String::new(),
        warnings: Vec::new(),
        integrity_check: None,
        parts: Vec::new(),
        part_of: None,
        reason: None,
        sealed: None,
        snapshot: None,
        repaired: None,
        earlier_checksums: Vec::new(),
        data_object: None,
    }
}

#[cfg(test)]
mod tests;
