//! A small S3 REST client of our own, for what `object_store` ([`super::s3`]) cannot do or
//! does badly: listing keys it refuses to parse (`prefix/notes//readme.txt`,
//! `prefix/a/./b`), object versions and delete markers, reading and deleting one version,
//! and S3 Object Lock retention (HEAD's lock headers, PutObjectRetention). It owns the
//! operations and what their outcomes mean; [`request`] sends one signed request and
//! classifies its failure, [`sigv4`] signs it and [`xml`] reads S3's answers.
//!
//! Synchronous, like the engine: reqwest's blocking client (so never call it from inside a
//! tokio runtime). No retries of its own: a transient failure comes back as
//! [`RemoteFailure::Network`] and the caller retries (`Remote::with_retries`).
//!
//! Keys are relative to the target's prefix, as with [`super::target::Target`]: `db/x`
//! means `PREFIX/db/x` in the bucket. A listing returns keys exactly as S3 holds them (the
//! prefix stripped), whatever they look like; it is the caller's to decide about odd ones.
//! Requests refuse a key that an HTTP URL cannot carry unchanged (a `.` or `..` segment
//! would be normalized away and name another object).

mod multipart;
mod request;
mod sigv4;
mod xml;

use std::collections::HashSet;
use std::io::Read;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use reqwest::{Method, StatusCode};

pub use self::multipart::{MAX_PARTS, PartBody, UploadedPart};
use self::request::{BoundedBody, Call, Connection, Refusal, content_length, header, other};
use super::target::{RemoteError, RemoteResult};
use crate::config::{OffsiteTarget, TargetLocation};
use crate::error::RemoteFailure;

/// At most this many pages in one listing (10 million keys).
const MAX_PAGES: usize = 10_000;

/// One object as ListObjectsV2 shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Relative to the target's prefix, exactly as S3 holds it (not normalized).
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// One version (or delete marker) as ListObjectVersions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    /// `null` for an object stored before versioning was enabled.
    pub version_id: String,
    pub is_latest: bool,
    pub last_modified: DateTime<Utc>,
    /// 0 for a delete marker.
    pub size: u64,
    pub delete_marker: bool,
}

/// What HEAD says about an object (version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadInfo {
    pub size: u64,
    /// Our SHA-256, `x-amz-meta-sha256`.
    pub sha256: Option<String>,
    /// `x-amz-object-lock-retain-until-date`.
    pub retain_until: Option<DateTime<Utc>>,
    /// `x-amz-object-lock-mode`: `COMPLIANCE` or `GOVERNANCE`.
    pub lock_mode: Option<String>,
    /// `x-amz-object-lock-legal-hold: ON`.
    pub legal_hold: bool,
    /// `x-amz-version-id` (absent on an unversioned bucket).
    pub version_id: Option<String>,
}

impl HeadInfo {
    /// Whether Object Lock refuses to delete this version at `now`.
    pub fn locked_at(&self, now: DateTime<Utc>) -> bool {
        self.legal_hold || self.retain_until.is_some_and(|until| until > now)
    }
}

/// What `put_object_retention` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionChange {
    /// The version is now retained until this (the requested time, whole seconds).
    Extended { retain_until: DateTime<Utc> },
    /// The version was already retained until this, not earlier than asked: untouched
    /// (retention is only ever extended).
    Kept { retain_until: DateTime<Utc> },
}

/// A client for one `s3://` target.
pub struct S3Api {
    conn: Connection,
    prefix: String,
}

/// Whether `key` has a `.` or `..` segment, which URLs normalize away.
fn has_dot_segment(key: &str) -> bool {
    key.split('/').any(|s| s == "." || s == "..")
}

impl S3Api {
    /// A client for `target` (an `s3://` one): its endpoint (AWS's for the region when
    /// none is given), path-style or virtual-hosted, credentials as [`super::s3`] finds
    /// them, and `timeout` for connecting and for each wait on the server.
    pub fn open(target: &OffsiteTarget) -> RemoteResult<S3Api> {
        super::s3::install_crypto();
        let TargetLocation::S3 { bucket, prefix } = &target.location else {
            return Err(other("not an s3:// target"));
        };
        let (access_key, secret_key, token) = super::s3::credentials(target)?;
        let credentials = sigv4::Credentials {
            access_key,
            secret_key,
            token,
        };
        Ok(S3Api {
            conn: Connection::open(target, bucket, credentials)?,
            prefix: prefix.clone(),
        })
    }

    /// `PREFIX/key`; refuses an empty key and one no URL carries unchanged.
    fn full_key(&self, key: &str) -> RemoteResult<String> {
        let full = self.full_prefix(key);
        if key.is_empty() || has_dot_segment(&full) {
            return Err(other(format!(
                "the key `{full}` cannot be addressed: it is empty or has a `.` or `..` segment, which HTTP URLs normalize away"
            )));
        }
        Ok(full)
    }

    /// `PREFIX/p` (just `p` without a target prefix).
    fn full_prefix(&self, p: &str) -> String {
        if self.prefix.is_empty() {
            p.to_string()
        } else {
            format!("{}/{p}", self.prefix)
        }
    }

    /// A listed full key relative to the target's prefix; `None` when it is not under it.
    fn relative(&self, full: &str) -> Option<String> {
        if self.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(&self.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    /// Every object under `PREFIX/prefix` (ListObjectsV2, every page), keys relative to
    /// the target's prefix and exactly as stored: `notes//readme.txt`, `a/./b` included
    /// (and `""` for an object named just `PREFIX/`). A key not under `PREFIX/` is left out.
    pub fn list_objects(&self, prefix: &str) -> RemoteResult<Vec<ListedObject>> {
        let full_prefix = self.full_prefix(prefix);
        let what = format!("list {full_prefix}");
        let mut objects = Vec::new();
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::new(Method::GET, None)
                .query("list-type", "2")
                .query("encoding-type", "url");
            if !full_prefix.is_empty() {
                call = call.query("prefix", full_prefix.clone());
            }
            if let Some(t) = &token {
                call = call.query("continuation-token", t.clone());
            }
            let body = self.conn.xml_call(call, &what)?;
            let page = xml::list_objects_page(&body)
                .map_err(|e| other(format!("{what}: the ListObjectsV2 answer: {e}")))?;
            for mut listed in page.objects {
                if let Some(key) = self.relative(&listed.key) {
                    listed.key = key;
                    objects.push(listed);
                }
            }
            match page.next {
                None => return Ok(objects),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(other(format!(
                        "{what}: the server sent the continuation token `{next}` again (a listing that loops)"
                    )));
                }
                Some(next) => token = Some(next),
            }
        }
        Err(other(format!("{what}: more than {MAX_PAGES} pages")))
    }

    /// Every version and delete marker under `PREFIX/prefix` (ListObjectVersions, every
    /// page), in S3's order (by key, newest version first), keys relative.
    pub fn list_object_versions(&self, prefix: &str) -> RemoteResult<Vec<ObjectVersion>> {
        let full_prefix = self.full_prefix(prefix);
        let what = format!("list the versions of {full_prefix}");
        let mut versions = Vec::new();
        let mut seen = HashSet::new();
        let mut marker: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::new(Method::GET, None)
                .query("versions", "")
                .query("encoding-type", "url");
            if !full_prefix.is_empty() {
                call = call.query("prefix", full_prefix.clone());
            }
            if let Some((key, version)) = &marker {
                call = call.query("key-marker", key.clone());
                if !version.is_empty() {
                    call = call.query("version-id-marker", version.clone());
                }
            }
            let body = self.conn.xml_call(call, &what)?;
            let page = xml::list_versions_page(&body)
                .map_err(|e| other(format!("{what}: the ListObjectVersions answer: {e}")))?;
            for mut v in page.versions {
                if let Some(key) = self.relative(&v.key) {
                    v.key = key;
                    versions.push(v);
                }
            }
            match page.next {
                None => return Ok(versions),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(other(format!(
                        "{what}: the server sent the markers {next:?} again (a listing that loops)"
                    )));
                }
                Some(next) => marker = Some(next),
            }
        }
        Err(other(format!("{what}: more than {MAX_PAGES} pages")))
    }

    /// The object's (or that version's) bytes, streamed: exactly its Content-Length.
    pub fn get_object(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> RemoteResult<Box<dyn Read + Send>> {
        let full = self.full_key(key)?;
        let what = format!("read {full}");
        let response = self.conn.send(
            Call::new(Method::GET, Some(&full)).version(version_id),
            &what,
        )?;
        if !response.status().is_success() {
            return Err(Refusal::read(response).into_error(&what));
        }
        let Some(remaining) = content_length(&response) else {
            return Err(other(format!("{what}: the answer has no Content-Length")));
        };
        Ok(Box::new(BoundedBody {
            inner: response,
            remaining,
        }))
    }

    /// The object's (or that version's) size, checksum and lock; `None` when there is no
    /// such object, or the version is a delete marker. (HEAD has no error body: a missing
    /// bucket also reads as `None`.)
    pub fn head_object(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> RemoteResult<Option<HeadInfo>> {
        let full = self.full_key(key)?;
        let what = format!("look at {full}");
        let response = self.conn.send(
            Call::new(Method::HEAD, Some(&full)).version(version_id),
            &what,
        )?;
        let status = response.status();
        let delete_marker =
            header(&response, "x-amz-delete-marker").is_some_and(|v| v.as_bytes() == b"true");
        if status == StatusCode::NOT_FOUND
            || (status == StatusCode::METHOD_NOT_ALLOWED && delete_marker)
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Refusal::read(response).into_error(&what));
        }
        let text = |name: &str| {
            header(&response, name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let size = content_length(&response)
            .ok_or_else(|| other(format!("{what}: no Content-Length in the answer")))?;
        let retain_until = match text("x-amz-object-lock-retain-until-date") {
            Some(t) => Some(
                DateTime::parse_from_rfc3339(t.trim())
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|e| other(format!("{what}: the retain-until date `{t}`: {e}")))?,
            ),
            None => None,
        };
        Ok(Some(HeadInfo {
            size,
            sha256: text("x-amz-meta-sha256"),
            retain_until,
            lock_mode: text("x-amz-object-lock-mode"),
            legal_hold: text("x-amz-object-lock-legal-hold").as_deref() == Some("ON"),
            version_id: text("x-amz-version-id"),
        }))
    }

    /// Retain the object (version) under Object Lock `mode` (`COMPLIANCE` or `GOVERNANCE`)
    /// until `retain_until` (whole seconds) — unless HEAD shows it already retained until
    /// then or later: retention is never shortened. Without `version_id`, the version HEAD
    /// saw is the one extended.
    pub fn put_object_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        mode: &str,
        retain_until: DateTime<Utc>,
    ) -> RemoteResult<RetentionChange> {
        if !matches!(mode, "COMPLIANCE" | "GOVERNANCE") {
            return Err(other(format!(
                "`{mode}` is not an Object Lock mode (COMPLIANCE or GOVERNANCE)"
            )));
        }
        let full = self.full_key(key)?;
        let what = format!("extend the retention of {full}");
        let until = retain_until.with_nanosecond(0).unwrap_or(retain_until);
        let Some(head) = self.head_object(key, version_id)? else {
            return Err(RemoteError::new(
                RemoteFailure::Missing,
                format!("{what}: no such object (version)"),
            ));
        };
        if let Some(current) = head.retain_until
            && current >= until
        {
            return Ok(RetentionChange::Kept {
                retain_until: current,
            });
        }
        let version = version_id
            .map(str::to_string)
            .or(head.version_id.filter(|v| v != "null"));
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            xml::escape(mode),
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let mut call = Call::new(Method::PUT, Some(&full))
            .query("retention", "")
            .version(version.as_deref());
        call.body = body.into_bytes();
        call.content_md5 = true;
        let response = self.conn.send(call, &what)?;
        if !response.status().is_success() {
            return Err(Refusal::read(response).into_error(&what));
        }
        Ok(RetentionChange::Extended {
            retain_until: until,
        })
    }

    /// Delete the object: without `version_id` a delete marker on a versioned bucket (the
    /// versions stay), with it that version for good. Already gone is not an error. A
    /// version Object Lock holds is [`RemoteFailure::Locked`] (S3 says AccessDenied;
    /// the version's own lock headers tell a lock from a missing permission).
    pub fn delete_object(&self, key: &str, version_id: Option<&str>) -> RemoteResult<()> {
        let full = self.full_key(key)?;
        let what = format!("delete {full}");
        let response = self.conn.send(
            Call::new(Method::DELETE, Some(&full)).version(version_id),
            &what,
        )?;
        if response.status().is_success() {
            return Ok(());
        }
        let refusal = Refusal::read(response);
        if refusal.status == StatusCode::NOT_FOUND && refusal.code != "NoSuchBucket" {
            return Ok(());
        }
        if version_id.is_some()
            && refusal.status == StatusCode::FORBIDDEN
            && refusal.code == "AccessDenied"
            && let Ok(Some(head)) = self.head_object(key, version_id)
            && head.locked_at(Utc::now())
        {
            let until = head
                .retain_until
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_else(|| "its legal hold is released".into());
            return Err(RemoteError::new(
                RemoteFailure::Locked,
                format!(
                    "{what} (version {}): locked by S3 Object Lock ({}) until {until}",
                    version_id.unwrap_or_default(),
                    head.lock_mode.as_deref().unwrap_or("legal hold")
                ),
            ));
        }
        Err(refusal.into_error(&what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(prefix: &str) -> S3Api {
        S3Api {
            conn: Connection::local("/bucket"),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn keys_are_relative_to_the_prefix() {
        let a = api("vx");
        assert_eq!(a.full_key("db/x").unwrap(), "vx/db/x");
        assert_eq!(
            a.relative("vx/notes//readme.txt").as_deref(),
            Some("notes//readme.txt")
        );
        assert_eq!(a.relative("vx/../x").as_deref(), Some("../x"));
        assert_eq!(a.relative("vxy/a"), None);
        assert_eq!(a.relative("other/a"), None);
        assert_eq!(a.full_prefix(""), "vx/");
        let bare = api("");
        assert_eq!(bare.relative("a//b").as_deref(), Some("a//b"));
        assert_eq!(bare.full_prefix(""), "");
    }

    #[test]
    fn keys_no_url_carries_are_refused() {
        let a = api("vx");
        for bad in ["", "a/./b", "../x", "a/..", "."] {
            assert_eq!(
                a.full_key(bad).unwrap_err().failure,
                RemoteFailure::Other,
                "{bad}"
            );
        }
        assert!(a.full_key("a..b/.c/d.").is_ok());
    }
}
