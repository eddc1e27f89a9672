//! Writing a snapshot's content: the reading side (walk, read, cut, hash, look up) runs on
//! the caller's thread; compressing new chunks into packs and writing the entry list run
//! on a "pack" thread beside it, so two cores each do half the work. Chunks flow through
//! a bounded channel (memory stays flat however large the tree), buffers flow back to be
//! reused. A chunk whose id is already known — from the parent snapshot or earlier in this
//! run — is not sent at all, only its reference. The pack thread also cuts the entry
//! list into parts ([`super::tree`]) and stores each new one in packs of their own
//! (sealed so that this server can read them back, as the entry list itself); a part
//! the parent already had is found by its id and only referenced.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::chunk_table::{ChunkTable, Found, Slot};
use super::ids::{ChunkId, PackId};
use super::index::{IndexTarget, IndexWriter, IndexedPack};
use super::keys::{ChunkIds, MaybeSealed};
use super::pack::{PackWriter, WrittenPack};
use super::tree::{ChunkRef, Node, PartStore, TreeHeader, TreeWriter};
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

/// One chunk of the file being described.
enum Piece {
    /// Known already: its reference.
    Known(ChunkRef),
    /// Sent earlier in this run, at this slot of the table.
    Again(Slot),
    /// New: compress at `level`, store, and say where at `slot`.
    New {
        id: [u8; 32],
        slot: Slot,
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
    /// Parts of the entry list stored by this run, and found stored already.
    pub parts_stored: u64,
    pub parts_reused: u64,
    /// Packs holding the parts found stored already.
    reused_part_packs: HashSet<PackId>,
}

/// Where a snapshot's new data goes: chunks of files into `packs`, parts of its entry
/// list into `parts` — packs of their own, as restic keeps trees apart from data: a lost
/// pack of file data still leaves every entry known (and named by `verify` and
/// `repair`), and encrypted, parts are sealed as entry lists are, so that this server
/// reads its parent back. All indexed into `index` as each pack closes.
pub struct SnapshotStore {
    pub packs: PackWriter,
    pub parts: PackWriter,
    pub index: IndexTarget,
    /// How chunk ids (parts' too) are made.
    pub ids: ChunkIds,
}

/// The pack thread and the reading side's table of known chunk ids.
pub struct SnapshotWriter {
    tx: Option<SyncSender<Vec<Msg>>>,
    batch: Vec<Msg>,
    batch_bytes: usize,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<(File, Written)>>>,
    /// Every chunk this run can find again; the pack thread fills in where the new ones
    /// went.
    known: Arc<Mutex<ChunkTable>>,
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
    /// encrypted to `sealed` when given) and new chunks and parts into `store`.
    pub fn start(
        tree: File,
        tree_partial: &PartialFile,
        header: TreeHeader,
        store: SnapshotStore,
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
        let known = Arc::new(Mutex::new(ChunkTable::default()));
        let table = Arc::clone(&known);
        let thread = std::thread::Builder::new()
            .name("pack".into())
            .spawn(move || pack_thread(rx, back_tx, (writer, store), &table, &tree_path, &stop))
            .map_err(|e| Error::io("start the pack thread", "", e))?;
        Ok(SnapshotWriter {
            tx: Some(tx),
            batch: Vec::with_capacity(BATCH_MESSAGES),
            batch_bytes: 0,
            recycled,
            thread: Some(thread),
            known,
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
        self.table().insert_stored(pack, chunk);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ChunkTable> {
        // A panic elsewhere leaves the table as consistent as any insert leaves it.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer for the next new chunk: one the pack thread is done with, or a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Describe one chunk of the current file: `data` holds its bytes (`len` of them).
    /// Returns whether it was new.
    pub fn chunk(&mut self, id: [u8; 32], data: &[u8], level: i32) -> Result<bool> {
        // One lock for the lookup and, for a new chunk, its entry.
        let found = {
            let mut table = self.table();
            table.get(&id).ok_or_else(|| table.insert_sent(id))
        };
        let piece = match found {
            Ok(Found::Stored(c)) => {
                self.reused_packs.insert(c.pack);
                Piece::Known(c)
            }
            Ok(Found::Sent(slot)) => Piece::Again(slot),
            Err(slot) => {
                let mut buf = self.buffer();
                // A large buffer is not spent on a small chunk: memory is what is in flight.
                if buf.capacity() > 2 * data.len().max(1 << 20) {
                    buf = Vec::new();
                }
                buf.clear();
                buf.extend_from_slice(data);
                Piece::New {
                    id,
                    slot,
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
        packs.extend(written.reused_part_packs.iter().map(|p| p.to_hex()));
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

/// Add the closed pack `p` to the index file (begun now if it is the first), taking its
/// chunk list.
fn add_to_index(
    target: &IndexTarget,
    indexing: &mut Option<IndexWriter>,
    p: &mut WrittenPack,
) -> Result<()> {
    let chunks = std::mem::take(&mut p.chunks);
    let Some(pack) = IndexedPack::of(&p.pack, chunks) else {
        return Ok(());
    };
    let w = match indexing {
        Some(w) => w,
        None => indexing.insert(target.create()?),
    };
    w.add(&pack)
}

/// The pack thread's side of new chunks: compress, append to a pack, say where in the
/// shared table.
struct NewChunks<'a> {
    packs: PackWriter,
    parts: PackWriter,
    ids: ChunkIds,
    index: IndexTarget,
    /// The index file, once a pack has been closed.
    indexing: Option<IndexWriter>,
    known: &'a Mutex<ChunkTable>,
    compressed: Vec<u8>,
    zstd: zstd::bulk::Compressor<'static>,
    level: i32,
    tree_path: &'a std::path::Path,
    written: Written,
}

impl NewChunks<'_> {
    fn table(&self) -> std::sync::MutexGuard<'_, ChunkTable> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compress `plain` and append it to a pack (of parts: `part`); say where at `slot`.
    fn store(
        &mut self,
        (id, slot, part): ([u8; 32], Slot, bool),
        plain: &[u8],
        level: i32,
    ) -> Result<ChunkRef> {
        if level != self.level {
            self.zstd
                .set_compression_level(level)
                .ctx("set the zstd level for", self.tree_path)?;
            self.level = level;
        }
        let len = plain.len();
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(len));
        let packed = self
            .zstd
            .compress_to_buffer(plain, &mut self.compressed)
            .map(|n| n < len)
            .unwrap_or(false);
        let stored: &[u8] = if packed { &self.compressed } else { plain };
        let packs = if part {
            &mut self.parts
        } else {
            &mut self.packs
        };
        let (pack, offset) = packs.append(ChunkId(id), stored, (len as u32, packed))?;
        let c = ChunkRef {
            id: ChunkId(id),
            pack,
            offset,
            stored: stored.len() as u32,
            raw: len as u32,
            zstd: packed,
        };
        // A pack we write ends past its 16 MiB target by one chunk at most: its offsets
        // and lengths always fit the table.
        if !self.table().set_stored(slot, pack, &c.packed()) {
            return Err(Error::Internal(format!(
                "chunk {} at offset {offset} of pack {pack} does not fit the chunk table",
                c.id.to_hex()
            )));
        }
        Ok(c)
    }

    /// Index the packs closed since the last call, dropping their chunk lists.
    fn index_closed(&mut self) -> Result<()> {
        for p in self.packs.newly_closed() {
            add_to_index(&self.index, &mut self.indexing, p)?;
        }
        for p in self.parts.newly_closed() {
            add_to_index(&self.index, &mut self.indexing, p)?;
        }
        Ok(())
    }

    /// A chunk stored earlier in this run, sent again.
    fn again(&self, slot: Slot) -> Result<ChunkRef> {
        let found = self.table().reference(slot);
        found.ok_or_else(|| {
            Error::io(
                "write the snapshot",
                self.tree_path,
                io::Error::other("a repeated chunk was never stored"),
            )
        })
    }
}

impl PartStore for NewChunks<'_> {
    /// A part is a chunk like any other: found by its id when the parent (or the index)
    /// has it, else stored in a pack of parts.
    fn store_part(&mut self, plain: &[u8]) -> Result<ChunkRef> {
        let id = self.ids.id(plain);
        let found = {
            let mut table = self.table();
            table.get(&id).ok_or_else(|| table.insert_sent(id))
        };
        match found {
            Ok(Found::Stored(c)) => {
                self.written.parts_reused += 1;
                self.written.reused_part_packs.insert(c.pack);
                Ok(c)
            }
            // Stored by this thread already (a part this run made twice).
            Ok(Found::Sent(slot)) => {
                self.written.parts_reused += 1;
                self.again(slot)
            }
            Err(slot) => {
                let c = self.store((id, slot, true), plain, PART_LEVEL)?;
                self.index_closed()?;
                self.written.parts_stored += 1;
                self.written.added_bytes += u64::from(c.stored);
                Ok(c)
            }
        }
    }
}

/// zstd level of parts (JSON lines: they shrink well at the default level).
const PART_LEVEL: i32 = 3;

fn pack_thread(
    rx: Receiver<Vec<Msg>>,
    back: SyncSender<Vec<u8>>,
    (mut tree, target): (TreeOut, SnapshotStore),
    known: &Mutex<ChunkTable>,
    tree_path: &std::path::Path,
    abandoned: &AtomicBool,
) -> Result<(File, Written)> {
    let mut store = NewChunks {
        packs: target.packs,
        parts: target.parts,
        ids: target.ids,
        index: target.index,
        indexing: None,
        known,
        compressed: Vec::new(),
        zstd: zstd::bulk::Compressor::new(3).ctx("start zstd for", tree_path)?,
        level: 3,
        tree_path,
        written: Written::default(),
    };
    let mut chunks: Vec<ChunkRef> = Vec::new();
    for msg in rx.into_iter().flatten() {
        if abandoned.load(Ordering::Relaxed) {
            break;
        }
        match msg {
            Msg::Piece(Piece::Known(c)) => chunks.push(c),
            Msg::Piece(Piece::Again(slot)) => chunks.push(store.again(slot)?),
            Msg::Piece(Piece::New {
                id,
                slot,
                data,
                len,
                level,
            }) => {
                let c = store.store((id, slot, false), &data[..len], level)?;
                store.index_closed()?;
                store.written.added_bytes += u64::from(c.stored);
                store.written.added_chunks += 1;
                chunks.push(c);
                let _ = back.try_send(data);
            }
            Msg::Node(mut node) => {
                store.written.chunks += chunks.len() as u64;
                node.chunks = std::mem::take(&mut chunks);
                tree.push_to_part(node, &mut store, tree_path)?;
            }
        }
    }
    if abandoned.load(Ordering::SeqCst) {
        return Err(crate::error::Error::Cancelled);
    }
    tree.end_parts(&mut store, tree_path)?;
    let NewChunks {
        packs,
        parts,
        index,
        mut indexing,
        mut written,
        ..
    } = store;
    written.new_packs = packs.finish()?;
    written.new_packs.extend(parts.finish()?);
    // The packs closed last (their chunk lists not yet taken), then the index file made
    // durable: before the entry list that points into them can land.
    for p in written
        .new_packs
        .iter_mut()
        .filter(|p| !p.chunks.is_empty())
    {
        add_to_index(&index, &mut indexing, p)?;
    }
    if let Some(w) = indexing {
        w.finish()?;
    }
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
