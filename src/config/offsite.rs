//! The `[[offsite]]` tables: where copies of the backups go off this machine (docs/design.md §6) —
//! an S3-compatible bucket (`s3://BUCKET/PREFIX`), a backup server over SSH
//! (`sftp://USER@HOST[:PORT]/PATH`) or a mounted path — which types each
//! one receives, how fast and in what pieces, how long they are kept there, and how much
//! of the target the scheduled `offsite_verify` reads back per run. Keys, defaults and
//! checks live here; the targets themselves are in `src/offsite/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::sftp::SftpLocation;
use super::{ByteSize, Config, HumanDuration, RetentionSection};
use crate::error::Error;
use crate::kind::BackupKind;
use crate::units;

/// The smallest multipart part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// One `[[offsite]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteSection {
    /// How the operator names it: `--target NAME`, `NAME:backup`, messages, metric labels.
    pub name: String,
    /// `s3://BUCKET/PREFIX`, `sftp://USER@HOST[:PORT]/PATH` or a path (absolute, or
    /// relative to the config file).
    pub url: String,
    /// The S3 API's base URL for stores other than AWS (MinIO, B2, R2, Ceph, Wasabi…).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and Ceph usually need.
    #[serde(default)]
    pub path_style: bool,
    /// A file with `aws_access_key_id`, `aws_secret_access_key` (and optionally
    /// `aws_session_token`) lines, as AWS's shared credentials file; otherwise the
    /// standard `AWS_*` environment variables are used.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// SFTP: the private key `ssh` logs in with (`-i`; no passphrase: the daemon runs
    /// unattended).
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// SFTP: the only file the server's host key is checked against (strictly: an
    /// unknown or changed key is refused).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Which backup types go there.
    #[serde(default = "all_kinds")]
    pub upload: Vec<BackupKind>,
    /// Upper bound on the upload rate, e.g. "20 MiB/s".
    #[serde(default)]
    pub bandwidth_limit: Option<Rate>,
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Parts in flight at once, and objects downloaded at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// S3 Object Lock retention for uploaded objects, e.g. "30d" (COMPLIANCE mode).
    #[serde(default)]
    pub object_lock: Option<HumanDuration>,
    /// The checksum S3 checks each request body against and keeps with the object:
    /// `sha256` (the default) or `none`, for stores that refuse `x-amz-checksum-*`
    /// headers (Backblaze B2, Google Cloud Storage's S3 interoperability).
    #[serde(default)]
    pub checksum: Option<RequestChecksum>,
    /// Bytes `offsite_verify` downloads and re-hashes per run (rotating through the target).
    #[serde(default = "default_verify_sample")]
    pub verify_sample: ByteSize,
    /// Attempts after the first for a failed request or object.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first retry's wait; it doubles per attempt, up to 30 s.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: HumanDuration,
    /// How long one request may take before it counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Remote retention; when absent, `[retention]`'s.
    #[serde(default)]
    pub retention: Option<RetentionSection>,
}

/// `checksum = "sha256" | "none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestChecksum {
    Sha256,
    None,
}

fn all_kinds() -> Vec<BackupKind> {
    BackupKind::ALL.to_vec()
}
fn default_part_size() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}
fn default_concurrency() -> usize {
    4
}
fn default_verify_sample() -> ByteSize {
    ByteSize(2 * 1024 * 1024 * 1024)
}
fn default_retries() -> u32 {
    4
}
fn default_retry_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// A transfer rate written "20 MiB/s" (or bytes per second as an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Int(n) => n,
            Raw::Text(s) => {
                let size = s.trim().strip_suffix("/s").ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a rate: write bytes per second, e.g. \"20 MiB/s\""
                    ))
                })?;
                units::parse_bytes(size).map_err(serde::de::Error::custom)?
            }
        };
        if n == 0 {
            return Err(serde::de::Error::custom(
                "a bandwidth limit of 0 would never upload anything; remove the key for no limit",
            ));
        }
        Ok(Rate(n))
    }
}

/// Where a target keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLocation {
    S3 { bucket: String, prefix: String },
    Sftp(SftpLocation),
    Path(PathBuf),
}

impl TargetLocation {
    /// `s3://bucket/prefix`, `sftp://user@host[:port]/path` or a path resolved against
    /// `base`.
    pub fn parse(url: &str, base: &Path) -> Result<TargetLocation, String> {
        if let Some(rest) = url.strip_prefix("sftp://") {
            return SftpLocation::parse(rest).map(TargetLocation::Sftp);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|c| c == "." || c == "..") {
                return Err(format!("`{url}`: the prefix may not contain `.` or `..`"));
            }
            return Ok(TargetLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if url.contains("://") {
            return Err(format!(
                "`{url}`: only s3://BUCKET/PREFIX, sftp://USER@HOST[:PORT]/PATH and paths are supported (for SMB or NFS, mount it and give the path)"
            ));
        }
        if url.trim().is_empty() {
            return Err(
                "the url is empty: write s3://BUCKET/PREFIX, sftp://USER@HOST/PATH or a path"
                    .into(),
            );
        }
        Ok(TargetLocation::Path(super::absolute(base, Path::new(url))))
    }
}

/// S3's bucket naming rules (the subset every provider shares).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !(3..=63).contains(&bucket.len()) || !ok_chars {
        return Err(format!(
            "`{bucket}` is not a bucket name: 3–63 lower-case letters, digits, `-` and `.`"
        ));
    }
    Ok(())
}

/// A checked `[[offsite]]` table.
#[derive(Debug, Clone)]
pub struct OffsiteTarget {
    pub name: String,
    pub location: TargetLocation,
    /// The url as written (what messages show).
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub credentials_file: Option<PathBuf>,
    /// SFTP targets: the login key and the known-hosts file (both required there).
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub upload: Vec<BackupKind>,
    pub bandwidth_limit: Option<u64>,
    pub part_size: u64,
    pub concurrency: usize,
    pub object_lock: Option<Duration>,
    /// Send `x-amz-checksum-sha256` with every write (S3 targets).
    pub request_checksum: bool,
    pub verify_sample: u64,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub timeout: Duration,
    pub retention: RetentionSection,
}

impl OffsiteTarget {
    /// Whether backups of `kind` go to this target.
    pub fn takes(&self, kind: BackupKind) -> bool {
        self.upload.contains(&kind)
    }
}

impl Config {
    /// Check the `[[offsite]]` tables and resolve them; every problem, each at its line.
    pub(super) fn offsite_targets(
        &self,
        sections: &[OffsiteSection],
        base: &Path,
        problems: &mut Vec<Error>,
    ) -> Vec<OffsiteTarget> {
        let mut targets = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let key = |k: &str| format!("offsite[{i}].{k}");
            let mut bad = |k: &str, why: String| problems.push(self.key_error(&key(k), why));
            let name_ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                bad(
                    "name",
                    format!(
                        "`{}` is not a target name: 1–64 letters, digits, `-` and `_`",
                        s.name
                    ),
                );
            }
            if sections[..i].iter().any(|o| o.name == s.name) {
                bad("name", format!("a second target is named `{}`", s.name));
            }
            let location = match TargetLocation::parse(&s.url, base) {
                Ok(l) => l,
                Err(why) => {
                    bad("url", why);
                    continue;
                }
            };
            let is_s3 = matches!(location, TargetLocation::S3 { .. });
            for (k, set) in [
                ("endpoint", s.endpoint.is_some()),
                ("region", s.region.is_some()),
                ("credentials_file", s.credentials_file.is_some()),
                ("object_lock", s.object_lock.is_some()),
                ("checksum", s.checksum.is_some()),
                ("path_style", s.path_style),
            ] {
                if set && !is_s3 {
                    bad(k, format!("`{k}` applies to s3:// targets only"));
                }
            }
            let is_sftp = matches!(location, TargetLocation::Sftp(_));
            for (k, set, what) in [
                (
                    "ssh_key",
                    s.ssh_key.is_some(),
                    "the private key to log in with (no passphrase), e.g. /etc/vertex-backup/id_ed25519",
                ),
                (
                    "known_hosts",
                    s.known_hosts.is_some(),
                    "a known_hosts file holding the server's host key, e.g. made with `ssh-keyscan HOST > /etc/vertex-backup/known_hosts` and its fingerprint checked with the server's admin",
                ),
            ] {
                if set && !is_sftp {
                    bad(k, format!("`{k}` applies to sftp:// targets only"));
                } else if !set && is_sftp {
                    bad(k, format!("an sftp:// target needs `{k}`: {what}"));
                }
            }
            if let Some(e) = &s.endpoint
                && !(e.starts_with("http://") || e.starts_with("https://"))
            {
                bad(
                    "endpoint",
                    format!("`{e}` is not an http(s) URL, e.g. https://s3.example.com"),
                );
            }
            if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s.part_size.0) {
                bad(
                    "part_size",
                    "parts run from 5 MiB to 5 GiB (S3's limits; 16 MiB is the default)".into(),
                );
            }
            if !(1..=64).contains(&s.concurrency) {
                bad(
                    "concurrency",
                    "from 1 to 64 parts in flight (4 is the default)".into(),
                );
            }
            let request_checksum = s.checksum != Some(RequestChecksum::None);
            if s.object_lock.is_some() && !request_checksum {
                bad(
                    "checksum",
                    "an Object Lock bucket refuses writes without a request checksum; remove `checksum = \"none\"` or `object_lock`".into(),
                );
            }
            if s.upload.is_empty() {
                bad(
                    "upload",
                    "names no backup type; remove the target, or list full, database and/or storage"
                        .into(),
                );
            }
            if s.retries > 20 {
                bad("retries", "at most 20 retries".into());
            }
            if s.retention.as_ref().is_some_and(|r| r.keep_last == 0) {
                bad(
                    "retention.keep_last",
                    "must be at least 1: the newest copy is always kept".into(),
                );
            }
            targets.push(OffsiteTarget {
                name: s.name.clone(),
                location,
                url: s.url.clone(),
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                path_style: s.path_style,
                credentials_file: s
                    .credentials_file
                    .as_ref()
                    .map(|p| super::absolute(base, p)),
                ssh_key: s.ssh_key.as_ref().map(|p| super::absolute(base, p)),
                known_hosts: s.known_hosts.as_ref().map(|p| super::absolute(base, p)),
                upload: s.upload.clone(),
                bandwidth_limit: s.bandwidth_limit.map(|r| r.0),
                part_size: s.part_size.0,
                concurrency: s.concurrency,
                object_lock: s.object_lock.map(|d| d.0),
                request_checksum,
                verify_sample: s.verify_sample.0,
                retries: s.retries,
                retry_backoff: s.retry_backoff.0,
                timeout: s.timeout.0,
                retention: s
                    .retention
                    .clone()
                    .unwrap_or_else(|| self.retention.clone()),
            });
        }
        targets
    }

    /// The target named `name`, or an error listing the configured ones.
    pub fn offsite_target(&self, name: &str) -> Result<&OffsiteTarget, Error> {
        self.offsite.iter().find(|t| t.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.offsite.iter().map(|t| t.name.as_str()).collect();
            Error::UnknownTarget(if known.is_empty() {
                format!("no offsite target `{name}`: the config has no [[offsite]] table")
            } else {
                format!(
                    "no offsite target `{name}`; the config has: {}",
                    known.join(", ")
                )
            })
        })
    }

    /// The targets to work on: the one named, or all.
    pub fn offsite_selection(&self, name: Option<&str>) -> Result<Vec<&OffsiteTarget>, Error> {
        match name {
            Some(n) => Ok(vec![self.offsite_target(n)?]),
            None => Ok(self.offsite.iter().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> crate::error::Result<Config> {
        Config::parse(text, None, Path::new("/etc/vb"), &|_| None)
    }

    #[test]
    fn an_sftp_target_needs_its_key_and_known_hosts_and_takes_no_s3_keys() {
        let cfg = parse(
            "[[offsite]]\nname = \"box\"\nurl = \"sftp://vertex@backup-server:2222/srv/vx\"\nssh_key = \"id_ed25519\"\nknown_hosts = \"/etc/vb/known_hosts\"\n",
        )
        .unwrap();
        let t = &cfg.offsite[0];
        let TargetLocation::Sftp(l) = &t.location else {
            panic!("{:?}", t.location)
        };
        assert_eq!(
            (l.host.as_str(), l.port, l.path.as_str()),
            ("backup-server", 2222, "/srv/vx")
        );
        assert_eq!(t.ssh_key.as_deref(), Some(Path::new("/etc/vb/id_ed25519")));
        let err = parse(
            "[[offsite]]\nname = \"box\"\nurl = \"sftp://vertex@backup-server/srv\"\nregion = \"eu\"\n",
        )
        .unwrap_err()
        .to_string();
        for says in [
            "`region` applies to s3:// targets only",
            "an sftp:// target needs `ssh_key`",
            "an sftp:// target needs `known_hosts`",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
        let err = parse("[[offsite]]\nname = \"nas\"\nurl = \"/mnt/nas\"\nssh_key = \"k\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`ssh_key` applies to sftp:// targets only"),
            "{err}"
        );
    }

    #[test]
    fn reads_s3_and_path_targets_with_defaults() {
        let cfg = parse(
            "[[offsite]]\nname = \"b2\"\nurl = \"s3://vertex-backups/prod/db\"\nendpoint = \"https://s3.example.com\"\nregion = \"eu\"\nupload = [\"database\"]\nbandwidth_limit = \"20 MiB/s\"\n[offsite.retention]\nkeep_last = 2\nkeep_daily = 7\n\n[[offsite]]\nname = \"nas\"\nurl = \"nas/vertex\"\n",
        )
        .unwrap();
        assert_eq!(cfg.offsite.len(), 2);
        let b2 = &cfg.offsite[0];
        assert_eq!(
            b2.location,
            TargetLocation::S3 {
                bucket: "vertex-backups".into(),
                prefix: "prod/db".into()
            }
        );
        assert_eq!(b2.upload, vec![BackupKind::Database]);
        assert_eq!(b2.bandwidth_limit, Some(20 * 1024 * 1024));
        assert_eq!(b2.retention.keep_daily, Some(7));
        assert_eq!(b2.part_size, 16 * 1024 * 1024);
        assert!(b2.request_checksum, "x-amz-checksum-sha256 is the default");
        let nas = &cfg.offsite[1];
        assert_eq!(
            nas.location,
            TargetLocation::Path(PathBuf::from("/etc/vb/nas/vertex"))
        );
        assert_eq!(nas.upload, BackupKind::ALL.to_vec());
        assert_eq!(nas.retention.keep_last, cfg.retention.keep_last);
    }

    #[test]
    fn bad_tables_name_the_key_and_line() {
        let err = parse(
            "[[offsite]]\nname = \"a\"\nurl = \"s3://a\"\n\n[[offsite]]\nname = \"a\"\nurl = \"/mnt/x\"\nobject_lock = \"30d\"\npart_size = \"1 MiB\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`a` is not a bucket name"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("a second target is named `a`"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("applies to s3:// targets only"), "{err}");
        assert!(err.contains("line 8"), "{err}");
        assert!(err.contains("parts run from 5 MiB"), "{err}");
    }

    #[test]
    fn request_checksums_can_be_turned_off_but_not_under_object_lock() {
        let cfg =
            parse("[[offsite]]\nname = \"b2\"\nurl = \"s3://bkt\"\nchecksum = \"none\"\n").unwrap();
        assert!(!cfg.offsite[0].request_checksum);
        let err = parse(
            "[[offsite]]\nname = \"x\"\nurl = \"s3://bkt\"\nobject_lock = \"1d\"\nchecksum = \"none\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("offsite[0].checksum"), "{err}");
        assert!(err.contains("Object Lock bucket refuses"), "{err}");
        let err = parse("[[offsite]]\nname = \"x\"\nurl = \"s3://bkt\"\nchecksum = \"md5\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn rejects_other_schemes_and_bad_rates() {
        let err = parse("[[offsite]]\nname = \"x\"\nurl = \"smb://host/dir\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount it and give the path"), "{err}");
        let err = parse("[[offsite]]\nname = \"x\"\nurl = \"sftp://host/dir\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no user"), "{err}");
        let err = parse("[[offsite]]\nname = \"x\"\nurl = \"/m\"\nbandwidth_limit = \"20 MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a rate"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }
}
