//! The app's containers around one job: the ones carrying the stop label (for this kind
//! of job) and running are journaled, stopped, and started again; a start that fails is
//! retried briefly, then left journaled for the next run (or the daemon) to finish and
//! reported by the caller, naming the containers that are down.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::api::{ContainerSummary, EngineApi};
use super::journal::{self, StoppedContainer, StoppedJournal};
use crate::config::DockerSettings;
use crate::engine::live_app::{LiveApp, StopFor};
use crate::error::{Error, Result};

/// Waits between tries of a start that failed (the engine restarting, say): about 7 s in
/// all before the failure is reported and left to the next run.
const START_RETRIES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// Whether a container whose stop label has `value` is stopped `for_what`: `true` for
/// every job that stops the app, else a comma-separated list of `storage`, `full`,
/// `restore` (as offen/docker-volume-backup scopes containers by the label's value).
pub fn label_applies(value: &str, for_what: StopFor) -> bool {
    let value = value.trim();
    value.eq_ignore_ascii_case("true")
        || value
            .split(',')
            .any(|v| v.trim().eq_ignore_ascii_case(for_what.as_str()))
}

/// What happened to the app's containers during one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerReport {
    /// Stopped for the job (and, unless `not_started` says otherwise, started again).
    pub stopped: Vec<String>,
    /// The container that would not stop, and why (the job failed on it).
    pub stop_failed: Option<(String, String)>,
    /// Containers left stopped (their start failed after retries), and why.
    pub not_started: Option<(Vec<String>, String)>,
    /// Containers a run that died had left stopped, started again by this one.
    pub recovered: Vec<String>,
}

/// The labelled containers of one engine, for one job.
pub struct AppContainers {
    api: EngineApi,
    settings: DockerSettings,
    backup_dir: PathBuf,
    file_mode: u32,
    state: Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    /// Stopped by this run and not started yet, in the order they were stopped.
    stopped: Vec<StoppedContainer>,
    stopped_for: String,
    report: ContainerReport,
}

impl AppContainers {
    pub fn new(settings: &DockerSettings, backup_dir: PathBuf, file_mode: u32) -> Result<Self> {
        Ok(AppContainers {
            api: EngineApi::new(&settings.host, &settings.socket)?,
            settings: settings.clone(),
            backup_dir,
            file_mode,
            state: Mutex::new(RunState::default()),
        })
    }

    pub fn api(&self) -> &EngineApi {
        &self.api
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The labelled containers, each with whether it is stopped `for_what`.
    /// In name order: containers are stopped in that order and started in reverse, the
    /// same every run (name them `10-app`, `20-worker`… to choose).
    pub fn labelled(&self, for_what: StopFor) -> Result<Vec<(ContainerSummary, bool)>> {
        let mut labelled: Vec<(ContainerSummary, bool)> = self
            .api
            .labelled(&self.settings.stop_label)?
            .into_iter()
            .map(|c| {
                let applies = label_applies(&c.label, for_what);
                (c, applies)
            })
            .collect();
        labelled.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(labelled)
    }

    /// The running containers a job stops `for_what`: what a restore plan shows.
    pub fn would_stop(&self, for_what: StopFor) -> Result<Vec<String>> {
        Ok(self
            .labelled(for_what)?
            .into_iter()
            .filter(|(c, applies)| *applies && c.running())
            .map(|(c, _)| c.name)
            .collect())
    }

    /// Start `c`, trying again a few times while the engine is unreachable or refuses.
    fn start_with_retries(&self, c: &StoppedContainer) -> Result<()> {
        let mut last = None;
        for wait in std::iter::once(Duration::ZERO).chain(START_RETRIES) {
            std::thread::sleep(wait);
            match self.api.start(&c.id, &c.name) {
                Ok(()) => return Ok(()),
                // Removed meanwhile (the operator's `docker compose down`): nothing to start.
                Err(Error::Container {
                    kind: crate::error::ContainerFailure::NotFound,
                    ..
                }) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no start was tried".into())))
    }

    /// The job is over: whatever is still stopped is started (a job that ended before its
    /// engine did so), and what happened is reported.
    pub fn finish(&self) -> ContainerReport {
        if !self.state().stopped.is_empty() {
            let _ = self.start();
        }
        self.state().report.clone()
    }
}

impl LiveApp for AppContainers {
    fn recover(&self) -> Vec<String> {
        let journal = match journal::read(&self.backup_dir) {
            Ok(Some(j)) => j,
            Ok(None) => return Vec::new(),
            Err(e) => {
                let warning = crate::error_chain(&e);
                // Set aside, so the warning is said once and the next stop can journal.
                let aside = journal::path(&self.backup_dir).with_extension("json.unreadable");
                let _ = std::fs::rename(journal::path(&self.backup_dir), aside);
                return vec![warning];
            }
        };
        let mut warnings = Vec::new();
        let mut left = Vec::new();
        let mut down = Vec::new();
        for c in journal.containers {
            match self.api.inspect(&c.id, &c.name) {
                Ok(None) => warnings.push(format!(
                    "the container `{}`, stopped by an earlier run that did not finish ({}), no longer exists",
                    c.name, journal.at
                )),
                Ok(Some(s)) if s.status == "stopping" => left.push(c),
                Ok(Some(s)) if s.running => {}
                Ok(Some(_)) => match self.start_with_retries(&c) {
                    Ok(()) => {
                        warnings.push(format!(
                            "started the container `{}` again: an earlier run that did not finish ({}, pid {}) had left it stopped",
                            c.name, journal.at, journal.pid
                        ));
                        self.state().report.recovered.push(c.name.clone());
                    }
                    Err(e) => {
                        warnings.push(crate::error_chain(&e));
                        down.push(c.name.clone());
                        left.push(c);
                    }
                },
                Err(e) => {
                    warnings.push(crate::error_chain(&e));
                    down.push(c.name.clone());
                    left.push(c);
                }
            }
        }
        let rest = StoppedJournal {
            containers: left,
            ..journal
        };
        if let Err(e) = journal::write(&self.backup_dir, Some(&rest), self.file_mode) {
            warnings.push(crate::error_chain(&e));
        }
        if !down.is_empty() {
            self.state().report.not_started =
                Some((down, warnings.last().cloned().unwrap_or_default()));
        }
        warnings
    }

    fn stop(&self, for_what: StopFor) -> Result<Vec<String>> {
        let chosen: Vec<StoppedContainer> = self
            .labelled(for_what)?
            .into_iter()
            .filter(|(c, applies)| *applies && c.running())
            .map(|(c, _)| StoppedContainer {
                id: c.id,
                name: c.name,
            })
            .collect();
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        // Journaled before the first stop: a run killed from here on leaves word (a
        // container it names that still runs is simply left alone by whoever recovers).
        let journal = StoppedJournal::new(for_what.as_str(), self.api.host(), chosen.clone());
        journal::write(&self.backup_dir, Some(&journal), self.file_mode)?;
        let mut state = self.state();
        state.stopped_for = for_what.as_str().to_string();
        for c in &chosen {
            // Journaled already: if the stop fails half-way the container may still stop
            // later (the engine kills it after its grace period), and is then started.
            state.stopped.push(c.clone());
            if let Err(e) = self.api.stop(&c.id, &c.name, self.settings.stop_timeout) {
                state.report.stop_failed = Some((c.name.clone(), crate::error_chain(&e)));
                drop(state);
                // What did stop is started again; the job fails naming the container.
                let _ = self.start();
                return Err(e);
            }
            state.report.stopped.push(c.name.clone());
        }
        Ok(state.report.stopped.clone())
    }

    fn start(&self) -> Result<Vec<String>> {
        let (stopped, refused) = {
            let mut state = self.state();
            let refused = state.report.stop_failed.as_ref().map(|(n, _)| n.clone());
            (std::mem::take(&mut state.stopped), refused)
        };
        let mut started = Vec::new();
        // Still stopping (the one that would not stop in time): kept journaled, so that
        // whoever next finds it stopped starts it; not an alert of its own.
        let mut pending = Vec::new();
        let mut failed: Vec<(StoppedContainer, Error)> = Vec::new();
        // In reverse: what was stopped last (a dependant, often) starts first.
        for c in stopped.iter().rev() {
            match self.api.inspect(&c.id, &c.name) {
                Ok(None) => {}
                Ok(Some(s)) if s.status == "stopping" => pending.push(c.clone()),
                Ok(Some(s)) if s.running && refused.as_deref() == Some(c.name.as_str()) => {
                    pending.push(c.clone())
                }
                Ok(Some(s)) if s.running => {}
                _ => match self.start_with_retries(c) {
                    Ok(()) => started.push(c.name.clone()),
                    Err(e) => failed.push((c.clone(), e)),
                },
            }
        }
        let mut state = self.state();
        let down: Vec<StoppedContainer> = failed.iter().map(|(c, _)| c.clone()).collect();
        let journal = StoppedJournal::new(
            &state.stopped_for,
            self.api.host(),
            down.iter().chain(&pending).cloned().collect(),
        );
        let written = journal::write(&self.backup_dir, Some(&journal), self.file_mode);
        match failed.pop() {
            None => written.map(|()| started),
            Some((_, e)) => {
                let names = down.iter().map(|c| c.name.clone()).collect();
                state.report.not_started = Some((names, crate::error_chain(&e)));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::BackupKind;

    #[test]
    fn label_values_scope_by_job() {
        let storage = StopFor::Backup(BackupKind::Storage);
        let full = StopFor::Backup(BackupKind::Full);
        assert!(label_applies("true", storage));
        assert!(label_applies(" TRUE ", StopFor::Restore));
        assert!(label_applies("storage", storage));
        assert!(!label_applies("storage", full));
        assert!(label_applies("full, restore", StopFor::Restore));
        assert!(!label_applies("false", storage));
        assert!(!label_applies("", storage));
    }
}
