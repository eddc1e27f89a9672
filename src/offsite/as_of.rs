//! A target as it was at a moment in the past (`--as-of TIME`), read from S3 object
//! versions: for every key, the newest version written at or before TIME — absent when
//! that is a delete marker or when none existed yet. On a versioned Object Lock bucket a
//! rooted server with the server's credentials cannot delete locked versions, but it can
//! hide them: delete markers on every key, new garbage versions of the metadata objects.
//! Through this view the listing, `offsite verify` and `restore --from` see the history
//! underneath, exactly as it stood.
//!
//! Read-only: a put or delete through it is refused, so nothing based on a past view can
//! change the present one.

use std::collections::BTreeMap;
use std::io::Read;

use chrono::{DateTime, Utc};

use super::s3_api::{ObjectVersion, S3Api};
use super::target::{ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored, Target};
use crate::error::RemoteFailure;

pub struct AsOfTarget {
    api: S3Api,
    at: DateTime<Utc>,
    /// Key → the version that was current at `at` (delete markers and later versions
    /// left out), read once when the view opens.
    current: BTreeMap<String, ObjectVersion>,
}

impl AsOfTarget {
    /// The view of `api`'s prefix at `at`: one ListObjectVersions pass.
    pub fn open(api: S3Api, at: DateTime<Utc>) -> RemoteResult<AsOfTarget> {
        let current = current_at(api.list_object_versions("")?, at);
        Ok(AsOfTarget { api, at, current })
    }

    fn version(&self, key: &str) -> Option<&ObjectVersion> {
        self.current.get(key)
    }

    fn read_only(&self, what: &str) -> RemoteError {
        RemoteError::new(
            RemoteFailure::Other,
            format!(
                "{what}: the target is read as it was at {} (--as-of) and is not changed through that view",
                self.at
            ),
        )
    }
}

/// Per key, the version current at `at`: the newest written at or before it (S3 lists a
/// key's versions newest first; of equal times the first listed is the newer), unless
/// that is a delete marker. Pure.
pub fn current_at(
    versions: Vec<ObjectVersion>,
    at: DateTime<Utc>,
) -> BTreeMap<String, ObjectVersion> {
    let mut newest: BTreeMap<String, ObjectVersion> = BTreeMap::new();
    for v in versions.into_iter().filter(|v| v.last_modified <= at) {
        match newest.get(&v.key) {
            Some(seen) if seen.last_modified >= v.last_modified => {}
            _ => {
                newest.insert(v.key.clone(), v);
            }
        }
    }
    newest.retain(|_, v| !v.delete_marker);
    newest
}

impl Target for AsOfTarget {
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>> {
        Ok(self
            .current
            .values()
            .map(|v| ObjectInfo {
                key: v.key.clone(),
                size: v.size,
                modified: Some(v.last_modified),
            })
            .collect())
    }

    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>> {
        let Some(v) = self.version(key) else {
            return Ok(None);
        };
        Ok(self
            .api
            .head_object(key, Some(&v.version_id))?
            .map(|h| ObjectHead {
                size: h.size,
                sha256: h.sha256,
            }))
    }

    fn put(&self, key: &str, _: &mut dyn Read, _: Option<&str>) -> RemoteResult<Stored> {
        Err(self.read_only(&format!("write {key}")))
    }

    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>> {
        let v = self.version(key).ok_or_else(|| {
            RemoteError::new(
                RemoteFailure::Missing,
                format!("{key} did not exist at {}", self.at),
            )
        })?;
        self.api.get_object(key, Some(&v.version_id))
    }

    fn delete(&self, key: &str) -> RemoteResult<()> {
        Err(self.read_only(&format!("delete {key}")))
    }

    fn clean_interrupted(&self) -> RemoteResult<Vec<String>> {
        Ok(Vec::new())
    }

    fn carries_checksums(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, id: &str, secs: i64, marker: bool) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: false,
            last_modified: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            size: if marker { 0 } else { 10 },
            delete_marker: marker,
        }
    }

    #[test]
    fn the_view_at_a_time_sees_through_later_markers_and_overwrites() {
        let at = DateTime::from_timestamp(1_800_000_000 + 100, 0).unwrap();
        let versions = vec![
            // Overwritten after `at`: the older version is the one seen.
            v("a.json", "a3", 150, false),
            v("a.json", "a2", 90, false),
            v("a.json", "a1", 10, false),
            // Hidden by a delete marker after `at`.
            v("b.db", "bm", 120, true),
            v("b.db", "b1", 20, false),
            // Deleted before `at`: absent.
            v("c.db", "cm", 50, true),
            v("c.db", "c1", 5, false),
            // Written after `at` only: absent.
            v("d.db", "d1", 101, false),
        ];
        let seen = current_at(versions, at);
        let ids: Vec<(&str, &str)> = seen
            .values()
            .map(|v| (v.key.as_str(), v.version_id.as_str()))
            .collect();
        assert_eq!(ids, vec![("a.json", "a2"), ("b.db", "b1")]);
    }
}
