//! The three kinds of backup and their names on disk (SPEC §3).

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
