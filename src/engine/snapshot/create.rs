//! Taking a snapshot: walk the storage tree (or take the checked database copy), and for
//! every file either take its chunks from the parent snapshot unread — size, mtime, ctime
//! and inode all unchanged — or read it once, cut it, hash each chunk, and send the chunks
//! the store lacks to the pack thread. The parent's entry list is walked alongside the
//! tree (both are in the walk's sorted order), so finding a file's previous version costs
//! nothing and holds nothing; the parent's chunk ids are loaded only when a file has to be
//! read, since only then can a chunk be found again.

use std::cmp::Ordering;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::chunker::{Chunker, Chunking, DATABASE_CHUNK, WHOLE_FILE_MAX};
use super::ids::PackId;
use super::keys::{ChunkIds, Opening, Sealing};
use super::pack::PackWriter;
use super::tree::{
    ChunkRef, Node, NodeKind, StoredTree, TREE_FORMAT, TREE_VERSION, TreeHeader, TreeReader,
};
use super::writer::{SnapshotStore, SnapshotWriter, Written};
use crate::catalog::{PackRef, PartialFile};
use crate::encryption::Recipients;
use crate::engine::walk::{EntryMeta, SourceKind, StorageSource};
use crate::engine::{Cancel, Progress};
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

/// zstd's level for already-compressed media (as in archives).
const PRECOMPRESSED_LEVEL: i32 = 1;

/// Where a snapshot goes and how it is made.
pub struct SnapshotOptions<'a> {
    /// The backup directory (the store is under it).
    pub root: &'a Path,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub level: i32,
    pub precompressed: &'a [String],
    pub exclude: &'a [String],
    /// The parent snapshot's entry list and the packs its metadata records.
    pub parent: Option<Parent<'a>>,
    /// Packs not to reuse anything from (listed by a snapshot that failed verification).
    pub suspect_packs: &'a std::collections::BTreeSet<String>,
    /// Encrypt packs and the entry list (`encrypt = "all"`).
    pub sealing: Option<&'a Sealing>,
    /// What opens the parent's entry list when it is encrypted (the store key).
    pub opening: &'a Opening,
    /// Free bytes to leave on the backup filesystem: no pack is started without room
    /// for it above this.
    pub reserve: u64,
}

impl SnapshotOptions<'_> {
    fn ids(&self) -> ChunkIds {
        self.sealing.map_or(ChunkIds::Sha256, |s| s.ids.clone())
    }

    /// The index tag of the chunks this snapshot can use and makes.
    fn index_tag(&self) -> String {
        let to = self.sealing.map(|s| s.packs.fingerprints());
        super::index::tag(&self.ids(), to.as_deref())
    }
}

/// The snapshot a new one is compared with.
pub struct Parent<'a> {
    pub tree: PathBuf,
    /// The entry list's SHA-256 as its metadata records it: a damaged one is not used.
    pub checksum: &'a str,
    pub packs: &'a [PackRef],
}

/// What a snapshot holds and what it cost.
#[derive(Debug, Default)]
pub struct SnapshotSummary {
    pub written: Written,
    /// Non-directory entries.
    pub file_count: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    pub unchanged_files: u64,
    pub read_files: u64,
    pub warnings: Vec<String>,
}

fn node_of(rel: &Path, meta: &EntryMeta, kind: NodeKind, target: Option<PathBuf>) -> Node {
    Node {
        path: rel.to_path_buf(),
        kind,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime: meta.mtime,
        mtime_ns: meta.mtime_nsec as u32,
        ctime: meta.ctime,
        ctime_ns: meta.ctime_nsec as u32,
        ino: meta.ino,
        size: if kind == NodeKind::File { meta.size } else { 0 },
        target,
        chunks: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// The parent's entry list, walked alongside the tree.
struct ParentWalk<'o> {
    reader: Option<TreeReader<StoredTree>>,
    next: Option<Node>,
    path: PathBuf,
    opening: &'o Opening,
    /// Its chunk ids were handed to the writer already.
    seeded: bool,
    /// Why it stopped being used part-way (it could not be read): the rest is read anew.
    problem: Option<String>,
    /// The parent's packs that are not in the store as its metadata records them (gone,
    /// or of another size): a chunk in one is never reused nor deduplicated against, and
    /// a file with data there is read again — damage never spreads to a new snapshot.
    damaged: std::collections::BTreeSet<PackId>,
    /// Files read again because their data was in a damaged pack (count, first paths).
    healed: (u64, Vec<PathBuf>),
    /// The store's index, seeded from with the parent: where to look, what tag its
    /// chunks must have, whether packs are sealed.
    store: (PathBuf, String, bool),
    /// Packs the index offered (present as recorded): what the metadata records of them.
    indexed: std::collections::HashMap<String, PackRef>,
    /// Why the index could not be used in full, if it could not.
    index_problems: Vec<String>,
    /// The parent's packs as its metadata records them, and which of those holding parts
    /// of its list were found as recorded (checksum and all).
    parent_packs: std::collections::HashMap<PackId, PackRef>,
    part_packs_good: std::collections::HashMap<PackId, bool>,
}

impl<'o> ParentWalk<'o> {
    /// The parent's entry list, when it can be read and its chunk ids are made as ours
    /// (else every file is read: a warning says why).
    fn open(opts: &SnapshotOptions<'o>, warnings: &mut Vec<String>) -> Result<Self> {
        let mut walk = ParentWalk {
            reader: None,
            next: None,
            path: PathBuf::new(),
            opening: opts.opening,
            seeded: false,
            problem: None,
            damaged: Default::default(),
            healed: (0, Vec::new()),
            store: (
                opts.root.to_path_buf(),
                opts.index_tag(),
                opts.sealing.is_some(),
            ),
            indexed: Default::default(),
            index_problems: Vec::new(),
            parent_packs: Default::default(),
            part_packs_good: Default::default(),
        };
        walk.damaged = opts
            .suspect_packs
            .iter()
            .filter_map(|p| PackId::parse(p))
            .collect();
        let Some(p) = &opts.parent else {
            return Ok(walk);
        };
        walk.damaged
            .extend(damaged_packs(opts.root, p.packs, opts.sealing.is_some()));
        walk.parent_packs = p
            .packs
            .iter()
            .filter_map(|r| Some((PackId::parse(&r.id)?, r.clone())))
            .collect();
        // A parent that cannot be trusted or read is no parent: every file is read (and
        // the backup still succeeds); only the warning says so.
        let opened = super::read::check_tree(&p.tree, Some(p.checksum))
            .and_then(|_| TreeReader::open(&p.tree, opts.opening))
            .and_then(|mut r| match r.next_node() {
                Ok(first) => Ok((r, first)),
                Err(e) => {
                    walk.note_failed_part(&r);
                    Err(e)
                }
            });
        let (reader, first) = match opened {
            Ok(o) => o,
            Err(e) => {
                warnings.push(format!(
                    "the previous snapshot {} cannot be used ({}): every file was read again",
                    p.tree.display(),
                    crate::error_chain(&e)
                ));
                return Ok(walk);
            }
        };
        if reader.header().chunk_key != opts.ids().key_hex() {
            return Ok(walk);
        }
        walk.next = first;
        walk.reader = Some(reader);
        walk.path = p.tree.clone();
        Ok(walk)
    }

    /// Whether `was` can stand for the file unread: unchanged, and every chunk of it in a
    /// pack the store holds as recorded. A file whose data is gone is read again, and
    /// counted as healed whether or not it also changed (or was marked to be read again):
    /// the damage is said every time it is met, not only when it would have been inherited.
    fn reusable(&mut self, was: &Node, meta: &EntryMeta) -> bool {
        if self.touches_damage(was) {
            self.healed.0 += 1;
            if self.healed.1.len() < 5 {
                self.healed.1.push(was.path.clone());
            }
            return false;
        }
        unchanged(was, meta)
    }

    /// Whether any chunk of `was` is in a damaged pack.
    fn touches_damage(&self, was: &Node) -> bool {
        was.chunks.iter().any(|c| self.damaged.contains(&c.pack))
    }

    /// What the run says of the damage it healed, if any.
    fn healed_warning(&self) -> Option<String> {
        let (count, first) = &self.healed;
        (*count > 0).then(|| {
            let names: Vec<String> = first.iter().map(|p| p.display().to_string()).collect();
            format!(
                "{count} file(s) whose data the previous snapshot kept in missing or damaged pack(s) (or in packs a snapshot that failed verification lists) were read again ({}{}); `vertex-backup verify --all` names the older snapshots affected",
                names.join(", "),
                if *count > first.len() as u64 { ", …" } else { "" }
            )
        })
    }

    /// Stop using the parent (it failed part-way): what it said so far stays valid, the
    /// rest of the tree is read anew.
    fn give_up(&mut self, e: &Error) {
        self.reader = None;
        self.next = None;
        self.problem.get_or_insert_with(|| {
            format!(
                "the previous snapshot {} could not be read to its end ({}): the files after that point were read again",
                self.path.display(),
                crate::error_chain(e)
            )
        });
    }

    /// The parent's entry at `rel`, if it has one (entries before it are passed over).
    fn find(&mut self, rel: &Path) -> Option<Node> {
        loop {
            let n = self.next.as_ref()?;
            match n.path.as_path().cmp(rel) {
                Ordering::Less => {}
                Ordering::Equal => {
                    let found = self.next.take();
                    self.advance();
                    return found;
                }
                Ordering::Greater => return None,
            }
            self.advance();
        }
    }

    fn advance(&mut self) {
        let next = match &mut self.reader {
            Some(r) => r.next_node(),
            None => Ok(None),
        };
        match next {
            Ok(n) => self.next = n,
            Err(e) => {
                if let Some(r) = self.reader.take() {
                    self.note_failed_part(&r);
                }
                self.give_up(&e)
            }
        }
    }

    /// A part of the parent's list that did not read back is damage: its pack is never
    /// deduplicated against (the index offers its chunks too), so the same entries are
    /// stored again rather than pointed at it.
    fn note_failed_part<R: std::io::Read>(&mut self, reader: &TreeReader<R>) {
        if let Some(part) = reader.failed_part() {
            self.damaged.insert(part.pack);
        }
    }

    /// Every chunk the index and the parent know, for the writer to find again (read once,
    /// lazily: only when a file has to be read). A parent that fails part-way seeds what
    /// it gave: chunks are only ever found again by their id, so a missing one is stored
    /// anew.
    fn seed(&mut self, writer: &mut SnapshotWriter) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        // The parent first: a part of it found damaged then keeps its pack out of what
        // the index seeds.
        self.seed_parent(writer);
        self.seed_index(writer);
    }

    fn seed_parent(&mut self, writer: &mut SnapshotWriter) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let mut nodes = match TreeReader::open(&self.path, self.opening) {
            Ok(r) => r,
            Err(e) => return self.give_up(&e),
        };
        loop {
            match nodes.next_node() {
                Ok(Some(node)) => node
                    .chunks
                    .iter()
                    .filter(|c| !self.damaged.contains(&c.pack))
                    .for_each(|c| writer.seed(c)),
                Ok(None) => break,
                Err(e) => {
                    self.note_failed_part(&nodes);
                    return self.give_up(&e);
                }
            }
        }
        self.seed_some_parts(nodes.take_parts(), writer);
    }

    /// The parts of the parent's entry list read since the last call, made known: the
    /// same entries make the same part, which is then only referenced.
    fn seed_parts(&mut self, writer: &mut SnapshotWriter) {
        let parts = match &mut self.reader {
            Some(r) => r.take_parts(),
            None => return,
        };
        if !parts.is_empty() {
            self.seed_some_parts(parts, writer);
        }
    }

    /// A part is reused only out of a pack whose checksum is as the parent recorded it:
    /// packs of parts are few and small, so each is hashed once per run, and a part
    /// that read back right out of a pack damaged elsewhere is stored again rather than
    /// pointed at there.
    fn seed_some_parts(&mut self, parts: Vec<ChunkRef>, writer: &mut SnapshotWriter) {
        for c in &parts {
            if !self.damaged.contains(&c.pack) && self.part_pack_good(c.pack) {
                writer.seed(c);
            }
        }
    }

    fn part_pack_good(&mut self, pack: PackId) -> bool {
        if let Some(good) = self.part_packs_good.get(&pack) {
            return *good;
        }
        let (root, _, sealed) = &self.store;
        let good = self.parent_packs.get(&pack).is_some_and(|r| {
            let path = root.join(crate::catalog::pack_name(&r.id, *sealed));
            crate::engine::hashing::sha256_file(&path)
                .is_ok_and(|(sha, size)| size == r.size && sha.eq_ignore_ascii_case(&r.checksum))
        });
        if !good {
            self.damaged.insert(pack);
        }
        self.part_packs_good.insert(pack, good);
        good
    }
}

impl ParentWalk<'_> {
    /// Every chunk of the index's packs that are in the store as recorded and made as this
    /// snapshot's (same chunk ids, same recipients). A damaged index file is passed over
    /// (what it said is still checked pack by pack), and the run warns.
    fn seed_index(&mut self, writer: &mut SnapshotWriter) {
        let (root, tag, sealed) = &self.store;
        let files = match super::index::files(root) {
            Ok(f) => f,
            Err(e) => {
                self.index_problems.push(crate::error_chain(&e));
                return;
            }
        };
        let mut present: std::collections::HashMap<String, bool> = Default::default();
        for file in files {
            let mut seed = |p: super::index::IndexedPack| {
                let id = p.id.to_hex();
                if self.damaged.contains(&p.id) || self.indexed.contains_key(&id) {
                    return;
                }
                let here = *present.entry(id.clone()).or_insert_with(|| {
                    let path = root.join(crate::catalog::pack_name(&id, *sealed));
                    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == p.size)
                });
                if !here {
                    return;
                }
                for c in &p.chunks {
                    writer.seed_packed(p.id, c);
                }
                self.indexed.insert(id, p.pack_ref());
            };
            let read = super::index::read(&file, self.opening, &mut |t| t == tag, &mut seed);
            if let Err(e) = read {
                self.index_problems.push(crate::error_chain(&e));
            }
        }
    }

    /// What the run says of an index it could not use in full.
    fn index_warning(&self) -> Option<String> {
        (!self.index_problems.is_empty()).then(|| {
            format!(
                "the store's index could not be used in full ({}): chunks it lists may be stored again; `vertex-backup repair` writes it anew",
                self.index_problems.join("; ")
            )
        })
    }
}

/// A file whose ctime is this close to the moment it was read may change again within
/// the same tick of the filesystem's coarse clock (the kernel stamps files at jiffy
/// granularity; NFS and FAT coarser) after it was read, leaving size and times as they
/// were: it is marked so the next snapshot reads it again rather than keep a torn copy
/// forever (git's "racy" entries).
const RACY: std::time::Duration = std::time::Duration::from_millis(20);

/// `ctime_ns` of a file that must be read again next time: no real time has it.
const READ_AGAIN: u32 = u32::MAX;

/// Whether `meta` (taken when the file was opened) is within [`RACY`] of now.
fn is_racy(meta: &EntryMeta) -> bool {
    let Some(from) = std::time::SystemTime::now()
        .checked_sub(RACY)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    else {
        return false;
    };
    let at = |secs: i64, nsec: i64| {
        (secs, nsec) >= (from.as_secs() as i64, i64::from(from.subsec_nanos()))
    };
    at(meta.ctime, meta.ctime_nsec) || at(meta.mtime, meta.mtime_nsec)
}

fn unchanged(was: &Node, meta: &EntryMeta) -> bool {
    was.kind == NodeKind::File
        && was.size == meta.size
        && was.mtime == meta.mtime
        && i64::from(was.mtime_ns) == meta.mtime_nsec
        && was.ctime == meta.ctime
        && i64::from(was.ctime_ns) == meta.ctime_nsec
        && was.ino == meta.ino
}

/// Read `data` once, cut it, and describe its chunks to `writer`. Returns the bytes read.
fn store_stream(
    data: &mut dyn Read,
    (chunking, ids): (Chunking, &ChunkIds),
    level: i32,
    buf: &mut Vec<u8>,
    writer: &mut SnapshotWriter,
    cancel: &Cancel,
) -> std::io::Result<u64> {
    let mut chunker = Chunker::new(data, chunking, buf);
    let mut total = 0;
    while let Some(chunk) = chunker.next_chunk()? {
        if cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        let id = ids.id(chunk);
        total += chunk.len() as u64;
        writer
            .chunk(id, chunk, level)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(total)
}

fn start_writer(
    opts: &SnapshotOptions,
    tree_partial: &PartialFile,
    tree_file: File,
    kind: BackupKind,
    root_name: PathBuf,
) -> Result<SnapshotWriter> {
    let header = TreeHeader {
        format: TREE_FORMAT.into(),
        version: TREE_VERSION,
        kind,
        root: root_name,
        chunk_key: opts.ids().key_hex(),
    };
    let pack_writer = |sealing: Option<&Recipients>| {
        PackWriter::new(opts.root, opts.file_mode, opts.dir_mode, sealing.cloned())
            .with_reserve(opts.reserve)
    };
    let trees = opts.sealing.map(|s| &s.trees);
    let store = SnapshotStore {
        packs: pack_writer(opts.sealing.map(|s| &s.packs)),
        // Parts are sealed as the entry list is: this server reads its parent's back.
        parts: pack_writer(trees),
        index: super::index::IndexTarget {
            root: opts.root.to_path_buf(),
            tag: opts.index_tag(),
            seal: opts.sealing.map(|s| s.store.clone()),
            modes: (opts.file_mode, opts.dir_mode),
        },
        ids: opts.ids(),
    };
    SnapshotWriter::start(tree_file, tree_partial, header, store, trees)
}

/// The parent's packs (`recorded`) the store does not hold as recorded: missing, or of
/// another size. One stat per pack, once per snapshot.
fn damaged_packs(
    root: &Path,
    recorded: &[PackRef],
    sealed: bool,
) -> std::collections::BTreeSet<PackId> {
    recorded
        .iter()
        .filter(|p| {
            let path = root.join(crate::catalog::pack_name(&p.id, sealed));
            !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == p.size)
        })
        .filter_map(|p| PackId::parse(&p.id))
        .collect()
}

/// Fill in the size and checksum of the packs taken from the parent or the index.
fn record_reused_packs(
    written: &mut Written,
    parent: Option<&Parent>,
    indexed: &std::collections::HashMap<String, PackRef>,
) -> Result<()> {
    let known = parent.map(|p| p.packs).unwrap_or_default();
    for pack in written.packs.iter_mut().filter(|p| p.checksum.is_empty()) {
        let found = known
            .iter()
            .find(|k| k.id == pack.id)
            .or_else(|| indexed.get(&pack.id));
        let from = found.ok_or_else(|| {
            Error::verify(
                parent.map(|p| p.tree.as_path()).unwrap_or(Path::new("")),
                "packs",
                format!(
                    "the parent snapshot references pack {} that its metadata does not list",
                    pack.id
                ),
            )
        })?;
        *pack = from.clone();
    }
    written.packs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(())
}

/// Snapshot the storage tree at `storage` into the entry list `tree_partial` (its file
/// `tree_file`) and the store.
pub fn snapshot_storage(
    storage: &Path,
    opts: &SnapshotOptions,
    tree_partial: &PartialFile,
    tree_file: File,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<(SnapshotSummary, File)> {
    let mut source = StorageSource::new(storage, opts.exclude, cancel.clone())?;
    let top = storage
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("storage"));
    let mut writer = start_writer(opts, tree_partial, tree_file, BackupKind::Storage, top)?;
    let mut summary = SnapshotSummary::default();
    let mut parent = ParentWalk::open(opts, &mut summary.warnings)?;
    let ids = opts.ids();
    let mut buf = Vec::new();
    let with_acls = super::super::xattrs::with_acls();
    let attributes = |path: &Path| {
        super::super::xattrs::read(path, with_acls)
            .map_err(|e| Error::io("read the extended attributes of", path, e))
    };
    loop {
        // The parent's entry for the file the walk asks about: unchanged, it is not opened.
        let mut previous: Option<Node> = None;
        let next = source.next_entry(&mut |rel, meta| {
            let found = parent.find(rel);
            let read = !found.as_ref().is_some_and(|was| parent.reusable(was, meta));
            previous = found;
            read
        });
        let Some(entry) = next else { break };
        let mut entry = entry?;
        cancel.check()?;
        let node = match &mut entry.kind {
            SourceKind::Unopened => {
                let was = previous.take().ok_or_else(|| {
                    Error::Internal("a file left unread has no previous version".into())
                })?;
                writer.reuse(&was.chunks)?;
                summary.unchanged_files += 1;
                summary.content_bytes += entry.meta.size;
                progress.advance(entry.meta.size, 1);
                // Unchanged ctime: unchanged attributes too (setting one changes it).
                Node {
                    xattrs: was.xattrs,
                    ..node_of(&entry.rel, &entry.meta, NodeKind::File, None)
                }
            }
            SourceKind::Dir => Node {
                xattrs: attributes(&entry.path)?,
                ..node_of(&entry.rel, &entry.meta, NodeKind::Dir, None)
            },
            SourceKind::Symlink { target } => node_of(
                &entry.rel,
                &entry.meta,
                NodeKind::Symlink,
                Some(target.clone()),
            ),
            SourceKind::HardLink { target } => node_of(
                &entry.rel,
                &entry.meta,
                NodeKind::Hardlink,
                Some(target.clone()),
            ),
            SourceKind::File(file) => {
                let mut node = node_of(&entry.rel, &entry.meta, NodeKind::File, None);
                if is_racy(&entry.meta) {
                    node.ctime_ns = READ_AGAIN;
                }
                // Unchanged by `lstat` but not by the open handle's `fstat` (it changed
                // in between): read it, as any changed file.
                match previous.take() {
                    Some(was) if unchanged(&was, &entry.meta) && !parent.touches_damage(&was) => {
                        writer.reuse(&was.chunks)?;
                        node.xattrs = was.xattrs;
                        summary.unchanged_files += 1;
                    }
                    _ => {
                        node.xattrs = attributes(&entry.path)?;
                        parent.seed(&mut writer);
                        let (chunking, level) = chunking_for(&entry.rel, &entry.meta, opts);
                        store_stream(file, (chunking, &ids), level, &mut buf, &mut writer, cancel)
                            .map_err(|e| {
                                if cancel.is_cancelled() {
                                    return Error::Cancelled;
                                }
                                match file.take_read_error() {
                                    Some(source) => Error::io("read", &entry.path, source),
                                    None => Error::io("store", &entry.path, e),
                                }
                            })?;
                        summary.read_files += 1;
                    }
                }
                summary.content_bytes += entry.meta.size;
                progress.advance(entry.meta.size, 1);
                node
            }
        };
        if node.kind != NodeKind::Dir {
            summary.file_count += 1;
        }
        parent.seed_parts(&mut writer);
        writer.node(node)?;
        source.finish(entry)?;
    }
    summary.warnings.extend(source.into_warnings());
    summary.warnings.extend(parent.problem.take());
    summary.warnings.extend(parent.healed_warning());
    summary.warnings.extend(parent.index_warning());
    let (file, mut written) = writer.finish()?;
    cancel.check()?;
    record_reused_packs(&mut written, opts.parent.as_ref(), &parent.indexed)?;
    summary.written = written;
    Ok((summary, file))
}

fn chunking_for(rel: &Path, meta: &EntryMeta, opts: &SnapshotOptions) -> (Chunking, i32) {
    let precompressed = rel
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| opts.precompressed.iter().any(|x| x.eq_ignore_ascii_case(e)));
    let level = if precompressed {
        PRECOMPRESSED_LEVEL
    } else {
        opts.level
    };
    let chunking = if meta.size <= WHOLE_FILE_MAX {
        Chunking::Fixed(WHOLE_FILE_MAX as usize)
    } else {
        Chunking::Content
    };
    (chunking, level)
}

/// Snapshot the database copy at `copy` (checked, private, complete): one file entry
/// named `name`, cut into fixed chunks so only the pages the app changed are stored.
pub fn snapshot_database(
    copy: &Path,
    name: &Path,
    opts: &SnapshotOptions,
    tree_partial: &PartialFile,
    tree_file: File,
    cancel: &Cancel,
) -> Result<(SnapshotSummary, File)> {
    let mut input = File::open(copy).ctx("open", copy)?;
    let meta = input.metadata().ctx("stat", copy)?;
    let mut writer = start_writer(
        opts,
        tree_partial,
        tree_file,
        BackupKind::Database,
        name.to_path_buf(),
    )?;
    let mut warnings = Vec::new();
    let mut parent = ParentWalk::open(opts, &mut warnings)?;
    parent.seed(&mut writer);
    warnings.extend(parent.problem.take());
    warnings.extend(parent.index_warning());
    let mut buf = Vec::new();
    let read = store_stream(
        &mut input,
        (Chunking::Fixed(DATABASE_CHUNK), &opts.ids()),
        opts.level,
        &mut buf,
        &mut writer,
        cancel,
    )
    .map_err(|e| {
        if cancel.is_cancelled() {
            Error::Cancelled
        } else {
            Error::io("read", copy, e)
        }
    })?;
    let entry_meta = EntryMeta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: meta_mtime(&meta),
        mtime_nsec: 0,
        ctime: 0,
        ctime_nsec: 0,
        ino: 0,
        dev: 0,
        size: read,
    };
    writer.node(node_of(name, &entry_meta, NodeKind::File, None))?;
    let (file, mut written) = writer.finish()?;
    cancel.check()?;
    record_reused_packs(&mut written, opts.parent.as_ref(), &parent.indexed)?;
    Ok((
        SnapshotSummary {
            written,
            file_count: 1,
            content_bytes: read,
            unchanged_files: 0,
            read_files: 1,
            warnings,
        },
        file,
    ))
}

fn meta_mtime(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
}
