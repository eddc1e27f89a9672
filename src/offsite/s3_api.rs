//! A small S3 REST client of our own, for what `object_store` ([`super::s3`]) cannot do or
//! does badly: listing keys it refuses to parse (`prefix/notes//readme.txt`,
//! `prefix/a/./b`), object versions and delete markers, reading and deleting one version,
//! and S3 Object Lock retention (HEAD's lock headers, PutObjectRetention). It owns the
//! requests and their outcomes; [`sigv4`] signs them and [`xml`] reads S3's answers.
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

mod sigv4;
mod xml;

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};

use super::target::{RemoteError, RemoteResult};
use crate::config::{OffsiteTarget, TargetLocation};
use crate::error::RemoteFailure;

/// The largest XML answer read (a page of 1000 keys of 1 KiB each is about 1.5 MiB).
const MAX_XML_BODY: u64 = 16 << 20;
/// The largest error body read (S3's are a few hundred bytes).
const MAX_ERROR_BODY: u64 = 64 << 10;
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
    http: Client,
    /// `scheme://host[:port]`.
    origin: String,
    /// The `Host` header (signed): `host[:port]`.
    host: String,
    /// The encoded path before a key: the endpoint's own path, then `/BUCKET` when
    /// path-style; empty for a virtual-hosted bucket at the root.
    root: String,
    prefix: String,
    region: String,
    credentials: sigv4::Credentials,
}

/// One request before signing.
struct Call<'a> {
    method: Method,
    /// The full key (with the target's prefix); `None`: the bucket itself.
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Send (and sign) `Content-MD5` of the body.
    content_md5: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, key: Option<&'a str>) -> Self {
        Call {
            method,
            key,
            query: Vec::new(),
            body: Vec::new(),
            content_md5: false,
        }
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    fn version(self, version_id: Option<&str>) -> Self {
        match version_id {
            Some(v) => self.query("versionId", v),
            None => self,
        }
    }
}

/// A non-success answer: its status and S3's error code and message (empty when the
/// answer had no error body, as HEAD's never has).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn read(response: Response) -> Refusal {
        let status = response.status();
        let body = read_bounded(response, MAX_ERROR_BODY).unwrap_or_default();
        let (code, message) = xml::error_body(&body).unwrap_or_default();
        Refusal {
            status,
            code,
            message,
        }
    }

    fn failure(&self) -> RemoteFailure {
        match self.code.as_str() {
            "NoSuchBucket" | "NoSuchKey" | "NoSuchVersion" => RemoteFailure::Missing,
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AccountProblem"
            | "AllAccessDisabled" => RemoteFailure::Credentials,
            "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" => {
                RemoteFailure::Network
            }
            "EntityTooLarge" | "QuotaExceeded" => RemoteFailure::Full,
            _ => match self.status.as_u16() {
                401 | 403 => RemoteFailure::Credentials,
                404 => RemoteFailure::Missing,
                408 | 429 | 500..=599 => RemoteFailure::Network,
                _ => RemoteFailure::Other,
            },
        }
    }

    fn into_error(self, what: &str) -> RemoteError {
        let mut detail = format!("{what}: HTTP {}", self.status);
        if !self.code.is_empty() {
            detail.push_str(&format!(" {}", self.code));
        }
        if !self.message.is_empty() {
            detail.push_str(&format!(": {}", self.message));
        }
        RemoteError::new(self.failure(), detail)
    }
}

fn other(detail: impl Into<String>) -> RemoteError {
    RemoteError::new(RemoteFailure::Other, detail)
}

/// A request that got no answer: a timeout, a refused or reset connection, DNS.
fn transport_error(e: reqwest::Error, what: &str) -> RemoteError {
    let failure = if e.is_builder() {
        RemoteFailure::Other
    } else {
        RemoteFailure::Network
    };
    RemoteError::new(failure, format!("{what}: {}", crate::error_chain(&e)))
}

/// The body, refused when it is longer than `limit`.
fn read_bounded(response: Response, limit: u64) -> RemoteResult<Vec<u8>> {
    if let Some(len) = content_length(&response)
        && len > limit
    {
        return Err(other(format!(
            "an answer of {len} bytes (at most {limit} are read)"
        )));
    }
    let mut body = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| RemoteError::new(RemoteFailure::Network, format!("read the answer: {e}")))?;
    if body.len() as u64 > limit {
        return Err(other(format!(
            "an answer over {limit} bytes (at most that is read)"
        )));
    }
    Ok(body)
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r reqwest::header::HeaderValue> {
    response.headers().get(name)
}

fn content_length(response: &Response) -> Option<u64> {
    header(response, "content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether `key` has a `.` or `..` segment, which URLs normalize away.
fn has_dot_segment(key: &str) -> bool {
    key.split('/').any(|s| s == "." || s == "..")
}

/// The object's body, exactly `remaining` bytes: more is never read, fewer is an error.
struct BoundedBody<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for BoundedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the object's body ended {} bytes before its Content-Length",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
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
        let region = target.region.clone().unwrap_or_else(|| "us-east-1".into());
        let endpoint = target
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = super::s3::bucket_endpoint(&endpoint, bucket, target.path_style);
        let url = Url::parse(&endpoint)
            .map_err(|e| other(format!("the endpoint `{endpoint}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(other(format!(
                "the endpoint `{endpoint}` is not an http(s)://HOST[:PORT][/PATH] URL"
            )));
        }
        let Some(host_name) = url.host_str() else {
            return Err(other(format!("the endpoint `{endpoint}` has no host")));
        };
        let host = match url.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_string(),
        };
        let mut root = String::new();
        for segment in url.path().split('/').filter(|s| !s.is_empty()) {
            let segment = xml::percent_decode(segment, false).map_err(other)?;
            root.push('/');
            root.push_str(&sigv4::uri_encode(&segment, false));
        }
        if target.path_style {
            root.push('/');
            root.push_str(&sigv4::uri_encode(bucket, false));
        }
        let http = Client::builder()
            .timeout(target.timeout)
            .connect_timeout(Duration::from_secs(10).min(target.timeout))
            // A redirect (another region) would carry a signature for another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vertex-backup/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| other(format!("start the S3 client: {e}")))?;
        Ok(S3Api {
            http,
            origin: format!("{}://{host}", url.scheme()),
            host,
            root,
            prefix: prefix.clone(),
            region,
            credentials: sigv4::Credentials {
                access_key,
                secret_key,
                token,
            },
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

    /// The request's path (encoded, as sent and signed) and its query (as sent, and
    /// canonical for the signature).
    fn target_of(&self, call: &Call<'_>) -> (String, String, String) {
        let path = match call.key {
            Some(key) => format!("{}/{}", self.root, sigv4::uri_encode(key, true)),
            None if self.root.is_empty() => "/".to_string(),
            None => self.root.clone(),
        };
        let params: Vec<(String, String)> = call
            .query
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let canonical = sigv4::canonical_query(&params);
        // On the wire a flag is bare (`?versions`), as the SDKs send it.
        let wire = canonical
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.strip_suffix('=').unwrap_or(p))
            .collect::<Vec<_>>()
            .join("&");
        (path, canonical, wire)
    }

    /// Sign and send `call`; any HTTP answer is returned (the caller reads its status).
    fn send(&self, call: Call<'_>, what: &str) -> RemoteResult<Response> {
        let (path, canonical_query, wire_query) = self.target_of(&call);
        let text = match wire_query.is_empty() {
            true => format!("{}{path}", self.origin),
            false => format!("{}{path}?{wire_query}", self.origin),
        };
        let url = Url::parse(&text).map_err(|e| other(format!("{what}: the URL {text}: {e}")))?;
        // What is signed must be what is sent: a URL parser that changed the path (dot
        // segments) would send a request for another key.
        if url.path() != path || url.query().unwrap_or_default() != wire_query {
            return Err(other(format!(
                "{what}: the request cannot carry its key unchanged in a URL ({text})"
            )));
        }
        let now = Utc::now();
        let payload_sha256 = hex::encode(Sha256::digest(&call.body));
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), payload_sha256.clone()),
            ("x-amz-date".to_string(), sigv4::amz_date(now)),
        ];
        if let Some(token) = &self.credentials.token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        if call.content_md5 {
            let md5 = md5::Md5::digest(&call.body);
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5);
            headers.push(("content-md5".to_string(), md5));
        }
        let method = call.method.as_str().to_string();
        let canonical = sigv4::Canonical {
            method: &method,
            path: &path,
            query: &canonical_query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        let scope = sigv4::Scope {
            region: &self.region,
            service: "s3",
            time: now,
        };
        let authorization = scope.authorization(&self.credentials, &canonical);
        let mut request = self
            .http
            .request(call.method, url)
            .header("authorization", authorization);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if !call.body.is_empty() {
            request = request.body(call.body);
        }
        request.send().map_err(|e| transport_error(e, what))
    }

    /// Send `call`, expect a 2xx XML answer and return its body.
    fn xml_call(&self, call: Call<'_>, what: &str) -> RemoteResult<Vec<u8>> {
        let response = self.send(call, what)?;
        if !response.status().is_success() {
            return Err(Refusal::read(response).into_error(what));
        }
        read_bounded(response, MAX_XML_BODY)
    }

    /// Every object under `PREFIX/prefix` (ListObjectsV2, every page), keys relative to
    /// the target's prefix and exactly as stored: `notes//readme.txt`, `a/./b` included.
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
            let body = self.xml_call(call, &what)?;
            let page = xml::list_objects_page(&body)
                .map_err(|e| other(format!("{what}: the ListObjectsV2 answer: {e}")))?;
            for listed in page.objects {
                if let Some(key) = self.relative(&listed.key) {
                    objects.push(ListedObject {
                        key,
                        size: listed.size,
                        last_modified: listed.last_modified,
                    });
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
            let body = self.xml_call(call, &what)?;
            let page = xml::list_versions_page(&body)
                .map_err(|e| other(format!("{what}: the ListObjectVersions answer: {e}")))?;
            for v in page.versions {
                if let Some(key) = self.relative(&v.key) {
                    versions.push(ObjectVersion {
                        key,
                        version_id: v.version_id,
                        is_latest: v.is_latest,
                        last_modified: v.last_modified,
                        size: v.size,
                        delete_marker: v.delete_marker,
                    });
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
        let response = self.send(
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
        let response = self.send(
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
        let response = self.send(call, &what)?;
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
        let response = self.send(
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

    fn api(prefix: &str, root: &str) -> S3Api {
        S3Api {
            http: Client::new(),
            origin: "http://127.0.0.1:9000".into(),
            host: "127.0.0.1:9000".into(),
            root: root.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            credentials: sigv4::Credentials {
                access_key: "AK".into(),
                secret_key: "SK".into(),
                token: None,
            },
        }
    }

    #[test]
    fn keys_are_relative_to_the_prefix() {
        let a = api("vx", "/bucket");
        assert_eq!(a.full_key("db/x").unwrap(), "vx/db/x");
        assert_eq!(
            a.relative("vx/notes//readme.txt").as_deref(),
            Some("notes//readme.txt")
        );
        assert_eq!(a.relative("vx/../x").as_deref(), Some("../x"));
        assert_eq!(a.relative("vxy/a"), None);
        assert_eq!(a.relative("other/a"), None);
        assert_eq!(a.full_prefix(""), "vx/");
        let bare = api("", "");
        assert_eq!(bare.relative("a//b").as_deref(), Some("a//b"));
        assert_eq!(bare.full_prefix(""), "");
    }

    #[test]
    fn keys_no_url_carries_are_refused() {
        let a = api("vx", "/bucket");
        for bad in ["", "a/./b", "../x", "a/..", "."] {
            assert_eq!(
                a.full_key(bad).unwrap_err().failure,
                RemoteFailure::Other,
                "{bad}"
            );
        }
        assert!(a.full_key("a..b/.c/d.").is_ok());
    }

    #[test]
    fn requests_encode_the_path_per_segment_and_sort_the_query() {
        let a = api("vx", "/bucket");
        let call = Call::new(Method::GET, Some("vx/notes//a b+é.txt")).version(Some("v/1+"));
        let (path, canonical, wire) = a.target_of(&call);
        assert_eq!(path, "/bucket/vx/notes//a%20b%2B%C3%A9.txt");
        assert_eq!(canonical, "versionId=v%2F1%2B");
        assert_eq!(wire, canonical);
        let call = Call::new(Method::GET, None)
            .query("versions", "")
            .query("prefix", "vx/")
            .query("encoding-type", "url");
        let (path, canonical, wire) = a.target_of(&call);
        assert_eq!(path, "/bucket");
        assert_eq!(canonical, "encoding-type=url&prefix=vx%2F&versions=");
        assert_eq!(wire, "encoding-type=url&prefix=vx%2F&versions");
        let (path, _, _) = api("", "").target_of(&Call::new(Method::GET, None));
        assert_eq!(path, "/");
        // The URL parser keeps an empty segment as it is: what is signed is what is sent.
        let url = Url::parse("http://h/bucket/vx/notes//a%20b").unwrap();
        assert_eq!(url.path(), "/bucket/vx/notes//a%20b");
    }

    #[test]
    fn a_dot_segment_would_not_survive_the_url() {
        // Why `full_key` refuses them: the URL parser drops `.`/`..` (encoded or not).
        for (text, path) in [
            ("http://h/b/vx/a/./x", "/b/vx/a/x"),
            ("http://h/b/vx/a/%2E/x", "/b/vx/a/x"),
            ("http://h/b/vx/../x", "/b/x"),
        ] {
            assert_eq!(Url::parse(text).unwrap().path(), path);
        }
    }

    #[test]
    fn refusals_are_classified() {
        let r = |status: u16, code: &str| Refusal {
            status: StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(r(404, "NoSuchBucket").failure(), RemoteFailure::Missing);
        assert_eq!(r(404, "NoSuchKey").failure(), RemoteFailure::Missing);
        assert_eq!(
            r(403, "SignatureDoesNotMatch").failure(),
            RemoteFailure::Credentials
        );
        assert_eq!(
            r(403, "InvalidAccessKeyId").failure(),
            RemoteFailure::Credentials
        );
        assert_eq!(r(403, "").failure(), RemoteFailure::Credentials);
        assert_eq!(r(503, "SlowDown").failure(), RemoteFailure::Network);
        assert_eq!(r(500, "").failure(), RemoteFailure::Network);
        assert_eq!(r(429, "").failure(), RemoteFailure::Network);
        assert_eq!(r(400, "InvalidArgument").failure(), RemoteFailure::Other);
        assert_eq!(r(301, "PermanentRedirect").failure(), RemoteFailure::Other);
        assert!(!RemoteFailure::Locked.transient());
        let e = r(403, "AccessDenied").into_error("delete vx/a");
        assert_eq!(e.detail, "delete vx/a: HTTP 403 Forbidden AccessDenied");
    }

    #[test]
    fn a_short_body_is_an_error_and_a_long_one_is_cut() {
        let mut short = BoundedBody {
            inner: &b"abc"[..],
            remaining: 5,
        };
        let mut out = Vec::new();
        let e = short.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut long = BoundedBody {
            inner: &b"abcdef"[..],
            remaining: 4,
        };
        let mut out = Vec::new();
        long.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
    }
}
