//! The bytes on their way to a target: hashed as they are read (our SHA-256, computed
//! once, in the same pass that sends them) and held to the target's `bandwidth_limit`.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Reads from `inner`, hashing and counting every byte, no faster than `limit` bytes/s.
pub struct UploadStream<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
    bytes: u64,
    limit: Option<u64>,
    started: Instant,
}

impl<'a> UploadStream<'a> {
    pub fn new(inner: &'a mut dyn Read, limit: Option<u64>) -> Self {
        UploadStream {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
            started: Instant::now(),
        }
    }

    pub fn sent_bytes(&self) -> u64 {
        self.bytes
    }

    /// Lower-case hex SHA-256 of everything read so far.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }

    /// Lower-case hex SHA-256 of everything read so far, without ending the stream.
    pub fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Fill `buf` completely unless the stream ends first; returns how much was read.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    /// Wait until the bytes read so far are within the limit: a token bucket measured
    /// from the start, so a burst after a slow network does not exceed the average.
    fn throttle(&self) {
        let Some(limit) = self.limit else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

impl Read for UploadStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.throttle();
        // Read no more than a quarter second's worth at a time so the pace stays even.
        let cap = self
            .limit
            .map(|l| (l / 4).max(64 * 1024) as usize)
            .unwrap_or(buf.len())
            .min(buf.len());
        let n = self.inner.read(&mut buf[..cap])?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_counts_what_it_reads() {
        let data = vec![7u8; 300_000];
        let mut src: &[u8] = &data;
        let mut s = UploadStream::new(&mut src, None);
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(s.fill(&mut buf).unwrap(), 300_000);
        let (n, sha) = s.finish();
        assert_eq!(n, 300_000);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn a_limit_paces_the_reads() {
        // 1 MiB at 4 MiB/s must take at least about 250 ms of pacing: measured as a
        // lower bound (a slow machine only makes it longer, never shorter).
        let data = vec![1u8; 1 << 20];
        let mut src: &[u8] = &data;
        let mut s = UploadStream::new(&mut src, Some(4 << 20));
        let started = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        s.fill(&mut buf).unwrap();
        s.throttle();
        assert!(started.elapsed() >= Duration::from_millis(240));
    }
}
