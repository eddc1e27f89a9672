//! AWS Signature Version 4 for S3, by hand: URI encoding as AWS defines it, the canonical
//! request, the string to sign, the derived signing key and the `Authorization` header.
//! Pure functions of their inputs (the time is passed in), so AWS's published examples
//! are unit tests. S3's own rules apply: the path is encoded once, per segment, and never
//! normalized (`a//b`, `a/./b` are distinct keys).

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// An access key as SigV4 uses it.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    /// A session token (temporary credentials): sent and signed as `x-amz-security-token`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// `s` with every byte but the unreserved `A-Za-z0-9-_.~` as `%XX` (upper-case hex); `/`
/// kept too when `keep_slash` (a path), so each segment is encoded on its own.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical query string: each name and value URI-encoded, sorted by name then value,
/// `name=value` joined by `&` (a flag such as `versions` is `versions=`).
pub(crate) fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// One request as SigV4 sees it. `path` is already URI-encoded (what goes on the wire),
/// `query` the canonical query string, `headers` the headers to sign (any case; values as
/// sent), `payload_sha256` the hex SHA-256 of the body (what `x-amz-content-sha256` says).
pub(crate) struct Canonical<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

impl Canonical<'_> {
    /// Lower-case names, trimmed values with inner runs of spaces folded, sorted by name.
    fn sorted_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
                (k.trim().to_ascii_lowercase(), value)
            })
            .collect();
        headers.sort();
        headers
    }

    /// `host;x-amz-content-sha256;x-amz-date`…
    pub fn signed_headers(&self) -> String {
        let names: Vec<String> = self.sorted_headers().into_iter().map(|(k, _)| k).collect();
        names.join(";")
    }

    pub fn request(&self) -> String {
        let headers: String = self
            .sorted_headers()
            .iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect();
        format!(
            "{}\n{}\n{}\n{headers}\n{}\n{}",
            self.method,
            self.path,
            self.query,
            self.signed_headers(),
            self.payload_sha256
        )
    }
}

/// `20130524T000000Z`, as `x-amz-date` carries it.
pub(crate) fn amz_date(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// What SigV4 signs for a region and service (`s3`) at a time.
pub(crate) struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: DateTime<Utc>,
}

impl Scope<'_> {
    fn date(&self) -> String {
        self.time.format("%Y%m%d").to_string()
    }

    /// `20130524/us-east-1/s3/aws4_request`
    fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }

    pub fn string_to_sign(&self, canonical: &Canonical<'_>) -> String {
        format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            amz_date(self.time),
            self.credential_scope(),
            hex::encode(Sha256::digest(canonical.request().as_bytes()))
        )
    }

    /// The hex signature of `canonical` with `secret_key`.
    pub fn signature(&self, secret_key: &str, canonical: &Canonical<'_>) -> String {
        let k_date = hmac(
            format!("AWS4{secret_key}").as_bytes(),
            self.date().as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        hex::encode(hmac(&k_signing, self.string_to_sign(canonical).as_bytes()))
    }

    /// The `Authorization` header's value.
    pub fn authorization(&self, credentials: &Credentials, canonical: &Canonical<'_>) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={},Signature={}",
            credentials.access_key,
            self.credential_scope(),
            canonical.signed_headers(),
            self.signature(&credentials.secret_key, canonical)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The SHA-256 of an empty payload, hex.
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// AWS S3 API reference, "Signature Calculations for the Authorization Header:
    /// Transferring Payload in a Single Chunk (AWS Signature Version 4)", Example: GET
    /// Object (the first 10 bytes of test.txt in examplebucket).
    #[test]
    fn signs_the_aws_get_object_example() {
        let credentials = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        };
        let headers = owned(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let canonical = Canonical {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            canonical.request(),
            "GET\n/test.txt\n\n\
             host:examplebucket.s3.amazonaws.com\n\
             range:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\n\
             host;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let scope = Scope {
            region: "us-east-1",
            service: "s3",
            time: Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap(),
        };
        assert_eq!(
            scope.string_to_sign(&canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            scope.authorization(&credentials, &canonical),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The AWS SigV4 test suite's `get-vanilla-query-order-key-case`: query parameters
    /// sorted by name whatever order they came in.
    #[test]
    fn signs_the_test_suite_query_order_example() {
        let headers = owned(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let query = canonical_query(&owned(&[("Param2", "value2"), ("Param1", "value1")]));
        assert_eq!(query, "Param1=value1&Param2=value2");
        let canonical = Canonical {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let scope = Scope {
            region: "us-east-1",
            service: "service",
            time: Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap(),
        };
        assert_eq!(
            scope.signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &canonical),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn encodes_as_aws_specifies() {
        assert_eq!(uri_encode("AZaz09-_.~", false), "AZaz09-_.~");
        assert_eq!(uri_encode("a b+c=d&e/f", false), "a%20b%2Bc%3Dd%26e%2Ff");
        assert_eq!(uri_encode("a b+c=d&e/f", true), "a%20b%2Bc%3Dd%26e/f");
        assert_eq!(uri_encode("é*", false), "%C3%A9%2A");
        assert_eq!(
            uri_encode("vx/notes//readme.txt", true),
            "vx/notes//readme.txt"
        );
        assert_eq!(uri_encode("%41", false), "%2541");
    }

    #[test]
    fn the_canonical_query_encodes_then_sorts() {
        let query = canonical_query(&owned(&[
            ("prefix", "vx/a b"),
            ("list-type", "2"),
            ("continuation-token", "1/2+3=="),
            ("versions", ""),
        ]));
        assert_eq!(
            query,
            "continuation-token=1%2F2%2B3%3D%3D&list-type=2&prefix=vx%2Fa%20b&versions="
        );
        // Same name: by value.
        let query = canonical_query(&owned(&[("a", "2"), ("a", "1")]));
        assert_eq!(query, "a=1&a=2");
    }

    #[test]
    fn header_values_are_trimmed_and_folded() {
        let headers = owned(&[("X-Amz-Meta-A", "  one   two ")]);
        let canonical = Canonical {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert!(
            canonical.request().contains("\nx-amz-meta-a:one two\n"),
            "{}",
            canonical.request()
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials {
            access_key: "AK".into(),
            secret_key: "SECRET".into(),
            token: Some("TOKEN".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("TOKEN"),
            "{shown}"
        );
    }
}
