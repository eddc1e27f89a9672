//! The library's one error type. Every variant says what was being done, to which path,
//! why it failed, and — where we know — what the operator should do about it. The binary
//! prints the whole chain plus the hint; the daemon puts the same text into its events.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} {}", crate::names::shown(path))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The configuration is invalid; `line` is 1-based when known.
    #[error("{}", config_message(file, *line, key, message))]
    Config {
        file: Option<PathBuf>,
        line: Option<usize>,
        key: String,
        message: String,
    },

    /// Several problems in the configuration, all reported at once.
    #[error("{} problems in the configuration:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    ConfigProblems(Vec<Error>),

    /// SQLite refused an operation on a database file.
    #[error("SQLite could not {op} {}", crate::names::shown(path))]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// Another process holds the backup-directory lock.
    #[error(
        "another vertex-backup operation holds the lock on {} ({holder})",
        crate::names::shown(dir)
    )]
    Locked { dir: PathBuf, holder: String },

    /// Not enough free space to write a backup safely.
    #[error(
        "not enough free space in {}: the backup needs about {} and {} must stay free, but only {} is available",
        crate::names::shown(dir),
        crate::units::format_bytes(*needed),
        crate::units::format_bytes(*reserve),
        crate::units::format_bytes(*available)
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        reserve: u64,
        available: u64,
    },

    /// Not enough free space where a restore would put its tree (the restore target's
    /// filesystem, not the backup filesystem).
    #[error(
        "not enough free space in {} to restore: the restored tree needs about {} but only {} is available",
        crate::names::shown(dir),
        crate::units::format_bytes(*needed),
        crate::units::format_bytes(*available)
    )]
    NoSpaceToRestore {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },

    /// The live database holds no tables (an empty or truncated file): refused, so an
    /// empty copy never counts as the newest good backup.
    #[error(
        "the database {} is empty ({} bytes, no tables): it was truncated, or the path is not the app's database",
        crate::names::shown(path),
        bytes
    )]
    EmptyDatabase { path: PathBuf, bytes: u64 },

    /// A source the config names (the database, the storage directory) is not there: the
    /// backup fails (exit 1) and is recorded like any failure. Not a config error: the
    /// path was right until the file went away. `at` locates the key ("config.toml, line 3").
    #[error("the {what} {} does not exist{detail}", crate::names::shown(path))]
    SourceMissing {
        what: &'static str,
        path: PathBuf,
        key: String,
        at: Option<String>,
        detail: &'static str,
    },

    /// A backup failed one of its checks.
    #[error("{} failed the {check} check: {detail}", crate::names::shown(path))]
    Verify {
        path: PathBuf,
        check: &'static str,
        detail: String,
    },

    /// A path given on the command line or API is not a backup this tool knows.
    #[error("{} is not a backup: {reason}", crate::names::shown(path))]
    NotABackup { path: PathBuf, reason: String },

    /// A backup named (by name, `--latest` or `--at`) that the backup directory does not hold.
    #[error("no backup matches {wanted}: {reason}")]
    NoSuchBackup { wanted: String, reason: String },

    /// An archive entry that would escape or damage the restore target.
    #[error(
        "unsafe entry \"{entry}\" in {}: {reason}",
        crate::names::shown(archive)
    )]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },

    /// The operator declined, or a non-interactive run lacked `--yes`.
    #[error("{0}")]
    Refused(String),

    /// An operator hook failed, timed out or could not start: the operation fails (exit 1).
    #[error("the {hook} hook `{command}` {detail}")]
    Hook {
        hook: &'static str,
        command: String,
        detail: String,
    },

    /// A task of ours panicked (a bug); the daemon reports it and carries on.
    #[error("internal error: {0} (a bug: please report it)")]
    Internal(String),

    /// An offsite target failed an operation (after its retries): names the target.
    #[error("offsite target `{target}` ({url}): cannot {op}: {detail}")]
    Offsite {
        target: String,
        url: String,
        op: String,
        detail: String,
        failure: RemoteFailure,
    },

    /// The container engine (Docker or Podman) could not do what the job needed: names
    /// the engine's socket, the volume or container, and what it said.
    #[error("container engine {host}: cannot {op}: {detail}")]
    Container {
        host: String,
        op: String,
        kind: ContainerFailure,
        detail: String,
    },

    /// An encrypted backup did not open: no or an unusable identity, a wrong key, damage.
    #[error("cannot decrypt {}: {}", crate::names::shown(path), failure.describe())]
    Decrypt {
        path: PathBuf,
        failure: crate::encryption::DecryptFailure,
        /// age's own words (never key material).
        detail: String,
    },

    /// `--target NAME` / `NAME:backup` names no `[[offsite]]` table.
    #[error("{0}")]
    UnknownTarget(String),

    /// The operation was cancelled (shutdown) before it finished; nothing partial was kept.
    #[error("cancelled before it finished; no partial backup was kept")]
    Cancelled,
}

/// What kind of thing went wrong with the container engine: decides the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerFailure {
    /// The socket is missing, refuses connections, or the connection broke.
    Unreachable,
    /// The volume or container does not exist.
    NotFound,
    /// The engine answered with an error.
    Refused,
    /// No answer in time: for a stop, the container did not stop within `stop_timeout`.
    Timeout,
}

impl ContainerFailure {
    fn hint(self, host: &str) -> String {
        match self {
            ContainerFailure::Unreachable => format!(
                "is the Docker (or Podman) service running, and may this user use its socket {host}? (`[docker] host`, else $DOCKER_HOST; for Podman: `systemctl enable --now podman.socket`)"
            ),
            ContainerFailure::NotFound => "check the name in the config against `docker volume ls` / `docker ps -a` (a volume is named as compose names it: PROJECT_VOLUME)".into(),
            ContainerFailure::Refused => "see the engine's own words above; `docker ps -a` and the engine's log tell more".into(),
            ContainerFailure::Timeout => "the container did not stop in time: raise `[docker] stop_timeout` above the app's grace period (compose: stop_grace_period), or see why it ignores its stop signal (`docker logs`)".into(),
        }
    }
}

/// What kind of thing went wrong on a target: decides the hint and whether a retry helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteFailure {
    /// Unreachable, timed out, reset, 5xx, slow-down: retried, then reported.
    Network,
    /// Credentials missing, wrong or expired; access denied.
    Credentials,
    /// The bucket (or the target directory) does not exist.
    Missing,
    /// The target's filesystem is full.
    Full,
    /// What came back is not what was sent (size or checksum).
    Mismatch,
    /// S3 Object Lock (a retention period or a legal hold) refuses to delete the object
    /// version: it can go only once its retain-until date has passed. Not retried.
    Locked,
    /// An SFTP server whose host key is not the one its `known_hosts` file holds (or is
    /// not there at all): refused before anything is sent. Not retried.
    HostKey,
    /// Another server owns the target's prefix (its owner marker names it): two servers
    /// writing one prefix would delete each other's uploads. Not retried.
    Owned,
    Other,
}

impl RemoteFailure {
    /// Whether trying again later can help (a network problem can; a wrong key cannot).
    pub fn transient(self) -> bool {
        matches!(self, RemoteFailure::Network)
    }

    fn hint(self, target: &str) -> String {
        match self {
            RemoteFailure::Network => format!(
                "the target `{target}` could not be reached or kept failing; the backups stay pending and the next upload job sends them (oldest first); check the network and the endpoint"
            ),
            RemoteFailure::Credentials => format!(
                "check the credentials of `{target}` (S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the service environment, or its credentials_file, and that the key may list, read and write the bucket; SFTP: its ssh_key, that key's line in the server's authorized_keys, and the server directory's permissions)"
            ),
            RemoteFailure::HostKey => format!(
                "the server of `{target}` could not prove it is the one its known_hosts file names; check the fingerprint above with the server's admin before trusting it. Nothing was sent"
            ),
            RemoteFailure::Missing => format!(
                "create the bucket (or mount the directory) of `{target}`, or correct its url; nothing local was touched"
            ),
            RemoteFailure::Full => format!(
                "the target `{target}` is full: free space there or lower its [offsite.retention] and run `vertex-backup offsite prune`; nothing local was touched"
            ),
            RemoteFailure::Mismatch => format!(
                "what `{target}` returned differs from what was sent; it is uploaded again by the next run (`vertex-backup offsite push --target {target}`)"
            ),
            RemoteFailure::Locked => format!(
                "the object version on `{target}` is under S3 Object Lock (a retention period or a legal hold) and cannot be deleted until that ends; nothing was deleted"
            ),
            RemoteFailure::Owned => format!(
                "two servers must not write one prefix: if this server replaced the other (disaster recovery), run `vertex-backup offsite claim --target {target}` once; otherwise give this server its own prefix in `{target}`'s url. Nothing was uploaded or deleted"
            ),
            RemoteFailure::Other => format!(
                "see the detail above; `vertex-backup offsite list --target {target}` shows what the target holds"
            ),
        }
    }
}

fn config_message(file: &Option<PathBuf>, line: Option<usize>, key: &str, message: &str) -> String {
    let mut s = String::from("invalid configuration");
    match (file, line) {
        (Some(f), Some(l)) => s.push_str(&format!(" in {}, line {l}", crate::names::shown(f))),
        (Some(f), None) => s.push_str(&format!(" in {}", crate::names::shown(f))),
        (None, Some(l)) => s.push_str(&format!(" at line {l}")),
        (None, None) => {}
    }
    if !key.is_empty() {
        s.push_str(&format!(", key `{key}`"));
    }
    s.push_str(": ");
    s.push_str(message);
    s
}

impl Error {
    /// A decryption failure of `path`.
    pub fn decrypt(path: impl Into<PathBuf>, e: crate::encryption::DecryptError) -> Self {
        Error::Decrypt {
            path: path.into(),
            failure: e.failure,
            detail: e.detail,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn sqlite(op: &'static str, path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Error::Sqlite {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn verify(
        path: impl Into<PathBuf>,
        check: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Verify {
            path: path.into(),
            check,
            detail: detail.into(),
        }
    }

    /// True for mistakes in the configuration or usage (exit code 2), as opposed to an
    /// operation that was attempted and failed (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::ConfigProblems(_)
                | Error::NotABackup { .. }
                | Error::NoSuchBackup { .. }
                | Error::Refused(_)
                | Error::UnknownTarget(_)
        )
    }

    /// What the operator can do about it, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Io { source, path, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => Some(format!(
                    "check the owner and mode of {} (the service runs as its own user)",
                    crate::names::shown(path)
                )),
                io::ErrorKind::NotFound => Some(match missing_ancestor(path) {
                    // A file being created in a directory that is gone: name the directory
                    // (e.g. the backup directory deleted or unmounted during the run).
                    Some(dir) => format!(
                        "the directory {} does not exist (deleted or unmounted while in use?): check [paths] in the config (if it is the backup directory, the next backup creates it again)",
                        crate::names::shown(&dir)
                    ),
                    None => format!(
                        "{} does not exist: check [paths] in the config",
                        crate::names::shown(path)
                    ),
                }),
                // The full filesystem is the one holding `path`: the backup directory's
                // when a backup writes, a restore target's when a restore does.
                io::ErrorKind::StorageFull => Some(format!(
                    "the filesystem holding {} is full: free space there (on the backup filesystem: lower [retention] keep_last and run `vertex-backup rotate`); nothing was deleted",
                    crate::names::shown(path.parent().unwrap_or(path))
                )),
                io::ErrorKind::ReadOnlyFilesystem => {
                    Some("the filesystem is mounted read-only; remount it or choose another backup_dir".into())
                }
                _ => None,
            },
            // Without a file there is none to fix: say where one goes.
            Error::Config { file: None, .. } => Some(format!(
                "no config file was found (--config FILE, ${}, {}): the built-in defaults were used; write one from `config/vertex-backup.toml`, or pass --backup-dir DIR to read backups where they are",
                crate::config_location::CONFIG_ENV,
                crate::config_location::SYSTEM_CONFIG
            )),
            Error::Config { .. } | Error::ConfigProblems(_) => {
                Some("fix the file and run `vertex-backup check-config`".into())
            }
            Error::Sqlite { source, .. } => match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => Some(
                    "the database stayed locked by another process; retry later or stop the writer holding an exclusive lock"
                        .into(),
                ),
                Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                    Some("the file is not a healthy SQLite database; check [paths] database".into())
                }
                _ => None,
            },
            Error::Locked { .. } => Some(
                "wait for the running operation to finish (or run the command again with --wait DURATION, e.g. --wait 10m, to wait for it); the lock frees itself when that process exits".into(),
            ),
            Error::EmptyDatabase { path, .. } => Some(format!(
                "check [paths] database and the app; if {} lost its data, restore the newest good database backup (`vertex-backup list --type database`); no backup was written",
                crate::names::shown(path)
            )),
            Error::NoSpaceToRestore { dir, .. } => Some(format!(
                "free space on the filesystem holding {}, or restore elsewhere with --target DIR; nothing live was changed",
                crate::names::shown(dir)
            )),
            Error::NoSpace { .. } => Some(
                "free space on the backup filesystem, lower [retention] keep_last and run `vertex-backup rotate`, or lower [backup] min_free_space; nothing was deleted"
                    .into(),
            ),
            Error::SourceMissing { what, key, at, .. } => Some(format!(
                "restore the {what} or correct `{key}`{} in the config; no backup was written",
                at.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
            )),
            Error::Verify { .. } => Some(
                "this backup cannot be trusted; restore an older one (`vertex-backup verify --all` lists which are good)"
                    .into(),
            ),
            Error::NotABackup { .. } => {
                Some("pass a file listed by `vertex-backup list` (a .db, .tar.* or full_backup_*.json)".into())
            }
            Error::NoSuchBackup { .. } => Some(
                "run `vertex-backup list` to see the backups by name, or pass --latest [TYPE] or --at TIME".into(),
            ),
            Error::UnsafeEntry { .. } => {
                Some("the archive was not written by vertex-backup or has been tampered with; nothing was restored".into())
            }
            Error::Hook { hook, .. } => Some(format!(
                "fix the {hook} command in [hooks] (it runs with sh -c, with the job's variables); its output is in the log"
            )),
            Error::Internal(_) => Some("the daemon carries on; the log has the details".into()),
            Error::Offsite { target, failure, .. } => Some(failure.hint(target)),
            Error::Container { host, kind, .. } => Some(kind.hint(host)),
            Error::Decrypt { failure, .. } => Some(failure.hint().to_string()),
            Error::UnknownTarget(_) => {
                Some("the targets are the `name`s of the [[offsite]] tables in the config".into())
            }
            Error::Refused(_) | Error::Cancelled => None,
        }
    }
}

/// The highest missing directory above `path`, when its parent is missing.
fn missing_ancestor(path: &std::path::Path) -> Option<PathBuf> {
    let mut missing = None;
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing = Some(dir.to_path_buf());
    }
    missing
}

/// Attach an operation and path to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_a_vanished_directory_hints_at_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("backups");
        let file = gone.join("storage").join("x.json.partial");
        let err = Error::io(
            "create",
            &file,
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.contains(&format!("the directory {} does not exist", gone.display())),
            "{hint}"
        );

        // A missing file in an existing directory is named itself.
        let missing = dir.path().join("app.db");
        let err = Error::io(
            "open",
            &missing,
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        );
        assert!(
            err.hint()
                .unwrap()
                .starts_with(&format!("{} does not exist", missing.display()))
        );
    }

    #[test]
    fn a_full_filesystem_hint_names_the_filesystem_that_is_full() {
        let target = std::path::Path::new("/mnt/restore-disk/restored/media/a.jpg");
        let e = Error::io("write", target, io::Error::from(io::ErrorKind::StorageFull));
        let hint = e.hint().unwrap();
        assert!(hint.contains("/mnt/restore-disk/restored/media"), "{hint}");
        assert!(hint.starts_with("the filesystem holding"), "{hint}");
    }
}
