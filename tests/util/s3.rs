//! The S3 API servers the offsite tests talk to, and a plain client to look behind the
//! code under test: `S3Server` (the shared moto server `scripts/test.sh` starts, found
//! through `VERTEX_TEST_S3_ENDPOINT`; create buckets, list, read, replace, delete objects,
//! plant and list multipart uploads) and `PrivateS3` (a moto server of the test's own, to
//! stop and restart).
//!
//! moto does not check signatures, but it treats a request without an `Authorization`
//! header as anonymous and refuses object reads to it (403): every request here carries a
//! fixed, unverified SigV4-shaped header.

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};

use vertex_backup::error_chain;

use super::{poll_for, require};

/// What the shared-server tests need, as `require` names it.
const SHARED_SERVER: &str = "an S3 server (VERTEX_TEST_S3_ENDPOINT, started by scripts/test.sh)";
/// What the private-server tests need.
const MOTO_SERVER: &str = "moto_server (VERTEX_TEST_MOTO_SERVER, set by scripts/test.sh)";
/// moto answers in well under a second once up; its start (Python imports) takes 1–3 s.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Far above any request these helpers make: a hang becomes a failure, not a stuck run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Any credential will do (moto does not verify it); see the module comment.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=vertex-test/20260101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// The shared S3 server, or `None` when there is none (the test then returns). Under CI a
/// missing or unreachable server fails the test (`require`): `.ci/run` starts one.
pub fn s3_server() -> Option<S3Server> {
    match S3Server::probe_env() {
        Ok(server) => Some(server),
        Err(why) => {
            require(SHARED_SERVER, Err(why));
            None
        }
    }
}

/// A client for one S3 API endpoint (path-style: `ENDPOINT/bucket/key`).
#[derive(Clone)]
pub struct S3Server {
    endpoint: String,
    http: Client,
}

impl S3Server {
    /// The server `VERTEX_TEST_S3_ENDPOINT` names, if it is set and answers.
    pub fn from_env() -> Option<S3Server> {
        S3Server::probe_env().ok()
    }

    /// The server at `endpoint` (e.g. a `FaultProxy` in front of one), without a check.
    pub fn at(endpoint: &str) -> S3Server {
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the S3 test client");
        S3Server {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http,
        }
    }

    fn probe_env() -> Result<S3Server, String> {
        let endpoint = std::env::var("VERTEX_TEST_S3_ENDPOINT")
            .map_err(|_| "VERTEX_TEST_S3_ENDPOINT is not set".to_string())?;
        let server = S3Server::at(&endpoint);
        server.answers()?;
        Ok(server)
    }

    /// `Ok` when a request gets any HTTP answer (ListBuckets), else the transport error.
    pub fn answers(&self) -> Result<(), String> {
        self.request(Method::GET, "", "", &[])
            .send()
            .map(|_| ())
            .map_err(|e| format!("{} does not answer: {}", self.endpoint, error_chain(&e)))
    }

    /// `http://HOST:PORT`, as the code under test is configured with.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint's socket address (for a `FaultProxy` in front of it).
    pub fn socket_addr(&self) -> SocketAddr {
        let url = Url::parse(&self.endpoint).expect("the S3 endpoint is a URL");
        let host = url.host_str().expect("the S3 endpoint has a host");
        let port = url
            .port_or_known_default()
            .expect("the S3 endpoint has a port");
        (host, port)
            .to_socket_addrs()
            .expect("resolve the S3 endpoint")
            .next()
            .expect("the S3 endpoint resolves to an address")
    }

    /// Create a bucket with a name no other test (or earlier run against a long-lived
    /// server) uses, and return the name.
    pub fn new_bucket(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let bucket = format!("t-{}-{n}-{nanos}", std::process::id());
        let response = self.send(self.request(Method::PUT, &bucket, "", &[]));
        expect_success(response, &format!("create bucket {bucket}"));
        bucket
    }

    /// A new bucket with S3 Object Lock enabled (as `new_bucket`, plus the header).
    pub fn new_locked_bucket(&self) -> String {
        let bucket = format!("l{}", &self.new_bucket()[1..]);
        let request = self
            .request(Method::PUT, &bucket, "", &[])
            .header("x-amz-bucket-object-lock-enabled", "true");
        expect_success(
            self.send(request),
            &format!("create locked bucket {bucket}"),
        );
        bucket
    }

    /// Every object under `prefix` as (key, size), in key order (ListObjectsV2, all pages).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let what = format!("list {bucket}/{prefix}");
            let body = expect_success(
                self.send(self.request(Method::GET, bucket, "", &query)),
                &what,
            );
            for entry in xml_elements(&body, "Contents") {
                let key = xml_text(entry, "Key").unwrap_or_default();
                let size = xml_text(entry, "Size").and_then(|s| s.parse().ok());
                let size = size.unwrap_or_else(|| panic!("{what}: no size for {key}: {entry}"));
                objects.push((key, size));
            }
            token = xml_text(&body, "NextContinuationToken");
            if xml_text(&body, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return objects;
            }
        }
    }

    /// The object's bytes, or `None` when there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.try_get(bucket, key)
            .unwrap_or_else(|e| panic!("GET {bucket}/{key}: {e}"))
    }

    /// `get`, with a transport error returned instead of failing the test.
    pub fn try_get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let response = self
            .request(Method::GET, bucket, key, &[])
            .send()
            .map_err(|e| error_chain(&e))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body = response.bytes().map_err(|e| error_chain(&e))?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(Some(body.to_vec()))
    }

    /// Store `bytes` as the object (a new one, or replacing it behind the code's back).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        self.try_put(bucket, key, bytes.to_vec())
            .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e}"));
    }

    /// `put` with user metadata (`x-amz-meta-NAME: VALUE`), e.g. a forged `sha256` so that
    /// only reading the bytes back finds the replacement.
    pub fn put_with_meta(&self, bucket: &str, key: &str, bytes: &[u8], meta: &[(&str, &str)]) {
        self.put_request(bucket, key, bytes.to_vec(), meta)
            .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e}"));
    }

    /// `put`, with a transport error or refusal returned instead of failing the test.
    pub fn try_put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.put_request(bucket, key, bytes, &[])
    }

    fn put_request(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        meta: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut request = self
            .request(Method::PUT, bucket, key, &[])
            // Without it moto reads a form-encoded body as a form and stores nothing.
            .header("content-type", "application/octet-stream");
        for (name, value) in meta {
            request = request.header(format!("x-amz-meta-{name}"), *value);
        }
        let response = request.body(bytes).send().map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().unwrap_or_default();
        Err(format!("{status}: {body}"))
    }

    /// Delete the object (no error when it is not there, as S3 does).
    pub fn delete(&self, bucket: &str, key: &str) {
        let response = self.send(self.request(Method::DELETE, bucket, key, &[]));
        expect_success(response, &format!("DELETE {bucket}/{key}"));
    }

    /// The object's response headers (lower-case names: `content-length`, `etag`,
    /// `x-amz-meta-sha256`…), or `None` when there is no such object.
    pub fn head(&self, bucket: &str, key: &str) -> Option<HashMap<String, String>> {
        let response = self.send(self.request(Method::HEAD, bucket, key, &[]));
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let status = response.status();
        assert!(status.is_success(), "HEAD {bucket}/{key}: {status}");
        let headers = response.headers().iter();
        let headers = headers.map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        });
        Some(headers.collect())
    }

    /// The bucket's unfinished multipart uploads as (key, upload id).
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<(String, String)> {
        let request = self.request(Method::GET, bucket, "", &[("uploads", "")]);
        let body = expect_success(self.send(request), &format!("list uploads of {bucket}"));
        let uploads = xml_elements(&body, "Upload").into_iter();
        uploads
            .map(|u| {
                let key = xml_text(u, "Key").unwrap_or_default();
                (key, xml_text(u, "UploadId").unwrap_or_default())
            })
            .collect()
    }

    /// Start a multipart upload and leave it dangling (as a crashed uploader would);
    /// returns its upload id.
    pub fn start_multipart(&self, bucket: &str, key: &str) -> String {
        let request = self.request(Method::POST, bucket, key, &[("uploads", "")]);
        let what = format!("start a multipart upload of {bucket}/{key}");
        let body = expect_success(self.send(request), &what);
        xml_text(&body, "UploadId").unwrap_or_else(|| panic!("{what}: no UploadId in {body}"))
    }

    /// A request for `bucket/key` (either may be empty) with `query`; the key's `/`s stay
    /// separators and everything else is percent-encoded.
    fn request(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
    ) -> RequestBuilder {
        let mut url = Url::parse(&self.endpoint).expect("the S3 endpoint is a URL");
        {
            let mut path = url.path_segments_mut().expect("the S3 endpoint has a path");
            path.clear();
            if !bucket.is_empty() {
                path.push(bucket);
            }
            if !key.is_empty() {
                path.extend(key.split('/'));
            }
        }
        // `uploads` is a bare flag (`?uploads`): S3 has no `=` for it.
        let query: Vec<String> = query
            .iter()
            .map(
                |(name, value)| match value.is_empty() && *name == "uploads" {
                    true => name.to_string(),
                    false => format!("{name}={}", percent_encode(value)),
                },
            )
            .collect();
        if !query.is_empty() {
            url.set_query(Some(&query.join("&")));
        }
        self.http
            .request(method, url)
            .header("authorization", DUMMY_AUTHORIZATION)
    }

    fn send(&self, request: RequestBuilder) -> Response {
        let request = request.build().expect("build an S3 request");
        let what = format!("{} {}", request.method(), request.url());
        self.http
            .execute(request)
            .unwrap_or_else(|e| panic!("{what}: {}", error_chain(&e)))
    }
}

/// The body of a 2xx answer; any other status fails the test naming `what`.
fn expect_success(response: Response, what: &str) -> String {
    let status = response.status();
    let body = response
        .text()
        .unwrap_or_else(|e| panic!("{what}: read the answer: {e}"));
    assert!(status.is_success(), "{what}: {status}: {body}");
    body
}

/// RFC 3986 unreserved characters stay, every other byte becomes `%XX` (what S3 expects
/// in query values such as `prefix`).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Minimal XML: S3's answers are flat enough that "the text between <Tag> and </Tag>" is
// all a test needs; no XML crate for that.

/// The raw inner text of every `<tag>…</tag>` (not nested in itself), in order.
fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The first `<tag>`'s text with XML entities decoded (`<tag/>` counts as empty).
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    if let Some(inner) = xml_elements(xml, tag).first() {
        return Some(xml_unescape(inner));
    }
    xml.contains(&format!("<{tag}/>")).then(String::new)
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// A private server

/// A moto server of the test's own, on an OS-chosen loopback port, killed on drop: for
/// the tests that take the server down (`stop`) and bring it back (`restart`, same port).
///
/// moto keeps everything in memory: a restart comes back EMPTY (no buckets, no objects,
/// no uploads). To take the network away without losing data, put a `FaultProxy` in
/// front of the server instead.
pub struct PrivateS3 {
    program: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    s3: S3Server,
    /// Extra environment for moto (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`: check credentials).
    env: Vec<(String, String)>,
}

impl PrivateS3 {
    /// Start a server and wait until it answers; `None` (skip, or fail under CI) when
    /// `VERTEX_TEST_MOTO_SERVER` does not name a moto_server.
    pub fn start() -> Option<PrivateS3> {
        PrivateS3::start_with_env(&[])
    }

    /// `start` with extra environment variables for moto.
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<PrivateS3> {
        let program = match std::env::var_os("VERTEX_TEST_MOTO_SERVER") {
            Some(p) if PathBuf::from(&p).is_file() => PathBuf::from(p),
            Some(p) => {
                let why = format!("{} does not exist", PathBuf::from(p).display());
                require(MOTO_SERVER, Err(why));
                return None;
            }
            None => {
                require(
                    MOTO_SERVER,
                    Err("VERTEX_TEST_MOTO_SERVER is not set".into()),
                );
                return None;
            }
        };
        // The port is bound and released here, then moto binds it: another process could
        // take it in between (moto then exits), so a start that fails is tried on a new port.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let addr = free_loopback_addr();
            let mut server = PrivateS3 {
                program: program.clone(),
                addr,
                child: None,
                log: tempfile::NamedTempFile::new().expect("moto log file"),
                s3: S3Server::at(&format!("http://{addr}")),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            match server.spawn_and_wait() {
                Ok(()) => return Some(server),
                Err(why) => last_failure = why,
            }
        }
        panic!("moto_server did not start on 127.0.0.1 in 3 attempts; the last: {last_failure}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        self.s3.endpoint()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client for this server.
    pub fn s3(&self) -> &S3Server {
        &self.s3
    }

    /// Kill the server and wait for it: its port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop (if running) and start again on the same port; waits until it answers. The
    /// data is gone (see the type's comment).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            panic!("moto_server did not restart on {}: {why}", self.addr);
        }
    }

    /// Start moto on `self.addr` and poll until it answers or exits.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stdout = File::options()
            .append(true)
            .open(self.log.path())
            .expect("open the moto log");
        let stderr = stdout.try_clone().expect("clone the moto log");
        let child = Command::new(&self.program)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        // Until it answers or exits; a start that hangs fails the test at the deadline
        // (and the drop of `self` kills it).
        let outcome = poll_for(START_TIMEOUT, "moto_server to answer", || {
            if self.s3.answers().is_ok() {
                return Some(Ok(()));
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            exited.map(|status| Err(format!("moto_server exited ({status})")))
        });
        if let Err(why) = outcome {
            self.stop();
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            return Err(format!("{why}; its log: {log}"));
        }
        Ok(())
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address nothing listens on right now (the OS picks the port).
fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// True when a TCP connection to `addr` is refused (nothing listens there).
pub fn connection_refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}
