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
//! transactions          u32 (how many of the chain's transactions it covers)
//! first, last commit    i64, i64 (Unix ms when each was read from the log)
//! body                  zstd stream of records, each one transaction or several
//!                       read together (merged by compaction: the last image of each
//!                       page), until the records cover the header's count:
//!                         commit ms i64, transactions covered u32,
//!                         database pages u32, page count u32,
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

/// One record as shipped: when it was read from the log, how many of the chain's
/// transactions it stands for (1, or more once compaction merged transactions read in
/// the same pass), and their net change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub commit_ms: i64,
    pub covers: u32,
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
    let covered: u64 = txs.iter().map(|s| u64::from(s.covers)).sum();
    let header = SegmentHeader {
        page_size,
        generation,
        first_tx,
        transactions: u32::try_from(covered)
            .map_err(|_| SegmentError::Damaged("too many transactions for one segment".into()))?,
        first_commit_ms: first.commit_ms,
        last_commit_ms: last.commit_ms,
    };
    let mut writer = SegmentWriter::new(out, header)?;
    for s in txs {
        writer.write(s)?;
    }
    writer.finish().map(drop)
}

/// Writes a segment transaction by transaction, its header known in advance (a
/// compaction knows it from the segments it merges): memory stays at one transaction.
pub struct SegmentWriter<W: Write> {
    header: SegmentHeader,
    body: zstd::Encoder<'static, HashingWriter<W>>,
    left: u32,
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(out: W, header: SegmentHeader) -> Result<SegmentWriter<W>, SegmentError> {
        if header.transactions == 0 || header.first_commit_ms > header.last_commit_ms {
            return Err(SegmentError::Damaged(
                "a segment of no transaction, or of times out of order".into(),
            ));
        }
        let mut out = HashingWriter::new(out);
        let mut raw = Vec::with_capacity(HEADER_LEN);
        raw.extend_from_slice(MAGIC);
        raw.push(VERSION);
        raw.extend_from_slice(&header.page_size.to_be_bytes());
        raw.extend_from_slice(&header.generation);
        raw.extend_from_slice(&header.first_tx.to_be_bytes());
        raw.extend_from_slice(&header.transactions.to_be_bytes());
        raw.extend_from_slice(&header.first_commit_ms.to_be_bytes());
        raw.extend_from_slice(&header.last_commit_ms.to_be_bytes());
        out.write_all(&raw)?;
        Ok(SegmentWriter {
            header,
            body: zstd::Encoder::new(out, 3)?,
            left: header.transactions,
        })
    }

    /// The next record; its time must lie within the header's.
    pub fn write(&mut self, s: &Shipped) -> Result<(), SegmentError> {
        if s.covers == 0 || s.covers > self.left {
            return Err(SegmentError::Damaged(
                "more transactions than the header announced".into(),
            ));
        }
        if s.commit_ms < self.header.first_commit_ms || s.commit_ms > self.header.last_commit_ms {
            return Err(SegmentError::Damaged(
                "a commit time outside the header's".into(),
            ));
        }
        let page_size = self.header.page_size;
        let pages = u32::try_from(s.tx.pages.len())
            .map_err(|_| SegmentError::Damaged("too many pages in one transaction".into()))?;
        self.body.write_all(&s.commit_ms.to_be_bytes())?;
        self.body.write_all(&s.covers.to_be_bytes())?;
        self.body.write_all(&s.tx.db_pages.to_be_bytes())?;
        self.body.write_all(&pages.to_be_bytes())?;
        for p in &s.tx.pages {
            if p.data.len() != page_size as usize {
                return Err(SegmentError::Damaged(format!(
                    "page {} holds {} bytes, not {page_size}",
                    p.page,
                    p.data.len()
                )));
            }
            self.body.write_all(&p.page.to_be_bytes())?;
            self.body.write_all(&p.data)?;
        }
        self.left -= s.covers;
        Ok(())
    }

    /// After the last record: the trailer; returns the output.
    pub fn finish(self) -> Result<W, SegmentError> {
        if self.left != 0 {
            return Err(SegmentError::Damaged(format!(
                "{} announced transactions not written",
                self.left
            )));
        }
        let out = self.body.finish()?;
        let (mut inner, digest, _) = out.finish();
        let digest = hex::decode(digest).map_err(|e| SegmentError::Damaged(e.to_string()))?;
        inner.write_all(&digest)?;
        inner.flush()?;
        Ok(inner)
    }
}

/// Reads the header of the segment `input` starts with (nothing else is read or
/// checked: no decoder is set up, so a listing of many segments stays cheap).
pub fn read_header<R: Read>(mut input: R) -> Result<SegmentHeader, SegmentError> {
    let mut raw = [0u8; HEADER_LEN];
    input
        .read_exact(&mut raw)
        .map_err(|e| SegmentError::Damaged(format!("its header: {e}")))?;
    parse_header(&raw)
}

/// A header's fields, checked.
fn parse_header(raw: &[u8; HEADER_LEN]) -> Result<SegmentHeader, SegmentError> {
    if &raw[..8] != MAGIC {
        return Err(SegmentError::Damaged("not a segment (magic)".into()));
    }
    if raw[8] != VERSION {
        return Err(SegmentError::Damaged(format!(
            "segment version {} (this build reads {VERSION})",
            raw[8]
        )));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let page_size = be32(raw, 9);
    if !valid_page_size(page_size) {
        return Err(SegmentError::Damaged(format!("page size {page_size}")));
    }
    let mut generation = [0u8; 16];
    generation.copy_from_slice(&raw[13..29]);
    let header = SegmentHeader {
        page_size,
        generation,
        first_tx: u64_at(29),
        transactions: be32(raw, 37),
        first_commit_ms: u64_at(41) as i64,
        last_commit_ms: u64_at(49) as i64,
    };
    if header.transactions == 0 || header.last_commit_ms < header.first_commit_ms {
        return Err(SegmentError::Damaged("its header's counts or times".into()));
    }
    Ok(header)
}

/// Reads a segment transaction by transaction; [`SegmentReader::finish`] checks that it
/// was whole.
pub struct SegmentReader<R: Read> {
    header: SegmentHeader,
    body: zstd::Decoder<'static, BufReader<HashingReader<TrailerHold<R>>>>,
    left: u32,
    /// Pages of the current record not read yet.
    pages_left: u32,
}

/// A record's head: when it was read, the transactions it covers, the database's size
/// after it, and how many pages follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub commit_ms: i64,
    pub covers: u32,
    pub db_pages: u32,
    pub pages: u32,
}

impl<R: Read> SegmentReader<R> {
    pub fn open(input: R) -> Result<SegmentReader<R>, SegmentError> {
        let mut hashing = HashingReader::new(TrailerHold::new(input));
        let mut raw = [0u8; HEADER_LEN];
        hashing
            .read_exact(&mut raw)
            .map_err(|e| SegmentError::Damaged(format!("its header: {e}")))?;
        let header = parse_header(&raw)?;
        let body = zstd::Decoder::new(hashing)?;
        Ok(SegmentReader {
            header,
            body,
            left: header.transactions,
            pages_left: 0,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The next record whole, or `None` after the last the header announced. Its pages
    /// are held in memory: for a replay of records of any size, [`Self::next_record`]
    /// and [`Self::next_page`] hold one page at a time.
    pub fn next_transaction(&mut self) -> Result<Option<Shipped>, SegmentError> {
        let Some(head) = self.next_record()? else {
            return Ok(None);
        };
        // Pages are read one by one: a count the data does not back ends in a short read,
        // never in an allocation of the count's size.
        let mut pages = Vec::new();
        for _ in 0..head.pages {
            let mut data = vec![0u8; self.header.page_size as usize];
            let page = self.next_page(&mut data)?;
            pages.push(PageWrite { page, data });
        }
        Ok(Some(Shipped {
            commit_ms: head.commit_ms,
            covers: head.covers,
            tx: Transaction {
                pages,
                db_pages: head.db_pages,
            },
        }))
    }

    /// The next record's head, or `None` after the last the header announced; its pages
    /// follow through [`Self::next_page`], every one of them before the next record.
    pub fn next_record(&mut self) -> Result<Option<RecordHead>, SegmentError> {
        if self.pages_left != 0 {
            return Err(SegmentError::Damaged(
                "a record's pages were not all read".into(),
            ));
        }
        if self.left == 0 {
            return Ok(None);
        }
        let mut fixed = [0u8; 20];
        self.read_body(&mut fixed, "a transaction's header")?;
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&fixed[..8]);
        let commit_ms = i64::from_be_bytes(ms);
        let covers = be32(&fixed, 8);
        let db_pages = be32(&fixed, 12);
        let count = be32(&fixed, 16);
        if covers == 0 || covers > self.left {
            return Err(SegmentError::Damaged(format!(
                "a record of {covers} transactions where {} are left",
                self.left
            )));
        }
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
        self.left -= covers;
        self.pages_left = count;
        Ok(Some(RecordHead {
            commit_ms,
            covers,
            db_pages,
            pages: count,
        }))
    }

    /// The current record's next page into `page` (exactly the page size): its number.
    pub fn next_page(&mut self, page: &mut [u8]) -> Result<u32, SegmentError> {
        if self.pages_left == 0 || page.len() != self.header.page_size as usize {
            return Err(SegmentError::Damaged(
                "a page read past its record, or into a buffer of another size".into(),
            ));
        }
        let mut no = [0u8; 4];
        self.read_body(&mut no, "a page number")?;
        self.read_body(page, "a page")?;
        self.pages_left -= 1;
        Ok(u32::from_be_bytes(no))
    }

    fn read_body(&mut self, buf: &mut [u8], what: &str) -> Result<(), SegmentError> {
        self.body
            .read_exact(buf)
            .map_err(|e| SegmentError::Damaged(format!("{what}: {e}")))
    }

    /// After the last transaction: the body ends there and the trailer is the SHA-256 of
    /// every byte before it. Only then may what was read be kept.
    pub fn finish(mut self) -> Result<SegmentHeader, SegmentError> {
        if self.left != 0 || self.pages_left != 0 {
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
