//! The listing half of the storage walk, run ahead of its consumer in a thread of its own.
//! On a large tree with nothing changed, reading directories (`getdents`) and `lstat` of
//! every entry is about half of a snapshot's time; in a thread, the consumer (comparing
//! each entry with the parent snapshot, opening what changed) does its half meanwhile on
//! another core. The listing applies the walk's policy that needs no answer from the
//! consumer — excludes, the path-length limit, never descending into a directory whose
//! type changed under the walk — and hands on every other entry in walk order with its
//! `lstat`; warnings, links and opening files stay with the consumer
//! ([`super::walk::StorageSource`]), which re-checks whatever it opens, so running ahead
//! changes when an entry is looked at, never what is trusted.

use std::fs::{FileType, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use globset::GlobSet;
use walkdir::WalkDir;

use super::walk::MAX_PATH_BYTES;
use crate::error::{Error, Result};

/// Entries per message when running ahead: a channel operation per entry would cost more
/// than the `lstat` it saves.
const BATCH: usize = 256;
/// Messages in flight: with [`BATCH`], up to ~1 300 entries (a few hundred KiB) ahead.
const BATCHES_AHEAD: usize = 4;

/// How far the listing may run ahead of the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// Up to [`BATCHES_AHEAD`] batches of [`BATCH`] entries: what every backup uses.
    Ahead,
    /// One entry per request, looked at only when asked for: the walk's tests swap an
    /// entry between two steps and need to know which step saw what.
    #[cfg(test)]
    Stepwise,
}

/// What the listing found, in walk order.
#[derive(Debug)]
pub(super) enum Listed {
    /// The storage root itself (the consumer describes it: it may be a symlink to follow).
    Root,
    /// An entry below the root, with its `lstat` (an error when that failed).
    Entry {
        path: PathBuf,
        /// Relative to the root.
        rel: PathBuf,
        /// The type the directory listing gave.
        file_type: FileType,
        /// `lstat`: a type other than `file_type` is an entry replaced under the walk
        /// (not descended into when it was listed as a directory).
        meta: io::Result<Metadata>,
    },
    /// A path under the root past [`MAX_PATH_BYTES`]: left out with what lies below it.
    TooDeep { rel: PathBuf, depth: usize },
    /// The directory listing failed here.
    Error(walkdir::Error),
}

enum Message {
    Batch(Vec<Listed>),
    /// The walk is complete: a channel closed without it is a listing that died.
    End,
}

/// The consumer's end: entries one at a time, in walk order.
pub(super) struct Listing {
    messages: Receiver<Message>,
    /// [`Pace::Stepwise`]: one request per message.
    requests: Option<Sender<()>>,
    current: std::vec::IntoIter<Listed>,
    done: bool,
    thread: Option<JoinHandle<()>>,
}

impl Listing {
    /// Start listing `root`, leaving out what matches `excludes` (relative paths).
    pub(super) fn start(root: &Path, excludes: GlobSet, pace: Pace) -> Result<Self> {
        let (batch, capacity) = match pace {
            Pace::Ahead => (BATCH, BATCHES_AHEAD),
            #[cfg(test)]
            Pace::Stepwise => (1, 1),
        };
        let (tx, messages) = mpsc::sync_channel(capacity);
        let (requests, asked) = match pace {
            Pace::Ahead => (None, None),
            #[cfg(test)]
            Pace::Stepwise => {
                let (tx, rx) = mpsc::channel();
                (Some(tx), Some(rx))
            }
        };
        let lister = Lister {
            root: root.to_path_buf(),
            excludes,
            batch,
        };
        let thread = std::thread::Builder::new()
            .name("walk".into())
            .spawn(move || lister.run(&tx, asked.as_ref()))
            .map_err(|e| Error::io("start the walk of", root, e))?;
        Ok(Listing {
            messages,
            requests,
            current: Vec::new().into_iter(),
            done: false,
            thread: Some(thread),
        })
    }

    /// The next entry; `None` once the walk is complete. A listing thread that ended
    /// without completing the walk is an error, never a shorter tree.
    pub(super) fn next(&mut self) -> Option<Result<Listed>> {
        loop {
            if let Some(listed) = self.current.next() {
                return Some(Ok(listed));
            }
            if self.done {
                return None;
            }
            let asked = match &self.requests {
                Some(requests) => requests.send(()).is_ok(),
                None => true,
            };
            match self.messages.recv() {
                Ok(Message::Batch(batch)) if asked => self.current = batch.into_iter(),
                Ok(Message::End) if asked => {
                    self.done = true;
                    return None;
                }
                _ => {
                    self.done = true;
                    return Some(Err(Error::Internal(
                        "the listing of the storage tree stopped before the end of the walk".into(),
                    )));
                }
            }
        }
    }
}

impl Drop for Listing {
    /// Stop the thread: with the channels closed, its next send or wait fails and it
    /// returns; joined so no walk outlives its job.
    fn drop(&mut self) {
        self.requests = None;
        let (_, closed) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.messages, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's half.
struct Lister {
    root: PathBuf,
    excludes: GlobSet,
    batch: usize,
}

impl Lister {
    fn run(self, tx: &SyncSender<Message>, asked: Option<&Receiver<()>>) {
        let mut walker = WalkDir::new(&self.root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        let mut batch = Vec::with_capacity(self.batch);
        // Stepwise: nothing is looked at before the consumer asks for the next message.
        let mut asked_for = asked.is_none();
        loop {
            if !asked_for {
                if asked.is_some_and(|asked| asked.recv().is_err()) {
                    return;
                }
                asked_for = true;
            }
            let Some(item) = walker.next() else { break };
            if let Some(listed) = self.list(&mut walker, item) {
                batch.push(listed);
            }
            if batch.len() >= self.batch {
                if tx.send(Message::Batch(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                asked_for = asked.is_none();
            }
        }
        if !batch.is_empty() && tx.send(Message::Batch(batch)).is_err() {
            return;
        }
        let _ = tx.send(Message::End);
    }

    /// What one walk item becomes; `None` when it is excluded.
    fn list(
        &self,
        walker: &mut walkdir::IntoIter,
        item: walkdir::Result<walkdir::DirEntry>,
    ) -> Option<Listed> {
        let entry = match item {
            Ok(e) => e,
            Err(e) => return Some(Listed::Error(e)),
        };
        if entry.depth() == 0 {
            return Some(Listed::Root);
        }
        let rel = entry
            .path()
            .strip_prefix(&self.root)
            .unwrap_or(entry.path())
            .to_path_buf();
        let file_type = entry.file_type();
        let too_deep = entry.path().as_os_str().len() > MAX_PATH_BYTES;
        if too_deep || self.excludes.is_match(&rel) {
            if file_type.is_dir() {
                walker.skip_current_dir();
            }
            let depth = entry.depth();
            return too_deep.then_some(Listed::TooDeep { rel, depth });
        }
        let meta = entry.metadata().map_err(|e| {
            e.into_io_error()
                .unwrap_or_else(|| io::Error::other("metadata"))
        });
        if file_type.is_dir() && meta.as_ref().is_ok_and(|m| !m.is_dir()) {
            // Whatever walkdir would open there is not the directory listed: the
            // consumer warns, nothing below it is walked.
            walker.skip_current_dir();
        }
        Some(Listed::Entry {
            path: entry.into_path(),
            rel,
            file_type,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use globset::{Glob, GlobSetBuilder};

    use super::*;

    fn rels(mut listing: Listing) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(listed) = listing.next() {
            match listed.unwrap() {
                Listed::Root => out.push(String::new()),
                Listed::Entry { rel, meta, .. } => {
                    assert!(meta.is_ok());
                    out.push(rel.display().to_string());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn running_ahead_lists_what_stepping_lists_across_batches_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..3 {
            let sub = dir.path().join(format!("d{d}"));
            fs::create_dir(&sub).unwrap();
            for f in 0..300 {
                fs::write(sub.join(format!("f{f:03}")), b"x").unwrap();
                fs::write(sub.join(format!("f{f:03}.tmp")), b"x").unwrap();
            }
        }
        let excludes = || {
            let mut b = GlobSetBuilder::new();
            b.add(Glob::new("*.tmp").unwrap());
            b.add(Glob::new("d1").unwrap());
            b.build().unwrap()
        };
        let ahead = rels(Listing::start(dir.path(), excludes(), Pace::Ahead).unwrap());
        let stepped = rels(Listing::start(dir.path(), excludes(), Pace::Stepwise).unwrap());
        assert_eq!(ahead, stepped);
        assert_eq!(ahead.len(), 1 + 2 * 301, "{:?}", &ahead[..5]);
        assert!(
            ahead
                .iter()
                .all(|r| !r.ends_with(".tmp") && !r.starts_with("d1"))
        );
        assert!(ahead.windows(2).all(|w| w[0] < w[1]), "not in walk order");
    }

    #[test]
    fn a_listing_dropped_halfway_stops_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        for f in 0..(3 * BATCH * BATCHES_AHEAD) {
            fs::write(dir.path().join(format!("f{f}")), b"x").unwrap();
        }
        let mut listing = Listing::start(dir.path(), GlobSet::empty(), Pace::Ahead).unwrap();
        assert!(matches!(listing.next(), Some(Ok(Listed::Root))));
        // The thread is blocked on a full channel: dropping must end and join it.
        drop(listing);
    }

    #[test]
    fn a_listing_that_ends_without_completing_the_walk_is_an_error() {
        let (tx, messages) = mpsc::sync_channel(1);
        let thread = std::thread::spawn(move || {
            let _ = tx.send(Message::Batch(vec![Listed::Root]));
        });
        let mut listing = Listing {
            messages,
            requests: None,
            current: Vec::new().into_iter(),
            done: false,
            thread: Some(thread),
        };
        assert!(matches!(listing.next(), Some(Ok(Listed::Root))));
        match listing.next() {
            Some(Err(Error::Internal(m))) => assert!(m.contains("stopped before the end")),
            other => panic!("a cut listing read as {other:?}"),
        }
        assert!(listing.next().is_none());
    }
}
