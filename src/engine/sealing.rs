//! Encrypting a data file as it is written (docs/design.md §5): the compressor's output goes to
//! age, whose output is hashed and written — so the checksum is of the stored
//! (encrypted) bytes, and no plaintext touches the disk. For the storage archive age runs
//! on a thread of its own ([`Sealer::threaded`]): the compressor hands it buffers through
//! a bounded channel, so encryption overlaps compression and memory stays bounded
//! (`DEPTH` buffers of `CHUNK` bytes). A database copy is sealed in the caller's thread.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::encryption::Recipients;

/// Bytes gathered before a buffer goes to the encryption thread.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the compressor and the encryption thread.
const DEPTH: usize = 4;

/// Where the compressor writes: straight to `W`, or through age into `W`.
pub enum Sealer<W: Write + Send + 'static> {
    Plain(W),
    Sealed(Box<age::stream::StreamWriter<W>>),
    Threaded(SealThread<W>),
}

impl<W: Write + Send + 'static> Sealer<W> {
    /// Encrypt to `recipients` (if any) in the caller's thread.
    pub fn new(out: W, recipients: Option<&Recipients>) -> io::Result<Self> {
        Ok(match recipients {
            None => Sealer::Plain(out),
            Some(r) => Sealer::Sealed(Box::new(r.encrypt(out)?)),
        })
    }

    /// Encrypt to `recipients` (if any) on a thread of its own.
    pub fn threaded(out: W, recipients: Option<&Recipients>) -> io::Result<Self> {
        Ok(match recipients {
            None => Sealer::Plain(out),
            Some(r) => Sealer::Threaded(SealThread::start(r.encrypt(out)?)?),
        })
    }

    /// Write the last chunk and the age trailer; the inner writer back.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealer::Plain(w) => Ok(w),
            Sealer::Sealed(s) => s.finish(),
            Sealer::Threaded(t) => t.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::Plain(w) => w.write(buf),
            Sealer::Sealed(s) => s.write(buf),
            Sealer::Threaded(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::Plain(w) => w.flush(),
            Sealer::Sealed(s) => s.flush(),
            // The thread writes as buffers arrive; `finish` is what makes it durable.
            Sealer::Threaded(_) => Ok(()),
        }
    }
}

/// age's stream writer on its own thread, fed full buffers through a bounded channel;
/// emptied buffers come back to be reused.
pub struct SealThread<W: Write + Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    handle: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> SealThread<W> {
    fn start(mut writer: age::stream::StreamWriter<W>) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back_tx, back_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let handle = std::thread::Builder::new()
            .name("age".into())
            .spawn(move || {
                while let Ok(buf) = rx.recv() {
                    writer.write_all(&buf)?;
                    let _ = back_tx.try_send(buf);
                }
                writer.finish()
            })?;
        Ok(SealThread {
            tx: Some(tx),
            recycled: back_rx,
            pending: Vec::with_capacity(CHUNK),
            handle: Some(handle),
        })
    }

    /// Hand the gathered bytes to the thread; if it has stopped, its own error.
    fn send(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut next = self.recycled.try_recv().unwrap_or_default();
        next.clear();
        next.reserve(CHUNK);
        let full = std::mem::replace(&mut self.pending, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// Why the thread stopped (it returns its error and drops the channel).
    fn stopped(&mut self) -> io::Error {
        drop(self.tx.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the encryption thread stopped"),
        }
    }

    fn finish(mut self) -> io::Result<W> {
        self.send()?;
        drop(self.tx.take());
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the encryption thread failed")),
        }
    }
}

impl<W: Write + Send + 'static> Write for SealThread<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copy `plain` through age into `out` (in this thread) and return `out`.
pub fn seal_stream<W: Write + Send + 'static>(
    plain: &mut dyn Read,
    out: W,
    recipients: &Recipients,
) -> io::Result<W> {
    let mut sealer = Sealer::new(out, Some(recipients))?;
    io::copy(plain, &mut sealer)?;
    sealer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn the_threaded_sealer_writes_what_age_decrypts() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut sealer = Sealer::threaded(Vec::new(), Some(&recipients)).unwrap();
        for piece in data.chunks(70_001) {
            sealer.write_all(piece).unwrap();
        }
        let sealed = sealer.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, id.to_string().expose_secret()).unwrap();
        let ids = crate::encryption::Identities::load(&key).unwrap();
        let mut out = Vec::new();
        ids.decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    /// A writer that fails after a while, as a full disk does.
    struct FailsAfter(usize);
    impl Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_threads_write_error_reaches_the_writer() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        let mut sealer = Sealer::threaded(FailsAfter(100_000), Some(&recipients)).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let err = (0..64)
            .find_map(|_| sealer.write_all(&chunk).err())
            .or_else(|| sealer.finish().err())
            .expect("the failure was lost");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
