//! Watching the config file, so a saved edit reloads the schedule without a command. The
//! parent directory is watched (editors replace the file by rename, which a watch on the
//! file itself would lose); events for other names are ignored.
//!
//! Only the events that end an edit are asked of the kernel — a file closed after writing,
//! renamed in or out, created, deleted, its attributes changed — never each write or open.
//! The directory may be the app's own (config beside the database): a watch that woke on
//! every write of the database's log cost the app's commits twice their time (measured
//! with `bench/replication.sh`), and a half-written file is no edit to reload anyway.

use std::io;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a finished edit (or a symlink swapped) shows in the watched directory.
const EDIT_ENDS: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB);

/// The watch; dropping it ends it.
pub struct ConfigWatch {
    task: JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching `file` — and, when it is a symlink, the file it points to — so a saved
/// edit of either sends `()` (the receiver debounces). Runs inside the tokio runtime.
pub fn watch_config(file: &Path, tx: mpsc::Sender<()>) -> io::Result<ConfigWatch> {
    let mut watched: Vec<PathBuf> = vec![file.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(file)
        && real != file
    {
        watched.push(real);
    }
    let names: Vec<_> = watched
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut dirs: Vec<PathBuf> = watched
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    let inotify = Inotify::init()?;
    for dir in &dirs {
        inotify.watches().add(dir, EDIT_ENDS)?;
    }
    let mut events = inotify.into_event_stream([0u8; 4096])?;
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!("the config watch stopped ({e}); use SIGHUP to reload");
                    return;
                }
            };
            // An overflowed queue may have dropped the edit: reload to be sure.
            let ours = event.mask.contains(EventMask::Q_OVERFLOW)
                || event
                    .name
                    .as_ref()
                    .is_some_and(|n| names.iter().any(|w| w == n));
            if ours {
                // A full channel already holds a pending reload: nothing is lost.
                let _ = tx.try_send(());
            }
        }
    });
    Ok(ConfigWatch { task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    /// The kernel queues an event at the syscall that causes it, so reading the queue
    /// right after the writes sees every event they caused.
    fn queued(inotify: &mut Inotify) -> Vec<EventMask> {
        let mut buffer = [0u8; 4096];
        let mut masks = Vec::new();
        loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let before = masks.len();
                    masks.extend(events.map(|e| e.mask));
                    if masks.len() == before {
                        return masks;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return masks,
                Err(e) => panic!("read inotify events: {e}"),
            }
        }
    }

    #[test]
    fn an_apps_writes_beside_the_config_wake_nothing_and_a_saved_edit_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.db-wal");
        let mut app = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create the app's log");
        let mut inotify = Inotify::init().expect("inotify");
        inotify
            .watches()
            .add(dir.path(), EDIT_ENDS)
            .expect("watch the directory");

        // A database's log written a thousand times, held open: no event at all.
        for i in 0..1000u32 {
            app.write_all(&i.to_le_bytes()).expect("write");
        }
        let _read_back = fs::read(&log).expect("read the log");
        assert_eq!(queued(&mut inotify), Vec::<EventMask>::new());

        // An editor's save: a new file written, closed and renamed over the config.
        let tmp = dir.path().join("config.toml.tmp");
        fs::write(&tmp, "[paths]\n").expect("write the new config");
        fs::rename(&tmp, dir.path().join("config.toml")).expect("rename");
        let masks = queued(&mut inotify);
        assert!(
            masks.iter().any(|m| m.contains(EventMask::MOVED_TO)),
            "{masks:?}"
        );
        assert!(
            masks.iter().any(|m| m.contains(EventMask::CLOSE_WRITE)),
            "{masks:?}"
        );
        assert!(
            !masks.iter().any(|m| m.contains(EventMask::MODIFY)),
            "{masks:?}"
        );
    }

    #[tokio::test]
    async fn a_rename_over_the_config_sends_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        fs::write(&config, "[paths]\n").expect("write the config");
        let (tx, mut rx) = mpsc::channel(1);
        let _watch = watch_config(&config, tx).expect("watch");
        let tmp = dir.path().join("config.toml.tmp-edit");
        fs::write(&tmp, "[paths]\n# edited\n").expect("write the edit");
        fs::rename(&tmp, &config).expect("rename over the config");
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        assert_eq!(got, Ok(Some(())));
    }
}
