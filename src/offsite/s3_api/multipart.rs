//! S3's multipart upload as four calls (CreateMultipartUpload, UploadPart, Complete,
//! Abort) whose part bodies stream from a reader instead of sitting in memory: what lets a
//! file go up `concurrency` parts at a time in a few MiB ([`crate::offsite::s3_parts`]).
//! `object_store` takes a part only as bytes in memory, and a 16 MiB part × 4 in flight
//! is 64 MiB before anything else.
//!
//! Every part is signed with its SHA-256 (`x-amz-content-sha256`), so S3 refuses a part
//! whose bytes are not the ones hashed; with `checksum` the same hash also goes as
//! `x-amz-checksum-sha256` (stored with the part, and required on Object Lock buckets),
//! and the upload is created with that algorithm so CompleteMultipartUpload lists it.

use base64::Engine;
use reqwest::Method;

use super::S3Api;
use super::request::{Call, Refusal, other};
use super::xml;
use crate::error::RemoteFailure;
use crate::offsite::target::{RemoteError, RemoteResult};

/// The most parts one upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// One part as S3 answered it: what CompleteMultipartUpload must list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based.
    pub number: u32,
    /// As S3 sent it, quotes included.
    pub etag: String,
    /// Base64 SHA-256 when the upload carries checksums.
    pub checksum_sha256: Option<String>,
}

/// One part's body: `len` bytes streamed (see [`PartBody::stream`]), hashing to
/// `sha256`.
pub struct PartBody {
    pub body: reqwest::Body,
    pub len: u64,
    pub sha256: [u8; 32],
}

impl S3Api {
    /// Start an upload of `key`; `headers` (lower-case names) are the object's own: our
    /// `x-amz-meta-sha256`, Object Lock's mode and date. Returns the upload id.
    pub fn create_multipart(
        &self,
        key: &str,
        headers: &[(String, String)],
        checksum: bool,
    ) -> RemoteResult<String> {
        let full = self.full_key(key)?;
        let what = format!("start the upload of {full}");
        let mut call = Call::new(Method::POST, Some(&full)).query("uploads", "");
        for (name, value) in headers {
            call = call.header(name, value.clone());
        }
        if checksum {
            call = call.header("x-amz-checksum-algorithm", "SHA256");
        }
        let body = self.conn.xml_call(call, &what)?;
        xml::upload_id(&body).map_err(|e| other(format!("{what}: {e}")))
    }

    /// Send part `number` (1-based) of upload `id`, its body streamed: on the caller's
    /// tokio runtime (reqwest's blocking client would read the body 8 KiB at a time).
    pub async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: u32,
        body: PartBody,
        checksum: bool,
    ) -> RemoteResult<UploadedPart> {
        let full = self.full_key(key)?;
        let what = format!("upload part {number} of {full}");
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(other(format!(
                "{what}: parts are numbered 1 to {MAX_PARTS}"
            )));
        }
        let checksum_sha256 =
            checksum.then(|| base64::engine::general_purpose::STANDARD.encode(body.sha256));
        let mut call = Call::new(Method::PUT, Some(&full))
            .query("partNumber", number.to_string())
            .query("uploadId", id);
        if let Some(sum) = &checksum_sha256 {
            call = call.header("x-amz-checksum-sha256", sum.clone());
        }
        call.streamed_sha256 = Some(hex::encode(body.sha256));
        let headers = self
            .conn
            .send_stream(call, body.body, body.len, &what)
            .await?;
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .filter(|e| !e.is_empty() && e.len() <= 256 && !e.chars().any(char::is_control))
            .ok_or_else(|| other(format!("{what}: the answer has no usable ETag")))?;
        Ok(UploadedPart {
            number,
            etag,
            checksum_sha256,
        })
    }

    /// Finish upload `id` from `parts` (in order). S3 may answer 200 and still report an
    /// error in the body; that is a failure here.
    pub fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: &[UploadedPart],
    ) -> RemoteResult<()> {
        let full = self.full_key(key)?;
        let what = format!("complete the upload of {full}");
        let mut body = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for p in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
                p.number,
                xml::escape(&p.etag)
            ));
            if let Some(sum) = &p.checksum_sha256 {
                body.push_str(&format!(
                    "<ChecksumSHA256>{}</ChecksumSHA256>",
                    xml::escape(sum)
                ));
            }
            body.push_str("</Part>");
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut call = Call::new(Method::POST, Some(&full)).query("uploadId", id);
        call.body = body.into_bytes();
        let answer = self.conn.xml_call(call, &what)?;
        if let Some((code, message)) = xml::error_body(&answer) {
            let failure = match code.as_str() {
                "InternalError" | "SlowDown" | "ServiceUnavailable" => RemoteFailure::Network,
                _ => RemoteFailure::Other,
            };
            return Err(RemoteError::new(
                failure,
                format!("{what}: {code}: {message}"),
            ));
        }
        Ok(())
    }

    /// Drop upload `id` and its parts; one already gone is not an error.
    pub fn abort_multipart(&self, key: &str, id: &str) -> RemoteResult<()> {
        let full = self.full_key(key)?;
        let what = format!("abort the upload of {full}");
        let response = self.conn.send(
            Call::new(Method::DELETE, Some(&full)).query("uploadId", id),
            &what,
        )?;
        if response.status().is_success() {
            return Ok(());
        }
        let refusal = Refusal::read(response);
        if refusal.code == "NoSuchUpload" {
            return Ok(());
        }
        Err(refusal.into_error(&what))
    }
}
