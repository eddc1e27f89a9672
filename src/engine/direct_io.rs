//! Bulk file I/O past the page cache (`O_DIRECT`): the restored tree's files, the objects
//! a disaster recovery downloads and the packs a restore reads back.
//!
//! Why: a restore writes every byte of the tree once and reads every pack once; through
//! the page cache each of those bytes first takes a page of memory the server has to find
//! (evicting the app's working set; on a VM whose balloon returns free memory to the host,
//! a page fault in the host per 4 KiB — measured on the CI machine as half of a 2 GiB
//! disaster recovery's time), then is copied a second time to the disk. With `O_DIRECT`
//! the disk reads and writes our buffer itself. Durability is unchanged: callers still
//! `fsync`/`syncfs` (direct writes leave the file's metadata to them).
//!
//! `O_DIRECT` wants the buffer, the file offset and the length aligned to the device's
//! block: bytes go through a 4 KiB-aligned buffer, and a file's unaligned tail is written
//! through the cache. A filesystem that refuses `O_DIRECT` (`EINVAL`: some FUSE and
//! network filesystems) gets ordinary reads and writes of the same bytes — only the path
//! to the disk differs, never the result, so this is not a fallback anyone must be told of.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// The alignment `O_DIRECT` needs on every Linux block device we meet (512 or 4096).
pub const ALIGN: usize = 4096;

/// Below this, a file is written through the cache: its one block costs less there than a
/// synchronous trip to the disk.
pub const DIRECT_MIN: u64 = 64 << 10;

/// A buffer whose start is `ALIGN`-aligned, of a fixed capacity (a multiple of `ALIGN`).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(cap: usize) -> Self {
        let cap = cap.div_ceil(ALIGN).max(1) * ALIGN;
        let storage = vec![0u8; cap + ALIGN];
        // In range: a Vec's pointer plus less than ALIGN stays within its ALIGN extra bytes.
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf {
            storage,
            start,
            cap,
            len: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The first `n` bytes of the buffer to fill, `n` ≤ capacity.
    fn space(&mut self, n: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + n.min(self.cap)]
    }
}

/// Turn `O_DIRECT` on or off for an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a valid, owned descriptor with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Write `data` at `at`: its aligned part past the cache when the file is open so, the
/// rest (a file's tail) through it (a filesystem that refuses, `EINVAL`, gets the same
/// bytes through the cache; the file stays so for its later writes).
fn write_out(file: &File, at: u64, data: &[u8], direct: bool) -> io::Result<()> {
    let aligned = if direct && at.is_multiple_of(ALIGN as u64) {
        data.len() - data.len() % ALIGN
    } else {
        0
    };
    if aligned > 0
        && let Err(e) = file.write_all_at(&data[..aligned], at)
    {
        if !is_einval(&e) {
            return Err(e);
        }
        set_direct(file, false)?;
        file.write_all_at(&data[..aligned], at)?;
    }
    if aligned < data.len() {
        if direct {
            set_direct(file, false)?;
        }
        file.write_all_at(&data[aligned..], at + aligned as u64)?;
    }
    Ok(())
}

/// What is done with a file once all its bytes are written (its length, owner, mode and
/// times: after the data, or a late write would change the mtime).
pub type Then = Box<dyn FnOnce(&File) -> Result<()> + Send>;

/// A file being written and the path its errors name.
struct Target {
    file: File,
    path: PathBuf,
}

enum Op {
    Write {
        target: Arc<Target>,
        at: u64,
        buf: AlignedBuf,
        direct: bool,
    },
    Then(Arc<Target>, Then),
}

/// Buffers handed to the writer thread at once: enough to keep the disk busy while the
/// next file's chunks are read, decompressed and checked.
const IN_FLIGHT: usize = 4;
const BUFFER: usize = 1 << 20;

/// A thread that does the writes (and then the metadata) of many files in the order they
/// were asked for, so the one thread that reads, decompresses and checks a restore's
/// data never waits for the disk. The first failure is kept and reported once (by
/// [`WriteBehind::check`] or [`WriteBehind::finish`]); all later work is dropped.
pub struct WriteBehind {
    ops: Option<SyncSender<Op>>,
    free: Receiver<AlignedBuf>,
    failed: Arc<Failed>,
    thread: Option<JoinHandle<()>>,
}

/// The writer thread's first failure, and that there was one (it stays set once the
/// failure has been reported).
#[derive(Default)]
struct Failed {
    error: Mutex<Option<Error>>,
    any: AtomicBool,
}

impl Failed {
    fn record(&self, e: Error) {
        if !self.any.swap(true, Ordering::SeqCst) {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }

    fn take(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl WriteBehind {
    /// Start the writer thread.
    pub fn start() -> Self {
        let (ops, queue) = sync_channel::<Op>(IN_FLIGHT + 16);
        let (give_back, free) = sync_channel::<AlignedBuf>(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            let _ = give_back.send(AlignedBuf::new(BUFFER));
        }
        let failed = Arc::new(Failed::default());
        let record = Arc::clone(&failed);
        let thread = std::thread::spawn(move || {
            for op in queue {
                let ok = !record.any.load(Ordering::SeqCst);
                match op {
                    Op::Write {
                        target,
                        at,
                        mut buf,
                        direct,
                    } => {
                        if ok && let Err(e) = write_out(&target.file, at, buf.filled(), direct) {
                            record.record(Error::io("write", &target.path, e));
                        }
                        buf.len = 0;
                        let _ = give_back.send(buf);
                    }
                    Op::Then(target, then) => {
                        if ok && let Err(e) = then(&target.file) {
                            record.record(e);
                        }
                    }
                }
            }
        });
        WriteBehind {
            ops: Some(ops),
            free,
            failed,
            thread: Some(thread),
        }
    }

    /// The first failure so far, if not reported yet.
    pub fn check(&self) -> Result<()> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait for every write and every `Then`; the first failure.
    pub fn finish(mut self) -> Result<()> {
        self.stop();
        self.check()
    }

    fn stop(&mut self) {
        drop(self.ops.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            self.failed
                .record(Error::Internal("the writer thread panicked".into()));
        }
    }

    fn buffer(&self) -> io::Result<AlignedBuf> {
        self.free.recv().map_err(|_| gone())
    }

    fn send(&self, op: Op) -> io::Result<()> {
        match &self.ops {
            Some(ops) => ops.send(op).map_err(|_| gone()),
            None => Err(gone()),
        }
    }
}

impl Drop for WriteBehind {
    /// Nothing is written after its owner is gone (a failed restore deletes the tree).
    fn drop(&mut self) {
        self.stop();
    }
}

fn gone() -> io::Error {
    io::Error::other("the writer thread has stopped")
}

/// Writes a file front to back (holes allowed), past the cache where it can, through a
/// [`WriteBehind`].
pub struct DirectWriter<'w> {
    behind: &'w WriteBehind,
    target: Arc<Target>,
    buf: Option<AlignedBuf>,
    /// The file offset of the buffer's first byte.
    pos: u64,
    direct: bool,
}

impl<'w> DirectWriter<'w> {
    /// Write `file` (at `path`; open for writing, empty) from offset 0 through `behind`,
    /// past the cache when `direct` and the filesystem allows it.
    pub fn new(file: File, path: &Path, direct: bool, behind: &'w WriteBehind) -> Self {
        let direct = direct && set_direct(&file, true).is_ok();
        let target = Arc::new(Target {
            file,
            path: path.to_path_buf(),
        });
        DirectWriter {
            behind,
            target,
            buf: None,
            pos: 0,
            direct,
        }
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let buf = match self.buf.take() {
                Some(b) => b,
                None => self.behind.buffer()?,
            };
            let buf = self.buf.insert(buf);
            let (len, cap) = (buf.len, buf.cap);
            let take = (cap - len).min(data.len());
            buf.space(len + take)[len..].copy_from_slice(&data[..take]);
            buf.len += take;
            data = &data[take..];
            if buf.len == cap {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Leave `n` bytes unwritten (a hole) before the next write.
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        self.flush()?;
        self.pos += n;
        Ok(())
    }

    /// Every byte handed over, then `then` with the file once the writer thread has
    /// written them (a failure there is reported by the next check).
    pub fn then(mut self, then: Then) -> Result<()> {
        let target = Arc::clone(&self.target);
        self.flush()
            .map_err(|e| Error::io("write", &target.path, e))?;
        let path = target.path.clone();
        self.behind
            .send(Op::Then(target, then))
            .map_err(|e| Error::io("write", path, e))
    }

    /// The buffer to the writer thread (at its file offset).
    fn flush(&mut self) -> io::Result<()> {
        let Some(buf) = self.buf.take() else {
            return Ok(());
        };
        let len = buf.len as u64;
        if len == 0 {
            self.buf = Some(buf);
            return Ok(());
        }
        self.behind.send(Op::Write {
            target: Arc::clone(&self.target),
            at: self.pos,
            buf,
            direct: self.direct,
        })?;
        self.pos += len;
        Ok(())
    }
}

/// Reads ranges of a file that are mostly asked for in order (the chunks of a pack),
/// through an aligned window read past the cache.
pub struct DirectReader {
    file: File,
    window: AlignedBuf,
    /// The file offset of the window's first byte.
    at: u64,
    direct: bool,
}

/// How much a window read brings in at once.
const WINDOW: usize = 4 << 20;

impl DirectReader {
    pub fn new(file: File) -> Self {
        let direct = set_direct(&file, true).is_ok();
        DirectReader {
            file,
            window: AlignedBuf::new(if direct { WINDOW } else { 0 }),
            at: 0,
            direct,
        }
    }

    /// Exactly `out.len()` bytes from `offset` (an error at the end of the file).
    pub fn read_exact_at(&mut self, out: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.direct || out.is_empty() {
            return self.file.read_exact_at(out, offset);
        }
        let end = offset
            .checked_add(out.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
        let held = self.at..self.at + self.window.len as u64;
        if !(held.contains(&offset) && end <= held.end) {
            match self.load(offset, end) {
                Ok(()) => {}
                Err(e) if is_einval(&e) => {
                    let _ = set_direct(&self.file, false);
                    self.direct = false;
                    self.window = AlignedBuf::new(0);
                    return self.file.read_exact_at(out, offset);
                }
                Err(e) => return Err(e),
            }
            if end > self.at + self.window.len as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends before the range",
                ));
            }
        }
        let from = (offset - self.at) as usize;
        out.copy_from_slice(&self.window.filled()[from..from + out.len()]);
        Ok(())
    }

    /// A window from the block holding `offset` covering at least `end` (or the file's end).
    fn load(&mut self, offset: u64, end: u64) -> io::Result<()> {
        let start = offset - offset % ALIGN as u64;
        let need = usize::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        if need > self.window.cap {
            self.window = AlignedBuf::new(need);
        }
        self.window.len = 0;
        self.at = start;
        let want = self.window.cap;
        let mut got = 0;
        while got < want {
            let n = match self
                .file
                .read_at(&mut self.window.space(want)[got..], start + got as u64)
            {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            got += n;
            // A short read past the cache is the end of the file (or an unaligned rest
            // the next read would refuse): stop.
            if !n.is_multiple_of(ALIGN) {
                break;
            }
        }
        self.window.len = got;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn a_direct_write_with_holes_and_a_tail_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(3 * (1 << 20) + 5_000);
        let behind = WriteBehind::start();
        let mut w = DirectWriter::new(File::create(&path).unwrap(), &path, true, &behind);
        // Odd pieces, an aligned hole in the middle, the unaligned rest at the end.
        let (head, rest) = data.split_at(1 << 20);
        for piece in head.chunks(10_007) {
            w.write_all(piece).unwrap();
        }
        w.skip(8192).unwrap();
        w.write_all(&rest[8192..]).unwrap();
        w.then(Box::new(|_: &File| Ok(()))).unwrap();
        behind.finish().unwrap();
        let mut want = data.clone();
        want[1 << 20..(1 << 20) + 8192].fill(0);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_buffered_writer_writes_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(100_003);
        let behind = WriteBehind::start();
        let mut w = DirectWriter::new(File::create(&path).unwrap(), &path, false, &behind);
        w.write_all(&data).unwrap();
        w.then(Box::new(|_: &File| Ok(()))).unwrap();
        behind.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn write_behind_writes_every_file_then_runs_its_then_after_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let behind = WriteBehind::start();
        let mut files = Vec::new();
        for (i, size) in [0usize, 1, 4096, 70_000, 3 * BUFFER + 17]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("f{i}"));
            let data = pattern(size);
            let mut w =
                DirectWriter::new(File::create(&path).unwrap(), &path, size > 4096, &behind);
            for piece in data.chunks(65_537) {
                w.write_all(piece).unwrap();
            }
            // The length seen by `then` is the whole file's: it runs after the writes.
            let want = size as u64;
            let seen = dir.path().join(format!("f{i}.len"));
            w.then(Box::new(move |f: &File| {
                let len = f
                    .metadata()
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .len();
                std::fs::write(&seen, format!("{len}/{want}"))
                    .map_err(|e| Error::Internal(e.to_string()))
            }))
            .unwrap();
            files.push((path, data));
        }
        behind.finish().unwrap();
        for (i, (path, data)) in files.iter().enumerate() {
            assert_eq!(&std::fs::read(path).unwrap(), data, "{}", path.display());
            let seen = std::fs::read_to_string(dir.path().join(format!("f{i}.len"))).unwrap();
            assert_eq!(seen, format!("{0}/{0}", data.len()));
        }
    }

    #[test]
    fn a_failure_on_the_writer_thread_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        let behind = WriteBehind::start();
        // Opened read-only: every write fails (EBADF) on the writer thread.
        let mut w = DirectWriter::new(File::open(&path).unwrap(), &path, false, &behind);
        w.write_all(b"data").unwrap();
        w.then(Box::new(|_: &File| Ok(()))).unwrap();
        let e = behind.finish().unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
    }

    #[test]
    fn after_a_failure_is_reported_later_files_are_still_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("read-only");
        std::fs::write(&bad, b"").unwrap();
        let behind = WriteBehind::start();
        let mut w = DirectWriter::new(File::open(&bad).unwrap(), &bad, false, &behind);
        w.write_all(b"data").unwrap();
        w.then(Box::new(|_: &File| Ok(()))).unwrap();
        // The failure reaches check() once the writer thread has met it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let e = loop {
            if let Err(e) = behind.check() {
                break e.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no failure reported");
            std::thread::yield_now();
        };
        assert!(e.contains("read-only"), "{e}");
        let later = dir.path().join("later");
        let mut w = DirectWriter::new(File::create(&later).unwrap(), &later, false, &behind);
        w.write_all(b"must not be written").unwrap();
        w.then(Box::new(|_: &File| Ok(()))).unwrap();
        // Reported once; the work after it was dropped, not done.
        behind.finish().unwrap();
        assert_eq!(std::fs::read(&later).unwrap(), b"");
    }

    #[test]
    fn windowed_reads_return_any_range_and_refuse_one_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(WINDOW * 2 + 12_345);
        std::fs::write(&path, &data).unwrap();
        let mut r = DirectReader::new(File::open(&path).unwrap());
        // In order, backwards, across a window's edge, larger than a window, the last byte.
        for (offset, len) in [
            (0, 100),
            (100, 70_000),
            (5, 3),
            (WINDOW - 10, 20),
            (1, WINDOW * 2),
            (data.len() - 1, 1),
        ] {
            let mut out = vec![0u8; len];
            r.read_exact_at(&mut out, offset as u64).unwrap();
            assert_eq!(out, data[offset..offset + len], "{offset}+{len}");
        }
        let mut out = vec![0u8; 2];
        let e = r
            .read_exact_at(&mut out, data.len() as u64 - 1)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
