//! SQLite's write-ahead log, read the way continuous replication needs it: the header and
//! frames of a `-wal` file (<https://www.sqlite.org/fileformat2.html#walformat>), every
//! frame checked against the header's salts and the running checksum, and only whole
//! committed transactions handed on.
//!
//! A WAL holds frames (a 24-byte header and one page each); a frame whose header carries
//! a non-zero database size is the commit frame of a transaction. A frame belongs to the
//! log only if its salts equal the header's and its checksum continues the chain from
//! the header through every frame before it; the first frame that fails either check
//! ends the log (SQLite itself stops there: what follows is a torn write or an older
//! log's leftovers after a restart). Frames after the last commit frame belong to a
//! transaction still being written and are never returned.
//!
//! A [`WalCursor`] remembers where the shipped part of a log ends (the header it belongs
//! to, the byte offset after the last commit frame, the checksum there), so the next pass
//! reads only what was appended; a header that changed under it (a checkpoint restarted
//! the log, or the file was replaced) is reported as such, never read across.

use std::io::{Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

use thiserror::Error;

/// Bytes of the WAL header.
pub const WAL_HEADER_LEN: usize = 32;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// The WAL format version SQLite writes (3.7.0).
const WAL_VERSION: u32 = 3_007_000;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

#[derive(Debug, Error)]
pub enum WalError {
    #[error("reading the WAL: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a SQLite WAL file ({0})")]
    Format(String),
}

/// The header of a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHeader {
    /// Checksums are computed over big-endian words (else little-endian).
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt: [u32; 2],
    /// The checksum of the header's first 24 bytes: the start of the frames' chain.
    pub checksum: [u32; 2],
}

/// A page size SQLite can have: a power of two from 512 to 65536 (stored as 1 for 65536
/// in the database header, but as the number itself in a log and in our segments).
pub fn valid_page_size(size: u32) -> bool {
    (512..=65536).contains(&size) && size.is_power_of_two()
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl WalHeader {
    /// Parses and checks a header (magic, version, page size, its own checksum).
    pub fn parse(b: &[u8; WAL_HEADER_LEN]) -> Result<WalHeader, WalError> {
        let big_endian = match be32(b, 0) {
            MAGIC_LE => false,
            MAGIC_BE => true,
            other => return Err(WalError::Format(format!("magic {other:#010x}"))),
        };
        let version = be32(b, 4);
        if version != WAL_VERSION {
            return Err(WalError::Format(format!("version {version}")));
        }
        let page_size = be32(b, 8);
        if !valid_page_size(page_size) {
            return Err(WalError::Format(format!("page size {page_size}")));
        }
        let header = WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: be32(b, 12),
            salt: [be32(b, 16), be32(b, 20)],
            checksum: [be32(b, 24), be32(b, 28)],
        };
        if checksum(big_endian, [0, 0], &b[..24]) != header.checksum {
            return Err(WalError::Format("header checksum".into()));
        }
        Ok(header)
    }
}

/// SQLite's WAL checksum: `data` as 32-bit words in the log's byte order, folded into the
/// running pair `s` (the chain runs from the header through every frame).
pub fn checksum(big_endian: bool, s: [u32; 2], data: &[u8]) -> [u32; 2] {
    let [mut s0, mut s1] = s;
    for pair in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(pair, 0), be32(pair, 4))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    [s0, s1]
}

/// Where the shipped part of one log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalCursor {
    pub header: WalHeader,
    /// Byte offset just after the last commit frame handed on (or after the header).
    pub offset: u64,
    /// The checksum chain at `offset`.
    pub checksum: [u32; 2],
}

impl WalCursor {
    /// The start of a log: nothing of it handed on yet.
    pub fn start(header: WalHeader) -> WalCursor {
        WalCursor {
            header,
            offset: WAL_HEADER_LEN as u64,
            checksum: header.checksum,
        }
    }

    /// The number of the next frame (1-based, as SQLite counts them).
    pub fn next_frame(&self) -> u64 {
        (self.offset - WAL_HEADER_LEN as u64) / self.frame_len() + 1
    }

    /// Whether `next` is the log SQLite starts when it restarts this one once: the first
    /// salt one higher (SQLite adds one to it at every restart, whichever connection or
    /// process restarts; the second salt is random). The checkpoint sequence is no
    /// witness: it is the restarting connection's own counter, and a connection opened
    /// after a crash writes a lower one (seen: 6, then 5 after a restart).
    pub fn restarted_once_as(&self, next: &WalHeader) -> bool {
        next.big_endian == self.header.big_endian
            && next.salt[0] == self.header.salt[0].wrapping_add(1)
            && next.page_size == self.header.page_size
    }

    fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.header.page_size)
    }
}

/// One page written by a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageWrite {
    /// 1-based page number.
    pub page: u32,
    pub data: Vec<u8>,
}

/// One whole committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Its pages in log order (a page written twice appears twice; the later wins).
    pub pages: Vec<PageWrite>,
    /// The database's size in pages once it is committed.
    pub db_pages: u32,
}

/// What a pass over a log found.
#[derive(Debug)]
pub enum WalRead {
    /// The log is the cursor's: these transactions follow it (maybe none), and the cursor
    /// after them.
    Continued {
        transactions: Vec<Transaction>,
        cursor: WalCursor,
        /// The pass read to the log's end (it did not stop at `max_bytes`).
        complete: bool,
    },
    /// The log's header is not the cursor's (restarted by a checkpoint, or a new file):
    /// nothing was read; the new header is given.
    Restarted(WalHeader),
    /// The file is shorter than its header (no log, or one being created).
    Empty,
    /// The log still has the cursor's header, but the frame the cursor stands after is
    /// no longer the one read (its salts or checksum differ): the app wrote over frames
    /// that were read — they were never committed in SQLite's index (the app died
    /// before it published them) or never reached the disk (a power cut). The chain
    /// cannot go on from the cursor.
    Rewritten,
}

/// The log's commit point as SQLite's shared index (`-shm`) publishes it: the last
/// frame readers may use, and the log's salts. `None` when the index cannot be read
/// consistently (being written, or not initialised): the caller reads nothing this time.
pub fn index_max_frame(shm: &[u8]) -> Option<(u32, [u32; 2])> {
    // Two copies of the 48-byte header, in the machine's byte order; equal when whole.
    let (a, b) = (shm.get(..48)?, shm.get(48..96)?);
    if a != b {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]]);
    // iVersion 3007000, isInit set.
    if u32_at(0) != 3_007_000 || a[12] == 0 {
        return None;
    }
    // The salts are the log header's bytes copied as they are (big-endian there).
    Some((u32_at(16), [be32(a, 32), be32(a, 36)]))
}

/// Reads the committed transactions appended to `wal` after `cursor` (or, with no cursor,
/// from the start of the log). Stops at the first frame that is torn, foreign or out of
/// the chain, and after at most `max_bytes` of frames (the rest waits for the next pass:
/// this bounds memory, a transaction larger than it is still read whole).
///
/// With `max_frame`, frames past it (the commit point SQLite's index publishes) are not
/// read: they are not committed for SQLite yet, and may never be.
pub fn read_committed<R: Read + Seek>(
    wal: &mut R,
    cursor: Option<&WalCursor>,
    max_bytes: u64,
    max_frame: Option<u32>,
) -> Result<WalRead, WalError> {
    wal.seek(SeekFrom::Start(0))?;
    let mut raw = [0u8; WAL_HEADER_LEN];
    if !read_full(wal, &mut raw)? {
        return Ok(WalRead::Empty);
    }
    let header = WalHeader::parse(&raw)?;
    let cursor = match cursor {
        Some(c) if c.header != header => return Ok(WalRead::Restarted(header)),
        Some(c) => *c,
        None => WalCursor::start(header),
    };
    let frame_len = cursor.frame_len();
    if cursor.offset < WAL_HEADER_LEN as u64
        || !(cursor.offset - WAL_HEADER_LEN as u64).is_multiple_of(frame_len)
    {
        return Err(WalError::Format(format!(
            "a position at byte {} is not a frame boundary",
            cursor.offset
        )));
    }
    let page_size = header.page_size as usize;
    let mut frame = vec![0u8; FRAME_HEADER_LEN + page_size];
    // The frame the cursor stands after must still be the one read.
    if cursor.offset > WAL_HEADER_LEN as u64 {
        wal.seek(SeekFrom::Start(cursor.offset - frame_len))?;
        let mut head = [0u8; FRAME_HEADER_LEN];
        let same = read_full(wal, &mut head)?
            && [be32(&head, 8), be32(&head, 12)] == header.salt
            && [be32(&head, 16), be32(&head, 20)] == cursor.checksum
            && be32(&head, 4) != 0;
        if !same {
            return Ok(WalRead::Rewritten);
        }
    }
    wal.seek(SeekFrom::Start(cursor.offset))?;
    let mut index = (cursor.offset - WAL_HEADER_LEN as u64) / frame_len;
    let (mut done, mut pending) = (Vec::new(), Vec::new());
    let (mut committed, mut at, mut sum) = (cursor, cursor.offset, cursor.checksum);
    let (mut read_bytes, mut complete) = (0u64, true);
    while max_frame.is_none_or(|m| index < u64::from(m)) && read_full(wal, &mut frame)? {
        index += 1;
        let page = be32(&frame, 0);
        let db_pages = be32(&frame, 4);
        if page == 0 || [be32(&frame, 8), be32(&frame, 12)] != header.salt {
            break;
        }
        sum = checksum(header.big_endian, sum, &frame[..8]);
        sum = checksum(header.big_endian, sum, &frame[FRAME_HEADER_LEN..]);
        if sum != [be32(&frame, 16), be32(&frame, 20)] {
            break;
        }
        at += frame.len() as u64;
        read_bytes += frame.len() as u64;
        pending.push(PageWrite {
            page,
            data: frame[FRAME_HEADER_LEN..].to_vec(),
        });
        if db_pages != 0 {
            done.push(Transaction {
                pages: std::mem::take(&mut pending),
                db_pages,
            });
            committed = WalCursor {
                header,
                offset: at,
                checksum: sum,
            };
            if read_bytes >= max_bytes {
                complete = false;
                break;
            }
        }
    }
    Ok(WalRead::Continued {
        transactions: done,
        cursor: committed,
        complete,
    })
}

/// Fills `buf` completely; `false` at a clean or torn end of file.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
