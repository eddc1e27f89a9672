//! The app under Docker or Podman: live paths that name a volume (`volume:NAME[/PATH]`)
//! resolved to its mountpoint through the engine at each job (a volume re-created
//! elsewhere is followed), and the containers labelled `vertex-backup.stop-during-backup`
//! stopped while the storage directory is read or live data replaced, and always started
//! again (journaled before the first stop). The database never stops anything: the online
//! SQLite copy reads a consistent state while the app writes.
//!
//! The edges (jobs, CLI, API) call [`for_job`] and hand [`JobLive::app`] to the engine,
//! which says when to stop and start; afterwards [`JobLive::finish`] reports what happened
//! for events.

mod api;
mod containers;
mod journal;

use std::path::PathBuf;

pub use api::{ContainerState, ContainerSummary, EngineApi, valid_id};
pub use containers::{AppContainers, ContainerReport, label_applies};
pub use journal::path as journal_path;

use crate::config::{Config, VolumePath};
use crate::engine::live_app::{LiveApp, NoApp};
use crate::error::{ContainerFailure, Error, Result};

/// A live path found inside a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVolume {
    /// `paths.database` or `paths.storage`.
    pub key: &'static str,
    pub volume: VolumePath,
    /// The volume's mountpoint on this host, as the engine says.
    pub mountpoint: PathBuf,
    /// The live path on this host.
    pub path: PathBuf,
}

/// One job's view of the live app: its config with volume paths resolved, and its
/// containers (when `[docker]` is set).
pub struct JobLive {
    pub config: Config,
    pub volumes: Vec<ResolvedVolume>,
    pub containers: Option<AppContainers>,
}

impl JobLive {
    /// What the engine stops and starts.
    pub fn app(&self) -> &dyn LiveApp {
        match &self.containers {
            Some(c) => c,
            None => &NoApp,
        }
    }

    /// Start whatever is still stopped, and say what happened to the containers.
    pub fn finish(&self) -> ContainerReport {
        self.containers
            .as_ref()
            .map(AppContainers::finish)
            .unwrap_or_default()
    }
}

/// Resolve `config`'s volume paths and reach its engine, for one job. Without `[docker]`
/// (and no volume path) this is the config as it is and no containers.
pub fn for_job(config: &Config) -> Result<JobLive> {
    let Some(settings) = &config.docker else {
        return Ok(JobLive {
            config: config.clone(),
            volumes: Vec::new(),
            containers: None,
        });
    };
    let containers = AppContainers::new(
        settings,
        config.paths.backup_dir.clone(),
        config.backup.file_mode.0,
    )?;
    let volumes = resolve_volumes(config, containers.api())?;
    let path_of = |key| {
        volumes
            .iter()
            .find(|v: &&ResolvedVolume| v.key == key)
            .map(|v| v.path.clone())
    };
    let resolved = config.with_live_paths(path_of("paths.database"), path_of("paths.storage"))?;
    Ok(JobLive {
        config: resolved,
        volumes,
        containers: Some(containers),
    })
}

/// Each live path that names a volume, found through the engine.
pub fn resolve_volumes(config: &Config, api: &EngineApi) -> Result<Vec<ResolvedVolume>> {
    let Some(settings) = &config.docker else {
        return Ok(Vec::new());
    };
    let named = [
        ("paths.database", &settings.volumes.database),
        ("paths.storage", &settings.volumes.storage),
    ];
    let mut found = Vec::new();
    for (key, volume) in named {
        let Some(volume) = volume else { continue };
        let mountpoint = api.volume_mountpoint(&volume.volume).map_err(|e| match e {
            Error::Container {
                host,
                kind: ContainerFailure::NotFound,
                detail,
                ..
            } => Error::Container {
                host,
                op: format!("find the volume `{}` ({key} = \"{volume}\")", volume.volume),
                kind: ContainerFailure::NotFound,
                detail: format!("the engine has no such volume ({detail})"),
            },
            e => e,
        })?;
        found.push(ResolvedVolume {
            key,
            path: volume.under(&mountpoint),
            volume: volume.clone(),
            mountpoint,
        });
    }
    Ok(found)
}
