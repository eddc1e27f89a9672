//! S3's XML answers, read with quick-xml into a small element tree and then into what
//! the client needs: a ListObjectsV2 page (`ListBucketResult`), a ListObjectVersions page
//! (`ListVersionsResult`) and an error body (`Error`). Keys come back exactly as stored:
//! percent-decoded when the answer says `<EncodingType>url</EncodingType>`, never
//! trimmed or normalized. Everything is checked: at most [`MAX_PAGE_ENTRIES`] entries a
//! page, sizes that parse as `u64`, RFC 3339 times, no DTD, a bounded depth.

use super::{ListedObject, ObjectVersion};
use chrono::{DateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;

/// S3 returns at most 1000 keys a page (`max-keys` cannot raise it).
pub(crate) const MAX_PAGE_ENTRIES: usize = 1000;
/// S3's documents are four levels deep; anything far deeper is not one of them.
const MAX_DEPTH: usize = 16;

/// One element: its local name, its text (leaf elements), its children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.text_of(name)
            .ok_or_else(|| format!("a <{}> without <{name}>", self.name))
    }
}

/// The document's root element.
fn parse(body: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the answer is not UTF-8: {e}"))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err("the XML nests too deep".into());
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element {
                    name,
                    ..Default::default()
                });
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let element = Element {
                    name,
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Ok(element),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end names match their start.
                let Some(done) = stack.pop() else {
                    return Err("an end tag without a start".into());
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                if let Some(current) = stack.last_mut() {
                    // Raw, not EOL-normalized: the text is a key's bytes.
                    let s = t.decode().map_err(|e| format!("undecodable text: {e}"))?;
                    current.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(current) = stack.last_mut() {
                    let s = t.decode().map_err(|e| format!("undecodable CDATA: {e}"))?;
                    current.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let Some(current) = stack.last_mut() else {
                    continue;
                };
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| format!("a bad character reference: {e}"))?
                {
                    current.text.push(c);
                    continue;
                }
                let name = r
                    .decode()
                    .map_err(|e| format!("undecodable reference: {e}"))?;
                current.text.push(match name.as_ref() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    other => return Err(format!("an unknown entity &{other};")),
                });
            }
            Event::DocType(_) => return Err("a DTD in an S3 answer".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => return Err("the XML ends before its root element does".into()),
        }
    }
}

/// `%XX` sequences decoded (and `+` as a space when `plus_is_space`: AWS encodes listed
/// keys form-style); the result must be UTF-8, as every S3 key is.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("a bad %-escape in `{s}`"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` decodes to bytes that are not UTF-8"))
}

/// Decodes keys (and markers) when the answer says they are URL-encoded.
struct Keys {
    url_encoded: bool,
}

impl Keys {
    fn of(root: &Element) -> Result<Keys, String> {
        match root.text_of("EncodingType") {
            None => Ok(Keys { url_encoded: false }),
            Some(t) if t.eq_ignore_ascii_case("url") => Ok(Keys { url_encoded: true }),
            Some(other) => Err(format!("an unknown EncodingType `{other}`")),
        }
    }

    fn decode(&self, raw: &str) -> Result<String, String> {
        if self.url_encoded {
            percent_decode(raw, true)
        } else {
            Ok(raw.to_string())
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not a time: {e}"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

fn root_named<'a>(root: &'a Element, name: &str) -> Result<&'a Element, String> {
    if root.name == name {
        Ok(root)
    } else {
        Err(format!("expected <{name}>, got <{}>", root.name))
    }
}

#[derive(Debug)]
pub(crate) struct ListPage {
    /// Keys decoded but still full (with the target's prefix).
    pub objects: Vec<ListedObject>,
    /// The token of the next page, when this one is truncated.
    pub next: Option<String>,
}

pub(crate) fn list_objects_page(body: &[u8]) -> Result<ListPage, String> {
    let root = parse(body)?;
    let root = root_named(&root, "ListBucketResult")?;
    let keys = Keys::of(root)?;
    let contents: Vec<&Element> = root
        .children
        .iter()
        .filter(|c| c.name == "Contents")
        .collect();
    if contents.len() > MAX_PAGE_ENTRIES {
        return Err(format!(
            "a page of {} keys (S3 sends at most {MAX_PAGE_ENTRIES})",
            contents.len()
        ));
    }
    let objects = contents
        .into_iter()
        .map(|c| {
            Ok(ListedObject {
                key: keys.decode(c.required("Key")?)?,
                size: parse_size(c.required("Size")?)?,
                last_modified: parse_time(c.required("LastModified")?)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let truncated = root.text_of("IsTruncated").map(parse_bool).transpose()?;
    let next = match truncated {
        Some(true) => Some(
            root.text_of("NextContinuationToken")
                .filter(|t| !t.is_empty())
                .ok_or("a truncated page without a NextContinuationToken")?
                .to_string(),
        ),
        _ => None,
    };
    Ok(ListPage { objects, next })
}

#[derive(Debug)]
pub(crate) struct VersionsPage {
    /// In the order the page lists them; keys still full.
    pub versions: Vec<ObjectVersion>,
    /// `(key-marker, version-id-marker)` of the next page, when this one is truncated.
    pub next: Option<(String, String)>,
}

pub(crate) fn list_versions_page(body: &[u8]) -> Result<VersionsPage, String> {
    let root = parse(body)?;
    let root = root_named(&root, "ListVersionsResult")?;
    let keys = Keys::of(root)?;
    let entries: Vec<&Element> = root
        .children
        .iter()
        .filter(|c| c.name == "Version" || c.name == "DeleteMarker")
        .collect();
    if entries.len() > MAX_PAGE_ENTRIES {
        return Err(format!(
            "a page of {} versions (S3 sends at most {MAX_PAGE_ENTRIES})",
            entries.len()
        ));
    }
    let versions = entries
        .into_iter()
        .map(|e| {
            let delete_marker = e.name == "DeleteMarker";
            Ok(ObjectVersion {
                key: keys.decode(e.required("Key")?)?,
                version_id: e.required("VersionId")?.to_string(),
                is_latest: parse_bool(e.required("IsLatest")?)?,
                last_modified: parse_time(e.required("LastModified")?)?,
                size: match delete_marker {
                    true => 0,
                    false => parse_size(e.required("Size")?)?,
                },
                delete_marker,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let truncated = root.text_of("IsTruncated").map(parse_bool).transpose()?;
    let next = match truncated {
        Some(true) => {
            let key = root
                .text_of("NextKeyMarker")
                .filter(|k| !k.is_empty())
                .ok_or("a truncated page without a NextKeyMarker")?;
            let version = root.text_of("NextVersionIdMarker").unwrap_or_default();
            Some((keys.decode(key)?, version.to_string()))
        }
        _ => None,
    };
    Ok(VersionsPage { versions, next })
}

/// An S3 error body's `<Code>` and `<Message>`, when it is one.
pub(crate) fn error_body(body: &[u8]) -> Option<(String, String)> {
    let root = parse(body).ok()?;
    if root.name != "Error" {
        return None;
    }
    let code = root.text_of("Code")?.trim().to_string();
    let message = root
        .text_of("Message")
        .unwrap_or_default()
        .trim()
        .to_string();
    Some((code, message))
}

/// The `UploadId` of an InitiateMultipartUploadResult.
pub(crate) fn upload_id(body: &[u8]) -> Result<String, String> {
    let root = parse(body)?;
    if root.name != "InitiateMultipartUploadResult" {
        return Err(format!(
            "expected an InitiateMultipartUploadResult, got <{}>",
            root.name
        ));
    }
    let id = root.required("UploadId")?.trim();
    // The id goes back in a query string: bounded, and no control characters.
    if id.is_empty() || id.len() > 1024 || id.chars().any(char::is_control) {
        return Err("the UploadId is empty, over 1 KiB or has control characters".into());
    }
    Ok(id.to_string())
}

/// `s` with `&`, `<`, `>`, `'`, `"` as entities (for the bodies we send).
pub(crate) fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A ListObjectsV2 answer in the shape the S3 API reference documents, with
    /// `encoding-type=url` keys: one with an empty segment, one with a space (AWS's `+`),
    /// one with a control character and a literal `+` (`%2B`).
    const LIST_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix>vx%2F</Prefix>
  <KeyCount>3</KeyCount>
  <MaxKeys>1000</MaxKeys>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>vx/notes//readme.txt</Key>
    <LastModified>2026-12-06T10:00:00.000Z</LastModified>
    <ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag>
    <Size>142863</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>vx/a+b/./c%2Bd</Key>
    <LastModified>2026-12-06T10:00:01Z</LastModified>
    <Size>0</Size>
  </Contents>
  <Contents>
    <Key>vx/%01%C3%A9</Key>
    <LastModified>2026-12-06T10:00:02Z</LastModified>
    <Size>18446744073709551615</Size>
  </Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;

    #[test]
    fn reads_a_list_objects_v2_page() {
        let page = list_objects_page(LIST_PAGE.as_bytes()).unwrap();
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["vx/notes//readme.txt", "vx/a b/./c+d", "vx/\u{1}é"]);
        assert_eq!(page.objects[0].size, 142863);
        assert_eq!(
            page.objects[0].last_modified,
            Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap()
        );
        assert_eq!(page.objects[2].size, u64::MAX);
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
    }

    #[test]
    fn raw_keys_stay_raw_without_an_encoding_type() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated>\
            <Contents><Key> vx/100%+x &amp; &#x41;</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Contents>\
            </ListBucketResult>";
        let page = list_objects_page(xml.as_bytes()).unwrap();
        assert_eq!(page.objects[0].key, " vx/100%+x & A");
        assert!(page.next.is_none());
    }

    #[test]
    fn refuses_what_s3_never_sends() {
        let entry = "<Contents><Key>k</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Contents>";
        let too_many = format!(
            "<ListBucketResult>{}</ListBucketResult>",
            entry.repeat(MAX_PAGE_ENTRIES + 1)
        );
        assert!(list_objects_page(too_many.as_bytes()).is_err());
        for bad in [
            "<ListBucketResult><Contents><Key>k</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>-1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>18446744073709551616</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><LastModified>yesterday</LastModified><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%zz</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%FF</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Contents></ListBucketResult>",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><ListBucketResult></ListBucketResult>",
            "<ListBucketResult><Contents>",
            "<ListVersionsResult></ListVersionsResult>",
            "<ListBucketResult><Name>&foo;</Name></ListBucketResult>",
        ] {
            assert!(list_objects_page(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
    }

    /// A ListObjectVersions answer in the documented shape: an object put twice, then
    /// deleted (a delete marker is the latest), and an unversioned `null` version.
    const VERSIONS_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix>vx/</Prefix>
  <KeyMarker></KeyMarker>
  <VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <DeleteMarker>
    <Key>vx/a.db</Key>
    <VersionId>3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY</VersionId>
    <IsLatest>true</IsLatest>
    <LastModified>2026-12-06T10:00:02.000Z</LastModified>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID></Owner>
  </DeleteMarker>
  <Version>
    <Key>vx/a.db</Key>
    <VersionId>QUpfdndhfd8438MNFDN93jdnJFkdmqnh893</VersionId>
    <IsLatest>false</IsLatest>
    <LastModified>2026-12-06T10:00:01.000Z</LastModified>
    <ETag>&quot;396fefef536d5ce46c7537ecf978a360&quot;</ETag>
    <Size>217</Size>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID></Owner>
    <StorageClass>STANDARD</StorageClass>
  </Version>
  <Version>
    <Key>vx/a.db</Key>
    <VersionId>null</VersionId>
    <IsLatest>false</IsLatest>
    <LastModified>2026-12-06T10:00:00.000Z</LastModified>
    <Size>100</Size>
  </Version>
  <NextKeyMarker>vx/a.db</NextKeyMarker>
  <NextVersionIdMarker>null</NextVersionIdMarker>
</ListVersionsResult>"#;

    #[test]
    fn reads_a_list_versions_page_with_a_delete_marker() {
        let page = list_versions_page(VERSIONS_PAGE.as_bytes()).unwrap();
        assert_eq!(page.versions.len(), 3);
        let marker = &page.versions[0];
        assert!(marker.delete_marker && marker.is_latest);
        assert_eq!(marker.size, 0);
        assert_eq!(marker.version_id, "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY");
        let older = &page.versions[1];
        assert!(!older.delete_marker && !older.is_latest);
        assert_eq!((older.key.as_str(), older.size), ("vx/a.db", 217));
        assert_eq!(
            older.last_modified,
            Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 1).unwrap()
        );
        assert_eq!(page.versions[2].version_id, "null");
        assert_eq!(page.next, Some(("vx/a.db".to_string(), "null".to_string())));
    }

    #[test]
    fn url_encoded_version_markers_are_decoded() {
        let xml = "<ListVersionsResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
            <NextKeyMarker>vx/a%20b</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>\
            </ListVersionsResult>";
        let page = list_versions_page(xml.as_bytes()).unwrap();
        assert_eq!(page.next, Some(("vx/a b".into(), "v1".into())));
    }

    #[test]
    fn reads_error_bodies() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>\
            <Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            error_body(body.as_bytes()),
            Some((
                "NoSuchBucket".into(),
                "The specified bucket does not exist".into()
            ))
        );
        assert_eq!(error_body(b"<html>502</html>"), None);
        assert_eq!(error_body(b"not xml"), None);
    }

    #[test]
    fn escapes_what_we_send() {
        assert_eq!(escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }
}
