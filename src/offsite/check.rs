//! `offsite_verify`: is what the target holds still what was uploaded? Every remote
//! backup's objects are compared with their metadata (size; on S3 also the SHA-256 each
//! object carries — an object replaced behind our back carries none, unless it is age
//! ciphertext sent in parts, whose checksum was known only once sent); a rotating sample
//! (`verify_sample` bytes per run, resuming after the last backup read) is downloaded
//! and re-hashed, so over time the whole target is read back. A bad remote copy is
//! uploaded again from the local one when that still exists, else reported.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Remote;
use super::push::read_listing;
use super::remote::{RemoteBackup, RemoteListing};
use super::state::RecordedFailure;
use super::upload::upload_backup;
use crate::catalog::PartRole;
use crate::config::Config;
use crate::engine::Cancel;
use crate::engine::backup::catalog_for;
use crate::error::Result;

/// One remote backup found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteProblem {
    pub backup: String,
    pub problem: String,
    /// Uploaded again from the local copy.
    pub repaired: bool,
    /// It was on the target at this server's last push, prune or verification and is not
    /// there now: the target lost it. A failure even when uploaded again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoteVerifyReport {
    pub target: String,
    /// Remote backups whose objects were checked by size and checksum metadata.
    pub checked: usize,
    /// Backups downloaded and re-hashed this run.
    pub sampled: Vec<String>,
    pub sampled_bytes: u64,
    pub problems: Vec<RemoteProblem>,
}

impl RemoteVerifyReport {
    /// Nothing left wrong (problems that were repaired do not count; a backup the target
    /// lost always does).
    pub fn ok(&self) -> bool {
        self.problems.iter().all(|p| p.repaired && !p.lost)
    }
}

pub fn verify(config: &Config, remote: &Remote, cancel: &Cancel) -> Result<RemoteVerifyReport> {
    // As of a past time the view is read-only: nothing repaired, nothing recorded.
    if remote.as_of.is_some() {
        return verify_as_of(remote, cancel);
    }
    let lock = remote
        .store
        .lock_target(&remote.config.name, "verify", cancel)?;
    // Verification repairs by uploading: a writer like push.
    let lease = super::writers::acquire(remote, "verify", cancel)?;
    let listing = read_listing(remote, cancel)?;
    let mut found = listed_problems(remote, &listing, cancel)?;
    let known = remote
        .store
        .load()
        .targets
        .get(&remote.config.name)
        .cloned()
        .unwrap_or_default();
    let lost = lost_backups(&listing, &known.held);
    found.extend(lost.iter().cloned());
    let cursor = known.verify_cursor.clone();
    let (sampled, sampled_bytes, next_cursor) =
        sample(remote, &listing, cursor.as_deref(), &mut found, cancel)?;
    drop(lock);
    let mut problems = repair(config, remote, &listing, found, cancel)?;
    drop(lease);
    for p in &mut problems {
        p.lost = lost.iter().any(|(stem, _)| *stem == p.backup);
    }
    let report = RemoteVerifyReport {
        target: remote.config.name.clone(),
        checked: listing.backups.len(),
        sampled,
        sampled_bytes,
        problems,
    };
    let failure = (!report.ok()).then(|| RecordedFailure {
        at: chrono::Utc::now(),
        error: report
            .problems
            .iter()
            .filter(|p| !p.repaired || p.lost)
            .map(|p| format!("{}: {}", p.backup, p.problem))
            .collect::<Vec<_>>()
            .join("; "),
    });
    let held = listing
        .backups
        .iter()
        .filter(|b| b.is_complete())
        .map(|b| b.stem.clone())
        .chain(
            report
                .problems
                .iter()
                .filter(|p| p.repaired)
                .map(|p| p.backup.clone()),
        )
        .collect();
    let recorded = remote.store.update(&remote.config.name, |t| {
        t.held = held;
        t.verify_cursor = next_cursor;
        t.last_verify = Some(chrono::Utc::now());
        t.last_verify_failure = failure;
    });
    if let Err(e) = recorded {
        tracing::warn!(
            "could not record the verification: {}",
            crate::error_chain(&e)
        );
    }
    Ok(report)
}

/// `offsite verify --as-of`: every backup of the past view checked by size and carried
/// checksum (HEAD of the version current then) and read back in full, the view being
/// what a recovery would restore from; problems reported, never repaired.
fn verify_as_of(remote: &Remote, cancel: &Cancel) -> Result<RemoteVerifyReport> {
    let listing = read_listing(remote, cancel)?;
    let mut found = listed_problems(remote, &listing, cancel)?;
    let (sampled, sampled_bytes, _) = sample(remote, &listing, None, &mut found, cancel)?;
    Ok(RemoteVerifyReport {
        target: remote.config.name.clone(),
        checked: listing.backups.len(),
        sampled,
        sampled_bytes,
        problems: found
            .into_iter()
            .map(|(backup, problem)| RemoteProblem {
                backup,
                problem,
                repaired: false,
                lost: false,
            })
            .collect(),
    })
}

/// The backups this server last left on the target (`held`) that the listing no longer
/// shows at all, each with why it is a problem.
fn lost_backups(
    listing: &RemoteListing,
    held: &std::collections::BTreeSet<String>,
) -> Vec<(String, String)> {
    let gone: Vec<&String> = held
        .iter()
        .filter(|stem| listing.find(stem).is_none())
        .collect();
    let why = if !held.is_empty() && listing.backups.is_empty() {
        format!(
            "the target holds no backup at all, but held {} at this server's last check: \
             it was emptied, or the url/prefix now points elsewhere",
            held.len()
        )
    } else {
        "it was on the target at this server's last check and is gone now".to_string()
    };
    gone.into_iter().map(|s| (s.clone(), why.clone())).collect()
}

/// Every listed backup's problem: its listing's, else its objects' sizes and carried
/// checksums (a HEAD each).
fn listed_problems(
    remote: &Remote,
    listing: &RemoteListing,
    cancel: &Cancel,
) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for b in &listing.backups {
        cancel.check()?;
        if let Some(problem) = b
            .problem
            .clone()
            .or_else(|| head_problem(remote, b, cancel).err())
        {
            found.push((b.stem.clone(), problem));
        }
    }
    Ok(found)
}

/// Each data object's size and carried checksum against the metadata.
fn head_problem(
    remote: &Remote,
    b: &RemoteBackup,
    cancel: &Cancel,
) -> std::result::Result<(), String> {
    for o in b.objects.iter().filter(|o| o.role == PartRole::Data) {
        let op = format!("check {}", o.key);
        let head = remote
            .with_retries(&op, cancel, || remote.target.head(&o.key))
            .map_err(|e| crate::error_chain(&e))?;
        let Some(head) = head else {
            return Err(format!("{} is missing", o.key));
        };
        if head.size != o.size {
            return Err(format!("{} is {} bytes, not {}", o.key, head.size, o.size));
        }
        match (&head.sha256, &o.sha256) {
            (Some(got), Some(want)) if got != want => {
                return Err(format!("{} carries SHA-256 {got}, not {want}", o.key));
            }
            (None, Some(_)) if remote.target.carries_checksums() && !may_carry_none(remote, o) => {
                return Err(format!(
                    "{} carries no checksum: it was replaced by something other than this tool",
                    o.key
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `o` may lack the checksum the target carries with objects we put: age
/// ciphertext made while it was sent, in several parts — its checksum was known only after
/// the upload had begun. (Sent in one request, its checksum went with it.) Its bytes are
/// still checked by the sample read-back.
fn may_carry_none(remote: &Remote, o: &super::remote::RemoteObject) -> bool {
    o.key.ends_with(crate::encryption::AGE_SUFFIX) && o.size >= remote.config.part_size
}

/// Download and re-hash complete backups after `cursor` (wrapping around) until the
/// run's byte budget is spent; returns what was read and where the next run starts.
fn sample(
    remote: &Remote,
    listing: &RemoteListing,
    cursor: Option<&str>,
    found: &mut Vec<(String, String)>,
    cancel: &Cancel,
) -> Result<(Vec<String>, u64, Option<String>)> {
    let mut order: Vec<&RemoteBackup> =
        listing.backups.iter().filter(|b| b.is_complete()).collect();
    order.sort_by(|a, b| a.stem.cmp(&b.stem));
    let start = cursor
        .and_then(|c| order.iter().position(|b| b.stem.as_str() > c))
        .unwrap_or(0);
    let budget = remote.config.verify_sample;
    let (mut sampled, mut bytes, mut last) = (Vec::new(), 0u64, cursor.map(str::to_string));
    for b in order.iter().cycle().skip(start).take(order.len()) {
        if bytes >= budget || found.iter().any(|(s, _)| *s == b.stem) {
            continue;
        }
        cancel.check()?;
        for o in b.objects.iter().filter(|o| o.role == PartRole::Data) {
            let got = rehash(remote, &o.key, cancel)?;
            bytes += got.0;
            if Some(&got.1) != o.sha256.as_ref() || got.0 != o.size {
                found.push((
                    b.stem.clone(),
                    format!(
                        "{} read back with SHA-256 {} ({} bytes): damaged on the target",
                        o.key, got.1, got.0
                    ),
                ));
                break;
            }
        }
        sampled.push(b.stem.clone());
        last = Some(b.stem.clone());
    }
    Ok((sampled, bytes, last))
}

fn rehash(remote: &Remote, key: &str, cancel: &Cancel) -> Result<(u64, String)> {
    let op = format!("read back {key}");
    remote.with_retries(&op, cancel, || {
        let mut r = remote.target.get(key)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = std::io::Read::read(&mut r, &mut buf).map_err(|e| {
                super::RemoteError::new(
                    crate::error::RemoteFailure::Network,
                    format!("read {key}: {e}"),
                )
            })?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            n += k as u64;
        }
        Ok((n, hex::encode(hasher.finalize())))
    })
}

/// Upload each bad backup again from its local copy, when there is one.
fn repair(
    config: &Config,
    remote: &Remote,
    listing: &RemoteListing,
    found: Vec<(String, String)>,
    cancel: &Cancel,
) -> Result<Vec<RemoteProblem>> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = remote
        .store
        .lock_target(&remote.config.name, "verify", cancel)?;
    let local = catalog_for(config).list()?;
    let mut out = Vec::new();
    // A bad copy's own objects are all sent again; a pack it shares with other backups
    // is reused where some metadata records it as the target holds it — sending it again
    // as new ciphertext would break the backups that record the old — unless that pack
    // is the object found bad.
    let mut known = listing.clone();
    for (stem, problem) in &found {
        if let Some(b) = listing.find(stem) {
            for o in &b.objects {
                // A pack another backup's record vouches for (the object as it is now)
                // stays: this backup's record of it is what is wrong.
                let vouched = listing
                    .recorded_pack(&o.key)
                    .is_some_and(|r| r.size != o.size || Some(&r.checksum) != o.sha256.as_ref());
                if !o.shared || (problem.contains(&o.key) && !vouched) {
                    known.objects.remove(&o.key);
                    known.packs.remove(&o.key);
                }
            }
        }
    }
    for (stem, problem) in found {
        let copy = local
            .find_stem(&stem)
            .filter(|e| e.is_complete())
            .filter(|e| listing.find(&stem).is_none_or(|r| r.copy_of(e)));
        let repaired = match copy {
            Some(entry) => match upload_backup(remote, entry, &mut known, cancel) {
                Ok(_) => {
                    tracing::warn!(
                        "offsite {}: {stem} was bad ({problem}); uploaded again",
                        remote.config.name
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(
                        "offsite {}: could not repair {stem}: {}",
                        remote.config.name,
                        crate::error_chain(&e)
                    );
                    false
                }
            },
            None => false,
        };
        out.push(RemoteProblem {
            backup: stem,
            problem,
            repaired,
            lost: false,
        });
    }
    Ok(out)
}
