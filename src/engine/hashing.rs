//! SHA-256 computed on the bytes as they stream past, so no file is read twice to hash it.
//! `sha2` picks the CPU's SHA extensions at run time where present.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
    /// Read what is left (an archive may end before its file does) and return the digest.
    pub fn finish(self) -> io::Result<(String, u64)> {
        self.finish_into_inner()
            .map(|(_, digest, read)| (digest, read))
    }

    /// As [`HashingReader::finish`], and the inner reader back (a reader that holds back
    /// a trailer the digest is checked against).
    pub fn finish_into_inner(mut self) -> io::Result<(R, String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.inner, hex::encode(self.hasher.finalize()), self.read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// SHA-256 on its own thread: the bytes are copied into recycled buffers and hashed
/// while the caller goes on decompressing — on two cores this takes the
/// hash off the critical path. Memory: at most `DEPTH` buffers of the caller's chunk size.
struct HashThread {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<String>>,
    bytes: u64,
}

const DEPTH: usize = 8;

impl HashThread {
    fn start() -> HashThread {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
        let handle = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                while let Ok(buf) = rx.recv() {
                    hasher.update(&buf);
                    let _ = back_tx.try_send(buf);
                }
                hex::encode(hasher.finalize())
            })
            .ok();
        HashThread {
            tx: Some(tx),
            recycled: back_rx,
            handle,
            bytes: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut buf = self.recycled.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.bytes += data.len() as u64;
        match &self.tx {
            Some(tx) => tx
                .send(buf)
                .map_err(|_| io::Error::other("the hashing thread stopped")),
            None => Err(io::Error::other("the hashing thread is gone")),
        }
    }

    fn finish(mut self) -> io::Result<(String, u64)> {
        drop(self.tx.take());
        let digest = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .ok_or_else(|| io::Error::other("the hashing thread failed"))?;
        Ok((digest, self.bytes))
    }
}

/// [`HashingReader`] with the hash computed on its own thread.
pub struct ThreadedHashReader<R> {
    inner: R,
    hash: HashThread,
}

impl<R: Read> ThreadedHashReader<R> {
    pub fn new(inner: R) -> Self {
        ThreadedHashReader {
            inner,
            hash: HashThread::start(),
        }
    }
    /// Read what is left and return the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self.inner.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.hash.feed(&buf[..n])?;
        }
        self.hash.finish()
    }
}

impl<R: Read> Read for ThreadedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.feed(&buf[..n])?;
        Ok(n)
    }
}

/// Counts bytes written through it (the uncompressed size of a stream).
pub struct CountingWriter<W> {
    inner: W,
    pub count: u64,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 of a whole file, read once with a large buffer.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let file = File::open(path).ctx("open", path)?;
    let reader = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
    reader.finish().ctx("read", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_digests_match() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (_, plain, _) = w.finish();
        let mut r = ThreadedHashReader::new(&data[..]);
        let mut first = vec![0u8; 1000];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), (plain, data.len() as u64));
    }

    #[test]
    fn known_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (buf, hex, n) = w.finish();
        assert_eq!(buf, b"abc");
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let r = HashingReader::new(&b"abc"[..]);
        assert_eq!(r.finish().unwrap().0, hex);
    }
}
