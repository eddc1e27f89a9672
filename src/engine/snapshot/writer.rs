//! Writing a snapshot's content: the reading side (walk, read, cut, hash, look up) runs on
//! the caller's thread; compressing new chunks into packs and writing the entry list run
//! on a "pack" thread beside it, so two cores each do half the work. Chunks flow through
//! a bounded channel (memory stays flat however large the tree), buffers flow back to be
//! reused. A chunk whose id is already known — from the parent snapshot or earlier in this
//! run — is not sent at all, only its reference.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::ids::{ChunkId, PackId};
use super::keys::MaybeSealed;
use super::pack::{PackWriter, WrittenPack};
use super::tree::{ChunkRef, Node, TreeHeader, TreeWriter};
use crate::catalog::{PackRef, PartialFile};
use crate::encryption::Recipients;
use crate::engine::hashing::HashingWriter;
use crate::error::{Error, IoContext, Result};

/// Batches in flight between the two threads.
const IN_FLIGHT: usize = 2;
/// A batch is sent once it holds this many messages or this many bytes of new chunks:
/// one message per chunk and per entry would cost a futex wake-up each (100 000 unchanged
/// files: 400 000 system calls), while memory stays bounded by the bytes.
const BATCH_MESSAGES: usize = 1024;
const BATCH_BYTES: usize = 2 << 20;
/// Buffers of new chunks handed back for reuse, at most.
const RECYCLED: usize = 4;

/// What the reading side knows of a chunk id: 24 bytes (plus its 32-byte key), so the
/// table of a parent with a million chunks stays under 100 MB and one of 100 000 files
/// under 10 MB.
#[derive(Clone, Copy)]
enum Known {
    /// Stored before this run: in the pack `pack` (an index into the pack names).
    Stored {
        pack: u32,
        offset: u64,
        stored: u32,
        raw: u32,
        zstd: bool,
    },
    /// Sent to the pack thread in this run: it fills in where.
    Sent,
}

/// One chunk of the file being described.
enum Piece {
    /// Known already: its reference.
    Known(ChunkRef),
    /// Sent earlier in this run under this id.
    Again([u8; 32]),
    /// New: compress at `level` and store.
    New {
        id: [u8; 32],
        data: Vec<u8>,
        len: usize,
        level: i32,
    },
}

enum Msg {
    Piece(Piece),
    /// The entry whose pieces were just sent (its `chunks` are filled in by the thread).
    Node(Node),
}

/// What the pack thread wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub packs: Vec<PackRef>,
    /// The packs this run wrote, with the chunks each holds (for the index).
    pub new_packs: Vec<WrittenPack>,
    pub added_bytes: u64,
    pub added_chunks: u64,
    pub chunks: u64,
    pub tree_checksum: String,
    pub tree_size: u64,
}

/// The pack thread and the reading side's table of known chunk ids.
pub struct SnapshotWriter {
    tx: Option<SyncSender<Vec<Msg>>>,
    batch: Vec<Msg>,
    batch_bytes: usize,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<(File, Written)>>>,
    known: HashMap<[u8; 32], Known>,
    /// The names of the packs known chunks lie in, each once.
    pack_names: Vec<PackId>,
    pack_index: HashMap<PackId, u32>,
    /// Packs the known chunks lie in (whatever this run adds, the thread reports).
    reused_packs: HashSet<PackId>,
    /// Set when the snapshot is given up (an error, a cancel): the thread then stops
    /// without closing the entry list or the open pack (their `.partial` files go).
    abandoned: Arc<AtomicBool>,
}

impl Drop for SnapshotWriter {
    /// Dropped without [`SnapshotWriter::finish`]: stop the thread and wait for it, so
    /// nothing of this snapshot is still being written once the error is reported.
    fn drop(&mut self) {
        if let Some(handle) = self.thread.take() {
            self.abandoned.store(true, Ordering::SeqCst);
            self.tx = None;
            let _ = handle.join();
        }
    }
}

impl SnapshotWriter {
    /// Start the pack thread writing the entry list into `tree` (a `.partial` file;
    /// encrypted to `sealed` when given) and new chunks into `packs`.
    pub fn start(
        tree: File,
        tree_partial: &PartialFile,
        header: TreeHeader,
        packs: PackWriter,
        sealed: Option<&Recipients>,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel::<Vec<Msg>>(IN_FLIGHT);
        let (back_tx, recycled) = sync_channel::<Vec<u8>>(RECYCLED);
        let tree_path = tree_partial.temp_path().to_path_buf();
        let hashed = HashingWriter::new(BufWriter::with_capacity(1 << 20, tree));
        let out = MaybeSealed::new(hashed, sealed).ctx("encrypt", &tree_path)?;
        let writer = TreeWriter::new(out, header).ctx("write", &tree_path)?;
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abandoned);
        let thread = std::thread::Builder::new()
            .name("pack".into())
            .spawn(move || pack_thread(rx, back_tx, (writer, packs), &tree_path, &stop))
            .map_err(|e| Error::io("start the pack thread", "", e))?;
        Ok(SnapshotWriter {
            tx: Some(tx),
            batch: Vec::with_capacity(BATCH_MESSAGES),
            batch_bytes: 0,
            recycled,
            thread: Some(thread),
            known: HashMap::new(),
            pack_names: Vec::new(),
            pack_index: HashMap::new(),
            reused_packs: HashSet::new(),
            abandoned,
        })
    }

    /// Make chunks stored earlier (the parent's) known, so they are not stored again.
    pub fn seed(&mut self, chunk: &ChunkRef) {
        let at = super::trailer::PackedChunk {
            id: chunk.id,
            offset: chunk.offset,
            stored: chunk.stored,
            raw: chunk.raw,
            zstd: chunk.zstd,
        };
        self.seed_packed(chunk.pack, &at);
    }

    /// Make a chunk the index lists (in pack `pack`) known.
    pub fn seed_packed(&mut self, pack: PackId, chunk: &super::trailer::PackedChunk) {
        if self.known.contains_key(&chunk.id.0) {
            return;
        }
        let pack = self.pack_number(pack);
        self.known.insert(
            chunk.id.0,
            Known::Stored {
                pack,
                offset: chunk.offset,
                stored: chunk.stored,
                raw: chunk.raw,
                zstd: chunk.zstd,
            },
        );
    }

    /// The number standing for pack `name` in the known table.
    fn pack_number(&mut self, name: PackId) -> u32 {
        match self.pack_index.get(&name) {
            Some(i) => *i,
            None => {
                let i = self.pack_names.len() as u32;
                self.pack_names.push(name);
                self.pack_index.insert(name, i);
                i
            }
        }
    }

    /// A buffer for the next new chunk: one the pack thread is done with, or a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Describe one chunk of the current file: `data` holds its bytes (`len` of them).
    /// Returns whether it was new.
    pub fn chunk(&mut self, id: [u8; 32], data: &[u8], level: i32) -> Result<bool> {
        let piece = match self.known.get(&id).copied() {
            Some(Known::Stored {
                pack,
                offset,
                stored,
                raw,
                zstd,
            }) => {
                let pack = self.pack_names[pack as usize];
                self.reused_packs.insert(pack);
                Piece::Known(ChunkRef {
                    id: ChunkId(id),
                    pack,
                    offset,
                    stored,
                    raw,
                    zstd,
                })
            }
            Some(Known::Sent) => Piece::Again(id),
            None => {
                self.known.insert(id, Known::Sent);
                let mut buf = self.buffer();
                // A large buffer is not spent on a small chunk: memory is what is in flight.
                if buf.capacity() > 2 * data.len().max(1 << 20) {
                    buf = Vec::new();
                }
                buf.clear();
                buf.extend_from_slice(data);
                Piece::New {
                    id,
                    len: data.len(),
                    data: buf,
                    level,
                }
            }
        };
        let new = matches!(piece, Piece::New { .. });
        self.send(Msg::Piece(piece))?;
        Ok(new)
    }

    /// A file's chunks, taken whole from the parent (the file is unchanged).
    pub fn reuse(&mut self, chunks: &[ChunkRef]) -> Result<()> {
        for c in chunks {
            self.reused_packs.insert(c.pack);
            self.send(Msg::Piece(Piece::Known(c.clone())))?;
        }
        Ok(())
    }

    /// The entry the chunks sent since the last entry belong to.
    pub fn node(&mut self, node: Node) -> Result<()> {
        self.send(Msg::Node(node))
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        if let Msg::Piece(Piece::New { len, .. }) = &msg {
            self.batch_bytes += len;
        }
        self.batch.push(msg);
        if self.batch.len() >= BATCH_MESSAGES || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_MESSAGES));
        self.batch_bytes = 0;
        let sent = self.tx.as_ref().map(|tx| tx.send(batch).is_ok());
        match sent {
            Some(true) => Ok(()),
            // The thread stopped: its error says why.
            _ => Err(self.stop().err().unwrap_or_else(|| {
                Error::io(
                    "write the snapshot",
                    "",
                    io::Error::other("the pack thread stopped"),
                )
            })),
        }
    }

    fn stop(&mut self) -> Result<(File, Written)> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::io(
                "write the snapshot",
                "",
                io::Error::other("the pack thread panicked"),
            )),
            None => Err(Error::io(
                "write the snapshot",
                "",
                io::Error::other("the pack thread already stopped"),
            )),
        }
    }

    /// Close the entry list and the last pack; every pack is durable on return. The
    /// entry list is returned unsynced, for the caller to fsync and commit.
    pub fn finish(mut self) -> Result<(File, Written)> {
        self.flush()?;
        let (file, mut written) = self.stop()?;
        let mut packs: HashSet<String> = written.packs.iter().map(|p| p.id.clone()).collect();
        packs.extend(self.reused_packs.iter().map(|p| p.to_hex()));
        written.packs.retain(|p| packs.remove(&p.id));
        // Reused packs are recorded with their size and checksum by the caller (from the
        // parent's metadata): only their ids are known here.
        written.packs.extend(packs.into_iter().map(|id| PackRef {
            id,
            size: 0,
            checksum: String::new(),
        }));
        Ok((file, written))
    }
}

type TreeOut = TreeWriter<MaybeSealed<HashingWriter<BufWriter<File>>>>;

fn pack_thread(
    rx: Receiver<Vec<Msg>>,
    back: SyncSender<Vec<u8>>,
    (mut tree, mut packs): (TreeOut, PackWriter),
    tree_path: &std::path::Path,
    abandoned: &AtomicBool,
) -> Result<(File, Written)> {
    let mut written = Written::default();
    let mut here: HashMap<[u8; 32], ChunkRef> = HashMap::new();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut compressed: Vec<u8> = Vec::new();
    let mut zstd = zstd::bulk::Compressor::new(3).ctx("start zstd for", tree_path)?;
    let mut level_now = 3;
    for msg in rx.into_iter().flatten() {
        if abandoned.load(Ordering::Relaxed) {
            break;
        }
        match msg {
            Msg::Piece(Piece::Known(c)) => chunks.push(c),
            Msg::Piece(Piece::Again(id)) => match here.get(&id) {
                Some(c) => chunks.push(c.clone()),
                None => {
                    return Err(Error::io(
                        "write the snapshot",
                        tree_path,
                        io::Error::other("a repeated chunk was never stored"),
                    ));
                }
            },
            Msg::Piece(Piece::New {
                id,
                data,
                len,
                level,
            }) => {
                if level != level_now {
                    zstd.set_compression_level(level)
                        .ctx("set the zstd level for", tree_path)?;
                    level_now = level;
                }
                let plain = &data[..len];
                compressed.clear();
                compressed.reserve(zstd::zstd_safe::compress_bound(len));
                let packed = zstd
                    .compress_to_buffer(plain, &mut compressed)
                    .map(|n| n < len)
                    .unwrap_or(false);
                let stored: &[u8] = if packed { &compressed } else { plain };
                let (pack, offset) = packs.append(ChunkId(id), stored, (len as u32, packed))?;
                let c = ChunkRef {
                    id: ChunkId(id),
                    pack,
                    offset,
                    stored: stored.len() as u32,
                    raw: len as u32,
                    zstd: packed,
                };
                written.added_bytes += stored.len() as u64;
                written.added_chunks += 1;
                here.insert(id, c.clone());
                chunks.push(c);
                let _ = back.try_send(data);
            }
            Msg::Node(mut node) => {
                written.chunks += chunks.len() as u64;
                node.chunks = std::mem::take(&mut chunks);
                tree.push(node).ctx("write", tree_path)?;
            }
        }
    }
    if abandoned.load(Ordering::SeqCst) {
        return Err(crate::error::Error::Cancelled);
    }
    written.new_packs = packs.finish()?;
    written.packs = written.new_packs.iter().map(|p| p.pack.clone()).collect();
    let hashed = tree
        .finish()
        .and_then(MaybeSealed::finish)
        .ctx("write", tree_path)?;
    let (buffered, checksum, size) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| Error::io("write", tree_path, e.into_error()))?;
    written.tree_checksum = checksum;
    written.tree_size = size;
    Ok((file, written))
}
