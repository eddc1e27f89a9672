//! Restore, as a plan and then its application (docs/design.md §3). [`plan_restore`] works out what
//! goes where and changes nothing — so `--dry-run` and the confirmation prompt show the
//! exact plan; [`apply`] carries it out under the backup-directory lock:
//!
//! 1. verify every part first (checksum, then SQLite integrity) unless `--no-verify`;
//! 2. extract the storage archive into a sibling temporary directory, in one pass that
//!    also checks the checksum and the safety of every entry — nothing live changes yet;
//! 3. database: a pre-restore safety copy goes into the catalog (a live file SQLite
//!    cannot read is renamed to `NAME.pre-restore-TIMESTAMP` instead), then the backup is
//!    copied into the live file through SQLite (WAL and open connections handled), then
//!    checked;
//! 4. storage: the restored tree, flushed to disk, is exchanged with the live one in one
//!    `renameat2(RENAME_EXCHANGE)` — the only moment the live path changes — and the
//!    replaced tree kept as `NAME.pre-restore-TIMESTAMP` (see [`super::staged_tree`]).
//!
//! With `--path` ([`plan_restore_paths`]) only those storage paths are extracted (see
//! [`super::path_selection`]) and, in place, swapped one by one, each previous version
//! kept at its place under `NAME.pre-restore-TIMESTAMP/`; a full backup's database is
//! then left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Local;
use serde::Serialize;

use super::backup::catalog_for;
use super::decrypt::{Reading, SqliteFile, load_identity};
use super::live_app::{LiveApp, StopFor};
use super::path_selection::PathSelection;
pub use super::restore_database::DatabaseStep;
use super::restore_database::{
    prepare_database, restore_database, take_safety_copy, unused_aside_path,
};
use super::staged_tree::{StagedTree, is_mount_point, stage_storage};
use super::verify::full_parts;
use super::{Cancel, Progress};
use crate::catalog::{BackupDirLock, BackupEntry, Catalog, Format, FormatKind, Listing, Outcome};
use crate::config::{Compression, Config};
use crate::error::{Error, Result};
use crate::kind::BackupKind;
use crate::units::format_bytes;

/// Where a restore puts things.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub backup: PathBuf,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    pub verify: bool,
    /// True when the live database/storage are replaced.
    pub in_place: bool,
    pub database: Option<DatabaseStep>,
    pub storage: Option<StorageStep>,
    /// What will be stopped while the live data is replaced (an in-place restore of an
    /// app run in containers), as the engine lists it when the plan is shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stops: Vec<String>,
    /// How the source was checked before this plan, when it was (a database replayed
    /// from the replicated stream passed `integrity_check` as it was made): then it is
    /// not checked again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageStep {
    pub source: PathBuf,
    #[serde(skip)]
    pub checksum: String,
    pub uncompressed_size: u64,
    /// The regular files' bytes, what the restore writes (`None`: not recorded, a backup
    /// older than the field, or sealed).
    pub content_size: Option<u64>,
    /// Files and links in the archive, as its metadata records them (`None`: sealed).
    pub file_count: Option<u64>,
    /// As the backup's metadata records it.
    pub compression: Compression,
    /// The whole format (encrypted or not), and the identity to decrypt with.
    #[serde(skip)]
    pub format: Format,
    #[serde(skip)]
    pub identity: Option<PathBuf>,
    pub target: PathBuf,
    /// Where the current tree is moved (in-place restores). With `paths`, only the
    /// replaced paths go there, each at its own place under it.
    pub previous_tree: Option<PathBuf>,
    /// `--path`: restore only these (normalised, relative to the storage directory);
    /// empty for the whole tree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
}

impl StorageStep {
    pub fn reading(&self) -> Reading<'_> {
        Reading {
            format: &self.format,
            identity: self.identity.as_deref(),
        }
    }

    /// What it holds, in the words and units the restore's result uses ("N files and
    /// links, X of file data"), as far as the metadata says.
    fn size_shown(&self) -> String {
        let files = self.file_count.map(|n| match n {
            1 => "1 file or link".to_string(),
            n => format!("{n} files and links"),
        });
        // A snapshot's uncompressed size is its files' bytes; an archive's, its tar stream.
        let content = self.content_size.or_else(|| {
            (self.format.is_snapshot() && self.uncompressed_size > 0)
                .then_some(self.uncompressed_size)
        });
        match (files, content) {
            (Some(files), Some(bytes)) => format!("{files}, {} of file data", format_bytes(bytes)),
            (None, Some(bytes)) => format!("{} of file data", format_bytes(bytes)),
            (Some(files), None) if self.uncompressed_size > 0 => format!(
                "{files}, a {} tar stream",
                format_bytes(self.uncompressed_size)
            ),
            (Some(files), None) => files,
            (None, None) => "its size is sealed: known once opened".to_string(),
        }
    }

    fn paths_shown(&self) -> String {
        let shown: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        shown.join(", ")
    }
}

impl RestorePlan {
    /// The plan in words, one line a step.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(how) = &self.checked {
            lines.push(how.clone());
        } else if self.verify {
            lines.push(
                "verify the checksum and contents of every part before touching anything"
                    .to_string(),
            );
        } else {
            lines.push("NO VERIFICATION (--no-verify): the backup is trusted as it is".to_string());
        }
        if let Some(s) = self.storage.as_ref().filter(|s| !s.paths.is_empty()) {
            lines.push(format!(
                "extract only {} from {} into a temporary directory beside {}",
                s.paths_shown(),
                s.source.display(),
                s.target.display()
            ));
        } else if let Some(s) = &self.storage {
            lines.push(format!(
                "extract {} ({}) into a temporary directory beside {}",
                s.source.display(),
                s.size_shown(),
                s.target.display()
            ));
        }
        // What follows touches live data.
        let swaps_from = lines.len();
        if let Some(d) = &self.database {
            if d.safety_copy {
                lines.push(format!(
                    "back up the current database {} (pre-restore safety copy)",
                    d.target.display()
                ));
            }
            lines.push(format!(
                "restore {} into {} through SQLite",
                d.source.display(),
                d.target.display()
            ));
        }
        if let Some(s) = &self.storage {
            match &s.previous_tree {
                Some(prev) if !s.paths.is_empty() => lines.push(format!(
                    "replace only {} in {}, each in one atomic swap; the versions replaced go to {} (same layout); nothing else in {} is touched",
                    s.paths_shown(),
                    s.target.display(),
                    prev.display(),
                    s.target.display()
                )),
                Some(prev) => lines.push(format!(
                    "move the current {} to {} and put the restored tree in its place",
                    s.target.display(),
                    prev.display()
                )),
                None => lines.push(format!("put the restored tree at {}", s.target.display())),
            }
        }
        if !self.stops.is_empty() {
            // Where it happens: after the checks and the staging, around the swaps.
            lines.insert(
                swaps_from,
                format!(
                    "stop the containers {} (they carry the stop label)",
                    self.stops.join(", ")
                ),
            );
            lines.push(format!("start {} again", self.stops.join(", ")));
        }
        lines
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: PathBuf,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    pub verified: bool,
    pub database: Option<RestoredDatabase>,
    pub storage: Option<RestoredStorage>,
    pub duration_ms: u64,
    /// What was stopped while the live data was replaced (and started again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredDatabase {
    pub target: PathBuf,
    pub safety_copy: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredStorage {
    pub target: PathBuf,
    pub previous_tree: Option<PathBuf>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The metadata a fetched copy's backup recorded: an encrypted target's clear metadata
/// keeps the file count and sizes sealed; with an identity that opens them, they are
/// shown as the backup recorded them. `None`: not sealed, or not opened (no identity, or
/// not one of its recipients — the restore itself says so when it reads the data).
pub fn opened_metadata(
    meta: &crate::catalog::BackupMetadata,
    identity: Option<&Path>,
) -> Option<crate::catalog::BackupMetadata> {
    let sealed = meta.sealed.as_deref()?;
    let identities = crate::encryption::Identities::load(identity?).ok()?;
    crate::encryption::unseal_json(&identities, sealed).ok()
}

/// Find the backup `path` names (its data file or metadata). Inside the configured
/// backup directory it is looked up there; a path elsewhere must sit in the same layout
/// (`…/database/db_backup_X.db` beside its `.json`), e.g. backups copied from another host.
pub fn resolve_backup(config: &Config, path: &Path) -> Result<(Catalog, Listing, BackupEntry)> {
    let not_backup = |reason: &str| Error::NotABackup {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let canon = fs::canonicalize(path).map_err(|_| not_backup("it does not exist"))?;
    let configured = fs::canonicalize(&config.paths.backup_dir).ok();
    let root = match configured {
        Some(root) if canon.starts_with(&root) => root,
        _ => canon
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| not_backup("it is not inside a backup directory"))?,
    };
    let catalog = Catalog::new(root, config.backup.file_mode.0, config.backup.dir_mode.0);
    let listing = catalog.list()?;
    let entry = listing
        .find_path(&canon)
        .cloned()
        .ok_or_else(|| not_backup("no backup metadata (.json) describes it"))?;
    Ok((catalog, listing, entry))
}

/// Work out the restore of the backup at `path`; changes nothing.
pub fn plan_restore(
    config: &Config,
    path: &Path,
    target: Option<&Path>,
    verify: bool,
) -> Result<RestorePlan> {
    plan_restore_paths(config, path, target, verify, &[])
}

/// [`plan_restore`] of only `paths` of the storage (`restore --path`; empty: all of it).
/// With a full backup, only its storage part is restored: the database stays as it is.
pub fn plan_restore_paths(
    config: &Config,
    path: &Path,
    target: Option<&Path>,
    verify: bool,
    paths: &[PathBuf],
) -> Result<RestorePlan> {
    let selection = PathSelection::new(paths)?;
    let (_catalog, listing, entry) = resolve_backup(config, path)?;
    if let Some(problem) = &entry.problem {
        return Err(Error::verify(&entry.meta_path, "complete", problem.clone()));
    }
    let (db_part, storage_part): (Option<&BackupEntry>, Option<&BackupEntry>) = match entry.kind {
        BackupKind::Database => (Some(&entry), None),
        BackupKind::Storage => (None, Some(&entry)),
        BackupKind::Full => {
            let parts = full_parts(&entry, &listing)?;
            (
                parts
                    .iter()
                    .copied()
                    .find(|p| p.kind == BackupKind::Database),
                parts
                    .iter()
                    .copied()
                    .find(|p| p.kind == BackupKind::Storage),
            )
        }
    };
    if !selection.is_empty() && storage_part.is_none() {
        return Err(Error::Refused(format!(
            "--path selects paths of the storage, and {} is a database backup; leave --path out",
            entry.data_path.display()
        )));
    }
    // A partial restore is of storage paths only: a full backup's database is left alone.
    let db_part = db_part.filter(|_| selection.is_empty());
    let db_format = db_part
        .map(|p| data_format(p, FormatKind::Sqlite))
        .transpose()?;
    let storage_format = storage_part
        .map(|p| data_format(p, FormatKind::Archive))
        .transpose()?;
    // An encrypted part needs a usable identity: say so now, before any prompt or step.
    for (p, _) in [
        db_part.zip(db_format.as_ref()),
        storage_part.zip(storage_format.as_ref()),
    ]
    .into_iter()
    .flatten()
    .filter(|(_, f)| f.is_encrypted())
    {
        load_identity(&p.data_path, config.identity.as_deref())?;
    }
    let live_db = &config.paths.database;
    // When `[paths] storage` is a symlink (media on another disk), restore the directory
    // behind it: staging beside it keeps the swap a rename on one filesystem, and the
    // link itself stays as the operator made it.
    let live_storage =
        &fs::canonicalize(&config.paths.storage).unwrap_or_else(|_| config.paths.storage.clone());
    let db_name = live_db
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("app_data.db"));
    let storage_name = live_storage
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("storage"));
    let stamp = Local::now().format("%Y%m%d_%H%M%S").to_string();

    let (db_target, storage_target) = match target {
        None => (live_db.clone(), live_storage.clone()),
        Some(t) => match entry.kind {
            BackupKind::Database if t.is_dir() => (t.join(&db_name), PathBuf::new()),
            BackupKind::Database => (t.to_path_buf(), PathBuf::new()),
            BackupKind::Storage => (PathBuf::new(), t.to_path_buf()),
            BackupKind::Full => (t.join(&db_name), t.join(&storage_name)),
        },
    };
    let in_place = target.is_none();
    let refuse = |p: &Path, why: &str| {
        Error::Refused(format!("{} {why}; choose a new --target", p.display()))
    };
    if !in_place {
        // A full backup restores into a directory of its own: a new or empty one.
        if let (BackupKind::Full, Some(t)) = (entry.kind, target)
            && t.exists()
            && fs::read_dir(t)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(refuse(t, "exists and is not an empty directory"));
        }
        if db_part.is_some() && db_target.exists() {
            return Err(refuse(&db_target, "already exists"));
        }
        if storage_part.is_some()
            && storage_target.exists()
            && fs::read_dir(&storage_target)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(refuse(
                &storage_target,
                "exists and is not an empty directory",
            ));
        }
    }
    if in_place && storage_part.is_some() && is_mount_point(live_storage) {
        // Renaming a mount point fails (EBUSY) half-way through; refuse before anything.
        return Err(Error::Refused(format!(
            "{} is a mount point: an in-place restore swaps the directory itself, which \
             cannot be done to a mount point. Restore with --target to a new directory on \
             that disk and move the contents across with the app stopped, or point \
             [paths] storage at a directory inside the mount",
            live_storage.display()
        )));
    }
    if in_place
        && let Some(p) = selection
            .paths()
            .iter()
            .find(|p| is_mount_point(&live_storage.join(p)))
    {
        return Err(Error::Refused(format!(
            "{} is a mount point: a partial restore swaps it whole, which cannot be done to a mount point; restore with --target instead",
            live_storage.join(p).display()
        )));
    }
    let previous_tree =
        (in_place && live_storage.exists()).then(|| unused_aside_path(live_storage, &stamp));
    Ok(RestorePlan {
        backup: entry.data_path.clone(),
        kind: entry.kind,
        verify,
        in_place,
        database: db_part.zip(db_format).map(|(p, format)| DatabaseStep {
            source: p.data_path.clone(),
            checksum: p.metadata.checksum.clone(),
            format,
            identity: config.identity.clone(),
            target: db_target.clone(),
            safety_copy: in_place && db_target.exists(),
        }),
        storage: storage_part.zip(storage_format).map(|(p, format)| {
            // A copy fetched sealed says what it holds once the identity opens it.
            let opened = opened_metadata(&p.metadata, config.identity.as_deref());
            let recorded = opened.as_ref().unwrap_or(&p.metadata);
            StorageStep {
                source: p.data_path.clone(),
                checksum: p.metadata.checksum.clone(),
                uncompressed_size: recorded.uncompressed_size,
                content_size: (recorded.content_size > 0).then_some(recorded.content_size),
                file_count: recorded.recorded_file_count(),
                compression: format.compression,
                format,
                identity: config.identity.clone(),
                target: storage_target.clone(),
                previous_tree: previous_tree.clone(),
                paths: selection.paths().to_vec(),
            }
        }),
        stops: Vec::new(),
        checked: None,
    })
}

/// The restore of a plain database file made and checked by this program just before
/// (the replicated stream replayed to a time): `checked` says how it was checked, so it
/// is not read again. In place it goes through the same safety copy and swap as any
/// database backup; with `target` (a new file, or a directory) elsewhere.
pub fn plan_database_file(
    config: &Config,
    source: &Path,
    shown_as: PathBuf,
    target: Option<&Path>,
    checked: String,
) -> Result<RestorePlan> {
    let live_db = &config.paths.database;
    let db_target = match target {
        None => live_db.clone(),
        Some(t) if t.is_dir() => t.join(
            live_db
                .file_name()
                .unwrap_or_else(|| "app_data.db".as_ref()),
        ),
        Some(t) => t.to_path_buf(),
    };
    if target.is_some() && db_target.exists() {
        return Err(Error::Refused(format!(
            "{} already exists; choose a new --target",
            db_target.display()
        )));
    }
    Ok(RestorePlan {
        backup: shown_as,
        kind: BackupKind::Database,
        verify: false,
        in_place: target.is_none(),
        database: Some(DatabaseStep {
            source: source.to_path_buf(),
            checksum: String::new(),
            format: Format::sqlite(),
            identity: None,
            target: db_target.clone(),
            safety_copy: target.is_none() && db_target.exists(),
        }),
        storage: None,
        stops: Vec::new(),
        checked: Some(checked),
    })
}

/// The format of a database or storage backup's data file, as its metadata records it;
/// refused when that is not `expected` or this build cannot read it.
pub(crate) fn data_format(entry: &BackupEntry, expected: FormatKind) -> Result<Format> {
    let not_readable = |reason: String| Error::NotABackup {
        path: entry.data_path.clone(),
        reason,
    };
    let format = entry
        .data_part()
        .and_then(|p| p.format.as_ref())
        .ok_or_else(|| not_readable("its metadata records no usable format".into()))?;
    if let Some(why) = format.unreadable() {
        return Err(not_readable(why));
    }
    // A snapshot holds either kind of data (its entry list says which).
    let snapshot_of = |k| {
        format.kind == FormatKind::Snapshot
            && entry.kind != BackupKind::Full
            && k != FormatKind::Manifest
    };
    if format.kind != expected && !snapshot_of(expected) {
        return Err(not_readable(format!(
            "its metadata says it is {} data, not {}",
            format.kind.as_str(),
            expected.as_str()
        )));
    }
    Ok(format.clone())
}

/// Carry out a plan. Takes the backup-directory lock for its whole length.
/// `app` is stopped while live data is replaced (an in-place restore), after the backup
/// is checked and staged, and started again straight after.
pub fn apply(
    plan: &RestorePlan,
    config: &Config,
    progress: &dyn Progress,
    cancel: &Cancel,
    app: &dyn LiveApp,
) -> Result<RestoreReport> {
    let catalog = catalog_for(config);
    let name = plan
        .backup
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock = catalog.lock(&format!("restore {name}"))?;
    let started = Instant::now();
    let recovered = app.recover();
    for warning in &recovered {
        catalog.log().warn(&format!("restore: {warning}"));
    }
    let result =
        apply_locked(plan, config, &catalog, &lock, progress, cancel, app).map(|mut report| {
            report.duration_ms = started.elapsed().as_millis() as u64;
            report
        });
    match &result {
        Ok(_) => {
            let line = format!(
                "restore {}: Restore completed successfully",
                plan.backup.display()
            );
            let outcome = Outcome {
                backup: Some(name),
                duration_ms: started.elapsed().as_millis() as u64,
                ..Default::default()
            };
            catalog.journal("restore", true, &line, outcome);
        }
        Err(e) => {
            let chain = crate::error_chain(e);
            let line = format!("restore {}: failed: {chain}", plan.backup.display());
            let outcome = Outcome {
                backup: Some(name),
                error: Some(chain),
                ..Default::default()
            };
            catalog.journal("restore", false, &line, outcome);
        }
    }
    result
}

fn apply_locked(
    plan: &RestorePlan,
    config: &Config,
    catalog: &Catalog,
    lock: &BackupDirLock,
    progress: &dyn Progress,
    cancel: &Cancel,
    app: &dyn LiveApp,
) -> Result<RestoreReport> {
    // 1. Database part: verified (and, encrypted, decrypted into a private copy) before
    // anything is written anywhere.
    let mut db_file = match &plan.database {
        Some(d) => Some(prepare_database(d, plan.verify, progress)?),
        None => None,
    };
    // 2. Storage part: extracted beside its target; checksum and safety checked on the way.
    let mut staged: Option<StagedTree> = None;
    if let Some(s) = &plan.storage {
        staged = Some(stage_storage(s, catalog, plan.verify, progress, cancel)?);
    }
    // From here on, a failure must not leave the staged tree behind.
    let mut report = RestoreReport {
        backup: plan.backup.clone(),
        kind: plan.kind,
        verified: plan.verify || plan.checked.is_some(),
        database: None,
        storage: None,
        duration_ms: 0,
        stopped: Vec::new(),
    };
    let run = SwapRun {
        config,
        catalog,
        lock,
        progress,
        cancel,
    };
    let result = (|| {
        if plan.in_place {
            cancel.check()?;
            report.stopped = app.stop(StopFor::Restore)?;
        }
        let swapped = swap_live(plan, &run, &mut db_file, &mut staged, &mut report);
        // Started again whether or not the swap worked: the live data is then either the
        // restored or (a failed swap rolls back) the previous one. A start that fails
        // leaves the restore done: the caller alerts about the app, naming what is down.
        if plan.in_place
            && let Err(e) = app.start()
        {
            catalog.log().warn(&format!(
                "restore: the app was not started again: {}",
                crate::error_chain(&e)
            ));
        }
        swapped
    })();
    if let Some(tree) = staged {
        tree.discard();
    }
    result.map(|()| report)
}

/// What replacing the live data needs besides the plan.
#[derive(Clone, Copy)]
struct SwapRun<'a> {
    config: &'a Config,
    catalog: &'a Catalog,
    lock: &'a BackupDirLock,
    progress: &'a dyn Progress,
    cancel: &'a Cancel,
}

/// Replace the live database and storage with the checked, staged ones: the database's
/// safety copy first, then each swap.
fn swap_live(
    plan: &RestorePlan,
    run: &SwapRun,
    db_file: &mut Option<SqliteFile>,
    staged: &mut Option<StagedTree>,
    report: &mut RestoreReport,
) -> Result<()> {
    let SwapRun {
        config,
        catalog,
        lock,
        progress,
        cancel,
    } = *run;
    if let Some(d) = &plan.database {
        cancel.check()?;
        let safety_copy = if d.safety_copy {
            take_safety_copy(d, config, catalog, lock, progress, cancel)?
        } else {
            None
        };
        // The safety copy cleans crash debris first, and a decrypted or reassembled
        // copy's name (a `.partial` beside the backup) is such debris's: make it
        // afresh after it (every chunk is checked again). A database snapshot is
        // such a copy even unencrypted.
        if d.safety_copy && matches!(db_file, Some(SqliteFile::Decrypted(_))) {
            drop(db_file.take());
            *db_file = Some(SqliteFile::open(
                &d.source,
                &d.format,
                d.identity.as_deref(),
            )?);
        }
        let source = db_file
            .as_ref()
            .map_or(d.source.as_path(), SqliteFile::path);
        restore_database(source, &d.target, config, safety_copy.as_deref())?;
        report.database = Some(RestoredDatabase {
            target: d.target.clone(),
            safety_copy,
        });
    }
    if let (Some(s), Some(tree)) = (&plan.storage, staged.take()) {
        let (entries, files, bytes) = (
            tree.stats.entries,
            tree.stats.files,
            tree.stats.content_bytes,
        );
        let previous_tree = match &s.previous_tree {
            Some(prev) if !s.paths.is_empty() => tree.swap_paths(&s.target, prev, &s.paths)?,
            _ => {
                tree.swap_into(&s.target, s.previous_tree.as_deref())?;
                s.previous_tree.clone()
            }
        };
        report.storage = Some(RestoredStorage {
            target: s.target.clone(),
            previous_tree,
            entries,
            files,
            bytes,
        });
    }
    Ok(())
}
