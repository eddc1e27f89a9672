//! A snapshot's entry list (its data file, `…_snapshot_TS.tree.zst`): one zstd stream of
//! JSON lines — a header, the entries in the walk's order (sorted, depth first, so the
//! next snapshot can walk its parent alongside the tree), and an end line with the count,
//! so a list cut short is never read as a complete one. A file's entry lists its chunks
//! with where each lies in the store, so reading needs no index.
//!
//! Version 2 stores the entries in **parts**: runs of entries cut at directory boundaries
//! (or, inside a large directory, where a hash of the name says, so a cut does not move
//! when a file is added), each part one chunk in the store's packs, named by its id like
//! any chunk. The list itself then holds one line per part; an unchanged directory makes
//! the same part again, which is found by its id and not stored twice — a snapshot in
//! which nothing changed stores no entry at all. An entry too large for a part (a
//! database with a very long chunk list) stays inline, as every entry of version 1 is.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::chunk_ref::{ChunkRef, ChunkRefError};
use super::keys::{ChunkIds, Opening};
use super::pack::PackReader;
use crate::engine::xattrs::Xattr;
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// The `format` of a tree's header line.
pub const TREE_FORMAT: &str = "vertex-backup-tree";
/// Version written by this build; readers accept it and every older one.
pub const TREE_VERSION: u32 = 2;
/// The first version whose entries may lie in parts.
const PARTS_VERSION: u32 = 2;

/// A part is cut before a directory (or a name whose hash says so) once it holds this
/// many bytes, and after any entry once it holds [`PART_MAX`].
const PART_MIN: usize = 8 << 10;
const PART_MAX: usize = 1 << 20;
/// Inside a directory, one name in this many ends a part (past [`PART_MIN`]).
const PART_CUT_ONE_IN: u64 = 32;
/// An entry whose line is longer than this stays inline rather than in a part.
const INLINE_OVER: usize = 256 << 10;
/// A list whose entries take no more than this stays inline whole (a few hundred
/// entries: parts would cost more in trailers and the index than they save).
const LIST_INLINE_MAX: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHeader {
    pub format: String,
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// The name entries are restored under (the storage directory's name, or the
    /// database file's), as an archive names its top directory.
    #[serde(with = "super::node_json::raw_path")]
    pub root: PathBuf,
    /// Encrypted snapshots: the HMAC key its chunk ids are made with (hex); absent, they
    /// are plain SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_key: Option<String>,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    /// Another name of a file listed earlier (`target`, relative to the root).
    Hardlink,
}

/// One entry: what `lstat` said when it was stored, and (files) its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Relative to the root; empty for the root itself.
    #[serde(with = "super::node_json::raw_path")]
    pub path: PathBuf,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub ctime: i64,
    pub ctime_ns: u32,
    pub ino: u64,
    pub size: u64,
    /// A symlink's target as stored, or a hard link's first name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::node_json::raw_path_opt"
    )]
    pub target: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    /// Its `user.*` attributes and POSIX ACLs ([`crate::engine::xattrs`]): `[name, value
    /// in base64]` pairs, checked (namespace, sizes) where they are parsed.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "super::node_json::stored_xattrs"
    )]
    pub xattrs: Vec<Xattr>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Line {
    Header(TreeHeader),
    Entry(Node),
    /// `entries` entries, one JSON line each, stored as `chunk` (version 2).
    Part {
        chunk: ChunkRef,
        entries: u64,
    },
    End {
        entries: u64,
    },
}

/// Where a writer puts the parts it cuts: the snapshot's packs (returning where the part
/// lies, stored now or found there already).
pub trait PartStore {
    fn store_part(&mut self, plain: &[u8]) -> Result<ChunkRef>;
}

/// Writes a tree; [`TreeWriter::finish`] adds the end line and returns the file.
pub struct TreeWriter<W: Write> {
    out: zstd::stream::write::Encoder<'static, BufWriter<W>>,
    entries: u64,
    line: Vec<u8>,
    /// The entries not yet stored: their lines, how many, and where in them a part is
    /// cut (byte offset, entries before it).
    part: Vec<u8>,
    part_entries: u64,
    cuts: Vec<(usize, u64)>,
    /// Nothing has been cut yet: the list may still end small enough to stay inline.
    held: bool,
}

/// FNV-1a of a name: where a part is cut inside a large directory. Any stable hash
/// would do; this one needs no key and is the same in every build.
fn name_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W, header: TreeHeader) -> io::Result<Self> {
        let mut out = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, out), 3)?;
        out.include_checksum(true)?;
        let mut w = TreeWriter {
            out,
            entries: 0,
            line: Vec::with_capacity(512),
            part: Vec::new(),
            part_entries: 0,
            cuts: Vec::new(),
            held: true,
        };
        w.write_line(&Line::Header(header))?;
        Ok(w)
    }

    fn write_line(&mut self, line: &Line) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    /// Add `node` inline (a version-1 list, or one written without a store).
    pub fn push(&mut self, node: Node) -> io::Result<()> {
        self.entries += 1;
        self.write_line(&Line::Entry(node))
    }

    /// Add `node` to the part being gathered, first storing that part in `store` when
    /// `node` begins a new one. (`path`: the list's file, for errors.)
    pub fn push_to_part(
        &mut self,
        node: Node,
        store: &mut dyn PartStore,
        path: &Path,
    ) -> Result<()> {
        let io = |e: io::Error| Error::io("write", path, e);
        let start = self.part.len();
        serde_json::to_writer(&mut self.part, &node).map_err(|e| io(e.into()))?;
        self.part.push(b'\n');
        if self.part.len() - start > INLINE_OVER {
            self.part.truncate(start);
            self.end_parts(store, path)?;
            return self.push(node).map_err(io);
        }
        // Where the part this entry would join began (a small list keeps its would-be
        // parts in one buffer until it is known to be worth cutting).
        let begun = self.cuts.last().map_or(0, |c| c.0);
        let size = start - begun;
        let boundary =
            node.kind == NodeKind::Dir || name_hash(&node.path).is_multiple_of(PART_CUT_ONE_IN);
        if size >= PART_MAX || (size >= PART_MIN && boundary) {
            self.cuts.push((start, self.part_entries));
        }
        self.part_entries += 1;
        self.entries += 1;
        if self.held && self.part.len() > LIST_INLINE_MAX {
            self.held = false;
        }
        if !self.held {
            self.store_cut_parts(store, path)?;
        }
        Ok(())
    }

    /// Store every complete part the buffer holds (all but the one being gathered).
    fn store_cut_parts(&mut self, store: &mut dyn PartStore, path: &Path) -> Result<()> {
        let Some(&(last, last_entries)) = self.cuts.last() else {
            return Ok(());
        };
        let mut from = (0, 0);
        for (at, entries) in std::mem::take(&mut self.cuts) {
            if at > from.0 {
                self.list_part(from.0..at, entries - from.1, store, path)?;
            }
            from = (at, entries);
        }
        self.part.drain(..last);
        self.part_entries -= last_entries;
        Ok(())
    }

    /// Store `range` of the buffer (`entries` entries) as a part and list it.
    fn list_part(
        &mut self,
        range: std::ops::Range<usize>,
        entries: u64,
        store: &mut dyn PartStore,
        path: &Path,
    ) -> Result<()> {
        let chunk = store.store_part(&self.part[range])?;
        self.write_line(&Line::Part { chunk, entries })
            .map_err(|e| Error::io("write", path, e))
    }

    /// End the parts: a list still small is written inline (a part would cost more than
    /// it saves), else the last part is stored. Called before [`Self::finish`].
    pub fn end_parts(&mut self, store: &mut dyn PartStore, path: &Path) -> Result<()> {
        self.cuts.clear();
        if self.part_entries == 0 {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.part_entries);
        if self.held {
            let held = std::mem::take(&mut self.part);
            for line in held.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                // An inline entry is the same object with its tag first.
                self.out
                    .write_all(b"{\"t\":\"entry\",")
                    .and_then(|()| self.out.write_all(&line[1..]))
                    .and_then(|()| self.out.write_all(b"\n"))
                    .map_err(|e| Error::io("write", path, e))?;
            }
            return Ok(());
        }
        let len = self.part.len();
        self.list_part(0..len, entries, store, path)?;
        self.part.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if self.part_entries > 0 {
            return Err(io::Error::other(
                "the entry list ends with a part not stored (an error of this build)",
            ));
        }
        let entries = self.entries;
        self.write_line(&Line::End { entries })?;
        let buffered = self.out.finish()?;
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads a tree: the header on open, then its entries in order (a part's read out of the
/// store when its line comes); an error when it is cut short (no end line, or a count that
/// differs) or a line does not parse.
pub struct TreeReader<R: io::Read> {
    lines: BufReader<zstd::stream::read::Decoder<'static, BufReader<R>>>,
    path: PathBuf,
    header: TreeHeader,
    read: u64,
    ended: bool,
    line: String,
    /// Where parts are read from (none: a list with parts is refused).
    store: Option<PackReader<'static>>,
    /// The part being read: its bytes, how far, and how many entries it says it holds.
    part: Option<OpenPart>,
    part_bytes: Vec<u8>,
    /// Parts read since [`Self::take_parts`] last took them.
    parts: Vec<ChunkRef>,
    /// Parts that could not be read, passed over ([`Self::tolerate_lost_parts`]).
    lost: Vec<LostPart>,
    tolerant: bool,
    /// The part that could not be read, when that failed the list.
    failed: Option<ChunkRef>,
}

struct OpenPart {
    chunk: ChunkRef,
    pos: usize,
    entries: u64,
    read: u64,
}

/// A part of an entry list that could not be read: its entries are unknown.
#[derive(Debug, Clone)]
pub struct LostPart {
    pub chunk: ChunkRef,
    pub entries: u64,
    pub why: String,
}

/// An entry list as stored: a file, or the plaintext of an age file.
pub type StoredTree = Box<dyn io::Read + Send>;

/// The backup directory a snapshot's entry list lies in (`<dir>/<kind>/<name>.tree.zst`):
/// where its packs are.
pub fn backup_dir_of(tree: &Path) -> PathBuf {
    tree.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl TreeReader<StoredTree> {
    /// Open the entry list at `path`, decrypting it (`….age`) with what `keys` holds; its
    /// parts are read from the packs of the backup directory it lies in.
    pub fn open(path: &Path, keys: &Opening) -> Result<Self> {
        let sealed = path.extension().is_some_and(|e| e == "age");
        let input: StoredTree = if sealed {
            keys.open_tree(path)?
        } else {
            Box::new(File::open(path).map_err(|e| Error::io("open", path, e))?)
        };
        let mut reader = TreeReader::new(input, path)?;
        let ids = ChunkIds::from_header(reader.header.chunk_key.as_deref(), path)?;
        reader.store = Some(PackReader::shared(
            &backup_dir_of(path),
            ids,
            sealed,
            keys.trees.clone(),
        ));
        Ok(reader)
    }
}

impl<R: io::Read> TreeReader<R> {
    pub fn new(input: R, path: &Path) -> Result<Self> {
        let bad = |d: String| Error::verify(path, "entry list readable", d);
        let decoder = zstd::stream::read::Decoder::new(input).map_err(|e| bad(e.to_string()))?;
        let mut lines = BufReader::with_capacity(1 << 16, decoder);
        let mut line = String::new();
        lines.read_line(&mut line).map_err(|e| bad(e.to_string()))?;
        let header = match serde_json::from_str::<Line>(&line) {
            Ok(Line::Header(h)) if h.format == TREE_FORMAT => h,
            Ok(_) => return Err(bad("it does not start with a snapshot header".into())),
            Err(e) => return Err(bad(format!("its header does not parse: {e}"))),
        };
        if header.version > TREE_VERSION {
            return Err(bad(format!(
                "it is version {} of the entry list, newer than this build reads ({TREE_VERSION}): upgrade vertex-backup",
                header.version
            )));
        }
        Ok(TreeReader {
            lines,
            path: path.to_path_buf(),
            header,
            read: 0,
            ended: false,
            line,
            store: None,
            part: None,
            part_bytes: Vec::new(),
            parts: Vec::new(),
            lost: Vec::new(),
            tolerant: false,
            failed: None,
        })
    }

    pub fn header(&self) -> &TreeHeader {
        &self.header
    }

    /// Pass over a part that cannot be read (recorded in [`Self::lost_parts`]) instead of
    /// failing: what `repair` does to save the rest.
    pub fn tolerate_lost_parts(&mut self) {
        self.tolerant = true;
    }

    pub fn lost_parts(&self) -> &[LostPart] {
        &self.lost
    }

    /// The part whose failure to read ended the list, if that is what ended it.
    pub fn failed_part(&self) -> Option<&ChunkRef> {
        self.failed.as_ref()
    }

    /// The parts read since the last call (each a chunk the snapshot uses, in its packs).
    pub fn take_parts(&mut self) -> Vec<ChunkRef> {
        std::mem::take(&mut self.parts)
    }

    fn bad(&self, detail: String) -> Error {
        Error::verify(&self.path, "entry list readable", detail)
    }

    /// The next entry; `Ok(None)` at a proper end.
    pub fn next_node(&mut self) -> Result<Option<Node>> {
        loop {
            if let Some(node) = self.next_in_part()? {
                return Ok(Some(node));
            }
            if self.ended {
                return Ok(None);
            }
            self.line.clear();
            let n = self
                .lines
                .read_line(&mut self.line)
                .map_err(|e| self.bad(e.to_string()))?;
            if n == 0 {
                return Err(self.bad(format!(
                    "it ends after {} entries without its end line (cut short?)",
                    self.read
                )));
            }
            match serde_json::from_str::<Line>(&self.line) {
                Ok(Line::Entry(node)) => {
                    self.read += 1;
                    return Ok(Some(node));
                }
                Ok(Line::Part { chunk, entries }) if self.header.version >= PARTS_VERSION => {
                    self.open_part(chunk, entries)?;
                }
                Ok(Line::Part { .. }) => {
                    return Err(self.bad(format!(
                        "a part inside a version {} list, which has none",
                        self.header.version
                    )));
                }
                Ok(Line::End { entries }) if entries == self.read => {
                    self.ended = true;
                    return Ok(None);
                }
                Ok(Line::End { entries }) => {
                    return Err(self.bad(format!(
                        "its end line counts {entries} entries, it holds {}",
                        self.read
                    )));
                }
                Ok(Line::Header(_)) => return Err(self.bad("a second header inside it".into())),
                Err(e) => {
                    return Err(self.bad(format!("entry {} does not parse: {e}", self.read + 1)));
                }
            }
        }
    }

    /// Read part `chunk` out of the store, to serve its entries next. A part that cannot
    /// be read fails the list, or (tolerant) counts its entries as read and is recorded.
    fn open_part(&mut self, chunk: ChunkRef, entries: u64) -> Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Err(self.bad(
                "its entries lie in parts in the store, and it was read without the store".into(),
            ));
        };
        self.parts.push(chunk.clone());
        match store.read_chunk(&chunk, &mut self.part_bytes) {
            Ok(()) => {
                self.part = Some(OpenPart {
                    chunk,
                    pos: 0,
                    entries,
                    read: 0,
                });
                Ok(())
            }
            Err(e) if self.tolerant => {
                self.read += entries;
                self.lost.push(LostPart {
                    chunk,
                    entries,
                    why: e.to_string(),
                });
                Ok(())
            }
            Err(e) => {
                let detail = format!(
                    "its part {} ({entries} entries) cannot be read: {e}",
                    chunk.id.to_hex()
                );
                self.failed = Some(chunk);
                Err(self.bad(detail))
            }
        }
    }

    /// The next entry of the part being read, if it has one more.
    fn next_in_part(&mut self) -> Result<Option<Node>> {
        let Some(part) = self.part.as_mut() else {
            return Ok(None);
        };
        let rest = &self.part_bytes[part.pos..];
        if rest.is_empty() {
            let (id, entries, read) = (part.chunk.id, part.entries, part.read);
            self.part = None;
            if read != entries {
                return Err(self.bad(format!(
                    "its part {} holds {read} entries where the list says {entries}",
                    id.to_hex()
                )));
            }
            return Ok(None);
        }
        let len = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let parsed = serde_json::from_slice::<Node>(&rest[..len]);
        part.pos += (len + 1).min(rest.len());
        part.read += 1;
        self.read += 1;
        match parsed {
            Ok(node) => Ok(Some(node)),
            Err(e) => {
                let id = part.chunk.id.to_hex();
                Err(self.bad(format!(
                    "entry {} (in part {id}) does not parse: {e}",
                    self.read
                )))
            }
        }
    }
}

impl<R: io::Read> Iterator for TreeReader<R> {
    type Item = Result<Node>;
    fn next(&mut self) -> Option<Result<Node>> {
        self.next_node().transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::super::ids::{ChunkId, PackId};
    use super::*;

    fn node(path: &[u8]) -> Node {
        Node {
            path: PathBuf::from(OsString::from_vec(path.to_vec())),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: -5,
            mtime_ns: 7,
            ctime: 9,
            ctime_ns: 11,
            ino: 13,
            size: 3,
            target: None,
            chunks: vec![ChunkRef {
                id: ChunkId([0xab; 32]),
                pack: PackId([0xcd; 16]),
                offset: 17,
                stored: 3,
                raw: 3,
                zstd: false,
            }],
            xattrs: vec![Xattr {
                name: "user.origin".into(),
                value: vec![0, 255, b'x'],
            }],
        }
    }

    #[test]
    fn an_attribute_outside_user_and_acls_is_refused_where_it_is_parsed() {
        let mut line = serde_json::to_value(node(b"a")).unwrap();
        line["xattrs"] = serde_json::json!([["security.capability", "AQAAAg=="]]);
        let e = serde_json::from_value::<Node>(line)
            .unwrap_err()
            .to_string();
        assert!(e.contains("security.capability"), "{e}");
    }

    fn header() -> TreeHeader {
        TreeHeader {
            format: TREE_FORMAT.into(),
            version: TREE_VERSION,
            kind: BackupKind::Storage,
            root: PathBuf::from("storage"),
            chunk_key: None,
        }
    }

    #[test]
    fn a_tree_reads_back_with_any_names() {
        let mut w = TreeWriter::new(Vec::new(), header()).unwrap();
        w.push(node(b"a/\xff\nb")).unwrap();
        w.push(node("клиент/фото.jpg".as_bytes())).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TreeReader::new(&bytes[..], Path::new("t")).unwrap();
        assert_eq!(r.header(), &header());
        let nodes: Vec<Node> = r.by_ref().map(|n| n.unwrap()).collect();
        assert_eq!(
            nodes,
            vec![node(b"a/\xff\nb"), node("клиент/фото.jpg".as_bytes())]
        );
    }

    #[test]
    fn a_tree_cut_short_is_refused() {
        let mut w = TreeWriter::new(Vec::new(), header()).unwrap();
        w.push(node(b"a")).unwrap();
        let mut out = w.out;
        out.write_all(b"").unwrap();
        let bytes = out.finish().unwrap().into_inner().unwrap();
        let mut r = TreeReader::new(&bytes[..], Path::new("t")).unwrap();
        assert!(r.next_node().unwrap().is_some());
        let e = r.next_node().unwrap_err().to_string();
        assert!(e.contains("without its end line"), "{e}");
    }

    /// Parts kept in memory, as the pack thread would store them.
    #[derive(Default)]
    struct Parts(Vec<Vec<u8>>);

    impl PartStore for Parts {
        fn store_part(&mut self, plain: &[u8]) -> Result<ChunkRef> {
            self.0.push(plain.to_vec());
            let id = super::super::keys::ChunkIds::Sha256.id(plain);
            Ok(ChunkRef {
                id: ChunkId(id),
                pack: PackId([1; 16]),
                offset: 0,
                stored: plain.len() as u32,
                raw: plain.len() as u32,
                zstd: false,
            })
        }
    }

    /// A tree of `dirs` directories of `files` files, written with parts.
    fn write_with_parts(dirs: usize, files: usize, changed: Option<usize>) -> (Vec<u8>, Parts) {
        let mut parts = Parts::default();
        let mut w = TreeWriter::new(Vec::new(), header()).unwrap();
        let path = Path::new("t");
        for d in 0..dirs {
            let mut dir = node(format!("d{d:03}").as_bytes());
            dir.kind = NodeKind::Dir;
            dir.chunks.clear();
            w.push_to_part(dir, &mut parts, path).unwrap();
            for f in 0..files {
                let mut n = node(format!("d{d:03}/f{f:03}").as_bytes());
                if changed == Some(d) && f == 0 {
                    n.size = 4;
                }
                w.push_to_part(n, &mut parts, path).unwrap();
            }
        }
        w.end_parts(&mut parts, path).unwrap();
        (w.finish().unwrap(), parts)
    }

    #[test]
    fn a_small_list_stays_inline_and_a_large_one_is_cut_where_directories_begin() {
        let (bytes, parts) = write_with_parts(3, 5, None);
        assert!(parts.0.is_empty(), "18 entries stay inline");
        let r = TreeReader::new(&bytes[..], Path::new("t")).unwrap();
        let read: Vec<Node> = r.collect::<Result<_>>().unwrap();
        assert_eq!(read.len(), 18);

        let (_, parts) = write_with_parts(60, 30, None);
        assert!(parts.0.len() >= 20, "{} parts", parts.0.len());
        let entries: usize = parts
            .0
            .iter()
            .map(|p| p.split(|b| *b == b'\n').count() - 1)
            .sum();
        assert_eq!(entries, 60 * 31);
        for p in &parts.0 {
            assert!(p.len() <= PART_MAX + INLINE_OVER);
            // Each part after the first begins with a directory or a name its hash cut.
            let first: Node =
                serde_json::from_slice(p.split(|b| *b == b'\n').next().unwrap()).unwrap();
            assert!(
                first.kind == NodeKind::Dir
                    || first.path.as_os_str().is_empty()
                    || name_hash(&first.path).is_multiple_of(PART_CUT_ONE_IN)
                    || parts.0[0] == *p,
                "{first:?}"
            );
        }
        // One entry changed: the parts of every other directory are the same bytes.
        let (_, again) = write_with_parts(60, 30, Some(31));
        let before: std::collections::HashSet<&Vec<u8>> = parts.0.iter().collect();
        let new = again.0.iter().filter(|p| !before.contains(p)).count();
        assert!((1..=2).contains(&new), "{new} parts differ");
    }
}
