//! The bytes on their way to a target: hashed as they are read (our SHA-256, computed
//! once, in the same pass that sends them) and held to the target's `bandwidth_limit`.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::target::{RemoteError, RemoteResult};
use crate::error::RemoteFailure;

/// The bytes sent must hash to what the caller expected (`want`), or nothing is stored:
/// the local copy changed under the reader or is damaged.
pub fn check_sent(want: Option<&str>, sent: &str) -> RemoteResult<()> {
    match want {
        Some(w) if w != sent => Err(RemoteError::new(
            RemoteFailure::Mismatch,
            format!("the bytes read hash to {sent}, not {w}: the local copy changed or is damaged"),
        )),
        _ => Ok(()),
    }
}

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
        fill(self, buf)
    }

    /// [`UploadStream::fill`] for a target's upload loop: a local read error as a target
    /// failure (0: the stream ended).
    pub fn next_block(&mut self, buf: &mut [u8]) -> RemoteResult<usize> {
        self.fill(buf).map_err(read_failed)
    }

    /// Wait until the bytes read so far are within the limit: a token bucket measured
    /// from the start, so a burst after a slow network does not exceed the average.
    fn throttle(&self) {
        if let Some(limit) = self.limit {
            wait_for(self.started, self.bytes, limit);
        }
    }
}

/// Reading the local copy being uploaded failed (the disk, not the target).
pub fn read_failed(e: io::Error) -> RemoteError {
    RemoteError::new(RemoteFailure::Other, format!("read the local copy: {e}"))
}

/// Read from `reader` until `buf` is full or the stream ends; returns how much was read.
/// (A network body comes in frames of a few KiB: one call per buffer, not per frame.)
pub fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Sleep until `bytes` sent since `started` are within `limit` bytes/s.
fn wait_for(started: Instant, bytes: u64, limit: u64) {
    let wait = due_in(started, bytes, limit);
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

/// How long until `bytes` sent since `started` are within `limit` bytes/s.
fn due_in(started: Instant, bytes: u64, limit: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / limit as f64).saturating_sub(started.elapsed())
}

/// Read no more than a quarter second's worth at a time so the pace stays even.
fn chunk_for(limit: u64, want: usize) -> usize {
    usize::try_from((limit / 4).max(64 * 1024)).map_or(want, |cap| cap.min(want))
}

/// One `bandwidth_limit` shared by several streams (the parts of one upload in flight
/// together): the same token bucket as [`UploadStream`]'s, over all their bytes.
pub struct SharedPace {
    limit: u64,
    started: Instant,
    bytes: AtomicU64,
}

impl SharedPace {
    pub fn new(limit: u64) -> Self {
        SharedPace {
            limit,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
        }
    }

    /// How much of `want` bytes to read next.
    pub fn chunk(&self, want: usize) -> usize {
        chunk_for(self.limit, want)
    }

    /// Count `n` bytes sent; returns how long to wait for the total to be within the
    /// limit (the caller sleeps: a thread, or a task on a runtime).
    pub fn spend(&self, n: u64) -> Duration {
        let total = self.bytes.fetch_add(n, Ordering::SeqCst) + n;
        due_in(self.started, total, self.limit)
    }
}

impl Read for UploadStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.throttle();
        let cap = self.limit.map_or(buf.len(), |l| chunk_for(l, buf.len()));
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
