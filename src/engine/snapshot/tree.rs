//! A snapshot's entry list (its data file, `…_snapshot_TS.tree.zst`): one zstd stream of
//! JSON lines — a header, one line per entry in the walk's order (sorted, depth first, so
//! the next snapshot can walk its parent alongside the tree), and an end line with the
//! count, so a list cut short is never read as a complete one. A file's line lists its
//! chunks with where each lies in the store, so reading needs no index.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::{ChunkId, PackId};
use super::keys::Opening;
use crate::engine::xattrs::Xattr;
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// The `format` of a tree's header line.
pub const TREE_FORMAT: &str = "vertex-backup-tree";
/// Version written by this build; readers accept it and every older one.
pub const TREE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHeader {
    pub format: String,
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// The name entries are restored under (the storage directory's name, or the
    /// database file's), as an archive names its top directory.
    #[serde(with = "raw_path")]
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

/// One chunk of a file: its id (SHA-256 of the plain bytes, hex), the pack it lies in, and
/// where: `stored` bytes at `offset`, `raw` bytes once decompressed. Written as a JSON
/// array, `[id, pack, offset, stored, raw, zstd]`, because a large tree has millions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChunkTuple", into = "ChunkTuple")]
pub struct ChunkRef {
    pub id: ChunkId,
    pub pack: PackId,
    pub offset: u64,
    pub stored: u32,
    pub raw: u32,
    /// Stored zstd-compressed (else as is: it did not get smaller).
    pub zstd: bool,
}

impl ChunkRef {
    /// Chunk `c` of pack `pack`.
    pub fn at(pack: PackId, c: &super::trailer::PackedChunk) -> ChunkRef {
        ChunkRef {
            id: c.id,
            pack,
            offset: c.offset,
            stored: c.stored,
            raw: c.raw,
            zstd: c.zstd,
        }
    }

    /// Where it lies in its pack, as the pack's trailer says it.
    pub fn packed(&self) -> super::trailer::PackedChunk {
        super::trailer::PackedChunk {
            id: self.id,
            offset: self.offset,
            stored: self.stored,
            raw: self.raw,
            zstd: self.zstd,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ChunkTuple(String, String, u64, u32, u32, u8);

/// The most plain bytes one chunk of this format holds (content-defined chunks are cut at
/// this size at the latest; whole files and database chunks are smaller). A chunk is
/// stored compressed only when that is smaller, so `stored` never exceeds it either.
const CHUNK_MAX: u32 = super::chunker::CDC_MAX as u32;

/// Why a chunk reference of an entry list is refused where it is parsed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefError {
    #[error("a chunk id {0:?} is not 64 hex digits")]
    Id(String),
    #[error("a chunk names a pack {0:?} that is no pack id")]
    Pack(String),
    #[error(
        "chunk {id} claims {stored} stored and {raw} plain bytes, which no chunk of this format has (at most {CHUNK_MAX})"
    )]
    Size { id: ChunkId, stored: u32, raw: u32 },
    #[error("chunk {0} lies beyond any pack")]
    Offset(ChunkId),
}

/// An entry list is checked by its SHA-256, but whoever can rewrite it can fix that up (a
/// bucket's owner, a copy from an untrusted place): every field that becomes a path or an
/// allocation is bounded by what the format writes, here where it is parsed.
impl TryFrom<ChunkTuple> for ChunkRef {
    type Error = ChunkRefError;

    fn try_from(t: ChunkTuple) -> Result<Self, ChunkRefError> {
        let id = ChunkId::parse(&t.0).ok_or(ChunkRefError::Id(t.0))?;
        let pack = PackId::parse(&t.1).ok_or(ChunkRefError::Pack(t.1))?;
        if t.4 > CHUNK_MAX || t.3 > CHUNK_MAX || (t.5 == 0 && t.3 != t.4) {
            return Err(ChunkRefError::Size {
                id,
                stored: t.3,
                raw: t.4,
            });
        }
        if t.2.checked_add(u64::from(t.3)).is_none() {
            return Err(ChunkRefError::Offset(id));
        }
        Ok(ChunkRef {
            id,
            pack,
            offset: t.2,
            stored: t.3,
            raw: t.4,
            zstd: t.5 != 0,
        })
    }
}

impl From<ChunkRef> for ChunkTuple {
    fn from(c: ChunkRef) -> Self {
        ChunkTuple(
            c.id.to_hex(),
            c.pack.to_hex(),
            c.offset,
            c.stored,
            c.raw,
            u8::from(c.zstd),
        )
    }
}

/// One entry: what `lstat` said when it was stored, and (files) its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Relative to the root; empty for the root itself.
    #[serde(with = "raw_path")]
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
        with = "raw_path_opt"
    )]
    pub target: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    /// Its `user.*` attributes and POSIX ACLs ([`crate::engine::xattrs`]): `[name, value
    /// in base64]` pairs, checked (namespace, sizes) where they are parsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "stored_xattrs")]
    pub xattrs: Vec<Xattr>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Line {
    Header(TreeHeader),
    Entry(Node),
    End { entries: u64 },
}

/// Writes a tree; [`TreeWriter::finish`] adds the end line and returns the file.
pub struct TreeWriter<W: Write> {
    out: zstd::stream::write::Encoder<'static, BufWriter<W>>,
    entries: u64,
    line: Vec<u8>,
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W, header: TreeHeader) -> io::Result<Self> {
        let mut out = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, out), 3)?;
        out.include_checksum(true)?;
        let mut w = TreeWriter {
            out,
            entries: 0,
            line: Vec::with_capacity(512),
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

    pub fn push(&mut self, node: Node) -> io::Result<()> {
        self.entries += 1;
        self.write_line(&Line::Entry(node))
    }

    pub fn finish(mut self) -> io::Result<W> {
        let entries = self.entries;
        self.write_line(&Line::End { entries })?;
        let buffered = self.out.finish()?;
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads a tree: the header on open, then its entries in order; an error when it is cut
/// short (no end line, or a count that differs) or a line does not parse.
pub struct TreeReader<R: io::Read> {
    lines: BufReader<zstd::stream::read::Decoder<'static, BufReader<R>>>,
    path: PathBuf,
    header: TreeHeader,
    read: u64,
    ended: bool,
    line: String,
}

/// An entry list as stored: a file, or the plaintext of an age file.
pub type StoredTree = Box<dyn io::Read + Send>;

impl TreeReader<StoredTree> {
    /// Open the entry list at `path`, decrypting it (`….age`) with what `keys` holds.
    pub fn open(path: &Path, keys: &Opening) -> Result<Self> {
        let input: StoredTree = if path.extension().is_some_and(|e| e == "age") {
            keys.open_tree(path)?
        } else {
            Box::new(File::open(path).map_err(|e| Error::io("open", path, e))?)
        };
        TreeReader::new(input, path)
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
        })
    }

    pub fn header(&self) -> &TreeHeader {
        &self.header
    }

    /// The next entry; `Ok(None)` at a proper end.
    pub fn next_node(&mut self) -> Result<Option<Node>> {
        if self.ended {
            return Ok(None);
        }
        let bad = |d: String| Error::verify(&self.path, "entry list readable", d);
        self.line.clear();
        let n = self
            .lines
            .read_line(&mut self.line)
            .map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(bad(format!(
                "it ends after {} entries without its end line (cut short?)",
                self.read
            )));
        }
        match serde_json::from_str::<Line>(&self.line) {
            Ok(Line::Entry(node)) => {
                self.read += 1;
                Ok(Some(node))
            }
            Ok(Line::End { entries }) if entries == self.read => {
                self.ended = true;
                Ok(None)
            }
            Ok(Line::End { entries }) => Err(bad(format!(
                "its end line counts {entries} entries, it holds {}",
                self.read
            ))),
            Ok(Line::Header(_)) => Err(bad("a second header inside it".into())),
            Err(e) => Err(bad(format!("entry {} does not parse: {e}", self.read + 1))),
        }
    }
}

impl<R: io::Read> Iterator for TreeReader<R> {
    type Item = Result<Node>;
    fn next(&mut self) -> Option<Result<Node>> {
        self.next_node().transpose()
    }
}

/// A path as JSON: a string when it is UTF-8, else `{"b64": "…"}` of its bytes (a media
/// file may be named anything a filesystem allows).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PathRepr {
    Text(String),
    Bytes { b64: String },
}

impl PathRepr {
    fn of(path: &Path) -> Self {
        match path.to_str() {
            Some(s) => PathRepr::Text(s.to_string()),
            None => PathRepr::Bytes {
                b64: base64::engine::general_purpose::STANDARD.encode(path.as_os_str().as_bytes()),
            },
        }
    }
    fn into_path<E: serde::de::Error>(self) -> std::result::Result<PathBuf, E> {
        match self {
            PathRepr::Text(s) => Ok(PathBuf::from(s)),
            PathRepr::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|b| PathBuf::from(OsString::from_vec(b)))
                .map_err(E::custom),
        }
    }
}

mod raw_path {
    use super::*;
    pub fn serialize<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
        PathRepr::of(p).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<PathBuf, D::Error> {
        PathRepr::deserialize(d)?.into_path()
    }
}

mod raw_path_opt {
    use super::*;
    pub fn serialize<S: Serializer>(
        p: &Option<PathBuf>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        p.as_deref().map(PathRepr::of).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<PathBuf>, D::Error> {
        Option::<PathRepr>::deserialize(d)?
            .map(PathRepr::into_path)
            .transpose()
    }
}

mod stored_xattrs {
    use super::*;
    pub fn serialize<S: Serializer>(x: &[Xattr], s: S) -> std::result::Result<S::Ok, S::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        x.iter()
            .map(|a| (a.name.as_str(), engine.encode(&a.value)))
            .collect::<Vec<_>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<Xattr>, D::Error> {
        use serde::de::Error as _;
        let engine = base64::engine::general_purpose::STANDARD;
        Vec::<(String, String)>::deserialize(d)?
            .into_iter()
            .map(|(name, value)| {
                let value = engine
                    .decode(value.as_bytes())
                    .map_err(|e| D::Error::custom(format!("extended attribute {name:?}: {e}")))?;
                if let Some(why) = crate::engine::xattrs::refused(&name, value.len()) {
                    return Err(D::Error::custom(why));
                }
                Ok(Xattr { name, value })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_chunk_is_refused_where_it_is_parsed() {
        let id = "ab".repeat(32);
        let pack = "cd".repeat(16);
        let parse = |v: serde_json::Value| serde_json::from_value::<ChunkRef>(v);
        assert!(parse(serde_json::json!([id, pack, 0, 100, 200, 1])).is_ok());
        // 4 GiB to allocate before failing: refused up front.
        let huge = parse(serde_json::json!([id, pack, 0, u32::MAX, 200, 1])).unwrap_err();
        assert!(
            huge.to_string().contains("no chunk of this format"),
            "{huge}"
        );
        assert!(parse(serde_json::json!([id, pack, 0, 10, u32::MAX, 1])).is_err());
        // A pack id that would become a path elsewhere.
        assert!(parse(serde_json::json!([id, "../../etc", 0, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!(["x", pack, 0, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!([id, pack, u64::MAX, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!([id, pack, 0, 10, 11, 0])).is_err());
    }

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
}
