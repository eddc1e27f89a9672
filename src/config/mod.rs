//! The configuration: the TOML model, its defaults in one place, discovery
//! (`--config`, `$VERTEX_BACKUP_CONFIG`, `/etc/vertex-backup/config.toml`, built-in
//! defaults), environment fallbacks, and validation that names the key and the line.
//! Nothing here touches the filesystem beyond reading the file; checks that need the
//! live data (does the database exist?) are in [`Config::check_sources`].

mod checks;
mod docker;
mod encryption;
mod healthchecks;
mod lines;
mod offsite;
mod ranges;
mod replication;
mod sftp;
mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use checks::LiveCheck;
pub use docker::{DockerSettings, LiveVolumes, VolumePath};
pub use encryption::{EncryptWhat, Encryption, EncryptionSection};
pub use healthchecks::{HealthchecksSection, PING_EVENTS, is_uuid};
pub use lines::key_line;
pub use offsite::{
    MAX_PART_SIZE, MIN_PART_SIZE, OffsiteSection, OffsiteTarget, Rate, SftpLocation, TargetLocation,
};
pub use replication::{Replication, ReplicationSection};
pub use types::{
    ByteSize, CHAT_ID_FORMS, ChatRef, HumanDuration, JobSchedule, MaxUnused, Mode, Secret, Timezone,
};

use crate::error::{Error, Result};
use crate::kind::{BackupKind, JobName};

pub use crate::config_location::{CONFIG_ENV, SYSTEM_CONFIG};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    /// File name extension of a storage archive.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
            Compression::None => "tar",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityCheck {
    Quick,
    Full,
    Off,
}

impl IntegrityCheck {
    /// The value as written in the file ("quick"), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrityCheck::Quick => "quick",
            IntegrityCheck::Full => "full",
            IntegrityCheck::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsSection {
    pub database: PathBuf,
    pub storage: PathBuf,
    pub backup_dir: PathBuf,
}

impl Default for PathsSection {
    fn default() -> Self {
        PathsSection {
            database: PathBuf::from("app_data/app_data.db"),
            storage: PathBuf::from("storage"),
            backup_dir: PathBuf::from("backups"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    pub compression: Compression,
    pub compression_level: i32,
    pub threads: u32,
    pub exclude: Vec<String>,
    pub integrity_check: IntegrityCheck,
    pub min_free_space: ByteSize,
    pub file_mode: Mode,
    pub dir_mode: Mode,
    /// How long SQLite waits for a lock held by the app's writer before giving up.
    pub busy_timeout: HumanDuration,
    /// Extensions of already-compressed files (video, images, archives): zstd stores them
    /// at its fastest level instead of searching them for matches that are not there.
    pub precompressed: Vec<String>,
    /// CPU niceness (0..19) a backup runs at, so tens of GB do not starve the app; `None`
    /// leaves the scheduler's default.
    pub nice: Option<i32>,
    /// I/O scheduling class (`ioprio_set`) a backup runs at; `None` leaves the default.
    pub io_class: Option<IoClass>,
    /// How storage backups are kept: one archive each (the seed's `storage_backup_*.tar.*`)
    /// or snapshots sharing a content store (only what changed is stored).
    pub storage_format: StorageFormat,
    /// How database backups are kept: a whole SQLite copy each, or a snapshot of the
    /// checked copy cut into chunks (only changed chunks are stored).
    pub database_format: DatabaseFormat,
    /// How many unused bytes the snapshot store may hold (of the used) before rotation
    /// rewrites the packs that hold them.
    pub max_unused: MaxUnused,
}

/// `[backup] storage_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageFormat {
    #[default]
    Archive,
    Snapshot,
}

/// `[backup] database_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseFormat {
    #[default]
    Copy,
    Snapshot,
}

/// `[backup] io_class`: the Linux I/O scheduling classes a backup may take. `idle` gets the
/// disk only when nobody else wants it; `best-effort` is the default class (at its lowest
/// level, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoClass {
    Idle,
    BestEffort,
}

/// Media and archive formats that do not compress further.
pub const PRECOMPRESSED: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "jpg", "jpeg", "png", "webp", "gif", "heic", "heif",
    "avif", "mp3", "m4a", "aac", "ogg", "opus", "zip", "gz", "tgz", "zst", "xz", "bz2", "7z",
    "rar",
];

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            compression: Compression::Zstd,
            compression_level: 3,
            threads: 0,
            exclude: Vec::new(),
            integrity_check: IntegrityCheck::Quick,
            min_free_space: ByteSize(1 << 30),
            file_mode: Mode(0o600),
            dir_mode: Mode(0o700),
            busy_timeout: HumanDuration(Duration::from_secs(30)),
            precompressed: PRECOMPRESSED.iter().map(|s| s.to_string()).collect(),
            nice: None,
            io_class: None,
            storage_format: StorageFormat::Archive,
            database_format: DatabaseFormat::Copy,
            max_unused: MaxUnused::default(),
        }
    }
}

/// Retention policy, per backup type (README.md, Retention).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    pub keep_last: u32,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<HumanDuration>,
    /// How many of a restore's safety copies to keep, of each kind (pre-restore database
    /// backups, `storage.pre-restore-*` trees, set-aside databases): the newest ones; 0 =
    /// delete them all at rotation.
    pub keep_pre_restore: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            keep_last: 7,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_within: None,
            keep_pre_restore: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    pub timezone: Timezone,
    pub catch_up: bool,
    pub full: JobSchedule,
    pub database: JobSchedule,
    pub storage: JobSchedule,
    pub rotate: JobSchedule,
    pub verify: JobSchedule,
    /// Uploads to the `[[offsite]]` targets beyond the one after each backup (catch-up
    /// during a long outage); off by default.
    pub offsite: JobSchedule,
    /// Checks what the targets hold (sizes, checksums, a sample read back).
    pub offsite_verify: JobSchedule,
    /// How long a running job may take to finish after SIGTERM before it is aborted.
    pub shutdown_grace: HumanDuration,
    /// Reload when the config file is saved (inotify); SIGHUP always reloads.
    pub watch_config: bool,
}

impl ScheduleSection {
    /// The `[schedule]` entry of `job` (its key is the job's name).
    pub fn of(&self, job: JobName) -> &JobSchedule {
        match job {
            JobName::Full => &self.full,
            JobName::Database => &self.database,
            JobName::Storage => &self.storage,
            JobName::Rotate => &self.rotate,
            JobName::Verify => &self.verify,
            JobName::Offsite => &self.offsite,
            JobName::OffsiteVerify => &self.offsite_verify,
        }
    }
}

impl Default for ScheduleSection {
    fn default() -> Self {
        let cron = |s: &str| JobSchedule::parse(s).unwrap_or(JobSchedule::Off);
        ScheduleSection {
            timezone: Timezone::Local,
            catch_up: true,
            full: cron("0 2 * * *"),
            database: cron("0 */6 * * *"),
            storage: cron("0 3 * * 0"),
            rotate: cron("0 4 * * *"),
            verify: cron("30 4 * * *"),
            offsite: JobSchedule::Off,
            offsite_verify: cron("0 5 * * *"),
            shutdown_grace: HumanDuration(Duration::from_secs(60)),
            watch_config: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaxAge {
    pub full: Option<HumanDuration>,
    pub database: Option<HumanDuration>,
    pub storage: Option<HumanDuration>,
}

impl MaxAge {
    /// The configured `[alerts] max_age` of `kind`, if any.
    pub fn of(&self, kind: BackupKind) -> Option<Duration> {
        match kind {
            BackupKind::Full => self.full,
            BackupKind::Database => self.database,
            BackupKind::Storage => self.storage,
        }
        .map(|d| d.0)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    pub max_age: MaxAge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramSection {
    pub bot_token: Option<Secret>,
    pub chat_ids: Vec<ChatRef>,
    /// Answer chat commands (`/status`, `/backup` …) from `chat_ids`; off by default, since a
    /// token set for notifications alone should not open a way to start jobs.
    pub commands: bool,
    pub message_thread_id: Option<i32>,
    pub notify_on: Vec<NotifyOn>,
    pub api_url: String,
    /// How long to keep retrying one message before dropping it.
    pub timeout: HumanDuration,
}

/// The kinds of event `notify_on` chooses among (each event has one, `events::Event::category`).
/// A name the list does not know is refused where the config is parsed, with its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    Success,
    Warning,
    Failure,
    Stale,
    Recovered,
    Config,
    Restore,
    Rotate,
    Lifecycle,
}

impl NotifyOn {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Success => "success",
            NotifyOn::Warning => "warning",
            NotifyOn::Failure => "failure",
            NotifyOn::Stale => "stale",
            NotifyOn::Recovered => "recovered",
            NotifyOn::Config => "config",
            NotifyOn::Restore => "restore",
            NotifyOn::Rotate => "rotate",
            NotifyOn::Lifecycle => "lifecycle",
        }
    }

    /// `notify_on` as written: `failure, warning, …`.
    pub fn list(chosen: &[NotifyOn]) -> String {
        chosen
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for TelegramSection {
    fn default() -> Self {
        TelegramSection {
            bot_token: None,
            chat_ids: Vec::new(),
            commands: false,
            message_thread_id: None,
            notify_on: vec![
                NotifyOn::Failure,
                NotifyOn::Warning,
                NotifyOn::Stale,
                NotifyOn::Recovered,
                NotifyOn::Config,
            ],
            api_url: "https://api.telegram.org".into(),
            timeout: HumanDuration(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub metrics_public: bool,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            token: None,
            token_file: None,
            metrics_public: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSection {
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_error: Option<String>,
    pub timeout: HumanDuration,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            before: None,
            after: None,
            on_error: None,
            timeout: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// The whole file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileModel {
    paths: PathsSection,
    backup: BackupSection,
    retention: RetentionSection,
    schedule: ScheduleSection,
    alerts: AlertsSection,
    telegram: TelegramSection,
    api: ApiSection,
    hooks: HooksSection,
    healthchecks: HealthchecksSection,
    offsite: Vec<OffsiteSection>,
    encryption: EncryptionSection,
    docker: Option<docker::DockerSection>,
    replication: ReplicationSection,
}

/// The checked configuration the rest of the program sees. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; `None` for built-in defaults.
    pub file: Option<PathBuf>,
    /// The file's text, kept to point errors found later at their line.
    source: String,
    /// Whether the file itself (not the environment) holds a token.
    secrets_in_file: bool,
    pub paths: PathsSection,
    pub backup: BackupSection,
    pub retention: RetentionSection,
    pub schedule: ScheduleSection,
    pub alerts: AlertsSection,
    pub telegram: TelegramSection,
    pub api: ApiSection,
    pub hooks: HooksSection,
    pub healthchecks: HealthchecksSection,
    /// The `[[offsite]]` targets, checked, in the order written.
    pub offsite: Vec<OffsiteTarget>,
    /// `[encryption]`, checked; `None`: nothing is encrypted.
    pub encryption: Option<Encryption>,
    /// `[docker]`, checked; `None`: no container engine is involved.
    pub docker: Option<DockerSettings>,
    /// `[replication]`, checked; `None`: the database is not replicated continuously.
    pub replication: Option<Replication>,
    /// The age identity to decrypt with (`--identity` / `$VERTEX_BACKUP_IDENTITY`, or
    /// `[encryption] identity_file`). Not kept in the file for production servers.
    pub identity: Option<PathBuf>,
    /// How long a mutating command waits for the backup directory's lock (`--wait`); `None`
    /// fails at once. Not a file key: a flag of one invocation.
    pub lock_wait: Option<Duration>,
}

/// How the config file was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config PATH`: must exist.
    Explicit(PathBuf),
    /// `$VERTEX_BACKUP_CONFIG`, then the system path, then defaults.
    Discover,
}

impl Config {
    /// Find and load the config (README.md, Configuration). `env` reads environment variables (injected
    /// so tests need not mutate the process environment).
    pub fn discover(
        source: &ConfigSource,
        cwd: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let path = match source {
            ConfigSource::Explicit(p) => Some(cwd.join(p)),
            ConfigSource::Discover => match env(CONFIG_ENV).filter(|s| !s.is_empty()) {
                Some(p) => Some(cwd.join(p)),
                None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
            },
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::Config {
                    file: Some(p.clone()),
                    line: None,
                    key: String::new(),
                    message: format!("cannot read the file: {e}"),
                })?;
                let base = p
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| cwd.to_path_buf());
                Config::parse(&text, Some(p), &base, env)
            }
            None => Config::parse("", None, cwd, env),
        }
    }

    /// Parse and validate config text. Relative paths are resolved against `base` (the
    /// config file's directory, or the working directory for built-in defaults).
    pub fn parse(
        text: &str,
        file: Option<PathBuf>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let model: FileModel = toml::from_str(text).map_err(|e| Error::Config {
            file: file.clone(),
            line: e.span().map(|s| lines::line_of(text, s.start)),
            key: e
                .span()
                .and_then(|s| lines::key_at(text, s.start))
                .unwrap_or_default(),
            message: e.message().trim().to_string(),
        })?;
        let secrets_in_file = model.telegram.bot_token.is_some()
            || model.api.token.is_some()
            || model.healthchecks.enabled();
        let mut cfg = Config {
            file,
            source: text.to_string(),
            secrets_in_file,
            paths: model.paths,
            backup: model.backup,
            retention: model.retention,
            schedule: model.schedule,
            alerts: model.alerts,
            telegram: model.telegram,
            api: model.api,
            hooks: model.hooks,
            healthchecks: model.healthchecks,
            offsite: Vec::new(),
            encryption: None,
            docker: None,
            replication: None,
            identity: None,
            lock_wait: None,
        };
        let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let mut problems = Vec::new();
        // A live path may name a volume: it stands as a placeholder until each job
        // resolves it through the engine (the volume may move between jobs).
        let mut volumes = LiveVolumes::default();
        let mut volume_of = |key: &str, p: &Path| match VolumePath::parse(&p.to_string_lossy()) {
            Ok(v) => v,
            Err(why) => {
                problems.push((key.to_string(), why));
                None
            }
        };
        volumes.database = volume_of("paths.database", &cfg.paths.database);
        volumes.storage = volume_of("paths.storage", &cfg.paths.storage);
        if volume_of("paths.backup_dir", &cfg.paths.backup_dir).is_some() {
            problems.push((
                "paths.backup_dir".into(),
                "the backup directory cannot be a volume: it must outlive the app's containers and volumes; name a directory on the host (e.g. /var/backups/vertex-ar)".into(),
            ));
        }
        let mut resolve = |key: &str, p: &Path| match expand_home(p, home.as_deref()) {
            Ok(p) => absolute(base, &p),
            Err(why) => {
                problems.push((key.to_string(), why));
                p.to_path_buf()
            }
        };
        cfg.paths.database = match &volumes.database {
            Some(v) => v.placeholder(),
            None => resolve("paths.database", &cfg.paths.database),
        };
        cfg.paths.storage = match &volumes.storage {
            Some(v) => v.placeholder(),
            None => resolve("paths.storage", &cfg.paths.storage),
        };
        cfg.paths.backup_dir = resolve("paths.backup_dir", &cfg.paths.backup_dir);
        if let Some(tf) = cfg.api.token_file.clone() {
            cfg.api.token_file = Some(resolve("api.token_file", &tf));
        }
        let mut problems: Vec<Error> = problems
            .into_iter()
            .map(|(key, why)| cfg.key_error(&key, why))
            .collect();
        cfg.apply_env(env)?;
        cfg.offsite = cfg.offsite_targets(&model.offsite, base, &mut problems);
        let mut encryption = model.encryption.clone();
        if let Some(f) = encryption.recipients_file.take() {
            encryption.recipients_file = Some(absolute(base, &f));
        }
        if let Some(f) = encryption.identity_file.take() {
            encryption.identity_file = Some(absolute(base, &f));
        }
        cfg.encryption = cfg.encryption_of(&encryption, &mut problems);
        match docker::settings(model.docker.as_ref(), env("DOCKER_HOST"), volumes) {
            Ok(d) => cfg.docker = d,
            Err(found) => problems.extend(found.into_iter().map(|(k, m)| cfg.key_error(&k, m))),
        }
        let target_names: Vec<String> = cfg.offsite.iter().map(|t| t.name.clone()).collect();
        match replication::settings(&model.replication, &target_names) {
            Ok(r) => cfg.replication = r,
            Err(found) => problems.extend(found.into_iter().map(|(k, m)| cfg.key_error(&k, m))),
        }
        cfg.identity = env(crate::encryption::IDENTITY_ENV)
            .filter(|s| !s.is_empty())
            .map(|p| absolute(base, Path::new(&p)))
            .or_else(|| {
                cfg.encryption
                    .as_ref()
                    .and_then(|e| e.identity_file.clone())
            });
        problems.extend(cfg.problems());
        problems.extend(cfg.range_problems());
        match problems.len() {
            0 => Ok(cfg),
            1 => Err(problems.remove(0)),
            _ => Err(Error::ConfigProblems(problems)),
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if self.telegram.bot_token.is_none() {
            self.telegram.bot_token = env("TELEGRAM_BOT_TOKEN")
                .filter(|s| !s.is_empty())
                .map(Secret::new);
        }
        if self.telegram.chat_ids.is_empty()
            && let Some(ids) = env("TELEGRAM_CHAT_ID").filter(|s| !s.is_empty())
        {
            for part in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let id = ChatRef::parse(part).map_err(|message| Error::Config {
                    file: None,
                    line: None,
                    key: "TELEGRAM_CHAT_ID".into(),
                    message,
                })?;
                self.telegram.chat_ids.push(id);
            }
        }
        if self.api.token.is_none() && self.api.token_file.is_none() {
            self.api.token = env("VERTEX_BACKUP_API_TOKEN")
                .filter(|s| !s.is_empty())
                .map(Secret::new);
        }
        Ok(())
    }

    /// An error about `key` (dotted, e.g. "schedule.full"), pointing at its line.
    pub fn key_error(&self, key: &str, message: impl Into<String>) -> Error {
        let parts: Vec<&str> = key.split('.').collect();
        Error::Config {
            file: self.file.clone(),
            line: key_line(&self.source, &parts),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks that need the live data: the sources a backup of `kind` reads must exist.
    pub fn check_sources(&self, kind: BackupKind) -> Result<()> {
        let needs_db = matches!(kind, BackupKind::Database | BackupKind::Full);
        let needs_storage = matches!(kind, BackupKind::Storage | BackupKind::Full);
        if needs_db {
            self.check_source(&self.paths.database, "paths.database", "database", false)?;
        }
        if needs_storage {
            self.check_source(
                &self.paths.storage,
                "paths.storage",
                "storage directory",
                true,
            )?;
        }
        Ok(())
    }

    /// A path of the wrong kind is a config error (exit 2); a missing one is a failed
    /// backup naming what is missing ([`Error::SourceMissing`], exit 1: the path may have
    /// been right until the file went away); one the service may not reach is an I/O
    /// error naming the cause ("Permission denied", exit 1) — `is_file()` would report all
    /// three as "does not exist".
    fn check_source(&self, path: &Path, key: &str, what: &'static str, dir: bool) -> Result<()> {
        let wrong = |how: &str| {
            self.key_error(
                key,
                format!("the {what} {} {how}", crate::names::shown(path)),
            )
        };
        let missing = |detail| {
            let parts: Vec<&str> = key.split('.').collect();
            let line = key_line(&self.source, &parts);
            let at = match (&self.file, line) {
                (Some(f), Some(l)) => Some(format!("{}, line {l}", crate::names::shown(f))),
                (Some(f), None) => Some(crate::names::shown(f).to_string()),
                (None, _) => None,
            };
            Error::SourceMissing {
                what,
                path: path.to_path_buf(),
                key: key.to_string(),
                at,
                detail,
            }
        };
        match std::fs::metadata(path) {
            Ok(m) if (dir && m.is_dir()) || (!dir && m.is_file()) => Ok(()),
            Ok(_) if dir => Err(wrong("is not a directory")),
            Ok(_) => Err(wrong("is not a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing("")),
            // A component of the path is a file (`/etc/hosts/app.db`).
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                Err(missing(" (a part of its path is a file)"))
            }
            Err(e) => Err(Error::io("reach", path, e)),
        }
    }

    /// The text this configuration was parsed from ("" for built-in defaults): what a
    /// reload compares the file against to tell whether it changed.
    pub fn text(&self) -> &str {
        &self.source
    }

    /// A warning when the config file holds a token but others may read it.
    pub fn permission_warning(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let file = self.file.as_ref()?;
        if !self.secrets_in_file {
            return None;
        }
        let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} holds a token but is readable by group or others (mode {mode:04o}); run: chmod 600 {}",
                file.display(),
                file.display()
            )
        })
    }

    /// The schedule `job` runs on: its `[schedule]` entry, except that the offsite jobs
    /// are off while no `[[offsite]]` target is configured.
    pub fn schedule_of(&self, job: JobName) -> &JobSchedule {
        static OFF: JobSchedule = JobSchedule::Off;
        if job.is_offsite() && self.offsite.is_empty() {
            return &OFF;
        }
        self.schedule.of(job)
    }

    /// The schedule of each job, in a fixed order.
    pub fn jobs(&self) -> BTreeMap<&'static str, &JobSchedule> {
        JobName::ALL
            .into_iter()
            .map(|job| (job.as_str(), self.schedule_of(job)))
            .collect()
    }

    /// Compressor threads to use (0 in the config means all cores).
    pub fn compressor_threads(&self) -> u32 {
        match self.backup.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            n => n,
        }
    }
}

/// `~` and `~/x` as a shell would write them, from `$HOME`: TOML does not expand them, and
/// taken literally they name a directory called `~` beside the config file. `~user` is
/// refused (whose home it is depends on the passwd database of the machine running it).
fn expand_home(p: &Path, home: Option<&Path>) -> std::result::Result<PathBuf, String> {
    let Some(text) = p.to_str().filter(|t| t.starts_with('~')) else {
        return Ok(p.to_path_buf());
    };
    let rest = match text.strip_prefix('~') {
        Some("") => "",
        Some(r) if r.starts_with('/') => r.trim_start_matches('/'),
        _ => {
            return Err(format!(
                "`{text}`: `~user` is not expanded; write the absolute path"
            ));
        }
    };
    match home {
        Some(h) => Ok(h.join(rest)),
        None => Err(format!(
            "`{text}` starts with `~` but $HOME is not set; write the absolute path"
        )),
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    normalize(&joined)
}

/// Lexically remove `.` and `..` so prefix checks (backup_dir inside storage) are sound.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
