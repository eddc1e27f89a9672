//! Early flushes of a file being uploaded to a backup server over SSH. A server's
//! `sftp-server` handles one request at a time, so an `fsync@openssh.com` sent on the
//! writing connection stops the writes behind it, and one sent only at the end leaves the
//! server's disk idle during the whole transfer and then flushes every byte at once
//! (about 1.7 s per GiB on the bench's disk). A second connection — its own `sftp-server`
//! on the server — flushes what has been written so far every [`FLUSH_EVERY`] bytes, on a
//! handle of its own, while the first keeps receiving: the disk writes during the
//! transfer, and the final fsync on the writing handle has little left to do.
//!
//! Best effort: the final fsync is what makes an object durable and is always made; an
//! early flush that fails only loses the overlap, and a second connection that cannot be
//! had (or drops) is not tried again until the target is opened anew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::sftp_session::{Session, SshLogin};

/// Bytes written between two early flushes.
pub const FLUSH_EVERY: u64 = 64 << 20;

enum Flusher {
    Unopened,
    Open(Arc<Session>),
    /// Could not be had, or dropped: uploads go on without early flushes.
    Unavailable,
}

/// The second connection and the flush in flight, for one target.
pub struct EarlyFlush {
    login: SshLogin,
    flusher: Arc<Mutex<Flusher>>,
    /// Early flushes the server confirmed (a failed one is silent by design: counted so
    /// that a test and the bench can see the overlap happen).
    done: Arc<AtomicU64>,
}

impl EarlyFlush {
    pub fn new(login: SshLogin) -> Self {
        EarlyFlush {
            login,
            flusher: Arc::new(Mutex::new(Flusher::Unopened)),
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Early flushes the server confirmed since the target was opened.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Start flushing `path` as written so far on `runtime`, unless `running` (the last
    /// flush) has not finished: at most one is in flight.
    pub fn start(
        &self,
        runtime: &tokio::runtime::Runtime,
        path: &str,
        running: &mut Option<JoinHandle<()>>,
    ) {
        if running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let state = match self.flusher.lock() {
            Ok(f) => match &*f {
                Flusher::Unavailable => return,
                Flusher::Open(s) => Some(Arc::clone(s)),
                Flusher::Unopened => None,
            },
            Err(_) => return,
        };
        let (slot, done, login, path) = (
            Arc::clone(&self.flusher),
            Arc::clone(&self.done),
            self.login.clone(),
            path.to_string(),
        );
        *running = Some(runtime.spawn(async move {
            let session = match state {
                Some(s) => s,
                // Opened here, not by the writer: the upload never waits for the login.
                None => match login.connect().await {
                    Ok(s) if s.sftp.support_fsync() => Arc::new(s),
                    _ => return mark(&slot, Flusher::Unavailable),
                },
            };
            mark(&slot, Flusher::Open(Arc::clone(&session)));
            let flushed = async {
                // Opened for writing (neither creating nor truncating): the client refuses
                // an fsync on a handle it did not open for writing.
                let mut file = session.sftp.options().write(true).open(&path).await?;
                file.sync_all().await?;
                file.close().await
            };
            match flushed.await {
                Ok(()) => {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => mark(&slot, Flusher::Unavailable),
            }
        }));
    }
}

fn mark(slot: &Mutex<Flusher>, state: Flusher) {
    if let Ok(mut f) = slot.lock() {
        *f = state;
    }
}
