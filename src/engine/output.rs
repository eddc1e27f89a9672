//! The archive file as the compressor's last writer: refuses every write once cancelled
//! (so even zstd's final flush, which with many threads can be most of the work, stops
//! promptly), and starts the disk writing behind us as we go — `sync_file_range` every few
//! MiB — so the fsync that makes the backup durable has only the tail left to wait for,
//! and written pages are dropped from the page cache instead of pushing the app's out.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;

use super::Cancel;

/// How much is written between two writeback kicks.
const KICK: u64 = 8 << 20;

pub struct ArchiveFile {
    inner: BufWriter<File>,
    cancel: Cancel,
    written: u64,
    /// Writeback was started for bytes before this offset.
    kicked: u64,
    /// Bytes before this offset are on disk and dropped from the cache.
    settled: u64,
}

impl ArchiveFile {
    pub fn new(file: File, cancel: Cancel) -> Self {
        ArchiveFile {
            inner: BufWriter::with_capacity(1 << 20, file),
            cancel,
            written: 0,
            kicked: 0,
            settled: 0,
        }
    }

    pub fn into_file(self) -> io::Result<File> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }

    fn writeback(&mut self) {
        let fd = self.inner.get_ref().as_raw_fd();
        // Wait for the previous window (the disk has had a whole window's time to write
        // it), then start the current one: at most two windows are ever dirty.
        if self.kicked > self.settled {
            let (from, len) = (self.settled as i64, (self.kicked - self.settled) as i64);
            // SAFETY: plain syscalls on our own open fd with in-range offsets.
            unsafe {
                libc::sync_file_range(
                    fd,
                    from,
                    len,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
                libc::posix_fadvise(fd, from, len, libc::POSIX_FADV_DONTNEED);
            }
            self.settled = self.kicked;
        }
        // SAFETY: as above.
        unsafe {
            libc::sync_file_range(
                fd,
                self.kicked as i64,
                (self.written - self.kicked) as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.kicked = self.written;
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
            self.inner.flush()?;
            self.writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
