//! A local file sent to S3 in parts, `concurrency` at a time, in a few MiB of memory
//! whatever the part size: each part's body streams from the file at its offset instead of
//! being held whole (a 16 MiB part × 4 in flight would be 64 MiB before anything else).
//!
//! One pass reads the file in order, hashing it whole (the SHA-256 the caller expects) and
//! part by part (SigV4 signs a part's hash before its first byte is sent); each part then
//! goes to a worker, which sends the same range again from the page cache — read back
//! within seconds of the first pass, never from the disk twice in practice — checking
//! what it sends against a CRC-64 the first pass took (the SHA-256s already prove the
//! content; the second read only has to be the same bytes, and a third SHA-256 of every
//! byte was a third of the upload's CPU). A part whose bytes changed between the two
//! reads fails as
//! [`RemoteFailure::Mismatch`] (and S3 itself refuses a body that does not match its
//! signed hash), so a file changed under the upload never completes as a good copy.
//!
//! A transient failure of one part is retried on its own (`retries`, `retry_backoff`
//! doubling up to 30 s); any other failure, or running out of retries, stops the rest,
//! and the upload is aborted. Every upload is journaled from start to end as in
//! [`super::s3`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::s3_api::{MAX_PARTS, PartBody, S3Api, UploadedPart};
use super::state::UploadJournal;
use super::target::{RemoteError, RemoteResult, Stored};
use super::transfer::{SharedPace, check_sent};
use crate::error::RemoteFailure;

/// How the parts of one file go up.
pub(super) struct PartUpload<'a> {
    pub api: &'a S3Api,
    /// Where the parts' requests run (each worker thread waits on its own).
    pub runtime: &'a tokio::runtime::Runtime,
    pub journal: &'a UploadJournal,
    pub part_size: u64,
    pub concurrency: usize,
    /// Send `x-amz-checksum-sha256` with each part (and create the upload with it).
    pub checksum: bool,
    /// The object's own headers (`x-amz-meta-sha256`, Object Lock's).
    pub headers: Vec<(String, String)>,
    pub pace: Option<Arc<SharedPace>>,
    pub retries: u32,
    pub retry_backoff: Duration,
}

/// One part, hashed, waiting for a worker.
struct PartJob {
    number: u32,
    offset: u64,
    len: u64,
    sha256: [u8; 32],
    /// What the worker's read must come to: the same bytes.
    crc: u64,
}

/// The check of a part's second read.
fn crc64() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme)
}

/// What the workers share: the parts sent and the first failure.
struct Progress {
    parts: Mutex<Vec<UploadedPart>>,
    failure: Mutex<Option<RemoteError>>,
    failed: AtomicBool,
}

impl Progress {
    fn fail(&self, e: RemoteError) {
        let mut first = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
        self.failed.store(true, Ordering::SeqCst);
    }
}

impl PartUpload<'_> {
    /// Send `file` (`len` bytes) as `key`; completed only when the bytes read hash to
    /// `expect` (when given), otherwise aborted.
    pub fn send(&self, key: &str, file: File, expect: Option<&str>) -> RemoteResult<Stored> {
        let len = file
            .metadata()
            .map_err(|e| local(e, "read the size of"))?
            .len();
        let count = len.div_ceil(self.part_size).max(1);
        if count > u64::from(MAX_PARTS) {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                format!(
                    "{key} is {len} bytes: over {MAX_PARTS} parts of part_size {} bytes; raise the target's part_size",
                    self.part_size
                ),
            ));
        }
        let id = self
            .api
            .create_multipart(key, &self.headers, self.checksum)?;
        self.journal.opened(key, &id);
        let outcome = self.send_parts(key, &id, Arc::new(file), len, expect);
        let outcome = outcome.and_then(|(stored, parts)| {
            self.api.complete_multipart(key, &id, &parts)?;
            Ok(stored)
        });
        if outcome.is_err()
            && let Err(e) = self.api.abort_multipart(key, &id)
        {
            tracing::warn!("could not abort the multipart upload of {key}: {e}");
        }
        self.journal.closed(&id);
        outcome
    }

    /// Hash the file in order, handing each part to a worker as soon as it is hashed.
    fn send_parts(
        &self,
        key: &str,
        id: &str,
        file: Arc<File>,
        len: u64,
        expect: Option<&str>,
    ) -> RemoteResult<(Stored, Vec<UploadedPart>)> {
        let progress = Progress {
            parts: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
        };
        // A rendezvous: the reader is at most one part ahead of the workers.
        let (jobs, queue) = sync_channel::<PartJob>(0);
        let queue = Mutex::new(queue);
        let whole = std::thread::scope(|scope| {
            for _ in 0..self.concurrency {
                scope.spawn(|| self.work(key, id, &file, &queue, &progress));
            }
            let hashed = hash_parts(&file, len, self.part_size, &progress.failed, |job| {
                jobs.send(job).is_ok()
            });
            drop(jobs);
            hashed
        });
        if let Some(e) = progress
            .failure
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
        {
            return Err(e);
        }
        let sha256 = whole?;
        check_sent(expect, &sha256)?;
        let mut parts = progress
            .parts
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        parts.sort_by_key(|p| p.number);
        let want = len.div_ceil(self.part_size).max(1);
        if parts.len() as u64 != want {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                format!("{} of {want} parts of {key} were sent", parts.len()),
            ));
        }
        Ok((Stored { size: len, sha256 }, parts))
    }

    /// A worker: send parts until the queue closes or anything fails.
    fn work(
        &self,
        key: &str,
        id: &str,
        file: &Arc<File>,
        queue: &Mutex<Receiver<PartJob>>,
        progress: &Progress,
    ) {
        loop {
            let job = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            if progress.failed.load(Ordering::SeqCst) {
                continue;
            }
            match self.send_part(key, id, file, &job) {
                Ok(part) => progress
                    .parts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(part),
                Err(e) => progress.fail(e),
            }
        }
    }

    /// One part, retried on its own while the failure is transient.
    fn send_part(
        &self,
        key: &str,
        id: &str,
        file: &Arc<File>,
        job: &PartJob,
    ) -> RemoteResult<UploadedPart> {
        let mut wait = self.retry_backoff;
        let mut tries = 0;
        loop {
            let changed = Arc::new(AtomicBool::new(false));
            let reader = PartReader {
                file: file.clone(),
                at: job.offset,
                end: job.offset + job.len,
                crc: crc64(),
                want: job.crc,
                changed: changed.clone(),
                pace: self.pace.clone(),
            };
            let body = PartBody {
                body: reader.into_body(),
                len: job.len,
                sha256: job.sha256,
            };
            let sent = self.runtime.block_on(self.api.upload_part(
                key,
                id,
                job.number,
                body,
                self.checksum,
            ));
            if changed.load(Ordering::SeqCst) {
                return Err(RemoteError::new(
                    RemoteFailure::Mismatch,
                    format!(
                        "part {} of {key} changed on disk while it was sent; the local copy is not stable",
                        job.number
                    ),
                ));
            }
            match sent {
                Err(e) if e.failure.transient() && tries < self.retries => {
                    tries += 1;
                    tracing::warn!(
                        "{}: retry {tries} of {} in {}",
                        e.detail,
                        self.retries,
                        crate::units::format_duration(wait)
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                other => return other,
            }
        }
    }
}

/// Read `file` once in order: every part's SHA-256 goes to `dispatch` as the part ends
/// (it returns false when no worker is left), the whole file's is returned. Stops early
/// (returning what it has) once `failed` is set.
fn hash_parts(
    file: &File,
    len: u64,
    part_size: u64,
    failed: &AtomicBool,
    mut dispatch: impl FnMut(PartJob) -> bool,
) -> RemoteResult<String> {
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let mut number = 1u32;
    while offset < len || number == 1 {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let part_len = part_size.min(len - offset);
        let mut part = Sha256::new();
        let mut crc = crc64();
        let mut done = 0u64;
        while done < part_len {
            let want = usize::try_from(part_len - done).map_or(buf.len(), |r| r.min(buf.len()));
            let n = file
                .read_at(&mut buf[..want], offset + done)
                .map_err(|e| local(e, "read"))?;
            if n == 0 {
                return Err(RemoteError::new(
                    RemoteFailure::Mismatch,
                    format!(
                        "the local copy ended at {} bytes while being sent; it was {len}",
                        offset + done
                    ),
                ));
            }
            whole.update(&buf[..n]);
            part.update(&buf[..n]);
            crc.update(&buf[..n]);
            done += n as u64;
        }
        let job = PartJob {
            number,
            offset,
            len: part_len,
            sha256: part.finalize().into(),
            crc: crc.finalize(),
        };
        if !dispatch(job) {
            break;
        }
        offset += part_len;
        number += 1;
    }
    Ok(hex::encode(whole.finalize()))
}

fn local(e: io::Error, what: &str) -> RemoteError {
    RemoteError::new(RemoteFailure::Other, format!("{what} the local copy: {e}"))
}

/// The most read from the file at once for a part's body: big enough that the server
/// gets its bytes in large writes, small enough that memory stays a few MiB.
const BODY_CHUNK: usize = 1 << 20;

/// A part's bytes read from the file at their offset as the request sends them,
/// checked: at the end they must come to the CRC of the bytes the first pass signed.
struct PartReader {
    file: Arc<File>,
    at: u64,
    end: u64,
    crc: crc_fast::Digest,
    want: u64,
    changed: Arc<AtomicBool>,
    pace: Option<Arc<SharedPace>>,
}

impl PartReader {
    /// The next chunk of the part; `None` at its end, an error when the file changed.
    /// A page-cache read of at most [`BODY_CHUNK`]: short enough to do on the runtime.
    fn next_chunk(&mut self) -> Option<io::Result<(Bytes, Duration)>> {
        if self.at >= self.end {
            return None;
        }
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = match &self.pace {
            Some(pace) => pace.chunk(BODY_CHUNK.min(left)),
            None => BODY_CHUNK.min(left),
        };
        let mut buf = vec![0u8; want];
        let n = match self.file.read_at(&mut buf, self.at) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if n == 0 {
            self.changed.store(true, Ordering::SeqCst);
            return Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the local copy got shorter while being sent",
            )));
        }
        buf.truncate(n);
        self.crc.update(&buf);
        self.at += n as u64;
        if self.at == self.end && self.crc.finalize() != self.want {
            self.changed.store(true, Ordering::SeqCst);
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the part changed on disk between hashing and sending",
            )));
        }
        let wait = self
            .pace
            .as_ref()
            .map_or(Duration::ZERO, |p| p.spend(n as u64));
        Some(Ok((Bytes::from(buf), wait)))
    }

    /// The part as a request body: its chunks, each followed by the wait the bandwidth
    /// limit asks for (a timer on the runtime, not a blocked thread).
    fn into_body(self) -> reqwest::Body {
        let chunks = futures_util::stream::unfold(self, |mut reader| async move {
            let (bytes, wait) = match reader.next_chunk()? {
                Ok(next) => next,
                Err(e) => return Some((Err(e), reader)),
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some((Ok(bytes), reader))
        });
        reqwest::Body::wrap_stream(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn hashes_parts_and_the_whole_in_one_pass() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let f = file_of(&data);
        let mut jobs = Vec::new();
        let whole = hash_parts(
            &f,
            data.len() as u64,
            15_000,
            &AtomicBool::new(false),
            |j| {
                jobs.push(j);
                true
            },
        )
        .unwrap();
        assert_eq!(whole, hex::encode(Sha256::digest(&data)));
        assert_eq!(jobs.len(), 3);
        for (i, j) in jobs.iter().enumerate() {
            assert_eq!(j.number as usize, i + 1);
            let range = j.offset as usize..(j.offset + j.len) as usize;
            assert_eq!(j.sha256, <[u8; 32]>::from(Sha256::digest(&data[range])));
        }
        assert_eq!(jobs[2].len, 10_000);
    }

    #[test]
    fn an_empty_file_is_one_empty_part() {
        let f = file_of(b"");
        let mut jobs = Vec::new();
        hash_parts(&f, 0, 15_000, &AtomicBool::new(false), |j| {
            jobs.push(j);
            true
        })
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].len, 0);
    }

    #[test]
    fn a_file_shorter_than_its_size_is_a_mismatch() {
        let f = file_of(b"abc");
        let e = hash_parts(&f, 10, 15_000, &AtomicBool::new(false), |_| true).unwrap_err();
        assert_eq!(e.failure, RemoteFailure::Mismatch);
    }

    #[test]
    fn a_part_changed_after_hashing_is_caught_by_its_reader() {
        let f = Arc::new(file_of(b"hello world"));
        let reader = |want: &[u8]| PartReader {
            file: f.clone(),
            at: 0,
            end: 11,
            crc: crc64(),
            want: crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, want),
            changed: Arc::new(AtomicBool::new(false)),
            pace: None,
        };
        let mut same = reader(b"hello world");
        let (bytes, wait) = same.next_chunk().unwrap().unwrap();
        assert_eq!(&bytes[..], b"hello world");
        assert!(wait.is_zero());
        assert!(same.next_chunk().is_none());
        let mut changed = reader(b"hello WORLD");
        assert!(changed.next_chunk().unwrap().is_err());
        assert!(changed.changed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_body_comes_in_chunks_of_at_most_a_mib() {
        let data = vec![5u8; BODY_CHUNK * 2 + 10];
        let f = Arc::new(file_of(&data));
        let mut reader = PartReader {
            file: f,
            at: 3,
            end: data.len() as u64,
            crc: crc64(),
            want: crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &data[3..]),
            changed: Arc::new(AtomicBool::new(false)),
            pace: None,
        };
        let mut sizes = Vec::new();
        while let Some(chunk) = reader.next_chunk() {
            sizes.push(chunk.unwrap().0.len());
        }
        assert_eq!(sizes, vec![BODY_CHUNK, BODY_CHUNK, 7]);
    }
}
