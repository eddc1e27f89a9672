//! The snapshot forms of a backup's parts (`[backup] storage_format` / `database_format =
//! "snapshot"`): the same protocol as an archive or a database copy — data durable under a
//! `.partial` name, then metadata — with the data being the entry list, whose chunks are
//! already durable in the store's packs when it is renamed into place. The parent is the
//! newest complete snapshot of the same kind: its unchanged files are not read again.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Local};

use super::{BackupFailure, BackupJob, PendingPart, base_metadata};
use crate::catalog::{BackupEntry, Catalog, Format, PartialFile, SnapshotInfo};
use crate::engine::database;
use crate::engine::snapshot::keys::{Opening, Sealing, StoreKey};
use crate::engine::snapshot::{self, Parent, SnapshotOptions, SnapshotSummary};
use crate::error::Result;
use crate::kind::BackupKind;

/// What a snapshot is encrypted with (`encrypt = "all"`) and what opens its parent.
struct Keys {
    sealing: Option<Sealing>,
    opening: Opening,
}

impl Keys {
    fn of(job: &BackupJob, catalog: &Catalog) -> Result<Keys> {
        let sealing = match job.config.local_recipients() {
            Some(r) => Some(Sealing::new(r, &StoreKey::load_or_create(catalog.root())?)?),
            None => None,
        };
        Ok(Keys {
            sealing,
            opening: Opening::new(None, catalog.root())?,
        })
    }

    /// The keys of a new snapshot of `kind` and the parent it is compared with.
    fn with_parent(
        job: &BackupJob,
        catalog: &Catalog,
        kind: BackupKind,
    ) -> std::result::Result<(Keys, Lineage), BackupFailure> {
        let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
        let keys = Keys::of(job, catalog).map_err(fail("open the store key"))?;
        let lineage = parent_of(catalog, kind, keys.fingerprints(job).as_deref())
            .map_err(fail("find the parent snapshot"))?;
        Ok((keys, lineage))
    }

    /// The fingerprints a snapshot made with these keys records (`None`: not encrypted).
    fn fingerprints(&self, job: &BackupJob) -> Option<Vec<String>> {
        self.format(job).encryption.map(|e| e.recipients)
    }

    /// The format a snapshot made with these keys records.
    fn format(&self, job: &BackupJob) -> Format {
        match job
            .config
            .local_recipients()
            .filter(|_| self.sealing.is_some())
        {
            Some(r) => Format::snapshot().encrypted(r.fingerprints()),
            None => Format::snapshot(),
        }
    }
}

/// What a new snapshot builds on: its parent, and the packs it must not trust.
struct Lineage {
    parent: Option<BackupEntry>,
    /// Packs listed by a snapshot whose last verification failed: any of them may be the
    /// bad one, so none is reused — files with data there are read again.
    suspect_packs: BTreeSet<String>,
}

/// The newest complete snapshot of `kind` encrypted as the new one will be — to the same
/// keys: reusing chunks sealed to a key since replaced would leave the new snapshot
/// needing the old key — to compare with.
fn parent_of(
    catalog: &Catalog,
    kind: BackupKind,
    recipients: Option<&[String]>,
) -> Result<Lineage> {
    let listing = catalog.list()?;
    // A snapshot whose last verification failed is no parent: its chunks may be bad.
    let verdicts = catalog.load_verdicts();
    let suspect_packs = listing
        .backups
        .iter()
        .filter(|b| verdicts.failed(&b.stem))
        .filter_map(|b| b.metadata.snapshot.as_ref())
        .flat_map(|s| s.packs.iter().map(|p| p.id.clone()))
        .collect();
    let parent = listing
        .of_kind(kind)
        .filter(|b| b.is_complete() && b.metadata.snapshot.is_some())
        .filter(|b| !verdicts.failed(&b.stem))
        .find(|b| {
            b.metadata.format().is_ok_and(|f| {
                let keys = f.encryption.as_ref().map(|e| e.recipients.as_slice());
                f.is_snapshot() && keys == recipients
            })
        })
        .cloned();
    Ok(Lineage {
        parent,
        suspect_packs,
    })
}

/// What a storage snapshot asks to be free before it starts (besides `min_free_space`):
/// room for its first pack and its entry list.
pub(super) const FIRST_PACK_ROOM: u64 = 64 << 20;

fn options<'a>(
    job: &'a BackupJob,
    catalog: &'a Catalog,
    lineage: &'a Lineage,
    keys: &'a Keys,
) -> SnapshotOptions<'a> {
    let cfg = job.config;
    let parent = lineage.parent.as_ref();
    SnapshotOptions {
        suspect_packs: &lineage.suspect_packs,
        sealing: keys.sealing.as_ref(),
        opening: &keys.opening,
        root: catalog.root(),
        file_mode: catalog.file_mode(),
        dir_mode: cfg.backup.dir_mode.0,
        level: cfg.backup.compression_level,
        precompressed: &cfg.backup.precompressed,
        exclude: &cfg.backup.exclude,
        reserve: cfg.backup.min_free_space.0,
        parent: parent.and_then(|p| {
            p.metadata.snapshot.as_ref().map(|info| Parent {
                tree: p.data_path.clone(),
                checksum: &p.metadata.checksum,
                packs: &info.packs,
            })
        }),
    }
}

/// The metadata of a snapshot part from what it wrote.
#[allow(clippy::too_many_arguments)]
fn snapshot_metadata(
    job: &BackupJob,
    kind: BackupKind,
    ts: &str,
    original: &Path,
    tree: &Path,
    created: DateTime<Local>,
    part_of: Option<&str>,
    parent: Option<&BackupEntry>,
    summary: SnapshotSummary,
    (started, format): (Instant, Format),
) -> crate::catalog::BackupMetadata {
    let mut m = base_metadata(kind, ts, original, tree, created);
    let w = summary.written;
    m.file_size = w.tree_size;
    m.checksum = w.tree_checksum;
    m.uncompressed_size = summary.content_bytes;
    if kind == BackupKind::Storage {
        m.content_size = summary.content_bytes;
    }
    m.file_count = summary.file_count;
    m.compression = Some("zstd".into());
    m.format = Some(format);
    m.warnings = summary.warnings;
    m.part_of = part_of.map(str::to_string);
    m.reason = job.reason.clone();
    m.snapshot = Some(SnapshotInfo {
        parent: parent.map(|p| p.stem.clone()),
        packs: w.packs,
        added_bytes: w.added_bytes,
        chunks: w.chunks,
        added_chunks: w.added_chunks,
        unchanged_files: summary.unchanged_files,
        read_files: summary.read_files,
        list_parts: w.parts_stored + w.parts_reused,
        added_list_parts: w.parts_stored,
    });
    m.duration_ms = started.elapsed().as_millis() as u64;
    m
}

pub(super) fn storage_snapshot_part(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    part_of: Option<&str>,
    created: DateTime<Local>,
    (total_bytes, total_files): (u64, u64),
) -> std::result::Result<PendingPart, BackupFailure> {
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    let cfg = job.config;
    let started = Instant::now();
    let (keys, lineage) = Keys::with_parent(job, catalog, BackupKind::Storage)?;
    let sealed = keys.sealing.is_some();
    let tree = catalog.snapshot_tree_path(BackupKind::Storage, ts, sealed);
    let totals = |n: u64| (n > 0).then_some(n);
    job.progress
        .begin("snapshot storage", totals(total_bytes), totals(total_files));
    let (partial, file) =
        PartialFile::create(&tree, catalog.file_mode()).map_err(fail("write snapshot"))?;
    let opts = options(job, catalog, &lineage, &keys);
    let (summary, file) = snapshot::snapshot_storage(
        &cfg.paths.storage,
        &opts,
        &partial,
        file,
        job.progress,
        &job.cancel,
    )
    .map_err(fail("write snapshot"))?;
    partial.sync(&file).map_err(fail("write snapshot"))?;
    job.cancel.check().map_err(fail("write snapshot"))?;
    job.progress.end();
    let metadata = snapshot_metadata(
        job,
        BackupKind::Storage,
        ts,
        &cfg.paths.storage,
        &tree,
        created,
        part_of,
        lineage.parent.as_ref(),
        summary,
        (started, keys.format(job)),
    );
    Ok(PendingPart {
        data: partial,
        metadata,
    })
}

/// A database snapshot: the SQLite backup-API copy into a private `.partial` file,
/// integrity-checked, then cut into chunks; the copy itself is deleted once the entry
/// list holds it.
pub(super) fn database_snapshot_part(
    job: &BackupJob,
    catalog: &Catalog,
    ts: &str,
    part_of: Option<&str>,
    created: DateTime<Local>,
) -> std::result::Result<PendingPart, BackupFailure> {
    let fail = |step| move |error| BackupFailure::new(job.kind, step, error);
    let cfg = job.config;
    let started = Instant::now();
    let src_path = &cfg.paths.database;
    let busy = cfg.backup.busy_timeout.0;
    let source = super::open_database(job)?;
    let (keys, lineage) = Keys::with_parent(job, catalog, BackupKind::Database)?;
    let sealed = keys.sealing.is_some();
    // The copy is ours alone (0600) and lives only until the snapshot holds it.
    let copy_path = catalog.data_path(BackupKind::Database, &format!("{ts}_copy"), "db");
    let (copy, file) = PartialFile::create(&copy_path, 0o600).map_err(fail("copy database"))?;
    drop(file);
    database::copy_database(&source, src_path, copy.temp_path(), busy)
        .map_err(fail("copy database"))?;
    drop(source);
    job.cancel.check().map_err(fail("copy database"))?;
    let tree = catalog.snapshot_tree_path(BackupKind::Database, ts, sealed);
    let (partial, file) =
        PartialFile::create(&tree, catalog.file_mode()).map_err(fail("write snapshot"))?;
    let opts = options(job, catalog, &lineage, &keys);
    let name = src_path
        .file_name()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "app_data.db".into());
    // The check and the chunking read the same fresh copy side by side.
    let (integrity, stored) =
        database::integrity_check_alongside(copy.temp_path(), cfg.backup.integrity_check, || {
            snapshot::snapshot_database(copy.temp_path(), &name, &opts, &partial, file, &job.cancel)
                .map_err(fail("write snapshot"))
        });
    let integrity = integrity.map_err(fail("integrity check"))?;
    let (summary, file) = stored?;
    drop(copy);
    partial.sync(&file).map_err(fail("write snapshot"))?;
    job.progress.advance(summary.content_bytes, 1);
    job.progress.end();
    let mut metadata = snapshot_metadata(
        job,
        BackupKind::Database,
        ts,
        src_path,
        &tree,
        created,
        part_of,
        lineage.parent.as_ref(),
        summary,
        (started, keys.format(job)),
    );
    metadata.integrity_check = Some(integrity);
    Ok(PendingPart {
        data: partial,
        metadata,
    })
}
