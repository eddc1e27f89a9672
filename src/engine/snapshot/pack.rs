//! Packs: the files of the content store (`store/packs/ab/<id>.pack`). A pack is chunks
//! end to end, each stored zstd-compressed (or as is when that is no smaller), up to
//! [`PACK_TARGET`] bytes, so 100 000 small files are a few dozen files on disk or on S3.
//! A pack is written under its `.partial` name and renamed when full; an "fsync" thread
//! makes closed packs durable while the next one fills (so the disk's flush overlaps the
//! reading), and [`PackWriter::finish`] waits for all of them and their directories before
//! any entry list that points into them is renamed into place: a snapshot never
//! references a pack that a crash could lose. (A pack renamed but not yet durable when
//! the machine dies belongs to no snapshot, and the next cleaning sweeps it.) Its id is
//! random (chosen before its content is known, since entries point into it while it
//! fills); its SHA-256 is recorded in each snapshot's metadata and in the index. Each
//! pack ends with a [`trailer`](super::trailer) listing its chunks, so the store can be
//! indexed again from its packs alone.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

pub use super::damage::ChunkError;
use super::damage::Damage;
use super::ids::{ChunkId, PackId};
use super::keys::{ChunkIds, MaybeSealed};
use super::trailer::{self, PackedChunk};
use crate::catalog::{PackRef, PartialFile, pack_name, sync_dir};
use crate::encryption::{Identities, Recipients};
use crate::engine::direct_io::DirectReader;
use crate::engine::hashing::{HashingReader, HashingWriter};
use crate::error::{Error, IoContext, Result};

/// Packs are closed once they reach this size.
pub const PACK_TARGET: u64 = 16 << 20;

/// 16 random bytes as 32 hex digits: an index file's or a lock object's name.
pub(crate) fn random_id() -> Result<String> {
    PackId::random().map(PackId::to_hex)
}

struct OpenPack {
    id: PackId,
    partial: PartialFile,
    out: MaybeSealed<HashingWriter<BufWriter<File>>>,
    /// Plain bytes written (what chunk offsets count).
    len: u64,
    /// What it holds so far: its trailer once it is closed.
    chunks: Vec<PackedChunk>,
}

/// A pack this run wrote: what snapshots record of it, and the chunks its trailer lists
/// (what the index records of it).
#[derive(Debug, Clone)]
pub struct WrittenPack {
    pub pack: PackRef,
    pub chunks: Vec<PackedChunk>,
}

/// Closed packs waiting for their fsync: at most this many (then the writer waits).
const UNSYNCED: usize = 8;

/// Appends chunks to packs, one open at a time.
pub struct PackWriter {
    root: PathBuf,
    file_mode: u32,
    dir_mode: u32,
    open: Option<OpenPack>,
    finished: Vec<WrittenPack>,
    /// How many of `finished` [`Self::newly_closed`] has handed out.
    handed_out: usize,
    syncing: Option<FsyncThread>,
    /// Encrypt each pack to these (`<id>.pack.age`).
    sealing: Option<Recipients>,
    /// Free bytes to leave on the filesystem (`min_free_space`).
    reserve: Option<u64>,
}

/// The fsync thread's inbox and handle.
type FsyncThread = (SyncSender<(File, PathBuf)>, JoinHandle<Result<()>>);

/// fsync each closed pack in turn; the first failure ends the thread and is its result.
fn fsync_thread(rx: Receiver<(File, PathBuf)>) -> Result<()> {
    for (file, path) in rx {
        file.sync_all().ctx("fsync", &path)?;
    }
    Ok(())
}

impl PackWriter {
    /// `root` is the backup directory; with `sealing`, packs are age files to it.
    pub fn new(root: &Path, file_mode: u32, dir_mode: u32, sealing: Option<Recipients>) -> Self {
        PackWriter {
            sealing,
            reserve: None,
            root: root.to_path_buf(),
            file_mode,
            dir_mode,
            open: None,
            finished: Vec::new(),
            handed_out: 0,
            syncing: None,
        }
    }

    /// The packs closed since the last call, for a caller that indexes them as it goes
    /// (it may take their chunk lists, so that a run writing a million chunks does not
    /// hold their list to the end; [`Self::finish`] returns the packs all the same).
    pub fn newly_closed(&mut self) -> &mut [WrittenPack] {
        let from = self.handed_out;
        self.handed_out = self.finished.len();
        &mut self.finished[from..]
    }

    /// Hand a closed pack to the fsync thread (started on first use; inline without one).
    fn sync_later(&mut self, file: File, path: PathBuf) -> Result<()> {
        if self.syncing.is_none() {
            let (tx, rx) = sync_channel(UNSYNCED);
            if let Ok(handle) = std::thread::Builder::new()
                .name("fsync".into())
                .spawn(move || fsync_thread(rx))
            {
                self.syncing = Some((tx, handle));
            }
        }
        match &self.syncing {
            Some((tx, _)) => match tx.send((file, path)) {
                Ok(()) => Ok(()),
                // The thread stopped at a failed fsync: its result says which.
                Err(_) => self.wait_synced(),
            },
            None => file.sync_all().ctx("fsync", &path),
        }
    }

    /// Wait until every pack handed over is durable (or say which one is not).
    fn wait_synced(&mut self) -> Result<()> {
        let Some((tx, handle)) = self.syncing.take() else {
            return Ok(());
        };
        drop(tx);
        handle.join().unwrap_or_else(|_| {
            Err(Error::io(
                "fsync a pack",
                &self.root,
                io::Error::other("the fsync thread panicked"),
            ))
        })
    }

    /// Refuse to start a pack that could leave less than `reserve` bytes free.
    pub fn with_reserve(mut self, reserve: u64) -> Self {
        self.reserve = Some(reserve);
        self
    }

    fn check_room(&self) -> Result<()> {
        let Some(reserve) = self.reserve else {
            return Ok(());
        };
        let available =
            crate::sys::available_space(&self.root).ctx("measure free space on", &self.root)?;
        if available < reserve.saturating_add(PACK_TARGET) {
            return Err(Error::NoSpace {
                dir: self.root.clone(),
                needed: PACK_TARGET,
                reserve,
                available,
            });
        }
        Ok(())
    }

    fn start(&mut self) -> Result<&mut OpenPack> {
        if self.open.is_none() {
            self.check_room()?;
            let id = PackId::random()?;
            let path = self
                .root
                .join(pack_name(&id.to_hex(), self.sealing.is_some()));
            if let Some(dir) = path.parent()
                && !dir.is_dir()
            {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(self.dir_mode)
                    .create(dir)
                    .ctx("create the content store directory", dir)?;
            }
            let (partial, file) = PartialFile::create(&path, self.file_mode)?;
            self.open = Some(OpenPack {
                id,
                partial,
                out: MaybeSealed::new(
                    HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
                    self.sealing.as_ref(),
                )
                .ctx("encrypt", &path)?,
                len: 0,
                chunks: Vec::new(),
            });
        }
        self.open
            .as_mut()
            .ok_or_else(|| Error::io("open a pack", &self.root, io::ErrorKind::Other.into()))
    }

    /// Append chunk `id`'s `stored` bytes (`raw` plain bytes, zstd-compressed or not);
    /// returns the pack's id and the offset they start at.
    pub fn append(
        &mut self,
        id: ChunkId,
        stored: &[u8],
        (raw, zstd): (u32, bool),
    ) -> Result<(PackId, u64)> {
        if self.open.as_ref().is_some_and(|p| {
            (p.len > 0 && p.len + stored.len() as u64 > PACK_TARGET)
                || p.chunks.len() >= trailer::MAX_ENTRIES as usize
        }) {
            self.close()?;
        }
        let pack = self.start()?;
        let offset = pack.len;
        pack.out
            .write_all(stored)
            .ctx("write", pack.partial.temp_path())?;
        pack.len += stored.len() as u64;
        pack.chunks.push(PackedChunk {
            id,
            offset,
            stored: stored.len() as u32,
            raw,
            zstd,
        });
        Ok((pack.id, offset))
    }

    /// Make the open pack durable under its final name.
    fn close(&mut self) -> Result<()> {
        let Some(mut pack) = self.open.take() else {
            return Ok(());
        };
        pack.out
            .write_all(&trailer::encode(&pack.chunks))
            .ctx("write", pack.partial.temp_path())?;
        let hashed = pack.out.finish().ctx("write", pack.partial.temp_path())?;
        let (buffered, checksum, size) = hashed.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io("write", pack.partial.temp_path(), e.into_error()))?;
        // Renamed now, durable soon: no snapshot lists it until `finish` has waited.
        let path = pack.partial.final_path().to_path_buf();
        fs::rename(pack.partial.temp_path(), &path).ctx("rename into place", &path)?;
        pack.partial.keep();
        self.sync_later(file, path)?;
        self.finished.push(WrittenPack {
            pack: PackRef {
                id: pack.id.to_hex(),
                size,
                checksum,
            },
            chunks: pack.chunks,
        });
        Ok(())
    }

    /// Close the open pack; every pack written is then durable. Returns them.
    pub fn finish(mut self) -> Result<Vec<WrittenPack>> {
        self.close()?;
        self.wait_synced()?;
        // The renames are durable with their directories: those this run wrote into, each
        // once, then `packs/` itself (which may have gained a directory).
        let sealed = self.sealing.is_some();
        let dirs: std::collections::BTreeSet<PathBuf> = self
            .finished
            .iter()
            .filter_map(|p| {
                self.root
                    .join(pack_name(&p.pack.id, sealed))
                    .parent()
                    .map(Path::to_path_buf)
            })
            .collect();
        for dir in &dirs {
            sync_dir(dir)?;
        }
        if !dirs.is_empty() {
            // And up to the backup directory: the first snapshot created `store/` itself.
            let store = self.root.join(crate::catalog::STORE_DIR);
            sync_dir(&store.join("packs"))?;
            sync_dir(&store)?;
            sync_dir(&self.root)?;
        }
        Ok(self.finished)
    }
}

/// An open pack: a plain file read at offsets, or an age file's plaintext sought in.
enum OpenRead {
    /// Past the page cache: a restore reads each pack once, and a check must read the
    /// disk, not what the cache remembers of it.
    Plain(DirectReader),
    Sealed(age::stream::StreamReader<File>),
}

/// Reads chunks out of packs, keeping the last pack open (chunks of a file, and files of
/// a snapshot, mostly lie in one pack after another).
pub struct PackReader<'k> {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    root: PathBuf,
    ids: ChunkIds,
    /// Packs are age files, opened with this identity.
    sealed: bool,
    identity: Option<Key<'k>>,
    open: Option<(PackId, OpenRead)>,
    stored: Vec<u8>,
    /// A pack read whole by [`Self::load_pack`] (a verify run): its plaintext, from which
    /// its chunks are then served without reading the file again.
    loaded: Option<(PackId, Vec<u8>)>,
    /// The trailer of the pack [`Self::load_pack`] read last, taken from that same read.
    trailer: Option<(PackId, TrailerRead)>,
}

/// The identity a reader opens sealed packs with: borrowed for one run, or shared by an
/// entry list's reader that outlives the caller's borrow.
enum Key<'k> {
    Borrowed(&'k Identities),
    Shared(std::sync::Arc<Identities>),
}

impl Key<'_> {
    fn get(&self) -> &Identities {
        match self {
            Key::Borrowed(k) => k,
            Key::Shared(k) => k,
        }
    }
}

/// What a pack's trailer says: its chunks, none (no trailer, or sealed and not opened),
/// or why it could not be read.
pub type TrailerRead = std::result::Result<Option<Vec<PackedChunk>>, Damage>;

/// No pack is larger than its target plus one chunk: anything far beyond is not a pack
/// of ours, and is not read whole into memory.
const MAX_PACK_LOAD: u64 = 8 * PACK_TARGET;

/// A sealed pack when no identity was given.
fn no_identity(id: PackId) -> ChunkError {
    ChunkError::Missing(format!(
        "pack {id} is encrypted and no identity was given (--identity)"
    ))
}

/// A sealed pack that did not open: the key's problem, or the pack's.
fn undecryptable(id: PackId, e: crate::encryption::DecryptError) -> ChunkError {
    let detail = format!("pack {id} does not decrypt: {}", e.detail);
    if e.failure.is_about_the_key() {
        ChunkError::Key(e.failure, detail)
    } else {
        ChunkError::Damaged(detail)
    }
}

impl<'k> PackReader<'k> {
    /// Chunks of the backup directory `root`, with ids made as `ids`; `sealed` packs are
    /// opened with `identity`.
    pub fn new(root: &Path, ids: ChunkIds, sealed: bool, identity: Option<&'k Identities>) -> Self {
        Self::with_key(root, ids, sealed, identity.map(Key::Borrowed))
    }

    fn with_key(root: &Path, ids: ChunkIds, sealed: bool, identity: Option<Key<'k>>) -> Self {
        PackReader {
            zstd: zstd::bulk::Decompressor::new().ok(),
            root: root.to_path_buf(),
            ids,
            sealed,
            identity,
            open: None,
            stored: Vec::new(),
            loaded: None,
            trailer: None,
        }
    }

    /// As [`Self::new`], holding its identity (an entry list's reader keeps one).
    pub fn shared(
        root: &Path,
        ids: ChunkIds,
        sealed: bool,
        identity: Option<std::sync::Arc<Identities>>,
    ) -> PackReader<'static> {
        PackReader::with_key(root, ids, sealed, identity.map(Key::Shared))
    }

    /// Read pack `id` whole, once: the file's length and SHA-256 (of the bytes on disk,
    /// ciphertext for a sealed pack: no key needed), and with `keep` its plaintext kept
    /// to serve the chunks read next (a sealed pack is decrypted for that).
    pub fn load_pack(
        &mut self,
        id: PackId,
        keep: bool,
    ) -> std::result::Result<(u64, String), ChunkError> {
        use sha2::{Digest, Sha256};
        let path = self.pack_path(id);
        let missing =
            |e: io::Error| ChunkError::Missing(format!("pack {id} cannot be opened: {e}"));
        let mut file = File::open(&path).map_err(missing)?;
        let len = file.metadata().map_err(missing)?.len();
        if len > MAX_PACK_LOAD {
            return Err(ChunkError::Damaged(format!(
                "pack {id} is {len} bytes, larger than any pack this store writes"
            )));
        }
        let unreadable =
            |e: io::Error| ChunkError::Damaged(format!("pack {id} cannot be read: {e}"));
        let damaged = |e: trailer::TrailerError| Damage::Trailer {
            pack: id,
            why: e.to_string(),
        };
        if !keep {
            // Only its checksum, streamed, nothing held; a plain pack's trailer first, from
            // its end, through the same open file.
            if !self.sealed {
                let t = trailer::read(&mut file).map_err(damaged);
                self.trailer = Some((id, t));
                file.seek(SeekFrom::Start(0)).map_err(unreadable)?;
            }
            let (sha, _) = HashingReader::new(file).finish().map_err(unreadable)?;
            return Ok((len, sha));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes).map_err(unreadable)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let plain = if self.sealed {
            let identity = self.identity.as_ref().ok_or_else(|| no_identity(id))?.get();
            let mut plain = Vec::with_capacity(bytes.len());
            identity
                .decrypt(&bytes[..])
                .map_err(|e| undecryptable(id, e))?
                .read_to_end(&mut plain)
                .map_err(|e| ChunkError::Damaged(format!("pack {id} does not decrypt: {e}")))?;
            plain
        } else {
            bytes
        };
        let t = trailer::read(&mut io::Cursor::new(&plain)).map_err(damaged);
        self.trailer = Some((id, t));
        self.loaded = Some((id, plain));
        Ok((len, sha))
    }

    /// The trailer of pack `id`, as the [`Self::load_pack`] that read it found it (taken:
    /// asked again, `None`). A sealed pack read only for its checksum has none to give.
    pub fn take_trailer(&mut self, id: PackId) -> Option<TrailerRead> {
        match self.trailer.take() {
            Some((of, t)) if of == id => Some(t),
            _ => None,
        }
    }

    pub fn pack_path(&self, id: PackId) -> PathBuf {
        self.root.join(pack_name(&id.to_hex(), self.sealed))
    }

    fn file(&mut self, id: PackId) -> std::result::Result<&mut OpenRead, ChunkError> {
        if self.open.as_ref().is_none_or(|(open, _)| *open != id) {
            let path = self.pack_path(id);
            let file = File::open(&path)
                .map_err(|e| ChunkError::Missing(format!("pack {id} cannot be opened: {e}")))?;
            let open = if self.sealed {
                let identity = self.identity.as_ref().ok_or_else(|| no_identity(id))?.get();
                let reader = identity.decrypt(file).map_err(|e| undecryptable(id, e))?;
                OpenRead::Sealed(reader)
            } else {
                OpenRead::Plain(DirectReader::new(file))
            };
            self.open = Some((id, open));
        }
        match &mut self.open {
            Some((_, f)) => Ok(f),
            None => Err(ChunkError::Missing(format!("pack {id} is not open"))),
        }
    }

    /// The plain bytes of `chunk` into `out` (cleared first), checked against its id.
    pub fn read_chunk(
        &mut self,
        chunk: &super::tree::ChunkRef,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), ChunkError> {
        let mut stored = std::mem::take(&mut self.stored);
        let result = self.read_into(chunk, &mut stored, out);
        self.stored = stored;
        result
    }

    /// The stored bytes (compressed or not, as in the pack) of the chunk the last
    /// [`Self::read_chunk`] read: what a copy into another pack takes as is.
    pub fn last_stored(&self) -> &[u8] {
        &self.stored
    }

    fn read_into(
        &mut self,
        chunk: &super::tree::ChunkRef,
        stored: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), ChunkError> {
        stored.resize(chunk.stored as usize, 0);
        let short = |e: io::Error| {
            ChunkError::Damaged(format!(
                "pack {} has no {} bytes at offset {}: {e}",
                chunk.pack, chunk.stored, chunk.offset
            ))
        };
        let in_memory = self
            .loaded
            .as_ref()
            .filter(|(id, _)| *id == chunk.pack)
            .map(|(_, plain)| plain);
        if let Some(plain) = in_memory {
            let range = usize::try_from(chunk.offset)
                .ok()
                .and_then(|start| Some(start..start.checked_add(chunk.stored as usize)?))
                .filter(|r| r.end <= plain.len())
                .ok_or_else(|| short(io::Error::from(io::ErrorKind::UnexpectedEof)))?;
            stored.copy_from_slice(&plain[range]);
        } else {
            match self.file(chunk.pack)? {
                OpenRead::Plain(f) => f.read_exact_at(stored, chunk.offset).map_err(short)?,
                OpenRead::Sealed(r) => {
                    r.seek(SeekFrom::Start(chunk.offset)).map_err(short)?;
                    r.read_exact(stored).map_err(short)?;
                }
            }
        }
        out.clear();
        if chunk.zstd {
            out.reserve(chunk.raw as usize);
            // One decompression context for every chunk (a new one per chunk costs more
            // than a 16 KiB chunk's decoding); the stream decoder if none could be made.
            let decoded = match &mut self.zstd {
                Some(z) => z.decompress_to_buffer(&stored[..], &mut *out).map(|_| ()),
                None => zstd::stream::copy_decode(&stored[..], &mut *out),
            };
            decoded.map_err(|e| {
                ChunkError::Damaged(format!(
                    "chunk {} in pack {} does not decompress: {e}",
                    chunk.id, chunk.pack
                ))
            })?;
        } else {
            out.extend_from_slice(stored);
        }
        let id = ChunkId(self.ids.id(&out[..]));
        if out.len() != chunk.raw as usize || id != chunk.id {
            return Err(ChunkError::Damaged(format!(
                "chunk {} in pack {} reads back as {} bytes with id {id}",
                chunk.id,
                chunk.pack,
                out.len()
            )));
        }
        Ok(())
    }

    /// Whether `chunk`'s bytes are all in its pack (the pack's length covers them; an
    /// encrypted pack is longer than its plaintext, so there this is a lower bound).
    pub fn check_present(
        &mut self,
        chunk: &super::tree::ChunkRef,
    ) -> std::result::Result<(), ChunkError> {
        let path = self.pack_path(chunk.pack);
        let len = fs::metadata(&path)
            .map_err(|e| ChunkError::Missing(format!("pack {} cannot be opened: {e}", chunk.pack)))?
            .len();
        if chunk.offset + u64::from(chunk.stored) > len {
            return Err(ChunkError::Damaged(format!(
                "pack {} is {len} bytes, chunk {} ends at {}",
                chunk.pack,
                chunk.id,
                chunk.offset + u64::from(chunk.stored)
            )));
        }
        Ok(())
    }
}
