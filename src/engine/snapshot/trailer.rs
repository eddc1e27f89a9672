//! A pack's trailer: the list of the chunks the pack holds, written after its last chunk
//! (inside the age stream when the pack is sealed), so that the store can be indexed again
//! from its packs alone when the index is lost or damaged (restic's pack header).
//!
//! Layout, little-endian, at the end of the pack's plaintext:
//! `entries` (`count` × 49 bytes: chunk id 32, offset u64, stored u32, raw u32, flags u8
//! with bit 0 = zstd), then a 44-byte footer: SHA-256 of `entries` (32), `count` (u32) and
//! the magic `VXPACKT1` (8). A pack written before trailers existed (format 1) ends with a
//! chunk, not the magic: it has no trailer, and is indexed from the entry lists that
//! point into it.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::ids::ChunkId;

/// The last 8 bytes of every pack with a trailer.
pub const MAGIC: &[u8; 8] = b"VXPACKT1";
/// One entry's length.
pub const ENTRY_LEN: usize = 49;
/// The footer's length: checksum, count, magic.
pub const FOOTER_LEN: usize = 32 + 4 + 8;
/// The most chunks one pack holds: a pack of tiny files is closed at this count before it
/// reaches its size, so a trailer is at most 3 MiB, and so is what a hostile count can
/// make a reader allocate.
pub const MAX_ENTRIES: u32 = 1 << 16;

/// Where one chunk lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub stored: u32,
    pub raw: u32,
    pub zstd: bool,
}

/// The trailer's bytes for `chunks` (in the order they were appended).
pub fn encode(chunks: &[PackedChunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * ENTRY_LEN + FOOTER_LEN);
    for c in chunks {
        encode_entry(c, &mut out);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// Why a trailer could not be read.
#[derive(Debug)]
pub enum TrailerError {
    /// The pack could not be read (its file, or its decryption).
    Io(io::Error),
    /// The footer is there but what it describes is not a trailer of ours.
    Damaged(String),
}

impl std::fmt::Display for TrailerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrailerError::Io(e) => write!(f, "cannot be read: {e}"),
            TrailerError::Damaged(d) => write!(f, "its trailer is damaged: {d}"),
        }
    }
}

/// The chunks a pack's trailer lists, from its plaintext `pack` (a file, or an age stream
/// sought in). `None`: the pack has no trailer (written by format 1). Every entry is
/// checked to lie inside the pack, before the trailer, in order and without overlap.
pub fn read<R: Read + Seek>(
    pack: &mut R,
) -> std::result::Result<Option<Vec<PackedChunk>>, TrailerError> {
    let len = pack.seek(SeekFrom::End(0)).map_err(TrailerError::Io)?;
    if len < FOOTER_LEN as u64 {
        return Ok(None);
    }
    let mut footer = [0u8; FOOTER_LEN];
    pack.seek(SeekFrom::Start(len - FOOTER_LEN as u64))
        .and_then(|_| pack.read_exact(&mut footer))
        .map_err(TrailerError::Io)?;
    if &footer[36..] != MAGIC {
        return Ok(None);
    }
    let count = u32::from_le_bytes([footer[32], footer[33], footer[34], footer[35]]);
    let entries_len = u64::from(count) * ENTRY_LEN as u64;
    if count > MAX_ENTRIES || entries_len + FOOTER_LEN as u64 > len {
        return Err(TrailerError::Damaged(format!(
            "it claims {count} chunks, more than a pack of {len} bytes holds"
        )));
    }
    let start = len - FOOTER_LEN as u64 - entries_len;
    let mut entries = vec![0u8; entries_len as usize];
    pack.seek(SeekFrom::Start(start))
        .and_then(|_| pack.read_exact(&mut entries))
        .map_err(TrailerError::Io)?;
    if Sha256::digest(&entries)[..] != footer[..32] {
        return Err(TrailerError::Damaged(
            "its list of chunks does not match its checksum".into(),
        ));
    }
    let chunks: Vec<PackedChunk> = entries.chunks_exact(ENTRY_LEN).map(decode_entry).collect();
    validate(&chunks, start)?;
    Ok(Some(chunks))
}

/// One entry's 49 bytes (the index stores chunks the same way).
pub(super) fn encode_entry(c: &PackedChunk, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.id.0);
    out.extend_from_slice(&c.offset.to_le_bytes());
    out.extend_from_slice(&c.stored.to_le_bytes());
    out.extend_from_slice(&c.raw.to_le_bytes());
    out.push(u8::from(c.zstd));
}

pub(super) fn decode_entry(e: &[u8]) -> PackedChunk {
    let mut id = [0u8; 32];
    id.copy_from_slice(&e[..32]);
    let u32_at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&e[32..40]);
    PackedChunk {
        id: ChunkId(id),
        offset: u64::from_le_bytes(offset),
        stored: u32_at(40),
        raw: u32_at(44),
        zstd: e[48] & 1 == 1,
    }
}

/// Entries in order, each inside `[0, end)`, none overlapping the next, each within the
/// format's chunk size.
pub(super) fn validate(chunks: &[PackedChunk], end: u64) -> std::result::Result<(), TrailerError> {
    let max = super::chunker::CDC_MAX as u32;
    let mut at = 0u64;
    for c in chunks {
        let stop = c.offset.checked_add(u64::from(c.stored));
        let fits = stop.is_some_and(|s| c.offset >= at && s <= end);
        if !fits || c.stored > max || c.raw > max || (!c.zstd && c.stored != c.raw) {
            return Err(TrailerError::Damaged(format!(
                "chunk {} at offset {} ({} stored, {} plain bytes) does not fit a pack whose chunks end at {end}",
                c.id, c.offset, c.stored, c.raw
            )));
        }
        at = stop.unwrap_or(end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn chunk(n: u8, offset: u64, stored: u32) -> PackedChunk {
        PackedChunk {
            id: ChunkId([n; 32]),
            offset,
            stored,
            raw: stored + 10,
            zstd: true,
        }
    }

    fn pack_with(chunks: &[PackedChunk], body: usize) -> Vec<u8> {
        let mut pack = vec![7u8; body];
        pack.extend_from_slice(&encode(chunks));
        pack
    }

    #[test]
    fn a_trailer_reads_back_as_written() {
        let chunks = [chunk(1, 0, 100), chunk(2, 100, 50), chunk(3, 150, 1)];
        let mut pack = Cursor::new(pack_with(&chunks, 151));
        assert_eq!(read(&mut pack).unwrap(), Some(chunks.to_vec()));
        // An empty pack's trailer too.
        assert_eq!(read(&mut Cursor::new(encode(&[]))).unwrap(), Some(vec![]));
    }

    #[test]
    fn a_pack_without_a_trailer_has_none() {
        assert_eq!(read(&mut Cursor::new(vec![1u8; 10])).unwrap(), None);
        assert_eq!(read(&mut Cursor::new(vec![1u8; 4096])).unwrap(), None);
    }

    #[test]
    fn a_damaged_or_hostile_trailer_is_refused() {
        let chunks = [chunk(1, 0, 100), chunk(2, 100, 50)];
        let good = pack_with(&chunks, 150);
        // A flipped byte in an entry: the checksum says so.
        let mut flipped = good.clone();
        flipped[150 + 3] ^= 1;
        assert!(matches!(
            read(&mut Cursor::new(flipped)),
            Err(TrailerError::Damaged(_))
        ));
        // A count beyond the file: refused before anything is allocated.
        let mut huge = good.clone();
        let at = huge.len() - 12;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read(&mut Cursor::new(huge)),
            Err(TrailerError::Damaged(_))
        ));
        // Entries pointing past the chunks (a checksum fixed up by whoever wrote them).
        let beyond = pack_with(&[chunk(1, 0, 100), chunk(2, 100, 51)], 150);
        assert!(matches!(
            read(&mut Cursor::new(beyond)),
            Err(TrailerError::Damaged(_))
        ));
        let overlapping = pack_with(&[chunk(1, 0, 100), chunk(2, 99, 50)], 150);
        assert!(matches!(
            read(&mut Cursor::new(overlapping)),
            Err(TrailerError::Damaged(_))
        ));
    }
}
