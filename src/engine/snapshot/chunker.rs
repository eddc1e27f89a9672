//! Cutting data into chunks, the unit the content store deduplicates: a small file is one
//! chunk; a large one is cut where its content says (FastCDC), so an edit in the middle of
//! a video changes one or two chunks, not the file; a database copy is cut into fixed,
//! page-aligned pieces, because SQLite rewrites pages in place and never shifts them.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut, select_masks};

/// Files up to this size are stored as one chunk: below the smallest content-defined
/// chunk, cutting them buys nothing (above it, an edit stores part of the file, as
/// restic's chunker does).
pub const WHOLE_FILE_MAX: u64 = 512 << 10;
/// Content-defined chunk sizes for larger files (restic's average is 1 MiB as well).
pub const CDC_MIN: usize = 512 << 10;
pub const CDC_AVG: usize = 1 << 20;
pub const CDC_MAX: usize = 4 << 20;
/// A database copy's chunk: 16 KiB, four 4 KiB pages (and a whole number of pages for any
/// SQLite page size up to 16 KiB), so a change of a few rows stores a few chunks.
pub const DATABASE_CHUNK: usize = 16 << 10;

/// How a stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Content-defined (FastCDC 2020).
    Content,
    /// Fixed size.
    Fixed(usize),
}

/// Yields the chunks of `reader` one at a time from the caller's buffer (reused from file
/// to file): the data is read once, straight into it.
pub struct Chunker<'b, R> {
    reader: R,
    chunking: Chunking,
    buf: &'b mut Vec<u8>,
    start: usize,
    filled: usize,
    eof: bool,
    masks: (u64, u64),
}

impl<'b, R: Read> Chunker<'b, R> {
    /// `buf` grows to twice the largest chunk if it is smaller.
    pub fn new(reader: R, chunking: Chunking, buf: &'b mut Vec<u8>) -> Self {
        let max = match chunking {
            Chunking::Content => CDC_MAX,
            Chunking::Fixed(n) => n,
        };
        if buf.len() < 2 * max {
            buf.resize(2 * max, 0);
        }
        Chunker {
            reader,
            chunking,
            buf,
            start: 0,
            filled: 0,
            eof: false,
            masks: select_masks(CDC_AVG, Normalization::Level1),
        }
    }

    fn max(&self) -> usize {
        match self.chunking {
            Chunking::Content => CDC_MAX,
            Chunking::Fixed(n) => n,
        }
    }

    /// Keep at least one maximal chunk in the buffer, unless the stream ends first.
    fn fill(&mut self) -> io::Result<()> {
        if self.filled - self.start >= self.max() || self.eof {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        while self.filled < self.buf.len() {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        let avail = self.filled - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let len = match self.chunking {
            Chunking::Fixed(n) => avail.min(n),
            Chunking::Content => {
                let (mask_s, mask_l) = self.masks;
                let window = &self.buf[self.start..self.filled];
                let (_, count) = cut(
                    window,
                    CDC_MIN,
                    CDC_AVG,
                    CDC_MAX,
                    mask_s,
                    mask_l,
                    mask_s << 1,
                    mask_l << 1,
                );
                count.clamp(1, avail)
            }
        };
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(data: &[u8], chunking: Chunking) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut c = Chunker::new(data, chunking, &mut buf);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    #[test]
    fn chunks_join_back_into_the_stream_and_respect_the_bounds() {
        let data = pseudo_random(20 << 20, 7);
        let cut = chunks(&data, Chunking::Content);
        assert_eq!(cut.concat(), data);
        assert!(cut.len() > 5, "{} chunks", cut.len());
        for c in &cut[..cut.len() - 1] {
            assert!((CDC_MIN..=CDC_MAX).contains(&c.len()), "{}", c.len());
        }
        let fixed = chunks(&data[..100_000], Chunking::Fixed(DATABASE_CHUNK));
        assert_eq!(fixed.len(), 100_000usize.div_ceil(DATABASE_CHUNK));
        assert_eq!(fixed.concat(), &data[..100_000]);
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_content_defined_chunks() {
        let data = pseudo_random(16 << 20, 9);
        let mut edited = data.clone();
        edited[8 << 20..(8 << 20) + 1000].copy_from_slice(&pseudo_random(1000, 3));
        let a = chunks(&data, Chunking::Content);
        let b = chunks(&edited, Chunking::Content);
        let changed = b.iter().filter(|c| !a.contains(c)).count();
        assert!(changed <= 2, "{changed} of {} chunks changed", b.len());
    }

    #[test]
    fn an_empty_stream_has_no_chunks() {
        assert!(chunks(&[], Chunking::Content).is_empty());
    }
}
