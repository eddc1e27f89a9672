//! The kinds of thing the program names: the three kinds of backup and their names on disk
//! (docs/design.md §2), and the jobs the daemon schedules. A job's name is also its schedule key in
//! `[schedule]`, its label in `/metrics` and its key in the run history, so adding a job is
//! one variant here plus the arms the compiler then asks for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum BackupKind {
    Full,
    Database,
    Storage,
}

impl BackupKind {
    pub const ALL: [BackupKind; 3] = [BackupKind::Full, BackupKind::Database, BackupKind::Storage];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Database => "database",
            BackupKind::Storage => "storage",
        }
    }

    /// The subdirectory of the backup dir holding this kind.
    pub fn dir_name(self) -> &'static str {
        self.as_str()
    }

    /// File name prefix, as in the seed: `db_backup_`, `storage_backup_`, `full_backup_`.
    pub fn prefix(self) -> &'static str {
        match self {
            BackupKind::Full => "full_backup_",
            BackupKind::Database => "db_backup_",
            BackupKind::Storage => "storage_backup_",
        }
    }

    /// File name prefix of a snapshot of this kind (`[backup] storage_format` or
    /// `database_format = "snapshot"`); a full backup is never a snapshot itself.
    pub fn snapshot_prefix(self) -> Option<&'static str> {
        match self {
            BackupKind::Full => None,
            BackupKind::Database => Some("db_snapshot_"),
            BackupKind::Storage => Some("storage_snapshot_"),
        }
    }

    /// Every prefix a backup of this kind may be named with (none is a prefix of another).
    pub fn prefixes(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.prefix()).chain(self.snapshot_prefix())
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(BackupKind::Full),
            "database" | "db" => Ok(BackupKind::Database),
            "storage" => Ok(BackupKind::Storage),
            other => Err(format!(
                "unknown backup type `{other}`; use full, database or storage"
            )),
        }
    }
}

/// A job the daemon can schedule and the queue can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobName {
    Full,
    Database,
    Storage,
    Rotate,
    Verify,
    /// Upload what the `[[offsite]]` targets lack, then apply their retention.
    Offsite,
    /// Check what the targets hold; repair from local copies.
    #[serde(rename = "offsite_verify")]
    OffsiteVerify,
}

impl JobName {
    /// Every job, in the order due jobs run (full before database before storage before
    /// rotate before verify before the offsite jobs).
    pub const ALL: [JobName; 7] = [
        JobName::Full,
        JobName::Database,
        JobName::Storage,
        JobName::Rotate,
        JobName::Verify,
        JobName::Offsite,
        JobName::OffsiteVerify,
    ];

    /// The name: the `[schedule]` key, the metric label and the run-history key.
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Full => "full",
            JobName::Database => "database",
            JobName::Storage => "storage",
            JobName::Rotate => "rotate",
            JobName::Verify => "verify",
            JobName::Offsite => "offsite",
            JobName::OffsiteVerify => "offsite_verify",
        }
    }

    /// The backup this job creates, if it is a backup job.
    pub fn backup_kind(self) -> Option<BackupKind> {
        match self {
            JobName::Full => Some(BackupKind::Full),
            JobName::Database => Some(BackupKind::Database),
            JobName::Storage => Some(BackupKind::Storage),
            JobName::Rotate | JobName::Verify | JobName::Offsite | JobName::OffsiteVerify => None,
        }
    }

    /// The job that creates backups of `kind`.
    pub fn creating(kind: BackupKind) -> JobName {
        match kind {
            BackupKind::Full => JobName::Full,
            BackupKind::Database => JobName::Database,
            BackupKind::Storage => JobName::Storage,
        }
    }

    /// The kinds of backup a successful run leaves fresh, for staleness: a full backup
    /// makes a database and a storage backup too.
    pub fn refreshes(self) -> &'static [BackupKind] {
        match self {
            JobName::Full => &BackupKind::ALL,
            JobName::Database => &[BackupKind::Database],
            JobName::Storage => &[BackupKind::Storage],
            JobName::Rotate | JobName::Verify | JobName::Offsite | JobName::OffsiteVerify => &[],
        }
    }

    /// Whether this job works on the `[[offsite]]` targets (and so only runs with some).
    pub fn is_offsite(self) -> bool {
        matches!(self, JobName::Offsite | JobName::OffsiteVerify)
    }

    pub fn parse(s: &str) -> Option<JobName> {
        JobName::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
