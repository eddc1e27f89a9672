//! One signed request and its answer, below the S3 operations of [`super`]: the
//! connection to a bucket (endpoint, path-style or virtual-hosted, credentials, timeouts),
//! the request's path and query exactly as sent and signed, transport failures and S3's
//! refusals classified as [`RemoteFailure`]s, and bounded reads of what comes back.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};

use super::{sigv4, xml};
use crate::config::OffsiteTarget;
use crate::error::RemoteFailure;
use crate::offsite::target::{RemoteError, RemoteResult};

/// The largest XML answer read (a page of 1000 keys of 1 KiB each is about 1.5 MiB).
const MAX_XML_BODY: u64 = 16 << 20;
/// The largest error body read (S3's are a few hundred bytes).
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Where requests go and who signs them.
pub(super) struct Connection {
    http: Client,
    /// The same, async: for bodies streamed on a runtime ([`Connection::send_stream`]).
    stream_http: reqwest::Client,
    /// `scheme://host[:port]`.
    origin: String,
    /// The `Host` header (signed): `host[:port]`.
    host: String,
    /// The encoded path before a key: the endpoint's own path, then `/BUCKET` when
    /// path-style; empty for a virtual-hosted bucket at the root.
    root: String,
    region: String,
    credentials: sigv4::Credentials,
}

/// One request before signing.
pub(super) struct Call<'a> {
    method: Method,
    /// The full key (with the target's prefix); `None`: the bucket itself.
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Send (and sign) `Content-MD5` of the body.
    pub content_md5: bool,
    /// More headers to send and sign (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body's SHA-256 (lower-case hex) when it is streamed ([`Connection::send_stream`])
    /// rather than `body`: SigV4 signs it before the first byte goes out.
    pub streamed_sha256: Option<String>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, key: Option<&'a str>) -> Self {
        Call {
            method,
            key,
            query: Vec::new(),
            body: Vec::new(),
            content_md5: false,
            headers: Vec::new(),
            streamed_sha256: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn version(self, version_id: Option<&str>) -> Self {
        match version_id {
            Some(v) => self.query("versionId", v),
            None => self,
        }
    }
}

/// A non-success answer: its status and S3's error code and message (empty when the
/// answer had no error body, as HEAD's never has).
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub code: String,
    message: String,
}

impl Refusal {
    pub fn read(response: Response) -> Refusal {
        let status = response.status();
        let body = read_bounded(response, MAX_ERROR_BODY).unwrap_or_default();
        Refusal::from_body(status, &body)
    }

    pub fn from_body(status: StatusCode, body: &[u8]) -> Refusal {
        let (code, message) = xml::error_body(body).unwrap_or_default();
        Refusal {
            status,
            code,
            message,
        }
    }

    pub fn failure(&self) -> RemoteFailure {
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

    pub fn into_error(self, what: &str) -> RemoteError {
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

pub(super) fn other(detail: impl Into<String>) -> RemoteError {
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

pub(super) fn header<'r>(
    response: &'r Response,
    name: &str,
) -> Option<&'r reqwest::header::HeaderValue> {
    response.headers().get(name)
}

pub(super) fn content_length(response: &Response) -> Option<u64> {
    header(response, "content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The object's body, exactly `remaining` bytes: more is never read, fewer is an error.
pub(super) struct BoundedBody<R> {
    pub inner: R,
    pub remaining: u64,
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

impl Connection {
    /// The connection to `bucket` of `target`: its endpoint (AWS's for the region when
    /// none is given), path-style or virtual-hosted, and `timeout` for connecting and for
    /// each wait on the server.
    pub fn open(
        target: &OffsiteTarget,
        bucket: &str,
        credentials: sigv4::Credentials,
    ) -> RemoteResult<Connection> {
        let region = target.region.clone().unwrap_or_else(|| "us-east-1".into());
        let endpoint = target
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = crate::offsite::s3::bucket_endpoint(&endpoint, bucket, target.path_style);
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
        // The blocking client and the async one (streamed bodies), set up alike.
        macro_rules! client {
            ($builder:expr) => {
                $builder
                    .timeout(target.timeout)
                    .connect_timeout(Duration::from_secs(10).min(target.timeout))
                    // A redirect (another region) would carry a signature for another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("vertex-backup/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| other(format!("start the S3 client: {e}")))?
            };
        }
        let http = client!(Client::builder());
        let stream_http = client!(reqwest::Client::builder());
        Ok(Connection {
            http,
            stream_http,
            origin: format!("{}://{host}", url.scheme()),
            host,
            root,
            region,
            credentials,
        })
    }

    /// The request's path (encoded, as sent and signed) and its query (as sent, and
    /// canonical for the signature).
    pub fn target_of(&self, call: &Call<'_>) -> (String, String, String) {
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

    /// Every header SigV4 covers for `call` at `now` (`host`, `x-amz-content-sha256`,
    /// `x-amz-date`, with a session token `x-amz-security-token`, with `content_md5`
    /// `content-md5`, and the call's own `headers`), then `authorization` signing them.
    fn signed_headers(
        &self,
        call: &Call<'_>,
        path: &str,
        canonical_query: &str,
        now: chrono::DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let payload_sha256 = match &call.streamed_sha256 {
            Some(sha) => sha.clone(),
            None => hex::encode(Sha256::digest(&call.body)),
        };
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
        headers.extend(call.headers.iter().cloned());
        let canonical = sigv4::Canonical {
            method: call.method.as_str(),
            path,
            query: canonical_query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        let scope = sigv4::Scope {
            region: &self.region,
            service: "s3",
            time: now,
        };
        let authorization = scope.authorization(&self.credentials, &canonical);
        headers.push(("authorization".to_string(), authorization));
        headers
    }

    /// The URL `call` goes to and its signed headers.
    fn prepare(&self, call: &Call<'_>, what: &str) -> RemoteResult<(Url, Vec<(String, String)>)> {
        let (path, canonical_query, wire_query) = self.target_of(call);
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
        let headers = self.signed_headers(call, &path, &canonical_query, Utc::now());
        Ok((url, headers))
    }

    /// Sign and send `call`; any HTTP answer is returned (the caller reads its status).
    pub fn send(&self, call: Call<'_>, what: &str) -> RemoteResult<Response> {
        let (url, headers) = self.prepare(&call, what)?;
        let mut request = self.http.request(call.method, url);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if !call.body.is_empty() {
            request = request.body(call.body);
        }
        request.send().map_err(|e| transport_error(e, what))
    }

    /// Sign `call` (its `streamed_sha256` set) and send it with `body` of `len` bytes
    /// streamed, on the caller's tokio runtime; a 2xx answer's headers are returned, any
    /// other answer is the refusal it carries.
    pub async fn send_stream(
        &self,
        call: Call<'_>,
        body: reqwest::Body,
        len: u64,
        what: &str,
    ) -> RemoteResult<reqwest::header::HeaderMap> {
        if call.streamed_sha256.is_none() {
            return Err(other(format!("{what}: a streamed body needs its SHA-256")));
        }
        let (url, headers) = self.prepare(&call, what)?;
        let mut request = self.stream_http.request(call.method, url);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(e, what))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.headers().clone());
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_ERROR_BODY {
                break;
            }
        }
        Err(Refusal::from_body(status, &body).into_error(what))
    }

    /// Send `call`, expect a 2xx XML answer and return its body.
    pub fn xml_call(&self, call: Call<'_>, what: &str) -> RemoteResult<Vec<u8>> {
        let response = self.send(call, what)?;
        if !response.status().is_success() {
            return Err(Refusal::read(response).into_error(what));
        }
        read_bounded(response, MAX_XML_BODY)
    }
}

#[cfg(test)]
impl Connection {
    /// A connection to `http://127.0.0.1:9000{root}` that is never used to send.
    pub fn local(root: &str) -> Connection {
        Connection {
            http: Client::new(),
            stream_http: reqwest::Client::new(),
            origin: "http://127.0.0.1:9000".into(),
            host: "127.0.0.1:9000".into(),
            root: root.into(),
            region: "us-east-1".into(),
            credentials: sigv4::Credentials {
                access_key: "AK".into(),
                secret_key: "SK".into(),
                token: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_the_path_per_segment_and_sort_the_query() {
        let a = Connection::local("/bucket");
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
        let (path, _, _) = Connection::local("").target_of(&Call::new(Method::GET, None));
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

    #[test]
    fn signs_the_payload_the_token_and_content_md5() {
        let mut conn = Connection::local("/bucket");
        conn.credentials.token = Some("TOKEN".into());
        let mut call = Call::new(Method::PUT, Some("vx/a")).query("retention", "");
        call.body = b"<Retention/>".to_vec();
        call.content_md5 = true;
        let (path, canonical, _) = conn.target_of(&call);
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 6, 10, 0, 0).unwrap();
        let headers = conn.signed_headers(&call, &path, &canonical, now);
        let get = |name: &str| {
            let found = headers.iter().find(|(k, _)| k == name);
            found
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(get("host"), "127.0.0.1:9000");
        assert_eq!(get("x-amz-date"), "20261206T100000Z");
        assert_eq!(
            get("x-amz-content-sha256"),
            hex::encode(Sha256::digest(b"<Retention/>"))
        );
        let md5 =
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"<Retention/>"));
        assert_eq!(get("content-md5"), md5);
        assert_eq!(get("x-amz-security-token"), "TOKEN");
        let authorization = get("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AK/20261206/us-east-1/s3/aws4_request,\
                 SignedHeaders=content-md5;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,\
                 Signature="
            ),
            "{authorization}"
        );
        // Without a token or Content-MD5, the three headers AWS requires.
        let conn = Connection::local("");
        let call = Call::new(Method::GET, None).query("list-type", "2");
        let (path, canonical, _) = conn.target_of(&call);
        let headers = conn.signed_headers(&call, &path, &canonical, now);
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-amz-content-sha256",
                "x-amz-date",
                "authorization"
            ]
        );
        assert!(
            headers[3]
                .1
                .contains(",SignedHeaders=host;x-amz-content-sha256;x-amz-date,"),
            "{headers:?}"
        );
    }
}
