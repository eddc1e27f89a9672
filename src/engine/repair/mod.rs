//! `repair`: make a damaged snapshot store consistent again, losing nothing that is still
//! there, and saying exactly what is gone.
//!
//! 1. Every pack a kept snapshot lists is checked: present at its recorded size (and with
//!    `--read-data` read once and checked against its SHA-256). A pack that fails is
//!    *suspect*: its chunks are then read one by one and kept where they check.
//! 2. Every snapshot whose entry list points at data that is gone is mended
//!    ([`crate::engine::snapshot::mend`]): a chunk found in another good pack (its trailer
//!    or the index names it) is pointed there; a file with a chunk found nowhere is left
//!    out and named. The mended snapshot is written under a new name in its original's
//!    second (`…_N`, so retention treats it as the original), a full backup whole (its
//!    manifest and every member), committed as any backup; then the original's metadata
//!    and entry list move to `damaged/NAME/` (kept for the operator, never listed). The
//!    next backup reads the lost files again (its parent no longer has them).
//! 3. The index is written anew: from the trailers of the good packs, and from the entry
//!    lists for packs that have none (format 1) or that this server cannot open (sealed,
//!    no `--identity`); the old index files go once the new ones are durable.
//!
//! Nothing here deletes a pack: packs no snapshot lists any more are the next cleaning's.
//! A crash at any point leaves either the original or its repaired copy listed (both,
//! between the commit and the setting aside: a later `repair` only sets the original
//! aside).

mod packs;
mod reindex;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Cancel;
use super::snapshot::ids::PackId;
use super::snapshot::index;
use super::snapshot::keys::{ChunkIds, Opening};
use super::snapshot::mend::{self, Mended, Relocations};
use super::snapshot::pack::{PackReader, PackWriter, WrittenPack};
use super::snapshot::tree::TreeReader;
use crate::catalog::{BackupEntry, Catalog, Listing, PartialFile};
use crate::encryption::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::kind::BackupKind;
use packs::{Health, PackState, Trailers, check_packs, is_sealed, live_packs, read_trailers};
use reindex::rebuild_index;

/// Where damaged originals are kept, under the backup directory.
pub const DAMAGED_DIR: &str = "damaged";

/// How `repair` runs.
pub struct RepairOptions<'a> {
    /// Say what would be done; change nothing.
    pub dry_run: bool,
    /// Read every pack and check its SHA-256 (default: presence and size).
    pub read_data: bool,
    /// The operator's identity: opens sealed packs (their trailers, their chunks).
    pub identity: Option<&'a Path>,
    /// `[encryption]`'s recipients for this backup directory: a mended encrypted entry
    /// list is sealed to them (and the store key), and only when the original was too.
    pub recipients: Option<&'a Recipients>,
}

/// A pack that is not as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct PackProblem {
    pub pack: String,
    pub problem: String,
}

/// What was done to one backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRepair {
    pub backup: String,
    /// The name it was written under (none: a dry run, or it could not be).
    pub repaired_as: Option<String>,
    /// Files left out: their data is gone.
    pub lost_files: Vec<String>,
    pub relocated_chunks: u64,
    /// Chunks copied out of a damaged pack (they still read back right) into a new one.
    pub salvaged_chunks: u64,
    /// Where the original's metadata and entry list now are.
    pub kept_in: Option<PathBuf>,
    pub error: Option<String>,
}

/// What the index was rebuilt from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexRebuild {
    pub from_trailers: usize,
    pub from_entry_lists: usize,
    /// Index files replaced.
    pub replaced_files: usize,
    /// Packs whose trailer is damaged (indexed from entry lists instead).
    pub damaged_trailers: Vec<PackProblem>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    /// "presence and size" or "every pack read".
    pub checked: String,
    pub packs_checked: usize,
    pub damaged_packs: Vec<PackProblem>,
    pub backups: Vec<BackupRepair>,
    pub index: IndexRebuild,
}

impl RepairReport {
    /// Files lost across every backup repaired.
    pub fn lost_files(&self) -> usize {
        self.backups.iter().map(|b| b.lost_files.len()).sum()
    }
    pub fn failed(&self) -> bool {
        self.backups.iter().any(|b| b.error.is_some())
    }
}

/// Check, mend and re-index the store of `catalog` (see the module's comment).
pub fn repair(catalog: &Catalog, opts: &RepairOptions, cancel: &Cancel) -> Result<RepairReport> {
    let _lock = catalog.lock("repair")?;
    if !opts.dry_run {
        catalog.clean_leftovers()?;
    }
    let root = catalog.root();
    let listing = catalog.list()?;
    let identity = match opts.identity {
        Some(p) => Some(Identities::load(p).map_err(|e| Error::decrypt(p, e))?),
        None => None,
    };
    let opening = Opening::new(opts.identity, root)?;
    let live = live_packs(&listing);
    let states = check_packs(root, &live, opts.read_data, cancel)?;
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        checked: if opts.read_data {
            "every pack read".into()
        } else {
            "presence and size".into()
        },
        packs_checked: states.len(),
        ..Default::default()
    };
    for (id, s) in &states {
        if let PackState::Missing(p) | PackState::Suspect(p) = s {
            report.damaged_packs.push(PackProblem {
                pack: id.clone(),
                problem: p.clone(),
            });
        }
    }
    let mut damaged_trailers = Vec::new();
    let trailers = read_trailers(
        root,
        &live,
        &states,
        identity.as_ref(),
        &mut damaged_trailers,
    );
    let ctx = Context {
        catalog,
        listing: &listing,
        opening: &opening,
        identity: identity.as_ref(),
        states: &states,
        trailers: &trailers,
        opts,
        relocations: Default::default(),
    };
    report.backups = ctx.repair_backups(cancel)?;
    report.index = rebuild_index(catalog, &opening, (&states, &trailers), opts.dry_run);
    report.index.damaged_trailers = damaged_trailers;
    let line = summary_line(&report);
    if !opts.dry_run {
        if report.failed() || report.lost_files() > 0 {
            catalog.log().warn(&line);
        } else {
            catalog.log().info(&line);
        }
    }
    Ok(report)
}

/// One line for backup.log.
fn summary_line(r: &RepairReport) -> String {
    let repaired = r.backups.iter().filter(|b| b.repaired_as.is_some()).count();
    format!(
        "repair: {} packs checked ({}), {} damaged; {} backups repaired, {} files lost; index from {} trailers and {} entry-list packs",
        r.packs_checked,
        r.checked,
        r.damaged_packs.len(),
        repaired,
        r.lost_files(),
        r.index.from_trailers,
        r.index.from_entry_lists
    )
}

/// What every backup's repair shares.
struct Context<'a> {
    catalog: &'a Catalog,
    listing: &'a Listing,
    opening: &'a Opening,
    identity: Option<&'a Identities>,
    states: &'a BTreeMap<String, PackState>,
    trailers: &'a Trailers,
    opts: &'a RepairOptions<'a>,
    /// Per index tag: where good copies of chunks lie (built when first needed).
    relocations: std::cell::RefCell<HashMap<String, std::rc::Rc<Relocations>>>,
}

use super::snapshot::unit::SnapshotUnit as Unit;

impl<'a> Context<'a> {
    fn units(&self) -> Vec<Unit<'a>> {
        // (A manifest whose members a killed repair already set aside has none left: it
        // is finished like the rest.)
        super::snapshot::unit::units(self.listing, &|b| self.already_repaired(b).is_some())
    }

    fn repair_backups(&self, cancel: &Cancel) -> Result<Vec<BackupRepair>> {
        let mut out = Vec::new();
        for unit in self.units() {
            cancel.check()?;
            if let Some(r) = self.repair_unit(&unit) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Repair one unit if it needs it (`None`: it does not).
    fn repair_unit(&self, unit: &Unit) -> Option<BackupRepair> {
        let mut r = BackupRepair {
            backup: listed_name(unit.head),
            repaired_as: None,
            lost_files: Vec::new(),
            relocated_chunks: 0,
            salvaged_chunks: 0,
            kept_in: None,
            error: None,
        };
        // Written already by a repair killed before it set the original aside: finish.
        if let Some(name) = self.already_repaired(unit.head) {
            match self.opts.dry_run {
                true => r.repaired_as = Some(name),
                false => match self.set_aside(unit) {
                    Ok(kept) => {
                        r.repaired_as = Some(name);
                        r.kept_in = Some(kept);
                    }
                    Err(e) => r.error = Some(crate::error_chain(&e)),
                },
            }
            return Some(r);
        }
        // Planned first, member by member, without writing.
        let mut plans = Vec::new();
        for m in &unit.members {
            match self.mend_member(m, None) {
                Ok((mended, _, _)) => plans.push(mended),
                Err(e) => {
                    r.error = Some(crate::error_chain(&e));
                    return Some(r);
                }
            }
        }
        if !plans.iter().any(Mended::changed) {
            return None;
        }
        // A database snapshot is one file: without it there is nothing left to keep.
        let db_lost = unit
            .members
            .iter()
            .zip(&plans)
            .any(|(m, p)| m.kind == BackupKind::Database && p.lost_anything());
        if db_lost {
            r.error = Some(
                "the data of its database file is gone: nothing of the database is left to keep; restore the database from an offsite copy or another backup".into(),
            );
            return Some(r);
        }
        for (m, plan) in unit.members.iter().zip(&plans) {
            r.lost_files
                .extend(plan.lost.iter().map(|p| member_path(m, p)));
            r.lost_files.extend(
                plan.lost_runs
                    .iter()
                    .map(|run| member_path(m, Path::new(&run.describe()))),
            );
            r.relocated_chunks += plan.relocated;
            r.salvaged_chunks += plan.salvaged;
        }
        if self.opts.dry_run {
            return Some(r);
        }
        let done = self.write_unit(unit, &plans);
        match done.and_then(|name| Ok((name, self.set_aside(unit)?))) {
            Ok((name, kept)) => {
                r.repaired_as = Some(name);
                r.kept_in = Some(kept);
            }
            Err(e) => r.error = Some(crate::error_chain(&e)),
        }
        Some(r)
    }

    /// A backup an earlier `repair` wrote from `original` (killed before it set the
    /// original aside).
    fn already_repaired(&self, original: &BackupEntry) -> Option<String> {
        self.listing
            .backups
            .iter()
            .find(|b| {
                b.metadata
                    .repaired
                    .as_ref()
                    .is_some_and(|n| n.from == listed_name(original))
            })
            .map(listed_name)
    }

    /// Mend member `m`'s entry list: planned only, or written into `out` (with the chunks
    /// salvaged into new packs, durable on return, which are returned too).
    fn mend_member(
        &self,
        m: &BackupEntry,
        out: Option<(&PartialFile, File, Option<&Recipients>)>,
    ) -> Result<(Mended, Option<File>, Vec<WrittenPack>)> {
        let tree = &m.data_path;
        let header = TreeReader::open(tree, self.opening)?.header().clone();
        let ids = ChunkIds::from_header(header.chunk_key.as_deref(), tree)?;
        let tag = index::tag_of(m, header.chunk_key.as_deref())?;
        let sealed = is_sealed(m);
        let recipients = index::sealed_to(m);
        let can_open = !sealed || self.identity.is_some();
        let salvage = match &out {
            Some(_) => Some(PackWriter::new(
                self.catalog.root(),
                self.catalog.file_mode(),
                self.catalog.dir_mode(),
                if sealed {
                    Some(self.matching_recipients(m)?.clone())
                } else {
                    None
                },
            )),
            None => None,
        };
        let mut health = Health {
            states: self.states,
            reader: PackReader::new(self.catalog.root(), ids, sealed, self.identity),
            undecidable: false,
            can_open,
            buf: Vec::new(),
            salvage,
            failed: None,
        };
        let relocations = self.relocations_for(&tag, &recipients, sealed);
        let (mended, file) = mend::mend(tree, self.opening, &mut health, &relocations, out)?;
        if let Some(e) = health.failed.take() {
            return Err(e);
        }
        let salvaged = match health.salvage.take() {
            Some(w) => w.finish()?,
            None => Vec::new(),
        };
        if health.undecidable {
            return Err(Error::verify(
                tree,
                "packs",
                "a pack it needs is damaged and encrypted: give --identity so each of its chunks can be checked and only the files really lost are left out",
            ));
        }
        Ok((mended, file, salvaged))
    }

    /// Good copies of chunks made as `tag`: from the trailers of good packs, and from the
    /// index for good packs without one.
    fn relocations_for(
        &self,
        tag: &str,
        recipients: &Option<Vec<String>>,
        sealed: bool,
    ) -> std::rc::Rc<Relocations> {
        if let Some(r) = self.relocations.borrow().get(tag) {
            return std::rc::Rc::clone(r);
        }
        let mut map = Relocations::new();
        let packs_of_tag: std::collections::HashSet<&str> = self
            .listing
            .backups
            .iter()
            .filter(|b| is_sealed(b) == sealed && index::sealed_to(b) == *recipients)
            .filter_map(|b| b.metadata.snapshot.as_ref())
            .flat_map(|s| s.packs.iter().map(|p| p.id.as_str()))
            .collect();
        for (id, chunks) in self.trailers {
            let Some(pack) = PackId::parse(id).filter(|_| packs_of_tag.contains(id.as_str()))
            else {
                continue;
            };
            for c in chunks.iter().flatten() {
                map.entry(c.id).or_insert((pack, *c));
            }
        }
        if let Ok(files) = index::files(self.catalog.root()) {
            for f in files {
                let _ = index::read(f.as_path(), self.opening, &mut |t| t == tag, &mut |p| {
                    if matches!(
                        self.states.get(&p.id.to_hex()),
                        Some(PackState::Good { .. })
                    ) {
                        for c in &p.chunks {
                            map.entry(c.id).or_insert((p.id, *c));
                        }
                    }
                });
            }
        }
        // Built once per tag and shared: a store's worth of chunks is not copied per
        // snapshot mended.
        let map = std::rc::Rc::new(map);
        self.relocations
            .borrow_mut()
            .insert(tag.to_string(), std::rc::Rc::clone(&map));
        map
    }
}

/// A backup's name as `list` prints it: its data file's (a full backup's manifest's).
fn listed_name(b: &BackupEntry) -> String {
    b.data_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| b.stem.clone())
}

/// How the report names a lost file: `MEMBER: path` for a full backup's member.
fn member_path(m: &BackupEntry, p: &Path) -> String {
    match m.part_of() {
        Some(_) => format!("{}: {}", m.kind.dir_name(), p.display()),
        None => p.display().to_string(),
    }
}
