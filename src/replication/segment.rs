//! A segment: committed transactions of one generation as one self-checking file, the
//! unit replication ships and a restore replays.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! "VBWALSEG"            8 bytes, magic
//! version               u8 = 1
//! page size             u32
//! generation            16 bytes (random, names the chain of segments)
//! first transaction     u64 (the chain's sequence number of the first one here)
//! transactions          u32 (how many follow)
//! first, last commit    i64, i64 (Unix ms when each was read from the log)
//! body                  zstd stream of transactions:
//!                         commit ms i64, database pages u32, page count u32,
//!                         then per page: page number u32 and the page's bytes
//! trailer               32 bytes: SHA-256 of everything before it
//! ```
//!
//! A reader checks the header's bounds before using them, reads pages one at a time (a
//! count the data does not back ends in a short read, never in an allocation of its
//! size), and checks the trailer at the end: a caller replays onto a private copy
//! and keeps it only once [`SegmentReader::finish`] has said the segment is whole.

use std::io::{BufReader, Read, Write};

use thiserror::Error;

use super::wal::{PageWrite, Transaction, be32, valid_page_size};
use crate::engine::hashing::{HashingReader, HashingWriter};

const MAGIC: &[u8; 8] = b"VBWALSEG";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 4 + 16 + 8 + 4 + 8 + 8;
/// The most pages one transaction may hold: SQLite's page count limit.
const MAX_PAGES: u32 = u32::MAX - 1;

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("segment I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a whole segment: {0}")]
    Damaged(String),
}

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub page_size: u32,
    pub generation: [u8; 16],
    pub first_tx: u64,
    pub transactions: u32,
    pub first_commit_ms: i64,
    pub last_commit_ms: i64,
}

/// One transaction as shipped: when it was read from the log, and the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub commit_ms: i64,
    pub tx: Transaction,
}

/// Writes `txs` (non-empty, in order) as one segment to `out`.
pub fn write_segment<W: Write>(
    out: W,
    page_size: u32,
    generation: [u8; 16],
    first_tx: u64,
    txs: &[Shipped],
) -> Result<(), SegmentError> {
    let (Some(first), Some(last)) = (txs.first(), txs.last()) else {
        return Err(SegmentError::Damaged("a segment of no transaction".into()));
    };
    let count = u32::try_from(txs.len())
        .map_err(|_| SegmentError::Damaged("too many transactions for one segment".into()))?;
    let mut out = HashingWriter::new(out);
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&page_size.to_be_bytes());
    header.extend_from_slice(&generation);
    header.extend_from_slice(&first_tx.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    header.extend_from_slice(&first.commit_ms.to_be_bytes());
    header.extend_from_slice(&last.commit_ms.to_be_bytes());
    out.write_all(&header)?;
    let mut body = zstd::Encoder::new(&mut out, 3)?;
    for s in txs {
        let pages = u32::try_from(s.tx.pages.len())
            .map_err(|_| SegmentError::Damaged("too many pages in one transaction".into()))?;
        body.write_all(&s.commit_ms.to_be_bytes())?;
        body.write_all(&s.tx.db_pages.to_be_bytes())?;
        body.write_all(&pages.to_be_bytes())?;
        for p in &s.tx.pages {
            if p.data.len() != page_size as usize {
                return Err(SegmentError::Damaged(format!(
                    "page {} holds {} bytes, not {page_size}",
                    p.page,
                    p.data.len()
                )));
            }
            body.write_all(&p.page.to_be_bytes())?;
            body.write_all(&p.data)?;
        }
    }
    body.finish()?;
    let (mut inner, digest, _) = out.finish();
    let digest = hex::decode(digest).map_err(|e| SegmentError::Damaged(e.to_string()))?;
    inner.write_all(&digest)?;
    inner.flush()?;
    Ok(())
}

/// Reads a segment transaction by transaction; [`SegmentReader::finish`] checks that it
/// was whole.
pub struct SegmentReader<R: Read> {
    header: SegmentHeader,
    body: zstd::Decoder<'static, BufReader<HashingReader<TrailerHold<R>>>>,
    left: u32,
}

impl<R: Read> SegmentReader<R> {
    pub fn open(input: R) -> Result<SegmentReader<R>, SegmentError> {
        let mut hashing = HashingReader::new(TrailerHold::new(input));
        let mut raw = [0u8; HEADER_LEN];
        hashing
            .read_exact(&mut raw)
            .map_err(|e| SegmentError::Damaged(format!("its header: {e}")))?;
        if &raw[..8] != MAGIC {
            return Err(SegmentError::Damaged("not a segment (magic)".into()));
        }
        if raw[8] != VERSION {
            return Err(SegmentError::Damaged(format!(
                "segment version {} (this build reads {VERSION})",
                raw[8]
            )));
        }
        let u32_at = |at: usize| be32(&raw, at);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let page_size = u32_at(9);
        if !valid_page_size(page_size) {
            return Err(SegmentError::Damaged(format!("page size {page_size}")));
        }
        let mut generation = [0u8; 16];
        generation.copy_from_slice(&raw[13..29]);
        let header = SegmentHeader {
            page_size,
            generation,
            first_tx: u64_at(29),
            transactions: u32_at(37),
            first_commit_ms: u64_at(41) as i64,
            last_commit_ms: u64_at(49) as i64,
        };
        if header.transactions == 0 || header.last_commit_ms < header.first_commit_ms {
            return Err(SegmentError::Damaged("its header's counts or times".into()));
        }
        let body = zstd::Decoder::new(hashing)?;
        Ok(SegmentReader {
            header,
            body,
            left: header.transactions,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The next transaction, or `None` after the last the header announced.
    pub fn next_transaction(&mut self) -> Result<Option<Shipped>, SegmentError> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut fixed = [0u8; 16];
        self.read_body(&mut fixed, "a transaction's header")?;
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&fixed[..8]);
        let commit_ms = i64::from_be_bytes(ms);
        let db_pages = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let count = u32::from_be_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        if count == 0 || count > MAX_PAGES || db_pages == 0 {
            return Err(SegmentError::Damaged(format!(
                "a transaction of {count} pages committing {db_pages}"
            )));
        }
        if commit_ms < self.header.first_commit_ms || commit_ms > self.header.last_commit_ms {
            return Err(SegmentError::Damaged(
                "a commit time outside the header's".into(),
            ));
        }
        // Pages are read one by one: a count the data does not back ends in a short read,
        // never in an allocation of the count's size.
        let mut pages = Vec::new();
        for _ in 0..count {
            let mut no = [0u8; 4];
            self.read_body(&mut no, "a page number")?;
            let mut data = vec![0u8; self.header.page_size as usize];
            self.read_body(&mut data, "a page")?;
            pages.push(PageWrite {
                page: u32::from_be_bytes(no),
                data,
            });
        }
        self.left -= 1;
        Ok(Some(Shipped {
            commit_ms,
            tx: Transaction { pages, db_pages },
        }))
    }

    fn read_body(&mut self, buf: &mut [u8], what: &str) -> Result<(), SegmentError> {
        self.body
            .read_exact(buf)
            .map_err(|e| SegmentError::Damaged(format!("{what}: {e}")))
    }

    /// After the last transaction: the body ends there and the trailer is the SHA-256 of
    /// every byte before it. Only then may what was read be kept.
    pub fn finish(mut self) -> Result<SegmentHeader, SegmentError> {
        if self.left != 0 {
            return Err(SegmentError::Damaged(format!(
                "{} transactions not read",
                self.left
            )));
        }
        let mut extra = [0u8; 1];
        if self.body.read(&mut extra)? != 0 {
            return Err(SegmentError::Damaged(
                "data after the last transaction".into(),
            ));
        }
        let hashing = self.body.finish().into_inner();
        let (hold, digest, _) = hashing.finish_into_inner()?;
        match hold.trailer() {
            Some(t) if hex::encode(t) == digest => Ok(self.header),
            Some(_) => Err(SegmentError::Damaged("its checksum does not match".into())),
            None => Err(SegmentError::Damaged("it ends before its checksum".into())),
        }
    }
}

/// A reader that holds back the last 32 bytes of its input (the trailer), so that what
/// it yields is exactly what the trailer covers.
struct TrailerHold<R> {
    inner: R,
    held: Vec<u8>,
    ended: bool,
}

impl<R: Read> TrailerHold<R> {
    fn new(inner: R) -> Self {
        TrailerHold {
            inner,
            held: Vec::with_capacity(64 * 1024),
            ended: false,
        }
    }

    fn trailer(&self) -> Option<&[u8]> {
        (self.ended && self.held.len() == 32).then_some(self.held.as_slice())
    }
}

impl<R: Read> Read for TrailerHold<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.ended && self.held.len() < 32 + buf.len().max(1) {
            let at = self.held.len();
            self.held.resize(at + 64 * 1024, 0);
            let n = loop {
                match self.inner.read(&mut self.held[at..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match n {
                Ok(n) => {
                    self.held.truncate(at + n);
                    if n == 0 {
                        self.ended = true;
                    }
                }
                Err(e) => {
                    self.held.truncate(at);
                    return Err(e);
                }
            }
        }
        let available = self.held.len().saturating_sub(32);
        let n = available.min(buf.len());
        buf[..n].copy_from_slice(&self.held[..n]);
        self.held.drain(..n);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
