//! The last verification verdict per backup, kept in `vertex-backup.verify.json`. Written
//! by `verify` and the daemon's restore drill through the [`StateFile`] store — its own
//! update lock, not the backup-directory lock, so a long verification never blocks a
//! backup, yet two recorders never lose each other's verdicts — and read by retention: a
//! backup known to have failed verification is never counted as one of the good ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Catalog;
use super::store::StateFile;
use crate::error::Result;

pub const VERDICTS_FILE: &str = "vertex-backup.verify.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    /// RFC 3339.
    pub at: String,
    /// The failed check and its detail, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Keyed by backup stem.
    #[serde(default)]
    pub backups: BTreeMap<String, Verdict>,
}

impl Verdicts {
    /// True when the last verification of `stem` failed.
    pub fn failed(&self, stem: &str) -> bool {
        self.backups.get(stem).is_some_and(|v| !v.ok)
    }

    /// Forget verdicts of backups that no longer exist.
    pub fn retain_existing(&mut self, exists: impl Fn(&str) -> bool) {
        self.backups.retain(|k, _| exists(k));
    }
}

impl Catalog {
    /// `vertex-backup.verify.json`.
    pub fn verdicts_file(&self) -> StateFile<Verdicts> {
        StateFile::new(self.root.join(VERDICTS_FILE), self.file_mode)
    }

    /// The verdicts as they are now (a corrupt file is set aside and reported).
    pub fn load_verdicts(&self) -> Verdicts {
        self.verdicts_file().load_or_default()
    }

    /// Record verification results (merging into what is there), dropping verdicts of
    /// backups that are gone. The listing is taken under the update lock: every verdict
    /// already recorded is then of a backup that existed before it, so one missing from
    /// the listing is truly gone (not just newer than a listing taken earlier).
    pub fn record_verdicts(
        &self,
        results: impl IntoIterator<Item = (String, Verdict)>,
    ) -> Result<()> {
        self.verdicts_file().update(|v| {
            v.backups.extend(results);
            if let Ok(listing) = self.list() {
                v.retain_existing(|stem| listing.find_stem(stem).is_some());
            }
        })?;
        Ok(())
    }
}
