//! Watching the config file, so a saved edit reloads the schedule without a command. The
//! parent directory is watched (editors replace the file by rename, which a watch on the
//! file itself would lose); events for other names are ignored.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Start watching `file` — and, when it is a symlink, the file it points to — so a saved
/// edit of either sends `()` (the receiver debounces).
pub fn watch_config(file: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
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
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
        {
            // A full channel already holds a pending reload: nothing is lost.
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = watched
        .iter()
        .map(|p| {
            p.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        })
        .collect();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}
