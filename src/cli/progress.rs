//! A progress bar (bytes, files, rate) on a terminal; nothing on a pipe or under systemd.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vertex_backup::engine::Progress;

pub struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
    files: std::sync::atomic::AtomicU64,
}

impl TerminalProgress {
    /// A bar when stderr is a terminal and `quiet` is off; otherwise `None`.
    pub fn for_stderr(quiet: bool) -> Option<TerminalProgress> {
        if quiet || !std::io::stderr().is_terminal() || std::env::var_os("INVOCATION_ID").is_some()
        {
            return None;
        }
        Some(TerminalProgress {
            bar: Mutex::new(None),
            files: Default::default(),
        })
    }
}

impl Progress for TerminalProgress {
    fn begin(&self, phase: &str, total_bytes: Option<u64>, _total_files: Option<u64>) {
        let bar = match total_bytes {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = ProgressStyle::with_template(
            "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(phase.to_string());
        self.files.store(0, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, bytes: u64, files: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(bytes);
            if files > 0 {
                let n = self
                    .files
                    .fetch_add(files, std::sync::atomic::Ordering::Relaxed)
                    + files;
                bar.set_message(format!("{n} files"));
            }
        }
    }

    fn end(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}
