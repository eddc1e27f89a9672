//! A target in S3-compatible object storage (AWS, MinIO, Ceph RGW, Backblaze B2, Wasabi,
//! Cloudflare R2, Hetzner, GCS's interoperability endpoint), through `object_store`:
//! signed requests over rustls, retries with capped backoff on its own. This file keeps
//! the engine blocking: the target owns a small runtime and waits on it.
//!
//! Uploads of a local file go through [`super::s3_parts`]: parts streamed from the file
//! at their offsets, a few MiB whatever the part size. Other streams (encrypted on the way
//! up) go in `part_size` pieces with at most `concurrency` in flight (memory:
//! `part_size × concurrency`), hashing as they read. Our SHA-256 travels as
//! `x-amz-meta-sha256` on every store; with the target's `checksum = "sha256"` (the
//! default) each request also carries `x-amz-checksum-sha256`, which the store checks
//! (B2 and GCS's interoperability endpoint reject it: `checksum = "none"` there). The
//! upload is completed only when the bytes read hash to what the caller expects,
//! otherwise aborted — S3 makes an object visible only at completion, so nothing
//! half-sent is ever listed. Every multipart upload is journaled from its start to its
//! end ([`UploadJournal`]), and the next run aborts what a crash left.
//!
//! Object Lock: `object_store` has no option for it, so a target with `object_lock` sends
//! `x-amz-object-lock-mode: COMPLIANCE` and `x-amz-object-lock-retain-until-date` as
//! default headers of its client (signed with the request), with SHA-256 request
//! checksums, which S3 requires on locked writes. The date is fixed when the target is
//! opened ([`Target::write_horizon`]); a push extends what a new backup reuses to it
//! through [`super::s3_api`] (PutObjectRetention), and reads locks back by HEAD.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};
use tokio::task::JoinSet;

use super::s3_parts::PartUpload;
use super::state::UploadJournal;
use super::target::{ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored, Target};
use super::transfer::{SharedPace, UploadStream, check_sent};
use crate::config::OffsiteTarget;
use crate::error::RemoteFailure;

/// The user metadata key our checksum travels under (`x-amz-meta-sha256`).
const SHA256_META: &str = "sha256";

pub struct S3Target {
    store: Arc<AmazonS3>,
    /// Our own signed requests: listings that survive keys `object_store` cannot parse,
    /// object versions, retention.
    api: super::s3_api::S3Api,
    prefix: String,
    part_size: usize,
    concurrency: usize,
    bandwidth_limit: Option<u64>,
    /// `x-amz-checksum-sha256` on every write.
    checksum: bool,
    retries: u32,
    retry_backoff: Duration,
    object_lock: Option<Duration>,
    /// The retain-until date every write carries (`object_lock` from the opening).
    horizon: Option<DateTime<Utc>>,
    journal: UploadJournal,
    runtime: tokio::runtime::Runtime,
}

/// Install ring as rustls's process-wide provider (object_store's client is built without
/// one, so that nothing but ring does cryptography here). Idempotent.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Access keys from a shared-credentials style file: `aws_access_key_id = …` lines (the
/// `[default]` profile's, or the first given).
fn read_credentials_file(path: &std::path::Path) -> RemoteResult<(String, String, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RemoteError::new(
            RemoteFailure::Credentials,
            format!("cannot read the credentials_file {}: {e}", path.display()),
        )
    })?;
    let mut found: std::collections::BTreeMap<String, String> = Default::default();
    let mut profile = String::from("default");
    for line in text.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profile = p.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && (profile == "default" || !found.contains_key(k.trim()))
        {
            found.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    match (
        found.get("aws_access_key_id"),
        found.get("aws_secret_access_key"),
    ) {
        (Some(k), Some(s)) => Ok((
            k.clone(),
            s.clone(),
            found.get("aws_session_token").cloned(),
        )),
        _ => Err(RemoteError::new(
            RemoteFailure::Credentials,
            format!(
                "the credentials_file {} has no aws_access_key_id and aws_secret_access_key",
                path.display()
            ),
        )),
    }
}

/// The access key: the credentials file, else the AWS environment.
pub(super) fn credentials(
    target: &OffsiteTarget,
) -> RemoteResult<(String, String, Option<String>)> {
    if let Some(file) = &target.credentials_file {
        return read_credentials_file(file);
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(k), Some(s)) => Ok((k, s, env("AWS_SESSION_TOKEN"))),
        _ => Err(RemoteError::new(
            RemoteFailure::Credentials,
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the service's environment, or credentials_file",
        )),
    }
}

impl S3Target {
    pub fn open(target: &OffsiteTarget, journal: UploadJournal) -> RemoteResult<S3Target> {
        install_crypto();
        let crate::config::TargetLocation::S3 { bucket, prefix } = &target.location else {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                "not an s3:// target",
            ));
        };
        let (key, secret, token) = credentials(target)?;
        let mut options = ClientOptions::new()
            .with_timeout(target.timeout)
            .with_connect_timeout(Duration::from_secs(10).min(target.timeout));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(target.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: target.retry_backoff,
                    max_backoff: Duration::from_secs(30),
                    base: 2.0,
                },
                max_retries: target.retries as usize,
                retry_timeout: target.timeout,
            });
        if let Some(t) = token {
            builder = builder.with_token(t);
        }
        match &target.endpoint {
            Some(e) => {
                options = options.with_allow_http(e.starts_with("http://"));
                builder = builder.with_endpoint(bucket_endpoint(e, bucket, target.path_style));
                builder = builder.with_virtual_hosted_style_request(!target.path_style);
            }
            None => builder = builder.with_virtual_hosted_style_request(!target.path_style),
        }
        let horizon = match target.object_lock {
            Some(lock) => Some(lock_horizon(Utc::now(), lock)?),
            None => None,
        };
        if let Some(until) = horizon {
            options = options.with_default_headers(lock_headers(until)?);
        }
        // Object Lock needs it (the config refuses `checksum = "none"` with a lock).
        if target.request_checksum {
            builder = builder.with_checksum_algorithm(Checksum::SHA256);
        }
        let store = builder
            .with_client_options(options)
            .build()
            .map_err(|e| RemoteError::new(RemoteFailure::Other, e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-client")
            .enable_all()
            .build()
            .map_err(|e| {
                RemoteError::new(RemoteFailure::Other, format!("start the S3 client: {e}"))
            })?;
        Ok(S3Target {
            store: Arc::new(store),
            api: super::s3_api::S3Api::open(target)?,
            prefix: prefix.clone(),
            part_size: target.part_size as usize,
            concurrency: target.concurrency,
            bandwidth_limit: target.bandwidth_limit,
            checksum: target.request_checksum,
            retries: target.retries,
            retry_backoff: target.retry_backoff,
            object_lock: target.object_lock,
            horizon,
            journal,
            runtime,
        })
    }

    fn path(&self, key: &str) -> RemoteResult<ObjectPath> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full)
            .map_err(|e| RemoteError::new(RemoteFailure::Other, format!("`{key}`: {e}")))
    }

    fn attributes(sha256: Option<&str>) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(sha) = sha256 {
            attributes.insert(
                Attribute::Metadata(SHA256_META.into()),
                AttributeValue::from(sha.to_string()),
            );
        }
        attributes
    }

    /// Upload the parts: `first`, then what `stream` still holds, at most `concurrency`
    /// in flight. Returns their ids in order, once the last byte is read and hashed.
    fn send_parts(
        &self,
        path: &ObjectPath,
        id: &str,
        first: Vec<u8>,
        stream: &mut UploadStream<'_>,
    ) -> RemoteResult<Vec<object_store::multipart::PartId>> {
        let mut inflight: JoinSet<(usize, object_store::Result<object_store::multipart::PartId>)> =
            JoinSet::new();
        let mut parts: Vec<Option<object_store::multipart::PartId>> = Vec::new();
        let mut next = Some(first);
        let mut index = 0;
        while let Some(buf) = next.take() {
            let store = self.store.clone();
            let (p, i) = (path.clone(), id.to_string());
            let payload = PutPayload::from(Bytes::from(buf));
            let _guard = self.runtime.enter();
            inflight.spawn(async move { (index, store.put_part(&p, &i, index, payload).await) });
            parts.push(None);
            index += 1;
            while inflight.len() >= self.concurrency {
                self.collect_one(&mut inflight, &mut parts)?;
            }
            let mut buf = vec![0u8; self.part_size];
            let n = stream
                .fill(&mut buf)
                .map_err(super::transfer::read_failed)?;
            if n > 0 {
                buf.truncate(n);
                next = Some(buf);
            }
        }
        while !inflight.is_empty() {
            self.collect_one(&mut inflight, &mut parts)?;
        }
        parts
            .into_iter()
            .map(|p| p.ok_or_else(|| RemoteError::new(RemoteFailure::Other, "a part is missing")))
            .collect()
    }

    fn collect_one(
        &self,
        inflight: &mut JoinSet<(usize, object_store::Result<object_store::multipart::PartId>)>,
        parts: &mut [Option<object_store::multipart::PartId>],
    ) -> RemoteResult<()> {
        match self.runtime.block_on(inflight.join_next()) {
            Some(Ok((i, Ok(part)))) => {
                parts[i] = Some(part);
                Ok(())
            }
            Some(Ok((_, Err(e)))) => Err(classify(&e)),
            Some(Err(e)) => Err(RemoteError::new(RemoteFailure::Other, e.to_string())),
            None => Ok(()),
        }
    }

    fn abort(&self, path: &ObjectPath, id: &str) {
        let id = id.to_string();
        if let Err(e) = self.runtime.block_on(self.store.abort_multipart(path, &id)) {
            tracing::warn!("could not abort the multipart upload of {path}: {e}");
        }
    }
}

/// The endpoint object_store wants: as given for path-style requests; with the bucket
/// as the first label of the host for virtual-hosted ones.
pub(super) fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
    if path_style {
        return endpoint.trim_end_matches('/').to_string();
    }
    match endpoint.split_once("://") {
        Some((scheme, host)) if !host.starts_with(&format!("{bucket}.")) => {
            format!("{scheme}://{bucket}.{}", host.trim_end_matches('/'))
        }
        _ => endpoint.trim_end_matches('/').to_string(),
    }
}

/// `now` + `lock` in whole seconds, as the lock header carries it (so that what
/// [`Target::write_horizon`] says is exactly what the server stores).
fn lock_horizon(now: DateTime<Utc>, lock: Duration) -> RemoteResult<DateTime<Utc>> {
    let until = now
        + chrono::Duration::from_std(lock)
            .map_err(|e| RemoteError::new(RemoteFailure::Other, e.to_string()))?;
    Ok(until.trunc_subsecs(0))
}

/// The headers that lock a write until `until` (COMPLIANCE).
fn lock_header_pairs(until: DateTime<Utc>) -> [(String, String); 2] {
    [
        ("x-amz-object-lock-mode".into(), "COMPLIANCE".into()),
        (
            "x-amz-object-lock-retain-until-date".into(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ]
}

fn lock_headers(until: DateTime<Utc>) -> RemoteResult<reqwest_object_store::header::HeaderMap> {
    use reqwest_object_store::header::{HeaderMap, HeaderName, HeaderValue};
    let mut headers = HeaderMap::new();
    // S3 refuses a locked write without a request checksum it can name.
    headers.insert(
        "x-amz-sdk-checksum-algorithm",
        HeaderValue::from_static("SHA256"),
    );
    for (name, value) in lock_header_pairs(until) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| RemoteError::new(RemoteFailure::Other, e.to_string()))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|e| RemoteError::new(RemoteFailure::Other, e.to_string()))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// What kind of failure an `object_store` error is, from its variant and the S3 error
/// code in its text.
fn classify(e: &object_store::Error) -> RemoteError {
    let text = e.to_string();
    let failure = match e {
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
            RemoteFailure::Missing
        }
        object_store::Error::NotFound { .. } => RemoteFailure::Missing,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => RemoteFailure::Credentials,
        _ if text.contains("NoSuchBucket") => RemoteFailure::Missing,
        _ if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "ExpiredToken",
            "403 Forbidden",
        ]
        .iter()
        .any(|c| text.contains(c)) =>
        {
            RemoteFailure::Credentials
        }
        _ if ["EntityTooLarge", "QuotaExceeded", "StorageFull"]
            .iter()
            .any(|c| text.contains(c)) =>
        {
            RemoteFailure::Full
        }
        // Any other 4xx but timeouts and throttling is a request the store refuses:
        // sending it again will not help.
        _ if client_error(&text) => RemoteFailure::Other,
        _ => RemoteFailure::Network,
    };
    RemoteError::new(failure, text)
}

impl Target for S3Target {
    /// Through our own ListObjectsV2 rather than `object_store`'s, which fails the whole
    /// listing on one key it cannot parse (`notes//readme.txt`, a `.` or `..` segment):
    /// anyone who can write under the prefix could otherwise take the target down.
    /// Such keys are listed as they are; nothing of ours is named like them.
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>> {
        self.list_under("")
    }

    fn list_under(&self, prefix: &str) -> RemoteResult<Vec<ObjectInfo>> {
        Ok(self
            .api
            .list_objects(prefix)?
            .into_iter()
            .map(|o| ObjectInfo {
                key: o.key,
                size: o.size,
                modified: Some(o.last_modified),
            })
            .collect())
    }

    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>> {
        let path = self.path(key)?;
        let options = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.runtime.block_on(self.store.get_opts(&path, options)) {
            Ok(r) => Ok(Some(ObjectHead {
                size: r.meta.size,
                sha256: r
                    .attributes
                    .get(&Attribute::Metadata(SHA256_META.into()))
                    .map(|v| v.to_string()),
            })),
            Err(object_store::Error::NotFound { source, .. })
                if !source.to_string().contains("NoSuchBucket") =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(&e)),
        }
    }

    fn put(&self, key: &str, data: &mut dyn Read, sha256: Option<&str>) -> RemoteResult<Stored> {
        let path = self.path(key)?;
        let mut stream = UploadStream::new(data, self.bandwidth_limit);
        let mut first = vec![0u8; self.part_size];
        let n = stream
            .fill(&mut first)
            .map_err(super::transfer::read_failed)?;
        first.truncate(n);
        if n < self.part_size {
            // One request: the whole object is in memory, so it is checked before sending.
            let (size, sent) = stream.finish();
            check_sent(sha256, &sent)?;
            let opts = PutOptions {
                attributes: Self::attributes(sha256.or(Some(&sent))),
                ..Default::default()
            };
            self.runtime
                .block_on(
                    self.store
                        .put_opts(&path, PutPayload::from(Bytes::from(first)), opts),
                )
                .map_err(|e| classify(&e))?;
            return Ok(Stored { size, sha256: sent });
        }
        // Multipart: complete only if what was read hashes to what is expected.
        let mut checked = CheckedStream {
            stream,
            want: sha256,
        };
        self.put_multipart_checked(&path, key, first, &mut checked)
    }

    fn put_file(&self, key: &str, mut file: File, sha256: Option<&str>) -> RemoteResult<Stored> {
        let len = file.metadata().map_err(super::transfer::read_failed)?.len();
        if len < self.part_size as u64 {
            return self.put(key, &mut file, sha256);
        }
        let mut headers = Vec::new();
        if let Some(sha) = sha256 {
            headers.push((format!("x-amz-meta-{SHA256_META}"), sha.to_string()));
        }
        if let Some(until) = self.horizon {
            headers.extend(lock_header_pairs(until));
        }
        let upload = PartUpload {
            api: &self.api,
            runtime: &self.runtime,
            journal: &self.journal,
            part_size: self.part_size as u64,
            concurrency: self.concurrency,
            checksum: self.checksum,
            headers,
            pace: self.bandwidth_limit.map(|l| Arc::new(SharedPace::new(l))),
            retries: self.retries,
            retry_backoff: self.retry_backoff,
        };
        upload.send(key, file, sha256)
    }

    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>> {
        let path = self.path(key)?;
        let result = self
            .runtime
            .block_on(self.store.get(&path))
            .map_err(|e| classify(&e))?;
        Ok(Box::new(BlockingBody {
            stream: result.into_stream(),
            chunk: Bytes::new(),
            handle: self.runtime.handle().clone(),
        }))
    }

    /// A plain DELETE (no version id). On a versioned bucket — every Object Lock bucket
    /// is one — that only puts a delete marker on top: it succeeds even on a locked
    /// object, whose version stays (billed, and restorable by removing the marker) until
    /// its retain-until and a lifecycle rule. So a lock does not stop this call; prune
    /// asks each object's lock first ([`Target::retain_until`]) and holds what is locked
    /// rather than hide it. Where a server does refuse (403 AccessDenied: unversioned
    /// stores that enforce retention, a policy denying deletes of locked objects) and
    /// HEAD shows the object locked, the refusal is [`RemoteFailure::Locked`], not a
    /// credentials problem.
    fn delete_many(&self, keys: &[String]) -> RemoteResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<RemoteResult<Vec<_>>>()?;
        let stream = futures_util::stream::iter(paths.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self
            .runtime
            .block_on(self.store.delete_stream(stream).collect::<Vec<_>>());
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                // A key the batch could not delete (locked, say): one by one, to say why.
                Err(_) => {
                    for key in keys {
                        self.delete(key)?;
                    }
                    return Ok(keys.len().div_ceil(1000) as u64 + keys.len() as u64);
                }
            }
        }
        Ok(keys.len().div_ceil(1000) as u64)
    }

    fn delete(&self, key: &str) -> RemoteResult<()> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                let refused = classify(&e);
                if refused.failure != RemoteFailure::Credentials {
                    return Err(refused);
                }
                match self.api.head_object(key, None) {
                    Ok(Some(head)) if head.locked_at(Utc::now()) => Err(RemoteError::new(
                        RemoteFailure::Locked,
                        format!(
                            "delete {key}: locked by S3 Object Lock until {}",
                            head.retain_until.map_or_else(
                                || "its legal hold is released".to_string(),
                                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            )
                        ),
                    )),
                    _ => Err(refused),
                }
            }
        }
    }

    fn clean_interrupted(&self) -> RemoteResult<Vec<String>> {
        let mut aborted = Vec::new();
        for open in self.journal.open() {
            let path = self.path(&open.key)?;
            let id = open.upload_id.clone();
            match self
                .runtime
                .block_on(self.store.abort_multipart(&path, &id))
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(classify(&e)),
            }
            self.journal.closed(&open.upload_id);
            aborted.push(open.key);
        }
        Ok(aborted)
    }

    fn carries_checksums(&self) -> bool {
        true
    }

    fn locked_until(&self, modified: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let lock = chrono::Duration::from_std(self.object_lock?).ok()?;
        Some(modified + lock)
    }

    fn write_horizon(&self) -> Option<DateTime<Utc>> {
        self.horizon
    }

    /// From HEAD, never GetObjectRetention: HEAD carries the same date, costs the same,
    /// and some servers (moto) answer GetObjectRetention with a 500.
    fn retain_until(&self, key: &str) -> RemoteResult<Option<DateTime<Utc>>> {
        Ok(self.api.head_object(key, None)?.and_then(|head| {
            if head.legal_hold {
                Some(DateTime::<Utc>::MAX_UTC)
            } else {
                head.retain_until
            }
        }))
    }

    /// COMPLIANCE, as every write here: nobody can shorten it, not even these
    /// credentials. `put_object_retention` HEADs first and leaves a longer date alone.
    fn extend_retention(&self, key: &str, until: DateTime<Utc>) -> RemoteResult<bool> {
        let change = self
            .api
            .put_object_retention(key, None, "COMPLIANCE", until)?;
        Ok(matches!(
            change,
            super::s3_api::RetentionChange::Extended { .. }
        ))
    }
}

/// A 4xx status other than 408 (timeout) and 429 (slow down), from object_store's text.
fn client_error(text: &str) -> bool {
    let Some(at) = text.find("status code: ") else {
        return false;
    };
    let code = &text[at + "status code: ".len()..];
    code.starts_with('4') && !code.starts_with("408") && !code.starts_with("429")
}

/// The upload stream and the checksum its bytes must have.
struct CheckedStream<'a, 'b> {
    stream: UploadStream<'a>,
    want: Option<&'b str>,
}

impl S3Target {
    fn put_multipart_checked(
        &self,
        path: &ObjectPath,
        key: &str,
        first: Vec<u8>,
        checked: &mut CheckedStream<'_, '_>,
    ) -> RemoteResult<Stored> {
        let opts = PutMultipartOptions {
            attributes: Self::attributes(checked.want),
            ..Default::default()
        };
        let id = self
            .runtime
            .block_on(self.store.create_multipart_opts(path, opts))
            .map_err(|e| classify(&e))?;
        self.journal.opened(key, &id);
        let sent = self.send_parts(path, &id, first, &mut checked.stream);
        let outcome = sent.and_then(|parts| {
            let size = checked.stream.sent_bytes();
            let sha = checked.stream.sha256();
            check_sent(checked.want, &sha)?;
            self.runtime
                .block_on(self.store.complete_multipart(path, &id, parts))
                .map_err(|e| classify(&e))?;
            Ok(Stored { size, sha256: sha })
        });
        if outcome.is_err() {
            self.abort(path, &id);
        }
        self.journal.closed(&id);
        outcome
    }
}

/// A streamed GET as a blocking reader.
struct BlockingBody {
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    handle: tokio::runtime::Handle,
}

impl Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            bucket_endpoint("https://s3.example.com/", "b", false),
            "https://b.s3.example.com"
        );
        assert_eq!(
            bucket_endpoint("http://127.0.0.1:9000", "b", true),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn refused_requests_are_not_retried() {
        assert!(client_error(
            "Server returned non-2xx status code: 400 Bad Request: x"
        ));
        assert!(!client_error(
            "Server returned non-2xx status code: 429 Too Many Requests"
        ));
        assert!(!client_error(
            "Server returned non-2xx status code: 503 Slow Down"
        ));
        assert!(!client_error("connection refused"));
    }

    #[test]
    fn reads_a_shared_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c");
        std::fs::write(
            &f,
            "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        let (k, s, t) = read_credentials_file(&f).unwrap();
        assert_eq!((k.as_str(), s.as_str(), t), ("AK", "SK", None));
        std::fs::write(&f, "aws_access_key_id = AK\n").unwrap();
        assert_eq!(
            read_credentials_file(&f).unwrap_err().failure,
            RemoteFailure::Credentials
        );
    }
}
