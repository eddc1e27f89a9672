//! The index: where every chunk of the store lies (chunk id → pack, offset, lengths), so
//! a new snapshot finds a chunk stored by any kept snapshot, not only by its parent (a
//! file deleted and added again, a folder moved, one video uploaded for two clients: each
//! stored once). It is a set of files under `store/index/`, each covering some packs:
//! every snapshot writes one for the packs it added, and the upkeep after each cleaning
//! folds them into one when packs went away ([`super::upkeep`]). A lost or damaged index
//! costs only deduplication — nothing reads a snapshot through it — and `repair` writes
//! it again from the packs' trailers.
//!
//! A file is `<random id>.idx`, zstd-compressed (and age-encrypted to the store key as
//! `.idx.age` when the backup directory has one: it names the sizes of chunks), holding:
//! the magic `VXINDEX1`; a tag (u16 length, UTF-8) saying how its chunk ids were made and
//! to whom its packs are sealed, since only packs made as a new snapshot's can serve it;
//! then for each pack a byte 1, its id (16 bytes), size (u64), SHA-256 (32), chunk count
//! (u32) and chunks (as in the pack's trailer); a byte 0; then the SHA-256 of all that.
//! Integers are little-endian. Memory: [`KNOWN_CHUNK_BYTES`] per chunk held for lookup.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ids::PackId;
use super::keys::{ChunkIds, MaybeSealed, Opening};
use super::trailer::{self, PackedChunk};
use crate::catalog::{PackRef, PartialFile, STORE_DIR, sync_dir};
use crate::encryption::Recipients;
use crate::error::{Error, IoContext, Result};

/// The index's directory under the backup directory.
pub const INDEX_DIR: &str = "index";
const MAGIC: &[u8; 8] = b"VXINDEX1";
const PLAIN_EXT: &str = ".idx";
const SEALED_EXT: &str = ".idx.age";
/// Bounds on what a file may claim, checked before anything is allocated for it.
const MAX_TAG: usize = 4096;
const MAX_PACKS: u32 = 1 << 24;

/// What a snapshot's writer holds per chunk it can find again (`chunk_table`): the
/// 32-byte id and 16 bytes saying where it lies, densely, and a 4-byte position in a
/// hash table with its spare room: about 60 bytes, so a store of a million chunks costs
/// 60 MB while a snapshot that reads files runs.
pub const KNOWN_CHUNK_BYTES: u64 = 60;

/// One pack as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub size: u64,
    pub checksum: [u8; 32],
    pub chunks: Vec<PackedChunk>,
}

impl IndexedPack {
    /// What a snapshot's metadata records of it.
    pub fn pack_ref(&self) -> PackRef {
        PackRef {
            id: self.id.to_hex(),
            size: self.size,
            checksum: hex::encode(self.checksum),
        }
    }

    /// From what a snapshot's metadata records, and the chunks in it.
    pub fn of(pack: &PackRef, chunks: Vec<PackedChunk>) -> Option<Self> {
        let mut checksum = [0u8; 32];
        hex::decode_to_slice(&pack.checksum, &mut checksum).ok()?;
        Some(IndexedPack {
            id: PackId::parse(&pack.id)?,
            size: pack.size,
            checksum,
            chunks,
        })
    }
}

/// How the chunk ids of a snapshot were made, and to whom its packs are sealed: a chunk
/// can serve a new snapshot only when both are the same (a pack sealed to a key since
/// replaced would leave the new snapshot needing the old key).
pub fn tag(ids: &ChunkIds, recipients: Option<&[String]>) -> String {
    let ids = match ids.key_hex() {
        None => "sha256".to_string(),
        Some(key) => format!(
            "hmac:{}",
            &hex::encode(Sha256::digest(key.as_bytes()))[..16]
        ),
    };
    match recipients {
        Some(r) => {
            let mut r = r.to_vec();
            r.sort();
            format!("{ids};to:{}", r.join(","))
        }
        None => ids,
    }
}

/// The tag of the chunks of snapshot `entry`, whose entry list's header says `chunk_key`.
pub fn tag_of(entry: &crate::catalog::BackupEntry, chunk_key: Option<&str>) -> Result<String> {
    let ids = ChunkIds::from_header(chunk_key, &entry.data_path)?;
    Ok(tag(&ids, sealed_to(entry).as_deref()))
}

/// The fingerprints snapshot `entry` is encrypted to (`None`: not encrypted).
pub fn sealed_to(entry: &crate::catalog::BackupEntry) -> Option<Vec<String>> {
    entry
        .metadata
        .format()
        .ok()
        .and_then(|f| f.encryption)
        .map(|e| e.recipients)
}

/// The index files of the backup directory `root`, in name order.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(STORE_DIR).join(INDEX_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(PLAIN_EXT) || n.ends_with(SEALED_EXT))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Delete index files (folded, or a killed write's `.partial`), then make that durable.
pub fn remove(root: &Path, paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", p, e)),
        }
    }
    if !paths.is_empty() {
        sync_dir(&root.join(STORE_DIR).join(INDEX_DIR))?;
    }
    Ok(())
}

/// Index files a killed write left under their `.partial` name.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let dir = root.join(STORE_DIR).join(INDEX_DIR);
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(crate::catalog::PARTIAL_SUFFIX))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write one index file of `packs` made as `tag`, durable before it returns (sealed to
/// `seal` when given). Nothing is written for no packs.
pub fn write(
    root: &Path,
    tag: &str,
    packs: &[IndexedPack],
    seal: Option<&Recipients>,
    modes: (u32, u32),
) -> Result<Option<PathBuf>> {
    if packs.is_empty() {
        return Ok(None);
    }
    let mut w = IndexWriter::create(root, tag, seal, modes)?;
    for p in packs {
        w.add(p)?;
    }
    w.finish().map(Some)
}

/// Where a snapshot's writer indexes the packs it writes, as it closes each: the index
/// file is begun with the first pack (a snapshot that adds none writes none) and is
/// durable before the entry list that points into its packs lands.
#[derive(Clone)]
pub struct IndexTarget {
    pub root: PathBuf,
    pub tag: String,
    pub seal: Option<Recipients>,
    pub modes: (u32, u32),
}

impl IndexTarget {
    pub fn create(&self) -> Result<IndexWriter> {
        IndexWriter::create(&self.root, &self.tag, self.seal.as_ref(), self.modes)
    }
}

type IndexOut = zstd::Encoder<'static, MaybeSealed<BufWriter<File>>>;

/// One index file being written, pack by pack, straight to disk (folding a large index
/// never holds it in memory).
pub struct IndexWriter {
    partial: PartialFile,
    out: IndexOut,
    sum: Sha256,
    record: Vec<u8>,
}

impl IndexWriter {
    pub fn create(
        root: &Path,
        tag: &str,
        seal: Option<&Recipients>,
        (file_mode, dir_mode): (u32, u32),
    ) -> Result<Self> {
        let dir = root.join(STORE_DIR).join(INDEX_DIR);
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(&dir)
                .ctx("create the index directory", &dir)?;
            sync_dir(&root.join(STORE_DIR))?;
        }
        let ext = if seal.is_some() {
            SEALED_EXT
        } else {
            PLAIN_EXT
        };
        let path = dir.join(format!("{}{ext}", super::pack::random_id()?));
        let (partial, file) = PartialFile::create(&path, file_mode)?;
        let sealed = MaybeSealed::new(BufWriter::new(file), seal).ctx("encrypt", &path)?;
        let out = zstd::Encoder::new(sealed, 3).ctx("compress", &path)?;
        let mut w = IndexWriter {
            partial,
            out,
            sum: Sha256::new(),
            record: Vec::new(),
        };
        let mut head = Vec::with_capacity(16 + tag.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        head.extend_from_slice(tag.as_bytes());
        w.put(&head)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.sum.update(bytes);
        self.out
            .write_all(bytes)
            .ctx("write", self.partial.temp_path())
    }

    pub fn add(&mut self, p: &IndexedPack) -> Result<()> {
        let mut r = std::mem::take(&mut self.record);
        r.clear();
        r.push(PACK_FOLLOWS);
        r.extend_from_slice(&p.id.0);
        r.extend_from_slice(&p.size.to_le_bytes());
        r.extend_from_slice(&p.checksum);
        r.extend_from_slice(&(p.chunks.len() as u32).to_le_bytes());
        for c in &p.chunks {
            trailer::encode_entry(c, &mut r);
        }
        let put = self.put(&r);
        self.record = r;
        put
    }

    /// The end mark and checksum out; durable under its final name on return.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.put(&[END])?;
        let sum = self.sum.clone().finalize();
        let path = self.partial.temp_path().to_path_buf();
        self.out.write_all(&sum).ctx("write", &path)?;
        let file = self
            .out
            .finish()
            .and_then(MaybeSealed::finish)
            .and_then(|b| b.into_inner().map_err(|e| e.into_error()))
            .ctx("write", &path)?;
        self.partial.sync(&file)?;
        self.partial.rename()
    }
}

/// Each pack's record starts with this byte; the list ends with [`END`].
const PACK_FOLLOWS: u8 = 1;
const END: u8 = 0;

/// Reads exact lengths while hashing them.
struct Hashed<R> {
    input: R,
    sum: Sha256,
}

impl<R: Read> Hashed<R> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.input.read_exact(&mut b)?;
        self.sum.update(b);
        Ok(b)
    }

    fn take_vec(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.input.read_exact(&mut b)?;
        self.sum.update(&b);
        Ok(b)
    }
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::verify(path, "index", why.to_string())
}

/// Read the index file `path`: its tag first; when `want(tag)`, each pack in turn to
/// `each` (a file is read whole before its last check, so `each` may have seen packs of
/// a file that then fails: callers use what an index says only after checking the pack
/// it names). Returns the tag.
pub fn read(
    path: &Path,
    opening: &Opening,
    want: &mut dyn FnMut(&str) -> bool,
    each: &mut dyn FnMut(IndexedPack),
) -> Result<String> {
    let sealed = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(SEALED_EXT));
    let raw: Box<dyn Read + Send> = if sealed {
        opening.open_tree(path)?
    } else {
        Box::new(File::open(path).ctx("open", path)?)
    };
    let z = zstd::Decoder::new(BufReader::new(raw)).ctx("decompress", path)?;
    let mut r = Hashed {
        input: z,
        sum: Sha256::new(),
    };
    let io = |e: io::Error| damaged(path, format!("it cannot be read to its end ({e})"));
    if &r.take::<8>().map_err(io)? != MAGIC {
        return Err(damaged(path, "it is not an index file of this store"));
    }
    let tag_len = u16::from_le_bytes(r.take::<2>().map_err(io)?) as usize;
    if tag_len > MAX_TAG {
        return Err(damaged(path, format!("its tag claims {tag_len} bytes")));
    }
    let tag = String::from_utf8(r.take_vec(tag_len).map_err(io)?)
        .map_err(|_| damaged(path, "its tag is not UTF-8"))?;
    if !want(&tag) {
        return Ok(tag);
    }
    let mut count = 0u32;
    loop {
        match r.take::<1>().map_err(io)?[0] {
            END => break,
            PACK_FOLLOWS if count < MAX_PACKS => count += 1,
            PACK_FOLLOWS => {
                return Err(damaged(
                    path,
                    format!("it lists more than {MAX_PACKS} packs"),
                ));
            }
            other => return Err(damaged(path, format!("a record starts with {other}"))),
        }
        let id = PackId(r.take::<16>().map_err(io)?);
        let size = u64::from_le_bytes(r.take::<8>().map_err(io)?);
        let checksum = r.take::<32>().map_err(io)?;
        let n = u32::from_le_bytes(r.take::<4>().map_err(io)?);
        if n > trailer::MAX_ENTRIES {
            return Err(damaged(path, format!("pack {id} claims {n} chunks")));
        }
        let entries = r.take_vec(n as usize * trailer::ENTRY_LEN).map_err(io)?;
        let chunks: Vec<PackedChunk> = entries
            .chunks_exact(trailer::ENTRY_LEN)
            .map(trailer::decode_entry)
            .collect();
        trailer::validate(&chunks, size).map_err(|e| damaged(path, format!("pack {id}: {e}")))?;
        each(IndexedPack {
            id,
            size,
            checksum,
            chunks,
        });
    }
    let sum: [u8; 32] = r.sum.clone().finalize().into();
    let mut recorded = [0u8; 32];
    r.input.read_exact(&mut recorded).map_err(io)?;
    if sum != recorded {
        return Err(damaged(path, "its contents do not match its checksum"));
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot::ids::ChunkId;

    fn pack(n: u8, chunks: u8) -> IndexedPack {
        IndexedPack {
            id: PackId([n; 16]),
            size: 1000,
            checksum: [n; 32],
            chunks: (0..chunks)
                .map(|i| PackedChunk {
                    id: ChunkId([n.wrapping_mul(16).wrapping_add(i); 32]),
                    offset: u64::from(i) * 100,
                    stored: 100,
                    raw: 100,
                    zstd: false,
                })
                .collect(),
        }
    }

    fn read_all(path: &Path) -> Result<(String, Vec<IndexedPack>)> {
        let mut packs = Vec::new();
        let tag = read(path, &Opening::default(), &mut |_| true, &mut |p| {
            packs.push(p)
        })?;
        Ok((tag, packs))
    }

    #[test]
    fn an_index_file_reads_back_as_written_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let packs = vec![pack(1, 3), pack(2, 0), pack(3, 5)];
        let path = write(dir.path(), "sha256", &packs, None, (0o600, 0o700))
            .unwrap()
            .unwrap();
        assert_eq!(files(dir.path()).unwrap(), vec![path.clone()]);
        assert_eq!(read_all(&path).unwrap(), ("sha256".to_string(), packs));
        // A tag not wanted stops the reading there.
        let mut seen = 0;
        read(
            &path,
            &Opening::default(),
            &mut |t| t == "other",
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 0);
        // One flipped byte anywhere in the plain stream fails its checksum or its shape.
        let plain = zstd::decode_all(File::open(&path).unwrap()).unwrap();
        for at in [0, 20, plain.len() / 2, plain.len() - 1] {
            let mut bad = plain.clone();
            bad[at] ^= 0x40;
            fs::write(&path, zstd::encode_all(&bad[..], 3).unwrap()).unwrap();
            assert!(read_all(&path).is_err(), "a flip at {at} went unnoticed");
        }
        // Cut short.
        fs::write(
            &path,
            zstd::encode_all(&plain[..plain.len() - 40], 3).unwrap(),
        )
        .unwrap();
        assert!(read_all(&path).is_err());
    }
}
