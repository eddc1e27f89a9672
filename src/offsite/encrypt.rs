//! The bytes of a plain local file as age ciphertext, for a target that takes only
//! ciphertext (`encrypt = "offsite"`): a reader the upload pulls from, fed by a thread
//! that reads the file and encrypts it into a bounded channel. Nothing is written to disk
//! on the way (no plaintext temporary copy, no ciphertext one either), memory stays at a
//! few chunks, and age runs on its own thread beside the upload's hashing and sending.
//!
//! The plaintext is hashed as it is read and must match the local backup's checksum;
//! otherwise the stream fails before its last ciphertext chunk, so the upload fails and a
//! local copy that changed or rotted never lands as a good remote one.

use std::io::{self, BufWriter, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::encryption::Recipients;

/// How many bytes the encrypting thread hands on at once.
const CHUNK: usize = 256 * 1024;

/// Chunks in flight between the threads (memory: `CHUNK × (BOUND + 2)`).
const BOUND: usize = 8;

enum Chunk {
    Data(Vec<u8>),
    /// The ciphertext is complete (age's final chunk written) and the plaintext checked.
    End,
    Failed(io::Error),
}

/// Reads the age encryption of a plaintext stream to the given recipients.
pub struct EncryptingReader {
    rx: Option<Receiver<Chunk>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    worker: Option<JoinHandle<()>>,
}

impl EncryptingReader {
    /// Start encrypting `plaintext` to `recipients`; with `expect`, the plaintext must
    /// hash (SHA-256, lower-case hex) to it or reading fails at its end.
    pub fn start(
        recipients: Recipients,
        plaintext: Box<dyn Read + Send>,
        expect: Option<String>,
    ) -> io::Result<EncryptingReader> {
        let (tx, rx) = sync_channel(BOUND);
        let worker = std::thread::Builder::new()
            .name("age-encrypt".into())
            .spawn(move || {
                let outcome = encrypt_into(&recipients, plaintext, expect.as_deref(), tx.clone());
                // The reader may be gone (the upload failed); nobody is left to tell.
                let _ = tx.send(match outcome {
                    Ok(()) => Chunk::End,
                    Err(e) => Chunk::Failed(e),
                });
            })?;
        Ok(EncryptingReader {
            rx: Some(rx),
            current: Vec::new(),
            pos: 0,
            done: false,
            worker: Some(worker),
        })
    }
}

fn encrypt_into(
    recipients: &Recipients,
    mut plaintext: Box<dyn Read + Send>,
    expect: Option<&str>,
    tx: SyncSender<Chunk>,
) -> io::Result<()> {
    let pipe = BufWriter::with_capacity(CHUNK, ChannelWriter { tx });
    let mut age = recipients.encrypt(pipe)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match plaintext.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        age.write_all(&buf[..n])?;
    }
    let got = hex::encode(hasher.finalize());
    if let Some(want) = expect.filter(|w| *w != got) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the local copy hashes to {got}, not {want} as its metadata records: it changed or is damaged"
            ),
        ));
    }
    // Only now the final chunk: a stream cut before this point never decrypts.
    let mut pipe = age.finish()?;
    pipe.flush()
}

/// Hands every buffer written to it to the channel.
struct ChannelWriter {
    tx: SyncSender<Chunk>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Chunk::Data(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for EncryptingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.current = d;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Ok(Chunk::Failed(e)) => {
                    self.done = true;
                    return Err(io::Error::new(e.kind(), format!("encrypt: {e}")));
                }
                // The thread ended without saying the stream is complete (it panicked).
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the encrypting thread stopped early"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for EncryptingReader {
    fn drop(&mut self) {
        // Closing the channel first makes the thread's next send fail, so it ends soon.
        self.rx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::Identities;
    use age::secrecy::ExposeSecret;

    fn keys(dir: &std::path::Path) -> (Recipients, Identities) {
        let id = age::x25519::Identity::generate();
        let file = dir.join("key.txt");
        std::fs::write(&file, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let public = id.to_public().to_string();
        (
            Recipients::parse([public.as_str()]).unwrap(),
            Identities::load(&file).unwrap(),
        )
    }

    fn plaintext() -> Vec<u8> {
        (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn yields_ciphertext_that_decrypts_to_the_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, identities) = keys(dir.path());
        let data = plaintext();
        let sha = hex::encode(Sha256::digest(&data));
        let mut r = EncryptingReader::start(
            recipients,
            Box::new(io::Cursor::new(data.clone())),
            Some(sha),
        )
        .unwrap();
        let mut sealed = Vec::new();
        r.read_to_end(&mut sealed).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let mut back = Vec::new();
        identities
            .decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_plaintext_that_is_not_the_recorded_one_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, _) = keys(dir.path());
        let mut r = EncryptingReader::start(
            recipients,
            Box::new(io::Cursor::new(plaintext())),
            Some("00".repeat(32)),
        )
        .unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("changed or is damaged"), "{e}");
    }

    #[test]
    fn a_reader_dropped_midway_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, _) = keys(dir.path());
        let mut r =
            EncryptingReader::start(recipients, Box::new(io::repeat(1).take(1 << 30)), None)
                .unwrap();
        let mut first = vec![0u8; 1000];
        r.read_exact(&mut first).unwrap();
        // Drop joins the thread: this returns only because the thread saw the channel close.
        drop(r);
    }
}
