//! Taking a backup from start to finish: check the sources, take the lock, clean what
//! crashed runs left, check free space, write the data and metadata by the atomic
//! protocol, and record the outcome in `backup.log` and the state file. Each step has a
//! name, so a failure says where it happened ("failed at \"write archive\"").

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Local, SecondsFormat};

use super::database;
use super::hashing::{HashingWriter, sha256_file};
use super::hooks::run_hook;
use super::live_app::{LiveApp, StopFor};
use super::output::ArchiveFile;
use super::sealing::seal_stream;
use super::storage::{self, ArchiveOptions};
use super::walk;
use super::{Cancel, Progress};
use crate::catalog::{
    BackupDirLock, BackupMetadata, Catalog, FORMAT_VERSION, Format, Outcome, PartRef, PartialFile,
    write_atomic, write_partial,
};
use crate::config::{Compression, Config, DatabaseFormat, StorageFormat};
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;
use crate::units::{format_bytes, format_duration};

mod snapshot;

/// One backup to take.
pub struct BackupJob<'a> {
    pub config: &'a Config,
    pub kind: BackupKind,
    /// Why, when not by plan: "pre-restore" for a restore's safety copy.
    pub reason: Option<String>,
    pub progress: &'a dyn Progress,
    pub cancel: Cancel,
    /// The running app: stopped while the storage directory is read.
    pub app: &'a dyn LiveApp,
}

/// A backup that landed.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub kind: BackupKind,
    pub stem: String,
    /// The data file (for a full backup, its manifest).
    pub path: PathBuf,
    pub metadata: BackupMetadata,
    /// Parts of a full backup.
    pub parts: Vec<BackupReport>,
    /// Leftovers of crashed runs removed before this backup.
    pub cleaned: Vec<PathBuf>,
    /// Free bytes on the backup filesystem afterwards.
    pub free_after: Option<u64>,
    /// What was stopped while the storage directory was read (and started again).
    pub stopped: Vec<String>,
}

impl BackupReport {
    /// What a snapshot (a full backup of snapshots: its parts together) added to the
    /// content store; `None` for archives and database copies.
    pub fn added_to_store(&self) -> Option<u64> {
        std::iter::once(&self.metadata)
            .chain(self.parts.iter().map(|p| &p.metadata))
            .filter_map(|m| m.snapshot.as_ref().map(|s| s.added_bytes))
            .reduce(|a, b| a + b)
    }

    /// How a full backup's manifest names this part.
    pub fn part_ref(&self) -> PartRef {
        PartRef {
            kind: self.kind,
            file_name: self.file_name(),
            backup_path: self.path.display().to_string(),
            file_size: self.metadata.file_size,
            checksum: self.metadata.checksum.clone(),
        }
    }

    /// The data file's name (for a full backup, its manifest's), as messages show it.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Warnings of the backup and its parts.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.metadata.warnings.clone();
        for p in &self.parts {
            w.extend(p.metadata.warnings.iter().cloned());
        }
        w.sort();
        w.dedup();
        w
    }
}

/// A backup that did not land, and the step where it stopped. Nothing partial is left.
#[derive(Debug, thiserror::Error)]
#[error("{kind} backup failed at \"{step}\"")]
pub struct BackupFailure {
    pub kind: BackupKind,
    pub step: &'static str,
    /// Boxed: the error carries paths and causes, and results stay small.
    #[source]
    pub error: Box<Error>,
}

impl BackupFailure {
    pub fn new(kind: BackupKind, step: &'static str, error: Error) -> Self {
        BackupFailure {
            kind,
            step,
            error: Box::new(error),
        }
    }
}

pub fn catalog_for(config: &Config) -> Catalog {
    Catalog::new(
        &config.paths.backup_dir,
        config.backup.file_mode.0,
        config.backup.dir_mode.0,
    )
    .with_lock_wait(config.lock_wait)
}

/// Take a backup: the whole protocol, lock included. Whatever step fails — the source
/// check and the lock included — the outcome goes the same way: the `on_error` hook runs
/// and `backup.log` and the state file record it.
pub fn create_backup(job: &BackupJob) -> std::result::Result<BackupReport, BackupFailure> {
    let catalog = catalog_for(job.config);
    // The lock is held until the outcome is recorded, so hooks and journal see it.
    let (mut result, _lock) = match check_and_lock(job, &catalog) {
        Ok(lock) => (with_before_hook(job, &catalog, &lock), Some(lock)),
        Err(f) => (Err(f), None),
    };
    run_outcome_hook(job, &mut result);
    record_outcome(&catalog, job.kind.as_str(), &result);
    result
}

fn check_and_lock(
    job: &BackupJob,
    catalog: &Catalog,
) -> std::result::Result<BackupDirLock, BackupFailure> {
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    // The backup directory first (the lock would make it anyway): a first run that fails
    // on its sources is then recorded in `backup.log` and the state like any other.
    catalog
        .prepare()
        .map_err(fail("prepare the backup directory"))?;
    job.config
        .check_sources(job.kind)
        .map_err(fail("check sources"))?;
    catalog
        .lock(&format!("create {}", job.kind))
        .map_err(fail("lock the backup directory"))
}

fn kind_env(job: &BackupJob) -> (&'static str, String) {
    ("VERTEX_BACKUP_TYPE", job.kind.as_str().to_string())
}

fn with_before_hook(
    job: &BackupJob,
    catalog: &Catalog,
    lock: &BackupDirLock,
) -> std::result::Result<BackupReport, BackupFailure> {
    let hooks = &job.config.hooks;
    let fail = |e| BackupFailure::new(job.kind, "before hook", e);
    if let Some(cmd) = &hooks.before {
        let ran = run_hook("before", cmd, &[kind_env(job)], hooks.timeout.0);
        // Ctrl-C on a terminal reaches the hook too: it died of the cancellation, so
        // the failure is the cancellation, not the hook.
        job.cancel.check().map_err(fail)?;
        ran.map_err(fail)?;
    }
    create_backup_locked(job, catalog, lock)
}

/// `after` on success (its failure is a warning), `on_error` on failure.
fn run_outcome_hook(
    job: &BackupJob,
    result: &mut std::result::Result<BackupReport, BackupFailure>,
) {
    let hooks = &job.config.hooks;
    match (result, &hooks.after, &hooks.on_error) {
        (Ok(report), Some(cmd), _) => {
            let env = [
                kind_env(job),
                ("VERTEX_BACKUP_FILE", report.path.display().to_string()),
            ];
            if let Err(e) = run_hook("after", cmd, &env, hooks.timeout.0) {
                report.metadata.warnings.push(e.to_string());
            }
        }
        (Err(f), _, Some(cmd)) => {
            let env = [
                kind_env(job),
                ("VERTEX_BACKUP_STEP", f.step.to_string()),
                ("VERTEX_BACKUP_ERROR", crate::error_chain(&f.error)),
            ];
            if let Err(e) = run_hook("on_error", cmd, &env, hooks.timeout.0) {
                tracing::warn!("{e}");
            }
        }
        _ => {}
    }
}

/// Take a backup while the caller already holds the lock (a restore's safety copy).
pub fn create_backup_locked(
    job: &BackupJob,
    catalog: &Catalog,
    _lock: &BackupDirLock,
) -> std::result::Result<BackupReport, BackupFailure> {
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    let started = Instant::now();
    let created_at = Local::now();
    // A run that died with the app stopped left it so: started before anything else.
    let recovered = job.app.recover();
    let cleaned = catalog.clean_leftovers().map_err(fail("clean leftovers"))?;
    let index = crate::engine::snapshot::upkeep::upkeep_now(catalog);
    // The tree's size is measured once: for the space check and the progress totals.
    let tree = check_free_space(job, catalog).map_err(fail("check free space"))?;
    let ts = catalog.allocate_timestamp(job.kind, created_at);
    let mut report = match job.kind {
        BackupKind::Database => {
            let pending = database_part(job, catalog, &ts, None, created_at)?;
            commit_part(catalog, pending).map_err(fail("write metadata"))?
        }
        BackupKind::Storage => {
            let (pending, stopped) = storage_part(job, catalog, &ts, None, created_at, tree)?;
            let mut report = commit_part(catalog, pending).map_err(fail("write metadata"))?;
            report.stopped = stopped;
            report
        }
        BackupKind::Full => full_backup(job, catalog, &ts, created_at, started, tree)?,
    };
    report.cleaned = cleaned;
    report.metadata.warnings.extend(recovered);
    report.metadata.warnings.extend(index.warnings);
    report.free_after = crate::sys::available_space(catalog.root()).ok();
    Ok(report)
}

/// Refuse to start without room for the estimate plus `min_free_space`. Returns the
/// storage tree's (bytes, files) when the backup includes it, for the progress totals.
fn check_free_space(job: &BackupJob, catalog: &Catalog) -> Result<(u64, u64)> {
    let cfg = job.config;
    // A storage snapshot stores only what changed, which no walk beforehand can tell: it
    // checks the free space before each pack it starts instead (see `SnapshotOptions::
    // reserve`), so the tree is not walked twice; only room for a first pack is asked here.
    let snapshot = cfg.backup.storage_format == StorageFormat::Snapshot;
    let tree = match job.kind {
        BackupKind::Database => (0, 0),
        BackupKind::Storage | BackupKind::Full if snapshot => (0, 0),
        BackupKind::Storage | BackupKind::Full => {
            walk::estimate(&cfg.paths.storage, &cfg.backup.exclude)?
        }
    };
    let storage_needed = if snapshot {
        snapshot::FIRST_PACK_ROOM
    } else {
        tree.0
    };
    let needed = match job.kind {
        BackupKind::Storage => storage_needed,
        BackupKind::Database | BackupKind::Full => {
            database::estimate_size(&cfg.paths.database) + storage_needed
        }
    };
    let available =
        crate::sys::available_space(catalog.root()).ctx("measure free space on", catalog.root())?;
    let reserve = cfg.backup.min_free_space.0;
    if available < needed.saturating_add(reserve) {
        return Err(Error::NoSpace {
            dir: catalog.root().to_path_buf(),
            needed,
            reserve,
            available,
        });
    }
    Ok(tree)
}

/// A part whose data is written (under its `.partial` name) and whose metadata is ready.
pub(crate) struct PendingPart {
    pub(crate) data: PartialFile,
    pub(crate) metadata: BackupMetadata,
}

fn base_metadata(
    kind: BackupKind,
    ts: &str,
    original: &std::path::Path,
    data: &std::path::Path,
    created: DateTime<Local>,
) -> BackupMetadata {
    BackupMetadata {
        timestamp: ts.to_string(),
        kind,
        original_path: original.display().to_string(),
        backup_path: data.display().to_string(),
        file_size: 0,
        checksum: String::new(),
        created_at: created.to_rfc3339_opts(SecondsFormat::Secs, false),
        file_count: 0,
        format_version: FORMAT_VERSION,
        // A database and a manifest are stored plain; a storage part sets its compression.
        format: Some(Format::of_kind(kind, Compression::None)),
        checksum_algorithm: "sha256".into(),
        compression: None,
        duration_ms: 0,
        uncompressed_size: 0,
        content_size: 0,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        hostname: crate::sys::hostname(),
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

fn database_part(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    part_of: Option<&str>,
    created: DateTime<Local>,
) -> std::result::Result<PendingPart, BackupFailure> {
    if job.config.backup.database_format == DatabaseFormat::Snapshot {
        return snapshot::database_snapshot_part(job, catalog, ts, part_of, created);
    }
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    let cfg = job.config;
    let started = Instant::now();
    let src_path = &cfg.paths.database;
    let busy = cfg.backup.busy_timeout.0;
    let source = open_database(job)?;
    let recipients = cfg.local_recipients();
    // The SQLite copy: the data file itself or, encrypted, a private plaintext file
    // that only lives until it is sealed.
    let plain_path = catalog.data_path(BackupKind::Database, ts, "db");
    let plain_mode = match recipients {
        Some(_) => 0o600,
        None => catalog.file_mode(),
    };
    let (partial, file) =
        PartialFile::create(&plain_path, plain_mode).map_err(fail("copy database"))?;
    drop(file);
    database::copy_database(&source, src_path, partial.temp_path(), busy)
        .map_err(fail("copy database"))?;
    drop(source);
    job.cancel.check().map_err(fail("copy database"))?;
    // The check, the fsync and the hash (or the sealing) of the copy run side by side.
    let (integrity, proven) = database::integrity_check_alongside(
        partial.temp_path(),
        cfg.backup.integrity_check,
        || match recipients {
            Some(r) => {
                let final_path = catalog.data_path(BackupKind::Database, ts, "db.age");
                seal_database(&partial, &final_path, catalog, r, &job.cancel)
                    .map(|(sealed, checksum, size, plain)| (Some(sealed), checksum, size, plain))
                    .map_err(fail("encrypt database"))
            }
            None => {
                let (synced, digest) = sync_and_hash(partial.temp_path());
                synced.map_err(fail("copy database"))?;
                let (checksum, size) = digest.map_err(fail("checksum"))?;
                Ok((None, checksum, size, size))
            }
        },
    );
    let integrity = integrity.map_err(fail("integrity check"))?;
    let (sealed, checksum, size, plain_size) = proven?;
    let data = match sealed {
        // The plaintext copy goes as soon as the sealed one is on disk.
        Some(sealed) => {
            drop(partial);
            sealed
        }
        None => partial,
    };
    let final_path = data.final_path().to_path_buf();
    job.progress.advance(size, 1);
    job.progress.end();
    let mut m = base_metadata(BackupKind::Database, ts, src_path, &final_path, created);
    m.file_size = size;
    m.uncompressed_size = plain_size;
    m.checksum = checksum;
    m.file_count = 1;
    if let Some(r) = recipients {
        m.format = Some(Format::sqlite().encrypted(r.fingerprints()));
    }
    m.compression = Some("none".into());
    m.integrity_check = Some(integrity);
    m.part_of = part_of.map(str::to_string);
    m.reason = job.reason.clone();
    m.duration_ms = started.elapsed().as_millis() as u64;
    Ok(PendingPart { data, metadata: m })
}

/// The live database opened for copying (progress begun). A restore's safety copy takes
/// whatever is there (even an empty file, which is what a restore may be about to
/// repair); a backup by plan refuses an empty source.
fn open_database(job: &BackupJob) -> std::result::Result<rusqlite::Connection, BackupFailure> {
    let fail = |error| BackupFailure::new(job.kind, "open database", error);
    let src_path = &job.config.paths.database;
    job.progress.begin(
        "copy database",
        Some(database::estimate_size(src_path)),
        Some(1),
    );
    let source = database::open_source(src_path, job.config.backup.busy_timeout.0).map_err(fail)?;
    if job.reason.is_none() {
        database::refuse_empty(&source, src_path).map_err(fail)?;
    }
    Ok(source)
}

/// fsync the finished copy at `path` on one thread while SHA-256 reads it on this one
/// (the pages are still in the cache: the hash does not wait for the disk). Returns the
/// fsync's result and the digest's.
fn sync_and_hash(path: &std::path::Path) -> (Result<()>, Result<(String, u64)>) {
    let fsync = || {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.sync_all())
            .ctx("fsync", path)
    };
    std::thread::scope(|scope| {
        let synced = std::thread::Builder::new()
            .name("fsync".into())
            .spawn_scoped(scope, fsync);
        let digest = sha256_file(path);
        let synced = match synced {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::io(
                    "fsync",
                    path,
                    std::io::Error::other("the fsync thread panicked"),
                ))
            }),
            Err(_) => fsync(),
        };
        (synced, digest)
    })
}

/// Stream the plaintext copy at `plain` through age → SHA-256 → `final_path.partial`,
/// fsynced. Returns the sealed file, its checksum and size, and the plaintext's size.
fn seal_database(
    plain: &PartialFile,
    final_path: &std::path::Path,
    catalog: &Catalog,
    recipients: &crate::encryption::Recipients,
    cancel: &Cancel,
) -> Result<(PartialFile, String, u64, u64)> {
    let source = plain.temp_path();
    let input = std::fs::File::open(source).ctx("open", source)?;
    let plain_size = input.metadata().ctx("stat", source)?.len();
    let (sealed, out) = PartialFile::create(final_path, catalog.file_mode())?;
    let failed = |e| {
        if cancel.is_cancelled() {
            Error::Cancelled
        } else {
            Error::io("encrypt the database copy into", sealed.temp_path(), e)
        }
    };
    let hashed = HashingWriter::new(ArchiveFile::new(out, cancel.clone()));
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let hashed = seal_stream(&mut reader, hashed, recipients).map_err(failed)?;
    let (sink, checksum, size) = hashed.finish();
    let file = sink.into_file().map_err(failed)?;
    sealed.sync(&file)?;
    cancel.check()?;
    Ok((sealed, checksum, size, plain_size))
}

/// The storage part, read while the app is stopped (when something is to be), which is
/// started again as soon as the files are read: before the part is committed, and whether
/// or not reading them worked. Returns the part and the names of what was stopped.
fn storage_part(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    part_of: Option<&str>,
    created: DateTime<Local>,
    tree: (u64, u64),
) -> std::result::Result<(PendingPart, Vec<String>), BackupFailure> {
    let stopped = job
        .app
        .stop(StopFor::Backup(job.kind))
        .map_err(|e| BackupFailure::new(job.kind, "stop containers", e))?;
    let read = read_storage(job, catalog, ts, part_of, created, tree);
    let started = job.app.start();
    let mut part = read?;
    if let Err(e) = started {
        part.metadata.warnings.push(format!(
            "the app was not started again after its files were read: {}",
            crate::error_chain(&e)
        ));
    }
    Ok((part, stopped))
}

fn read_storage(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    part_of: Option<&str>,
    created: DateTime<Local>,
    (total_bytes, total_files): (u64, u64),
) -> std::result::Result<PendingPart, BackupFailure> {
    if job.config.backup.storage_format == StorageFormat::Snapshot {
        let tree = (total_bytes, total_files);
        return snapshot::storage_snapshot_part(job, catalog, ts, part_of, created, tree);
    }
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    let cfg = job.config;
    let started = Instant::now();
    let compression = cfg.backup.compression;
    let recipients = cfg.local_recipients();
    let extension = match recipients {
        Some(_) => format!("{}.age", compression.extension()),
        None => compression.extension().to_string(),
    };
    let final_path = catalog.data_path(BackupKind::Storage, ts, &extension);
    job.progress
        .begin("archive storage", Some(total_bytes), Some(total_files));
    let (partial, file) =
        PartialFile::create(&final_path, catalog.file_mode()).map_err(fail("write archive"))?;
    let opts = ArchiveOptions {
        compression,
        level: cfg.backup.compression_level,
        threads: cfg.compressor_threads(),
        exclude: cfg.backup.exclude.clone(),
        precompressed: cfg.backup.precompressed.clone(),
        recipients: recipients.cloned(),
    };
    let (summary, file) = storage::write_archive(
        &cfg.paths.storage,
        file,
        partial.temp_path(),
        &opts,
        job.progress,
        &job.cancel,
    )
    .map_err(fail("write archive"))?;
    partial.sync(&file).map_err(fail("write archive"))?;
    job.cancel.check().map_err(fail("write archive"))?;
    job.progress.end();
    let mut m = base_metadata(
        BackupKind::Storage,
        ts,
        &cfg.paths.storage,
        &final_path,
        created,
    );
    m.file_size = summary.compressed_size;
    m.uncompressed_size = summary.uncompressed_size;
    m.content_size = summary.content_bytes;
    m.checksum = summary.checksum;
    m.file_count = summary.file_count;
    m.compression = Some(compression.name().into());
    m.format = Some(match recipients {
        Some(r) => Format::archive(compression).encrypted(r.fingerprints()),
        None => Format::archive(compression),
    });
    m.warnings = summary.warnings;
    m.part_of = part_of.map(str::to_string);
    m.reason = job.reason.clone();
    m.duration_ms = started.elapsed().as_millis() as u64;
    Ok(PendingPart {
        data: partial,
        metadata: m,
    })
}

/// Land a part: metadata written and fsynced under its `.partial` name first, then the
/// data renamed into place, then the metadata. A crash between the renames leaves data
/// plus `X.json.partial`, which cleaning recognises as ours and removes.
pub(crate) fn commit_part(catalog: &Catalog, pending: PendingPart) -> Result<BackupReport> {
    let m = pending.metadata;
    let snapshot = m.format.as_ref().is_some_and(Format::is_snapshot);
    let (meta_path, prefix) = match m.kind.snapshot_prefix().filter(|_| snapshot) {
        Some(prefix) => (catalog.snapshot_meta_path(m.kind, &m.timestamp), prefix),
        None => (catalog.meta_path(m.kind, &m.timestamp), m.kind.prefix()),
    };
    // A metadata file that does not serialize is an error, never an empty file.
    let json = serde_json::to_vec_pretty(&m)
        .map_err(|e| Error::Internal(format!("serialize the metadata: {e}")))?;
    let meta_partial = write_partial(&meta_path, &json, catalog.file_mode())?;
    let data_path = pending.data.rename()?;
    meta_partial.rename()?;
    Ok(BackupReport {
        kind: m.kind,
        stem: format!("{prefix}{}", m.timestamp),
        path: data_path,
        metadata: m,
        parts: Vec::new(),
        cleaned: Vec::new(),
        free_after: None,
        stopped: Vec::new(),
    })
}

fn full_backup(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    created: DateTime<Local>,
    started: Instant,
    tree: (u64, u64),
) -> std::result::Result<BackupReport, BackupFailure> {
    let stem = format!("{}{ts}", BackupKind::Full.prefix());
    let fail = |step| move |error| BackupFailure::new(BackupKind::Full, step, error);
    // Both parts are written before either lands, so a failure in the second leaves no
    // orphaned first part.
    let db = database_part(job, catalog, ts, Some(&stem), created)?;
    let (st, stopped) = storage_part(job, catalog, ts, Some(&stem), created, tree)?;
    let db = commit_part(catalog, db).map_err(fail("write metadata"))?;
    let st = match commit_part(catalog, st) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(report_meta_path(catalog, &db));
            let _ = std::fs::remove_file(&db.path);
            return Err(fail("write metadata")(e));
        }
    };
    let parts: Vec<PartRef> = [&db, &st].iter().map(|r| r.part_ref()).collect();
    let manifest_path = catalog.meta_path(BackupKind::Full, ts);
    let mut m = base_metadata(
        BackupKind::Full,
        ts,
        &job.config.paths.backup_dir,
        &manifest_path,
        created,
    );
    m.original_path = format!(
        "{} + {}",
        job.config.paths.database.display(),
        job.config.paths.storage.display()
    );
    m.file_size = db.metadata.file_size + st.metadata.file_size;
    m.uncompressed_size = db.metadata.uncompressed_size + st.metadata.uncompressed_size;
    m.content_size = st.metadata.content_size;
    m.file_count = db.metadata.file_count + st.metadata.file_count;
    m.checksum = parts_checksum(&parts);
    m.compression = st.metadata.compression.clone();
    m.warnings = st.metadata.warnings.clone();
    m.integrity_check = db.metadata.integrity_check.clone();
    m.parts = parts;
    m.reason = job.reason.clone();
    m.duration_ms = started.elapsed().as_millis() as u64;
    let json = serde_json::to_vec_pretty(&m)
        .map_err(|e| Error::Internal(format!("serialize the manifest: {e}")))
        .and_then(|json| write_atomic(&manifest_path, &json, catalog.file_mode()));
    if let Err(e) = json {
        for r in [&db, &st] {
            let _ = std::fs::remove_file(report_meta_path(catalog, r));
            let _ = std::fs::remove_file(&r.path);
        }
        return Err(fail("write manifest")(e));
    }
    Ok(BackupReport {
        kind: BackupKind::Full,
        stem,
        path: manifest_path,
        metadata: m,
        parts: vec![db, st],
        cleaned: Vec::new(),
        free_after: None,
        stopped,
    })
}

/// The metadata file of a part that landed (an archive's or a snapshot's name).
fn report_meta_path(catalog: &Catalog, r: &BackupReport) -> PathBuf {
    catalog.kind_dir(r.kind).join(format!("{}.json", r.stem))
}

/// The checksum of a full backup: SHA-256 over its parts' names and checksums, one
/// `NAME  SHA256` line each (sha256sum's format), so a changed part changes it.
pub fn parts_checksum(parts: &[PartRef]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(format!("{}  {}\n", p.checksum, p.file_name).as_bytes());
    }
    hex::encode(h.finalize())
}

/// Journal the outcome: `backup.log` and the state file (under the lock when we got it;
/// the state file has its own update lock for when we did not).
pub fn record_outcome(
    catalog: &Catalog,
    key: &str,
    result: &std::result::Result<BackupReport, BackupFailure>,
) {
    match result {
        Ok(r) => {
            let warnings = r.warnings();
            let line = format!(
                "create {key}: Backup completed successfully: {} ({}, {}, {}){}",
                r.path.display(),
                format_bytes(r.metadata.file_size),
                crate::units::plural(r.metadata.file_count, "file"),
                format_duration(std::time::Duration::from_millis(r.metadata.duration_ms)),
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warnings", warnings.len())
                }
            );
            let outcome = Outcome {
                backup: Some(r.stem.clone()),
                duration_ms: r.metadata.duration_ms,
                ..Default::default()
            };
            catalog.journal(key, true, &line, outcome);
            let log = catalog.log();
            for w in &warnings {
                log.warn(&format!("create {key}: {w}"));
            }
        }
        Err(f) => {
            let chain = crate::error_chain(&f.error);
            let line = format!("create {key}: failed at \"{}\": {chain}", f.step);
            let outcome = Outcome {
                step: Some(f.step.to_string()),
                error: Some(chain),
                ..Default::default()
            };
            catalog.journal(key, false, &line, outcome);
        }
    }
}
