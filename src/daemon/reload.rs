//! Re-reading the configuration on SIGHUP or a saved edit: a valid file replaces the
//! schedule for every reader at once, an invalid (or empty) one is rejected and the running
//! configuration stays. The file is read and parsed on the blocking pool, never on the
//! runtime's two threads.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::timetable::Timetable;
use super::{ConfigLoader, systemd};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Event, EventSender};
use crate::jobs::{Queue, Trigger};
use crate::kind::JobName;

/// What the reloader remembers between reloads.
pub(super) struct Reloader {
    pub load: ConfigLoader,
    pub config: watch::Sender<Arc<Config>>,
    /// What the running config was parsed from: a reload that reads the same is a no-op.
    pub last_text: Option<String>,
}

/// What a reload read: the file's text (if it has one) and the parsed result.
struct Loaded {
    text: Option<String>,
    config: Result<Config>,
}

impl Reloader {
    /// Re-read the config; `forced` (SIGHUP) reloads even an unchanged file. Slots that
    /// came due under the old schedule are submitted to `queue` once the new one is live.
    pub async fn reload(
        &mut self,
        timetable: &mut Timetable,
        events: &EventSender,
        queue: &Queue,
        forced: bool,
    ) {
        let file = self.config.borrow().file.clone();
        let load = self.load.clone();
        let last_text = self.last_text.clone();
        let read = tokio::task::spawn_blocking(move || {
            let text = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
            if !forced && text.is_some() && text == last_text {
                return None;
            }
            Some(Loaded {
                config: parse(file.as_deref(), text.as_deref(), &load),
                text,
            })
        })
        .await;
        let loaded = match read {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return,
            Err(e) => Loaded {
                text: None,
                config: Err(Error::Internal(format!("the config reload crashed: {e}"))),
            },
        };
        systemd::reloading();
        match loaded.config {
            Ok(new) => self.apply(new, timetable, events, queue),
            Err(e) => {
                self.last_text = loaded.text;
                events.send(Event::ConfigRejected {
                    error: crate::error_chain(&e),
                });
            }
        }
        systemd::reloaded(&super::scheduler::status_line(timetable, queue));
    }

    fn apply(
        &mut self,
        new: Config,
        timetable: &mut Timetable,
        events: &EventSender,
        queue: &Queue,
    ) {
        let old_dir = self.config.borrow().paths.backup_dir.clone();
        if new.paths.backup_dir != old_dir {
            tracing::warn!(
                "backup_dir changed to {}; restart the daemon so its lock moves too",
                new.paths.backup_dir.display()
            );
        }
        // Slots that came due under the old schedule but have not fired yet (the loop was
        // in the edit debounce, or took this reload before its timer) still run: the new
        // timetable starts after "now" and would otherwise drop them silently (a save at
        // 01:59:59.8 would cost the 02:00 backup). They are submitted once the new config
        // is published, so they run with it like every later job.
        let now = Utc::now();
        let due = timetable.take_due(now);
        *timetable = Timetable::new(&new, now);
        let next_runs = JobName::ALL
            .into_iter()
            .filter_map(|j| {
                timetable
                    .next_of(j)
                    .map(|t| (j.to_string(), new.schedule.timezone.format(&t)))
            })
            .collect();
        // The text actually parsed, which is newer than the text compared above if the
        // file changed again between the two reads.
        self.last_text = Some(new.text().to_string());
        self.config.send_replace(Arc::new(new));
        for (job, slot) in due {
            super::scheduler::submit(queue, events, job, Trigger::Schedule, slot);
        }
        events.send(Event::ConfigReloaded { next_runs });
    }
}

/// Parse the file as the loader does, refusing an empty one. An empty file is valid TOML
/// (all defaults), and it is what a reload sees when it catches an editor or `cat > file`
/// between truncating and writing (found by the SIGHUP storm tests): swapping every setting
/// for the defaults on a running daemon is never what the operator meant.
fn parse(
    file: Option<&std::path::Path>,
    text: Option<&str>,
    load: &ConfigLoader,
) -> Result<Config> {
    match (file, text) {
        (Some(f), Some(t)) if t.trim().is_empty() => Err(Error::Config {
            file: Some(f.to_path_buf()),
            line: None,
            key: String::new(),
            message: "the file is empty (still being written?); the running configuration stays"
                .into(),
        }),
        _ => load(),
    }
}
