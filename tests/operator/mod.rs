//! Issue 17, living with the app on one machine: a backup that waits for the directory
//! lock (`--wait`) instead of failing a cron overlap, the CPU and I/O priority a backup
//! runs at (`[backup] nice`, `io_class`) from the CLI and in the daemon, and the safety
//! copies restores set aside, listed and rotated by `[retention] keep_pre_restore`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

mod lock_wait;
mod messages;
mod priority;
mod safety_copies;
mod sizes;

/// A `[hooks] before` that blocks only the first backup: it touches `started`, then
/// waits for `go` to exist. Later backups run straight through.
fn blocking_first_hook(app: &TestApp) -> (PathBuf, PathBuf) {
    let started = app.root.join("hook.started");
    let go = app.root.join("hook.go");
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[hooks]\nbefore = \"if [ ! -e '{s}' ]; then touch '{s}'; while [ ! -e '{g}' ]; do sleep 0.02; done; fi\"\ntimeout = \"2m\"\n",
            s = started.display(),
            g = go.display()
        ),
    ));
    (started, go)
}

/// Entries of `dir` whose names start with `prefix`, sorted.
fn children_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The rows of `list --json` that are pre-restore safety copies.
fn pre_restore_rows(app: &TestApp) -> Vec<Value> {
    app.list()
        .into_iter()
        .filter(|r| r["reason"] == "pre-restore")
        .collect()
}

const WAIT_LIMIT: Duration = Duration::from_secs(60);
