//! The engine: blocking, synchronous work on files — taking backups, verifying and
//! restoring them. No async runtime in here: the CLI calls it directly, the daemon
//! through `spawn_blocking`. Progress and cancellation come in through small traits so
//! the same code serves a terminal, the daemon and the tests.

pub mod archive;
pub mod backup;
pub mod browse;
pub mod compression;
pub mod database;
pub mod decrypt;
pub mod direct_io;
pub mod entry_tree;
pub mod extract;
pub mod hashing;
pub mod hooks;
pub mod live_app;
pub mod output;
pub mod path_selection;
pub mod repack;
pub mod repair;
pub mod restore;
mod restore_database;
pub mod rotate;
pub mod safety_copies;
pub mod sealing;
pub mod select;
pub mod snapshot;
mod sqlite_vfs;
pub mod staged_tree;
pub mod storage;
pub mod verify;
pub mod walk;
mod walk_ahead;
pub mod xattrs;

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Set from outside (SIGTERM, daemon shutdown); checked between files and chunks. A
/// cancelled operation removes what it wrote and returns [`Error::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// The shared flag, for a signal handler to set (`signal_hook::flag::register`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Receives progress of long operations. Every method has a no-op default.
pub trait Progress: Sync {
    /// A new phase ("archive storage", "verify") with its expected totals, when known.
    fn begin(&self, _phase: &str, _total_bytes: Option<u64>, _total_files: Option<u64>) {}
    /// `bytes` more bytes and `files` more files were processed.
    fn advance(&self, _bytes: u64, _files: u64) {}
    /// The phase is over.
    fn end(&self) {}
}

/// Progress that goes nowhere (the daemon, pipes, tests).
pub struct Silent;
impl Progress for Silent {}

/// Reports the bytes read through it to a [`Progress`] (an archive's as verify reads it, a
/// file's as the storage archive stores it).
pub(crate) struct ProgressReader<'a, R> {
    pub(crate) inner: &'a mut R,
    pub(crate) progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64, 0);
        Ok(n)
    }
}
