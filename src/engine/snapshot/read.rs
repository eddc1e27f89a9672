//! Reading a snapshot: its entry list checked against the checksum its metadata records,
//! every entry judged as an archive's are (the same [`SafeEntry`] and [`EntryTree`]), and
//! each file's bytes streamed chunk by chunk out of the packs, every chunk checked against
//! its id. Any sink an archive feeds (verify's drain, restore's extractor, `--path`'s
//! selection, `ls`, export) reads a snapshot the same way, so each works on both.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::keys::{ChunkIds, Opening};
use super::pack::{ChunkError, PackReader};
use super::tree::{ChunkRef, Node, NodeKind, StoredTree, TreeReader};
use crate::engine::archive::{
    ArchiveStats, EntryKind, EntrySink, SafeEntry, link_stays_inside, safe_relative,
};
use crate::engine::entry_tree::EntryTree;
use crate::engine::hashing::sha256_file;
use crate::engine::{Cancel, Progress};
use crate::error::{Error, Result};

pub use super::tree::backup_dir_of;

/// An entry list open for reading, with what its chunks need.
pub struct Opened {
    pub opening: Opening,
    pub reader: TreeReader<StoredTree>,
    pub ids: ChunkIds,
    /// The snapshot is encrypted: its packs are age files.
    pub sealed: bool,
    pub root: PathBuf,
}

impl Opened {
    /// The entry list to read on, and a reader of this snapshot's chunks.
    pub fn split(&mut self) -> (&mut TreeReader<StoredTree>, PackReader<'_>) {
        let packs = PackReader::new(
            &self.root,
            self.ids.clone(),
            self.sealed,
            self.opening.operator.as_ref(),
        );
        (&mut self.reader, packs)
    }
}

/// Open the entry list at `tree` (decrypting it with `identity` or the store key).
pub fn open_tree(tree: &Path, identity: Option<&Path>) -> Result<Opened> {
    let root = backup_dir_of(tree);
    let opening = Opening::new(identity, &root)?;
    let reader = TreeReader::open(tree, &opening)?;
    let ids = ChunkIds::from_header(reader.header().chunk_key.as_deref(), tree)?;
    Ok(Opened {
        sealed: tree.extension().is_some_and(|e| e == "age"),
        opening,
        reader,
        ids,
        root,
    })
}

/// Check the entry list's checksum (when one is expected).
pub fn check_tree(tree: &Path, expected: Option<&str>) -> Result<(String, u64)> {
    let (checksum, size) = sha256_file(tree)?;
    if let Some(expected) = expected
        && !checksum.eq_ignore_ascii_case(expected)
    {
        return Err(Error::verify(
            tree,
            "checksum",
            format!("expected sha256 {expected}, entry list has {checksum}"),
        ));
    }
    Ok((checksum, size))
}

/// A node as the entry an archive of the same tree would hold (`top/<path>`), checked.
pub fn safe_entry(tree: &Path, top: &Path, node: &Node) -> Result<SafeEntry> {
    let unsafe_entry = |reason: String| Error::UnsafeEntry {
        archive: tree.to_path_buf(),
        entry: crate::names::shown(&node.path).to_string(),
        reason,
    };
    let path = safe_relative(&top.join(&node.path)).map_err(|r| unsafe_entry(r.into()))?;
    let target = || {
        node.target
            .clone()
            .ok_or_else(|| unsafe_entry("a link without a target".into()))
    };
    let kind = match node.kind {
        NodeKind::Dir => EntryKind::Dir,
        NodeKind::File => EntryKind::File,
        NodeKind::Symlink => {
            let t = target()?;
            if !link_stays_inside(&path, &t) {
                return Err(unsafe_entry(format!(
                    "it is a symlink to {} outside the restored tree",
                    crate::names::shown(&t)
                )));
            }
            EntryKind::Symlink(t)
        }
        NodeKind::Hardlink => {
            let t = safe_relative(&top.join(target()?)).map_err(|r| {
                unsafe_entry(format!("it is a hard link whose target is unsafe: {r}"))
            })?;
            EntryKind::Hardlink(t)
        }
    };
    Ok(SafeEntry {
        path,
        kind,
        mode: node.mode & 0o7777,
        // As a tar header stores it (a time before 1970 wraps, as the tar crate writes).
        mtime: node.mtime as u64,
        mtime_ns: node.mtime_ns.min(999_999_999),
        uid: u64::from(node.uid),
        gid: u64::from(node.gid),
        size: node.size,
        xattrs: node.xattrs.clone(),
    })
}

/// A file's bytes, chunk after chunk out of the packs.
pub struct ChunkStream<'a, 'k> {
    packs: &'a mut PackReader<'k>,
    chunks: std::slice::Iter<'a, ChunkRef>,
    buf: Vec<u8>,
    pos: usize,
    /// The first chunk that could not be read.
    pub error: Option<ChunkError>,
}

impl<'a, 'k> ChunkStream<'a, 'k> {
    /// `buf` is a buffer to reuse (its contents are dropped).
    pub fn new(packs: &'a mut PackReader<'k>, chunks: &'a [ChunkRef], mut buf: Vec<u8>) -> Self {
        buf.clear();
        ChunkStream {
            packs,
            chunks: chunks.iter(),
            buf,
            pos: 0,
            error: None,
        }
    }
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl Read for ChunkStream<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(chunk) = self.chunks.next() else {
                return Ok(0);
            };
            self.pos = 0;
            if let Err(e) = self.packs.read_chunk(chunk, &mut self.buf) {
                let msg = e.to_string();
                self.buf.clear();
                self.error = Some(e);
                return Err(io::Error::other(msg));
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Stream the snapshot whose entry list is `tree` through `sink`, as
/// [`crate::engine::archive::read_archive`] streams an archive.
pub fn read_snapshot(
    tree: &Path,
    (expected, identity): (Option<&str>, Option<&Path>),
    progress: &dyn Progress,
    cancel: &Cancel,
    sink: &mut dyn EntrySink,
) -> Result<ArchiveStats> {
    let (checksum, size) = check_tree(tree, expected)?;
    let mut opened = open_tree(tree, identity)?;
    let (reader, mut packs) = opened.split();
    let top = reader.header().root.clone();
    let mut judged = EntryTree::default();
    let mut stats = ArchiveStats {
        checksum,
        archive_bytes: size,
        ..ArchiveStats::default()
    };
    progress.begin("read snapshot", None, None);
    let mut buf = Vec::new();
    while let Some(node) = reader.next_node()? {
        cancel.check()?;
        let safe = safe_entry(tree, &top, &node)?;
        judged.admit(tree, &safe)?;
        stats.entries += 1;
        if safe.kind == EntryKind::File {
            stats.files += 1;
            stats.content_bytes += safe.size;
        }
        let mut data = ChunkStream::new(&mut packs, &node.chunks, std::mem::take(&mut buf));
        let result = sink.entry(&safe, &mut data);
        if let Some(e) = data.error.take() {
            let what = format!("{}: {e}", crate::names::shown(&node.path));
            return Err(e.into_error(tree, what));
        }
        result?;
        let read: u64 = node.chunks.iter().map(|c| u64::from(c.raw)).sum();
        if safe.kind == EntryKind::File && read != node.size {
            return Err(Error::verify(
                tree,
                "contents",
                format!(
                    "{}: its chunks hold {read} bytes, the entry says {}",
                    crate::names::shown(&node.path),
                    node.size
                ),
            ));
        }
        progress.advance(node.size, 1);
        buf = data.into_buffer();
    }
    stats.non_dir_entries = judged.non_dir_entries;
    progress.end();
    Ok(stats)
}

/// Write the single file a database snapshot holds into `out`; returns its size.
pub fn read_database_snapshot(
    tree: &Path,
    (expected, identity): (Option<&str>, Option<&Path>),
    out: &mut dyn io::Write,
) -> Result<u64> {
    check_tree(tree, expected)?;
    let mut opened = open_tree(tree, identity)?;
    let (reader, mut packs) = opened.split();
    let node = reader
        .next_node()?
        .filter(|n| n.kind == NodeKind::File)
        .ok_or_else(|| Error::verify(tree, "entry list readable", "it holds no database file"))?;
    if reader.next_node()?.is_some() {
        return Err(Error::verify(
            tree,
            "entry list readable",
            "a database snapshot holds one file, this one more",
        ));
    }
    let mut data = ChunkStream::new(&mut packs, &node.chunks, Vec::new());
    let copied = io::copy(&mut data, out);
    if let Some(e) = data.error.take() {
        let what = format!("the database: {e}");
        return Err(e.into_error(tree, what));
    }
    let copied = copied.map_err(|e| Error::io("write the database from", tree, e))?;
    if copied != node.size {
        return Err(Error::verify(
            tree,
            "contents",
            format!(
                "its chunks hold {copied} bytes, the entry says {}",
                node.size
            ),
        ));
    }
    Ok(copied)
}
