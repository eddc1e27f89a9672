//! `[docker]` and `volume:NAME` paths: the app running in containers of a Docker (or
//! Podman) engine on this host. Which engine socket, which label marks the containers to
//! stop while their files are read or replaced, how long a stop may take, and the live
//! paths that name a volume rather than a directory. Checked here; the engine itself is
//! reached by the `docker` module at each job, so a config loads while the engine is down.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Config, HumanDuration};
use crate::error::Error;

/// The engine's socket when neither `[docker] host` nor `$DOCKER_HOST` names one.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// The label whose containers are stopped around storage backups and in-place restores.
pub const DEFAULT_STOP_LABEL: &str = "vertex-backup.stop-during-backup";
/// How long one container may take to stop (its own grace period, then the engine's
/// SIGKILL, must fit in it).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// A live path naming a volume: `volume:NAME` or `volume:NAME/path/inside`.
pub const VOLUME_PREFIX: &str = "volume:";

/// `[docker]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    pub host: Option<String>,
    pub stop_label: Option<String>,
    pub stop_timeout: Option<HumanDuration>,
}

/// The checked `[docker]` settings (present when the table is, or a live path names a
/// volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `unix:///PATH` as chosen (messages name it).
    pub host: String,
    /// The socket's path.
    pub socket: PathBuf,
    pub stop_label: String,
    pub stop_timeout: Duration,
    /// Live paths inside volumes, resolved at each job.
    pub volumes: LiveVolumes,
}

/// Which live paths name a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveVolumes {
    pub database: Option<VolumePath>,
    pub storage: Option<VolumePath>,
}

impl LiveVolumes {
    pub fn is_empty(&self) -> bool {
        self.database.is_none() && self.storage.is_none()
    }
}

/// A path inside a named volume: `volume:NAME[/INNER]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    pub volume: String,
    /// Relative, with no `.` or `..` (empty: the volume's root).
    pub inner: PathBuf,
}

impl VolumePath {
    /// `None` when `text` names no volume; an error saying how to write it when it names
    /// one badly.
    pub fn parse(text: &str) -> Result<Option<VolumePath>, String> {
        let Some(rest) = text.strip_prefix(VOLUME_PREFIX) else {
            return Ok(None);
        };
        let example =
            "write volume:NAME or volume:NAME/path/inside, e.g. volume:vertex_ar_data/app_data.db";
        let (volume, inner) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_volume_name(volume) {
            return Err(format!(
                "`{volume}` is not a volume name (letters, digits, `_`, `.`, `-`, starting with a letter or digit): {example}"
            ));
        }
        let inner = Path::new(inner);
        if inner
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "`{text}` leaves the volume or is not plain (no `.`, `..` or `//`): {example}"
            ));
        }
        Ok(Some(VolumePath {
            volume: volume.to_string(),
            inner: inner.to_path_buf(),
        }))
    }

    /// What stands in `[paths]` until the job resolves it: under `/dev/null`, so that
    /// nothing can ever be read or written there by mistake (every use fails with "Not a
    /// directory"), and the path still says which volume it stands for.
    pub fn placeholder(&self) -> PathBuf {
        Path::new("/dev/null").join(self.to_string())
    }

    /// The path on this host, given the volume's mountpoint.
    pub fn under(&self, mountpoint: &Path) -> PathBuf {
        if self.inner.as_os_str().is_empty() {
            mountpoint.to_path_buf()
        } else {
            mountpoint.join(&self.inner)
        }
    }
}

impl std::fmt::Display for VolumePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner.as_os_str().is_empty() {
            true => write!(f, "{VOLUME_PREFIX}{}", self.volume),
            false => write!(f, "{VOLUME_PREFIX}{}/{}", self.volume, self.inner.display()),
        }
    }
}

impl Config {
    /// This config with its volume paths replaced by the paths on this host (`database`,
    /// `storage`: the resolved ones, `None` where the path names no volume), checked
    /// again as a written path would be (the backup directory inside a volume's storage).
    pub fn with_live_paths(
        &self,
        database: Option<PathBuf>,
        storage: Option<PathBuf>,
    ) -> Result<Config, Error> {
        let mut resolved = self.clone();
        if let Some(d) = database {
            resolved.paths.database = d;
        }
        if let Some(s) = storage {
            resolved.paths.storage = s;
        }
        let mut problems = Vec::new();
        resolved.path_problems(&mut problems);
        match problems.len() {
            0 => Ok(resolved),
            1 => Err(problems.remove(0)),
            _ => Err(Error::ConfigProblems(problems)),
        }
    }
}

/// Whether `path` is a volume path's placeholder (the volume not resolved yet).
pub fn is_placeholder(path: &Path) -> bool {
    path.starts_with("/dev/null")
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (one character allowed
/// here too: Podman takes it).
fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

/// A label key as Docker writes them: reverse-DNS style, no spaces, no `=`.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 255
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

/// Check `[docker]` (`section`: as written, `None` when absent) with `$DOCKER_HOST`
/// (`docker_host_env`). Errors are `(key, message)`.
pub fn settings(
    section: Option<&DockerSection>,
    docker_host_env: Option<String>,
    volumes: LiveVolumes,
) -> Result<Option<DockerSettings>, Vec<(String, String)>> {
    if section.is_none() && volumes.is_empty() {
        return Ok(None);
    }
    let section = section.cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let (key, host) = match (&section.host, docker_host_env.filter(|h| !h.is_empty())) {
        (Some(h), _) => ("docker.host", h.clone()),
        (None, Some(h)) => ("DOCKER_HOST", h),
        (None, None) => ("docker.host", DEFAULT_HOST.to_string()),
    };
    let socket = match host.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        _ => {
            problems.push((
                key.to_string(),
                format!(
                    "`{host}` is not a local socket: only unix:///PATH is supported (the engine's API over TCP would need TLS client certificates), e.g. {DEFAULT_HOST}"
                ),
            ));
            PathBuf::new()
        }
    };
    let stop_label = section
        .stop_label
        .unwrap_or_else(|| DEFAULT_STOP_LABEL.to_string());
    if !valid_label(&stop_label) {
        problems.push((
            "docker.stop_label".into(),
            format!(
                "`{stop_label}` is not a label key (letters, digits, `.`, `-`, `_`, `/`), e.g. {DEFAULT_STOP_LABEL}"
            ),
        ));
    }
    let stop_timeout = section.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, |d| d.0);
    if stop_timeout < Duration::from_secs(1) || stop_timeout > Duration::from_secs(3600) {
        problems.push((
            "docker.stop_timeout".into(),
            "must be between 1s and 1h: long enough for the app's own grace period (compose's stop_grace_period, 10s by default)".into(),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(DockerSettings {
        host,
        socket,
        stop_label,
        stop_timeout,
        volumes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_parse_and_refuse_escapes() {
        assert_eq!(VolumePath::parse("/srv/app/storage"), Ok(None));
        let v = VolumePath::parse("volume:vertex_ar_data/app_data/app_data.db")
            .unwrap()
            .unwrap();
        assert_eq!(v.volume, "vertex_ar_data");
        assert_eq!(
            v.under(Path::new("/var/lib/docker/volumes/x/_data")),
            Path::new("/var/lib/docker/volumes/x/_data/app_data/app_data.db")
        );
        assert_eq!(v.to_string(), "volume:vertex_ar_data/app_data/app_data.db");
        let root = VolumePath::parse("volume:media").unwrap().unwrap();
        assert_eq!(root.under(Path::new("/m")), Path::new("/m"));
        assert_eq!(root.placeholder(), Path::new("/dev/null/volume:media"));
        for bad in [
            "volume:",
            "volume:-x",
            "volume:a b",
            "volume:data/../etc",
            "volume:data/./x",
            "volume:data//x",
            "volume:/abs",
        ] {
            assert!(VolumePath::parse(bad).is_err(), "{bad}");
        }
    }

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, None, Path::new("/etc/vertex-backup"), &|_| None)
    }

    #[test]
    fn the_docker_example_parses_and_volume_paths_stand_as_placeholders() {
        let cfg = parse(include_str!("../../examples/docker/vertex-backup.toml")).unwrap();
        let d = cfg.docker.clone().unwrap();
        assert_eq!(d.volumes.storage.unwrap().volume, "vertex_ar_storage");
        assert_eq!(d.volumes.database.unwrap().inner, Path::new("app_data.db"));
        assert!(is_placeholder(&cfg.paths.storage));
        assert!(is_placeholder(&cfg.paths.database));
        // Resolved, the paths are checked as written ones would be.
        let live = cfg
            .with_live_paths(
                Some("/var/lib/docker/volumes/d/_data/app_data.db".into()),
                Some("/var/lib/docker/volumes/s/_data".into()),
            )
            .unwrap();
        assert_eq!(
            live.paths.storage,
            Path::new("/var/lib/docker/volumes/s/_data")
        );
        let e = cfg
            .with_live_paths(None, Some("/var/backups".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the storage directory"), "{e}");
    }

    #[test]
    fn a_volume_backup_dir_or_a_bad_volume_name_is_refused_naming_the_key() {
        let e = parse("[paths]\nbackup_dir = \"volume:backups\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("paths.backup_dir") && e.contains("cannot be a volume"),
            "{e}"
        );
        let e = parse("[paths]\nstorage = \"volume:../etc\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("paths.storage") && e.contains("not a volume name"),
            "{e}"
        );
        let e = parse("[docker]\nstop_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker.stop_timeout"), "{e}");
        // No [docker] and no volume: no engine involved.
        assert!(parse("").unwrap().docker.is_none());
        assert!(parse("[docker]\n").unwrap().docker.is_some());
    }

    #[test]
    fn host_defaults_then_env_and_refuses_tcp() {
        let vols = LiveVolumes {
            storage: VolumePath::parse("volume:media").unwrap(),
            database: None,
        };
        let s = settings(None, None, vols.clone()).unwrap().unwrap();
        assert_eq!(s.socket, Path::new("/var/run/docker.sock"));
        assert_eq!(s.stop_label, DEFAULT_STOP_LABEL);
        let s = settings(None, Some("unix:///run/podman/podman.sock".into()), vols)
            .unwrap()
            .unwrap();
        assert_eq!(s.socket, Path::new("/run/podman/podman.sock"));
        let written = DockerSection {
            host: Some("tcp://10.0.0.1:2375".into()),
            ..Default::default()
        };
        let e = settings(Some(&written), None, LiveVolumes::default()).unwrap_err();
        assert_eq!(e[0].0, "docker.host");
        assert!(e[0].1.contains("unix:///PATH"), "{}", e[0].1);
        let e = settings(
            None,
            Some("tcp://h:2375".into()),
            LiveVolumes {
                database: VolumePath::parse("volume:d/app.db").unwrap(),
                storage: None,
            },
        )
        .unwrap_err();
        assert_eq!(e[0].0, "DOCKER_HOST");
        assert_eq!(settings(None, None, LiveVolumes::default()), Ok(None));
    }
}
