//! What `status` and `stats --json` say about each offsite target, from the state file
//! alone (no network): its last upload and failure, what is pending, per type the lag of
//! its newest complete remote copy against `max_age`, and its last verification.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::state::{OffsiteState, TargetState};
use crate::config::Config;
use crate::kind::BackupKind;

/// One type on one target, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetKindStatus {
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Creation time of the newest complete remote copy (RFC 3339).
    pub newest_remote: Option<String>,
    /// Now minus that creation time.
    pub lag_seconds: Option<u64>,
    pub max_age_seconds: Option<u64>,
    /// No complete remote copy within `max_age` (none at all counts as stale).
    pub stale: bool,
    pub last_upload: Option<String>,
}

/// One target, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub url: String,
    /// The end of the last upload job that left nothing pending.
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_failure_error: Option<String>,
    pub failing_since: Option<String>,
    pub pending: Vec<String>,
    pub pending_bytes: u64,
    pub types: Vec<TargetKindStatus>,
    pub last_verify: Option<String>,
    pub last_verify_failure: Option<String>,
    pub last_verify_error: Option<String>,
}

/// One target, for `stats --json`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStats {
    pub url: String,
    /// Bytes this server uploaded there, ever, per type.
    pub uploaded_bytes: BTreeMap<BackupKind, u64>,
    /// Complete remote backups and all remote backup bytes, as the last upload job listed them.
    pub remote_backups: u64,
    pub remote_bytes: u64,
    pub pending: usize,
    pub pending_bytes: u64,
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// Every configured target, in config order.
pub fn status(config: &Config, state: &OffsiteState, now: DateTime<Utc>) -> Vec<TargetStatus> {
    config
        .offsite
        .iter()
        .map(|t| {
            let s = state.targets.get(&t.name).cloned().unwrap_or_default();
            let types = BackupKind::ALL
                .into_iter()
                .filter(|k| t.takes(*k))
                .map(|kind| kind_status(config, &s, kind, now))
                .collect();
            TargetStatus {
                name: t.name.clone(),
                url: t.url.clone(),
                last_success: s.last_success.as_ref().map(rfc3339),
                last_failure: s.last_failure.as_ref().map(|f| rfc3339(&f.at)),
                last_failure_error: s.last_failure.as_ref().map(|f| f.error.clone()),
                failing_since: s.failing_since.as_ref().map(rfc3339),
                pending: s.pending.clone(),
                pending_bytes: s.pending_bytes,
                types,
                last_verify: s.last_verify.as_ref().map(rfc3339),
                last_verify_failure: s.last_verify_failure.as_ref().map(|f| rfc3339(&f.at)),
                last_verify_error: s.last_verify_failure.as_ref().map(|f| f.error.clone()),
            }
        })
        .collect()
}

fn kind_status(
    config: &Config,
    s: &TargetState,
    kind: BackupKind,
    now: DateTime<Utc>,
) -> TargetKindStatus {
    let newest = s.newest_remote.get(&kind);
    let lag = newest.and_then(|c| (now - c.with_timezone(&Utc)).to_std().ok());
    let limit = crate::schedule::max_age(config, kind, now);
    TargetKindStatus {
        kind,
        newest_remote: newest.map(|c| c.to_rfc3339()),
        lag_seconds: lag.map(|l| l.as_secs()),
        max_age_seconds: limit.map(|l| l.as_secs()),
        stale: match (newest, lag, limit) {
            (_, Some(lag), Some(limit)) => lag > limit,
            (None, _, Some(_)) => true,
            _ => false,
        },
        last_upload: s.last_upload.get(&kind).map(rfc3339),
    }
}

/// Every configured target by name.
pub fn stats(config: &Config, state: &OffsiteState) -> BTreeMap<String, TargetStats> {
    config
        .offsite
        .iter()
        .map(|t| {
            let s = state.targets.get(&t.name).cloned().unwrap_or_default();
            let stats = TargetStats {
                url: t.url.clone(),
                uploaded_bytes: BackupKind::ALL
                    .into_iter()
                    .filter(|k| t.takes(*k))
                    .map(|k| (k, s.uploaded_bytes.get(&k).copied().unwrap_or(0)))
                    .collect(),
                remote_backups: s.remote_backups,
                remote_bytes: s.remote_bytes,
                pending: s.pending.len(),
                pending_bytes: s.pending_bytes,
            };
            (t.name.clone(), stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    #[test]
    fn lag_and_staleness_per_type_and_stats_per_target() {
        let config = Config::parse(
            "[schedule]\nfull = \"off\"\nstorage = \"off\"\n[alerts]\nmax_age = { database = \"1h\" }\n\
             [[offsite]]\nname = \"b2\"\nurl = \"s3://bucket/p\"\nupload = [\"database\", \"storage\"]\n",
            None,
            Path::new("/srv"),
            &|_| None,
        )
        .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let mut state = OffsiteState::default();
        let b2 = state.targets.entry("b2".into()).or_default();
        b2.newest_remote.insert(
            BackupKind::Database,
            (now - chrono::Duration::minutes(90)).fixed_offset(),
        );
        b2.uploaded_bytes.insert(BackupKind::Database, 10);
        b2.pending = vec!["db_backup_a".into()];
        b2.pending_bytes = 5;
        b2.remote_backups = 3;
        let s = status(&config, &state, now);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].url, "s3://bucket/p");
        let db = &s[0].types[0];
        assert_eq!(
            (db.kind, db.lag_seconds, db.stale),
            (BackupKind::Database, Some(5400), true)
        );
        let storage = &s[0].types[1];
        assert_eq!(
            (storage.kind, storage.max_age_seconds, storage.stale),
            (BackupKind::Storage, None, false),
            "no max_age: never stale"
        );
        let st = stats(&config, &state);
        let b2 = &st["b2"];
        assert_eq!(b2.uploaded_bytes.get(&BackupKind::Database), Some(&10));
        assert_eq!(b2.uploaded_bytes.get(&BackupKind::Storage), Some(&0));
        assert_eq!((b2.remote_backups, b2.pending, b2.pending_bytes), (3, 1, 5));
    }
}
