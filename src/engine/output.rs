//! The archive file as the compressor's last writer: refuses every write once cancelled
//! (so even zstd's final flush, which with many threads can be most of the work, stops
//! promptly), and has the disk write behind us as we go, so the fsync that makes the
//! backup durable has only the tail left to wait for, and written pages leave the page
//! cache instead of pushing the app's out.
//!
//! The writeback runs on a thread of its own ("settle"): every [`KICK`] bytes the writer
//! hands it the new range and goes on; the settle thread starts writeback of that range,
//! waits for the one before it and drops it from the cache. Issue 18 measured the same
//! steps done inline on the writing thread — which is the thread that feeds zstd — at
//! 0.2–0.4 s of a 3.7 s backup: both the wait and `POSIX_FADV_DONTNEED` stalled the
//! compressor.
//!
//! A writeback error seen by the waiting `sync_file_range` is *consumed* for this open
//! file (Linux reports each writeback error once per open file description, and the
//! settle thread's descriptor is a `dup` of the writer's): the later fsync would return
//! success. So the settle side keeps the first error and [`ArchiveFile::into_file`]
//! returns it — the backup fails instead of counting a file the disk did not take.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::Cancel;

/// How much is written between two writeback kicks.
const KICK: u64 = 8 << 20;
/// Ranges the settle thread may fall behind by before the writer waits for it: at most
/// this many × [`KICK`] bytes are dirty beyond what the disk has been asked to write.
const BACKLOG: usize = 16;

pub struct ArchiveFile {
    inner: BufWriter<File>,
    cancel: Cancel,
    written: u64,
    /// Ranges before this offset have been handed to the writeback.
    kicked: u64,
    settle: Settle,
}

/// Where the writeback of finished ranges happens.
enum Settle {
    Thread(SettleThread),
    /// No thread could be had (or the file could not be duplicated): the same steps,
    /// done by the writer itself.
    Inline(Window),
}

/// The settle thread's end of the channel. `finish` (or dropping it) lets the thread
/// finish its range and waits for it, so the file is never used by two threads past
/// `into_file`.
struct SettleThread {
    ranges: Option<SyncSender<(u64, u64)>>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl SettleThread {
    /// Stop the thread; its first writeback error, if any.
    fn finish(mut self) -> io::Result<()> {
        drop(self.ranges.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writeback thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for SettleThread {
    fn drop(&mut self) {
        drop(self.ranges.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl ArchiveFile {
    pub fn new(file: File, cancel: Cancel) -> Self {
        let settle = match file.try_clone() {
            Ok(dup) => {
                let (tx, rx) = sync_channel(BACKLOG);
                let stop = cancel.clone();
                match std::thread::Builder::new()
                    .name("settle".into())
                    .spawn(move || settle_ranges(&dup, &rx, &stop))
                {
                    Ok(handle) => Settle::Thread(SettleThread {
                        ranges: Some(tx),
                        handle: Some(handle),
                    }),
                    Err(_) => Settle::Inline(Window::default()),
                }
            }
            Err(_) => Settle::Inline(Window::default()),
        };
        ArchiveFile {
            inner: BufWriter::with_capacity(1 << 20, file),
            cancel,
            written: 0,
            kicked: 0,
            settle,
        }
    }

    /// The file, once everything is written and the writeback has stopped; the caller's
    /// fsync then waits for the tail only. A writeback error met on the way is returned
    /// here (the fsync would not see it again).
    pub fn into_file(self) -> io::Result<File> {
        let ArchiveFile { inner, settle, .. } = self;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        match settle {
            Settle::Thread(thread) => thread.finish()?,
            Settle::Inline(window) => window.error.map_or(Ok(()), Err)?,
        }
        Ok(file)
    }

    fn kick(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        let range = (self.kicked, self.written);
        self.kicked = self.written;
        match &mut self.settle {
            Settle::Thread(thread) => {
                // A send fails only if the thread is gone (it panicked): `finish` says so.
                if let Some(tx) = &thread.ranges {
                    let _ = tx.send(range);
                }
            }
            Settle::Inline(window) => window.settle(self.inner.get_ref(), range),
        }
        Ok(())
    }
}

/// The settle thread: one range at a time, in order. Once the backup is cancelled the
/// ranges still queued are only drained: the file is about to be removed.
fn settle_ranges(file: &File, ranges: &Receiver<(u64, u64)>, cancel: &Cancel) -> io::Result<()> {
    let mut window = Window::default();
    while let Ok(range) = ranges.recv() {
        if !cancel.is_cancelled() {
            window.settle(file, range);
        }
    }
    window.error.map_or(Ok(()), Err)
}

/// The writeback of a file written front to back: the range before the newest is
/// waited for and dropped, the newest is started, so at most two ranges are dirty.
#[derive(Default)]
struct Window {
    /// Writeback was started for bytes before this offset.
    started: u64,
    /// Bytes before this offset are on disk and dropped from the cache.
    settled: u64,
    /// The first writeback error; after it (or where the call is not supported) no more
    /// writeback is started early: the final fsync does it all.
    error: Option<io::Error>,
    unsupported: bool,
}

impl Window {
    fn settle(&mut self, file: &File, (from, to): (u64, u64)) {
        if self.error.is_some() || self.unsupported {
            return;
        }
        let fd = file.as_raw_fd();
        if self.started > self.settled {
            let (start, len) = (self.settled as i64, (self.started - self.settled) as i64);
            // SAFETY: a plain syscall on an open fd with in-range offsets.
            let waited = unsafe {
                libc::sync_file_range(
                    fd,
                    start,
                    len,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )
            };
            if !self.check(waited) {
                return;
            }
            // SAFETY: as above. Dropping clean pages cannot fail in a way that matters.
            unsafe { libc::posix_fadvise(fd, start, len, libc::POSIX_FADV_DONTNEED) };
            self.settled = self.started;
        }
        // SAFETY: as above.
        let started = unsafe {
            libc::sync_file_range(
                fd,
                from as i64,
                (to - from) as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if self.check(started) {
            self.started = to;
        }
    }

    /// Whether a `sync_file_range` went through. A call the file or kernel does not
    /// support turns early writeback off (the fsync still makes the file durable); any
    /// other failure is a writeback error and is kept.
    fn check(&mut self, rc: libc::c_int) -> bool {
        if rc == 0 {
            return true;
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::ESPIPE | libc::EOPNOTSUPP) => {
                self.unsupported = true;
            }
            _ => self.error = Some(error),
        }
        false
    }
}

impl Write for ArchiveFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= KICK {
            self.kick()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_byte_lands_across_many_writeback_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive");
        let file = File::create(&path).unwrap();
        let mut out = ArchiveFile::new(file, Cancel::default());
        assert!(matches!(out.settle, Settle::Thread(_)));
        // 3.5 ranges of writeback, in odd-sized writes so ranges end mid-write.
        let total = (KICK * 7 / 2) as usize;
        let data: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
        for chunk in data.chunks(100_003) {
            out.write_all(chunk).unwrap();
        }
        let file = out.into_file().unwrap();
        file.sync_all().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == data, "the file differs from what was written");
    }

    #[test]
    fn a_cancelled_archive_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = Cancel::default();
        let file = File::create(dir.path().join("archive")).unwrap();
        let mut out = ArchiveFile::new(file, cancel.clone());
        out.write_all(b"before").unwrap();
        cancel.cancel();
        assert!(out.write(b"after").is_err());
    }

    #[test]
    fn a_file_without_writeback_support_is_written_all_the_same() {
        // A pipe: sync_file_range says ESPIPE, which turns early writeback off, not an error.
        let (mut reader, writer) = std::io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(writer));
        let mut window = Window::default();
        window.settle(&file, (0, 10));
        assert!(window.unsupported);
        assert!(window.error.is_none());
        drop(file);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
    }

    #[test]
    fn a_writeback_error_is_kept_and_stops_early_writeback() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut window = Window::default();
        // SAFETY: closing fd -1 only sets errno (EBADF), the error `check` then reads.
        unsafe { libc::close(-1) };
        assert!(!window.check(-1));
        assert_eq!(
            window.error.as_ref().and_then(io::Error::raw_os_error),
            Some(libc::EBADF)
        );
        // Nothing more is attempted, and the error stays the first one.
        window.settle(&file, (0, 10));
        assert_eq!(window.started, 0);
        assert_eq!(
            window.error.map(|e| e.raw_os_error()),
            Some(Some(libc::EBADF))
        );
    }
}
