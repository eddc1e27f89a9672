//! Watching the config file, so a saved edit reloads the schedule without a command. The
//! parent directory is watched (editors replace the file by rename, which a watch on the
//! file itself would lose); events for other names are ignored.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Start watching `file`; each change sends `()` (the receiver debounces).
pub fn watch_config(file: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let name = file.file_name().map(|n| n.to_os_string());
    let dir: PathBuf = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            // A full channel already holds a pending reload: nothing is lost.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
