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
}

impl EarlyFlush {
    pub fn new(login: SshLogin) -> Self {
        EarlyFlush {
            login,
            flusher: Arc::new(Mutex::new(Flusher::Unopened)),
        }
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
        let (slot, login, path) = (
            Arc::clone(&self.flusher),
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
                let mut file = session.sftp.options().read(true).open(&path).await?;
                file.sync_all().await?;
                file.close().await
            };
            if flushed.await.is_err() {
                mark(&slot, Flusher::Unavailable);
            }
        }));
    }
}

fn mark(slot: &Mutex<Flusher>, state: Flusher) {
    if let Ok(mut f) = slot.lock() {
        *f = state;
    }
}
