//! The running app around a job, as the engine sees it: whatever must not run while its
//! files are read (a storage backup) or replaced (an in-place restore) is stopped just
//! before and started again just after, and a run that died with it stopped is made good
//! by the next one. The engine only says when; the `docker` module says how (containers of a
//! Docker or Podman engine), and [`NoApp`] stands in when nothing is to be stopped.

use crate::error::Result;
use crate::kind::BackupKind;

/// Why the app is stopped: which containers a scoped label picks depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopFor {
    /// A backup of this type reads the storage directory (storage or full).
    Backup(BackupKind),
    /// An in-place restore replaces live data.
    Restore,
}

impl StopFor {
    /// How a label value names it: `storage`, `full`, `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopFor::Backup(kind) => kind.as_str(),
            StopFor::Restore => "restore",
        }
    }
}

/// Stopping and starting the app. Called only while the backup directory's lock is held,
/// so no two runs ever stop or start the app at the same time.
pub trait LiveApp: Sync {
    /// Start again what a run that died (killed, power cut) left stopped. Returns
    /// warnings: what could not be started is said, never a reason to skip the job.
    fn recover(&self) -> Vec<String>;
    /// Stop what must not run `for_what`; the names of what was stopped. An error names
    /// what would not stop (and whatever it had already stopped is started again).
    fn stop(&self, for_what: StopFor) -> Result<Vec<String>>;
    /// Start again what [`LiveApp::stop`] stopped; the names started. Harmless when
    /// nothing is stopped.
    fn start(&self) -> Result<Vec<String>>;
}

/// Nothing to stop: the app is not run by a container engine we manage.
pub struct NoApp;

impl LiveApp for NoApp {
    fn recover(&self) -> Vec<String> {
        Vec::new()
    }
    fn stop(&self, _: StopFor) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn start(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
