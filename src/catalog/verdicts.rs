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
    /// The backup's checksum as verified: a backup rewritten since (its packs repacked
    /// while it was being read) is another backup, which a failure then says nothing of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
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
            let listing = self.list().ok();
            for (stem, verdict) in results {
                let rewritten = !verdict.ok
                    && listing
                        .as_ref()
                        .and_then(|l| l.find_stem(&stem))
                        .zip(verdict.checksum.as_ref())
                        .is_some_and(|(b, seen)| b.metadata.checksum != *seen);
                if rewritten {
                    self.log().warn(&format!(
                        "verify: {stem} was rewritten (repacked) while it was being verified: its failure is not recorded; verify it again"
                    ));
                    continue;
                }
                v.backups.insert(stem, verdict);
            }
            if let Some(listing) = &listing {
                v.retain_existing(|stem| listing.find_stem(stem).is_some());
            }
        })?;
        Ok(())
    }
}
