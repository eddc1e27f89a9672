//! Writing a snapshot's content: the reading side (walk, read, cut, hash, look up) runs on
//! the caller's thread; compressing new chunks into packs and writing the entry list run
//! on a "pack" thread beside it, so two cores each do half the work. Chunks flow through
//! a bounded channel (memory stays flat however large the tree), buffers flow back to be
//! reused. A chunk whose id is already known — from the parent snapshot or earlier in this
//! run — is not sent at all, only its reference.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::keys::MaybeSealed;
use super::pack::PackWriter;
use super::tree::{ChunkRef, Node, TreeHeader, TreeWriter};
use crate::catalog::{PackRef, PartialFile};
use crate::encryption::Recipients;
use crate::engine::hashing::HashingWriter;
use crate::error::{Error, IoContext, Result};

/// Chunks in flight between the two threads (at most this many buffers of up to
/// [`super::chunker::CDC_MAX`] bytes).
const IN_FLIGHT: usize = 4;

/// What the reading side knows of a chunk id.
#[derive(Clone)]
enum Known {
    /// Stored before this run, here.
    Stored(ChunkRef),
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
    pub added_bytes: u64,
    pub added_chunks: u64,
    pub chunks: u64,
    pub entries: u64,
    pub tree_checksum: String,
    pub tree_size: u64,
}

/// The pack thread and the reading side's table of known chunk ids.
pub struct SnapshotWriter {
    tx: Option<SyncSender<Msg>>,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<Result<(File, Written)>>>,
    known: HashMap<[u8; 32], Known>,
    /// Packs the known chunks lie in (whatever this run adds, the thread reports).
    reused_packs: HashSet<String>,
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
        let (tx, rx) = sync_channel::<Msg>(IN_FLIGHT);
        let (back_tx, recycled) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let tree_path = tree_partial.temp_path().to_path_buf();
        let hashed = HashingWriter::new(BufWriter::with_capacity(1 << 20, tree));
        let out = MaybeSealed::new(hashed, sealed).ctx("encrypt", &tree_path)?;
        let writer = TreeWriter::new(out, header).ctx("write", &tree_path)?;
        let thread = std::thread::Builder::new()
            .name("pack".into())
            .spawn(move || pack_thread(rx, back_tx, writer, packs, &tree_path))
            .map_err(|e| Error::io("start the pack thread", "", e))?;
        Ok(SnapshotWriter {
            tx: Some(tx),
            recycled,
            thread: Some(thread),
            known: HashMap::new(),
            reused_packs: HashSet::new(),
        })
    }

    /// Whether the table has been seeded (see [`Self::seed`]).
    pub fn knows_anything(&self) -> bool {
        !self.known.is_empty()
    }

    /// Make chunks stored earlier (the parent's) known, so they are not stored again.
    pub fn seed(&mut self, chunk: &ChunkRef) {
        if let Some(id) = parse_id(&chunk.id) {
            self.known
                .entry(id)
                .or_insert_with(|| Known::Stored(chunk.clone()));
        }
    }

    /// A buffer for the next new chunk: one the pack thread is done with, or a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Describe one chunk of the current file: `data` holds its bytes (`len` of them).
    /// Returns whether it was new.
    pub fn chunk(&mut self, id: [u8; 32], data: &[u8], level: i32) -> Result<bool> {
        let piece = match self.known.get(&id) {
            Some(Known::Stored(c)) => {
                self.reused_packs.insert(c.pack.clone());
                Piece::Known(c.clone())
            }
            Some(Known::Sent) => Piece::Again(id),
            None => {
                self.known.insert(id, Known::Sent);
                let mut buf = self.buffer();
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
            self.reused_packs.insert(c.pack.clone());
            self.send(Msg::Piece(Piece::Known(c.clone())))?;
        }
        Ok(())
    }

    /// The entry the chunks sent since the last entry belong to.
    pub fn node(&mut self, node: Node) -> Result<()> {
        self.send(Msg::Node(node))
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(msg).is_ok());
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
        let (file, mut written) = self.stop()?;
        let mut packs: HashSet<String> = written.packs.iter().map(|p| p.id.clone()).collect();
        packs.extend(self.reused_packs.iter().cloned());
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

fn parse_id(hex_id: &str) -> Option<[u8; 32]> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(hex_id, &mut id).ok()?;
    Some(id)
}

fn pack_thread(
    rx: Receiver<Msg>,
    back: SyncSender<Vec<u8>>,
    mut tree: TreeWriter<MaybeSealed<HashingWriter<BufWriter<File>>>>,
    mut packs: PackWriter,
    tree_path: &std::path::Path,
) -> Result<(File, Written)> {
    let mut written = Written::default();
    let mut here: HashMap<[u8; 32], ChunkRef> = HashMap::new();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut compressed: Vec<u8> = Vec::new();
    let mut zstd = zstd::bulk::Compressor::new(3).ctx("start zstd for", tree_path)?;
    let mut level_now = 3;
    for msg in rx {
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
                let (pack, offset) = packs.append(stored)?;
                let c = ChunkRef {
                    id: hex::encode(id),
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
    written.entries = tree.entries();
    written.packs = packs.finish()?;
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
