//! Every check of a parsed [`Config`]: the values, all at load (every problem reported,
//! not the first), and what only the live system can tell, for `check-config` — the
//! same things the daemon would refuse (an unusable token, a `min_free_space` the backup
//! filesystem can never satisfy) and what deserves a warning (a token file or an offsite
//! target's credentials file others may read, an API listening beyond this machine).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Compression, Config};
use crate::error::Error;

/// What the live checks found: problems (the daemon would refuse) and warnings.
#[derive(Debug, Default)]
pub struct LiveCheck {
    pub problems: Vec<Error>,
    pub warnings: Vec<String>,
}

impl Config {
    /// Every problem of the checked values, not only the first: an operator fixing a file
    /// should not meet them one run at a time.
    pub(super) fn problems(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        self.backup_problems(&mut problems);
        self.retention_and_telegram_problems(&mut problems);
        self.path_problems(&mut problems);
        self.schedule_problems(&mut problems);
        self.healthchecks_problems(&mut problems);
        problems
    }

    /// `[backup]`: levels, threads, patterns, modes.
    fn backup_problems(&self, problems: &mut Vec<Error>) {
        let b = &self.backup;
        match b.compression {
            Compression::Zstd if !(-7..=22).contains(&b.compression_level) => {
                problems.push(self.key_error(
                    "backup.compression_level",
                    "zstd levels run from -7 to 22 (3 is the default)",
                ));
            }
            Compression::Gzip if !(0..=9).contains(&b.compression_level) => {
                problems.push(
                    self.key_error("backup.compression_level", "gzip levels run from 0 to 9"),
                );
            }
            _ => {}
        }
        if let Some(n) = b.nice
            && !(0..=19).contains(&n)
        {
            problems.push(self.key_error(
                "backup.nice",
                format!("{n} is out of range: niceness runs from 0 (normal) to 19 (lowest)"),
            ));
        }
        if b.threads > 256 {
            problems.push(self.key_error("backup.threads", "at most 256 threads (0 = all cores)"));
        }
        for (i, glob) in b.exclude.iter().enumerate() {
            if let Err(e) = globset::Glob::new(glob) {
                problems.push(self.key_error(
                    "backup.exclude",
                    format!("pattern {} `{glob}` is invalid: {e}", i + 1),
                ));
            }
        }
        if b.file_mode.0 & 0o600 != 0o600 {
            problems.push(self.key_error(
                "backup.file_mode",
                "the owner must be able to read and write backups (at least 0600)",
            ));
        }
        if b.dir_mode.0 & 0o700 != 0o700 {
            problems.push(self.key_error(
                "backup.dir_mode",
                "the owner needs rwx on backup directories (at least 0700)",
            ));
        }
    }

    /// `[retention]` buckets and `[telegram]` events and URL.
    fn retention_and_telegram_problems(&self, problems: &mut Vec<Error>) {
        if self.retention.keep_last == 0 {
            problems.push(self.key_error(
                "retention.keep_last",
                "keep_last must be at least 1: the newest good backup is never deleted",
            ));
        }
        for (name, v) in [
            ("retention.keep_daily", self.retention.keep_daily),
            ("retention.keep_weekly", self.retention.keep_weekly),
            ("retention.keep_monthly", self.retention.keep_monthly),
        ] {
            if v == Some(0) {
                problems.push(self.key_error(
                    name,
                    "0 keeps nothing from this bucket; remove the key instead",
                ));
            }
        }
        if !(self.telegram.api_url.starts_with("http://")
            || self.telegram.api_url.starts_with("https://"))
        {
            problems
                .push(self.key_error("telegram.api_url", "must start with http:// or https://"));
        }
    }

    /// `[paths]` that overlap.
    pub(super) fn path_problems(&self, problems: &mut Vec<Error>) {
        let p = &self.paths;
        if p.backup_dir.starts_with(&p.storage) {
            problems.push(self.key_error(
                "paths.backup_dir",
                format!(
                    "{} is inside the storage directory {}: every storage backup would archive the backups; put backup_dir elsewhere",
                    p.backup_dir.display(),
                    p.storage.display()
                ),
            ));
        }
        if p.storage.starts_with(&p.backup_dir) {
            problems.push(self.key_error(
                "paths.storage",
                format!(
                    "{} is inside backup_dir {}; keep them apart",
                    p.storage.display(),
                    p.backup_dir.display()
                ),
            ));
        }
        if p.database.starts_with(&p.backup_dir) {
            problems.push(self.key_error(
                "paths.database",
                format!(
                    "{} is inside backup_dir {}; keep them apart",
                    p.database.display(),
                    p.backup_dir.display()
                ),
            ));
        }
    }

    /// Cron lines that parse but never fire.
    fn schedule_problems(&self, problems: &mut Vec<Error>) {
        for (name, schedule) in self.jobs() {
            if schedule.never_fires() {
                problems.push(self.key_error(
                    &format!("schedule.{name}"),
                    format!(
                        "`{}` never fires: no date matches it (e.g. the 31st of February); fix its day and month fields, or write \"off\"",
                        schedule.expression()
                    ),
                ));
            }
        }
    }

    /// What only the live system tells (`check-config`): sources, the backup
    /// filesystem's size against `min_free_space`, the token file's mode, the listen
    /// address. `api_token` is the daemon's own token reader, so both judge alike.
    pub fn check_live(&self, api_token: &dyn Fn(&Config) -> Result<String, String>) -> LiveCheck {
        let mut live = LiveCheck::default();
        for kind in [crate::BackupKind::Database, crate::BackupKind::Storage] {
            let path = match kind {
                crate::BackupKind::Database => &self.paths.database,
                _ => &self.paths.storage,
            };
            // A volume not resolved (the engine said why, separately) has nothing to check.
            if super::docker::is_placeholder(path) {
                continue;
            }
            if let Err(e) = self.check_sources(kind) {
                live.problems.push(e);
            }
        }
        if self.api.enabled {
            let key = if self.api.token_file.is_some() && self.api.token.is_none() {
                "api.token_file"
            } else {
                "api.token"
            };
            let configured = self.api.token.is_some() || self.api.token_file.is_some();
            if !configured {
                // Not set up at all (the defaults): the daemon runs without its API.
                live.warnings.push("[api] is enabled but no token is set: the daemon will not start the API (set [api] token_file, or enabled = false)".into());
            } else if let Err(why) = api_token(self) {
                live.problems.push(
                    self.key_error(key, format!("{why}; the daemon would not start the API")),
                );
            }
            live.warnings.extend(self.token_file_warning());
            if !self.api.listen.ip().is_loopback() {
                live.warnings.push(format!(
                    "[api] listen = {} is reachable from other machines: the API can start backups and restores; put it behind TLS and a firewall, or listen on 127.0.0.1",
                    self.api.listen
                ));
            }
        }
        live.warnings.extend(self.credentials_file_warnings());
        if let Some(e) = self.min_free_space_problem() {
            live.problems.push(e);
        }
        live
    }

    /// An `[[offsite]]` target's `credentials_file` or `ssh_key` that group or others may
    /// read: it holds the bucket's secret key or the backup server's login, as the token
    /// file holds the API's (and `ssh` refuses such a key outright).
    fn credentials_file_warnings(&self) -> Vec<String> {
        self.offsite
            .iter()
            .flat_map(|t| {
                [
                    ("credentials_file", t.credentials_file.as_ref()),
                    ("ssh_key", t.ssh_key.as_ref()),
                ]
                .into_iter()
                .filter_map(|(key, file)| {
                    readable_by_others(file?, &format!("the {key} of offsite target `{}`,", t.name))
                })
            })
            .collect()
    }

    /// A token file that group or others may read.
    fn token_file_warning(&self) -> Option<String> {
        let file = self
            .api
            .token_file
            .as_ref()
            .filter(|_| self.api.token.is_none())?;
        readable_by_others(file, "the API token file")
    }

    /// `min_free_space` at least as big as the whole backup filesystem: every backup
    /// would be refused for lack of space, whatever is deleted.
    fn min_free_space_problem(&self) -> Option<Error> {
        let reserve = self.backup.min_free_space.0;
        // The backup directory may not exist yet: measure the filesystem it will be on.
        let existing = self
            .paths
            .backup_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let total = crate::sys::total_space(existing).ok()?;
        (reserve >= total).then(|| {
            self.key_error(
                "backup.min_free_space",
                format!(
                    "{} must stay free, but the filesystem of {} holds only {} in all: every backup would be refused; lower it",
                    crate::units::format_bytes(reserve),
                    existing.display(),
                    crate::units::format_bytes(total)
                ),
            )
        })
    }
}

/// A warning when the secret file `file` (`what`, e.g. "the API token file") may be read
/// by group or others, with the command that fixes it.
fn readable_by_others(file: &Path, what: &str) -> Option<String> {
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{what} {} is readable by group or others (mode {mode:04o}); run: chmod 600 {}",
            file.display(),
            file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::Config;

    fn with_credentials_file(dir: &Path, mode: u32) -> Vec<String> {
        let file = dir.join("s3-credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIA\naws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = format!(
            "[api]\nenabled = false\n[[offsite]]\nname = \"b2\"\nurl = \"s3://bucket-x/p\"\ncredentials_file = \"{}\"\n",
            file.display()
        );
        let config = Config::parse(&text, None, dir, &|_| None).unwrap();
        config.check_live(&|_| Ok(String::new())).warnings
    }

    #[test]
    fn an_ssh_key_others_can_read_draws_a_warning_naming_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let known = dir.path().join("known_hosts");
        std::fs::write(&known, "").unwrap();
        let text = format!(
            "[api]\nenabled = false\n[[offsite]]\nname = \"box\"\nurl = \"sftp://b@backup-server/srv\"\nssh_key = \"{}\"\nknown_hosts = \"{}\"\n",
            key.display(),
            known.display()
        );
        let cfg = Config::parse(&text, None, dir.path(), &|_| None).unwrap();
        let warnings = cfg.credentials_file_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("the ssh_key of offsite target `box`"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_credentials_file_others_can_read_draws_a_warning_naming_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let warnings = with_credentials_file(dir.path(), 0o644);
        let ours: Vec<&String> = warnings
            .iter()
            .filter(|w| w.contains("credentials_file"))
            .collect();
        assert_eq!(ours.len(), 1, "{warnings:?}");
        assert!(ours[0].contains("`b2`"), "{}", ours[0]);
        assert!(ours[0].contains("mode 0644"), "{}", ours[0]);
        assert!(ours[0].contains("chmod 600"), "{}", ours[0]);
        assert!(!ours[0].contains("s3cr3t"), "{}", ours[0]);

        let warnings = with_credentials_file(dir.path(), 0o600);
        assert!(
            !warnings.iter().any(|w| w.contains("credentials_file")),
            "{warnings:?}"
        );
    }
}
