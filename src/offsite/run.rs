//! One pass over the targets, as the daemon's jobs and the CLI run it: `upload` pushes
//! to each target (one failing target never stops the others) and applies its retention;
//! `verify` runs `offsite_verify` on each. Both return what happened per target and the
//! events that tell the operator, and journal the outcome in `backup.log` and the state
//! file (key `offsite` / `offsite_verify`).

use chrono::Utc;

use super::Remote;
use super::check::{self, RemoteVerifyReport};
use super::prune::{self, PruneReport};
use super::push::{self, PushReport};
use super::state::{RecordedFailure, TargetState};
use crate::catalog::Outcome;
use crate::config::Config;
use crate::engine::Cancel;
use crate::engine::backup::catalog_for;
use crate::error::{Error, Result};
use crate::events::Event;

/// What an upload job did on one target.
#[derive(Debug)]
pub struct TargetUpload {
    pub target: String,
    pub result: Result<(PushReport, PruneReport)>,
}

/// What `offsite_verify` found on one target.
#[derive(Debug)]
pub struct TargetVerify {
    pub target: String,
    pub result: Result<RemoteVerifyReport>,
}

/// Push to every target named by `only` (all when `None`), then prune each.
pub fn upload(
    config: &Config,
    only: Option<&str>,
    cancel: &Cancel,
) -> Result<(Vec<TargetUpload>, Vec<Event>)> {
    let targets = config.offsite_selection(only)?;
    let catalog = catalog_for(config);
    let mut runs = Vec::new();
    let mut events = Vec::new();
    for t in targets {
        let before = super::OffsiteStore::new(&config.paths.backup_dir, config.backup.file_mode.0)
            .load()
            .targets
            .get(&t.name)
            .and_then(|s| s.failing_since);
        let result = Remote::open(config, t).and_then(|remote| {
            let pushed = push::push(config, &remote, cancel)?;
            let pruned = prune::prune(config, &remote, false, cancel)?;
            Ok((pushed, pruned))
        });
        match &result {
            Ok((pushed, pruned)) => {
                if let Some(since) = before {
                    events.push(Event::OffsiteRecovered {
                        target: t.name.clone(),
                        failed_for: (Utc::now() - since).to_std().ok(),
                    });
                }
                if !pushed.uploaded.is_empty() || !pruned.plan.delete.is_empty() {
                    events.push(Event::OffsiteUploaded {
                        target: t.name.clone(),
                        backups: pushed.uploaded.iter().map(|u| u.name.clone()).collect(),
                        bytes: pushed.uploaded.iter().map(|u| u.bytes).sum(),
                        pruned: pruned.plan.delete.len(),
                    });
                }
                let repacked = match pushed.repacked.len() {
                    0 => String::new(),
                    n => format!(
                        ", {n} brought up to date with the repacked store ({})",
                        crate::units::format_bytes(pushed.repacked.iter().map(|u| u.bytes).sum())
                    ),
                };
                let line = format!(
                    "offsite {}: {} uploaded ({}), {} already there{repacked}, {} deleted by retention",
                    t.name,
                    pushed.uploaded.len(),
                    crate::units::format_bytes(pushed.uploaded.iter().map(|u| u.bytes).sum()),
                    pushed.already_there,
                    pruned.plan.delete.len()
                );
                catalog.journal("offsite", true, &line, Outcome::default());
            }
            Err(e) => {
                let chain = crate::error_chain(e);
                let state = record_failure(config, &t.name, &chain);
                events.push(Event::OffsiteUploadFailed {
                    target: t.name.clone(),
                    error: chain.clone(),
                    hint: e.hint(),
                    pending: state.pending.clone(),
                    pending_bytes: state.pending_bytes,
                    failing_since: state.failing_since.map(|t| t.to_rfc3339()),
                });
                let line = format!("offsite {}: upload failed: {chain}", t.name);
                let outcome = Outcome {
                    error: Some(chain),
                    ..Default::default()
                };
                catalog.journal("offsite", false, &line, outcome);
            }
        }
        if matches!(&result, Err(Error::Cancelled)) {
            runs.push(TargetUpload {
                target: t.name.clone(),
                result,
            });
            break;
        }
        runs.push(TargetUpload {
            target: t.name.clone(),
            result,
        });
    }
    Ok((runs, events))
}

/// Record a failed upload job in the state file and return the target's record. Push
/// records its own failures with what is pending, but a target that cannot be opened
/// (credentials), is locked by another job, or fails in its retention never reaches
/// that: without this the state said "no failure" and the next success told no recovery.
fn record_failure(config: &Config, target: &str, chain: &str) -> TargetState {
    let store = super::OffsiteStore::new(&config.paths.backup_dir, config.backup.file_mode.0);
    let now = Utc::now();
    let recorded = store.update(target, |t| {
        t.last_failure = Some(RecordedFailure {
            at: now,
            error: chain.to_string(),
        });
        t.failing_since.get_or_insert(now);
        t.clone()
    });
    recorded.unwrap_or_else(|e| {
        tracing::warn!(
            "could not record the upload failure: {}",
            crate::error_chain(&e)
        );
        store
            .load()
            .targets
            .get(target)
            .cloned()
            .unwrap_or_default()
    })
}

/// `offsite_verify` on every target named by `only` (all when `None`).
pub fn verify(
    config: &Config,
    only: Option<&str>,
    as_of: Option<chrono::DateTime<Utc>>,
    cancel: &Cancel,
) -> Result<(Vec<TargetVerify>, Vec<Event>)> {
    let targets = config.offsite_selection(only)?;
    let catalog = catalog_for(config);
    let mut runs = Vec::new();
    let mut events = Vec::new();
    for t in targets {
        let opened = match as_of {
            Some(at) => Remote::open_as_of(config, t, at),
            None => Remote::open(config, t),
        };
        let result = opened.and_then(|remote| check::verify(config, &remote, cancel));
        let (ok, line) = match &result {
            Ok(r) => {
                let repaired: Vec<String> = r
                    .problems
                    .iter()
                    .filter(|p| p.repaired)
                    .map(|p| p.backup.clone())
                    .collect();
                if r.ok() {
                    events.push(Event::OffsiteVerifyPassed {
                        target: t.name.clone(),
                        checked: r.checked,
                        sampled_bytes: r.sampled_bytes,
                        repaired,
                    });
                } else {
                    events.push(Event::OffsiteVerifyFailed {
                        target: t.name.clone(),
                        problems: r
                            .problems
                            .iter()
                            .filter(|p| !p.repaired || p.lost)
                            .map(|p| format!("{}: {}", p.backup, p.problem))
                            .collect(),
                        repaired,
                    });
                }
                (
                    r.ok(),
                    format!(
                        "offsite {}: verified {} backups, read back {} of {}, {} problems ({} repaired)",
                        t.name,
                        r.checked,
                        crate::units::format_bytes(r.sampled_bytes),
                        crate::units::plural(r.sampled.len() as u64, "backup"),
                        r.problems.len(),
                        r.problems.iter().filter(|p| p.repaired).count()
                    ),
                )
            }
            Err(e) => {
                events.push(Event::OffsiteVerifyFailed {
                    target: t.name.clone(),
                    problems: vec![crate::error_chain(e)],
                    repaired: Vec::new(),
                });
                (
                    false,
                    format!(
                        "offsite {}: verification failed: {}",
                        t.name,
                        crate::error_chain(e)
                    ),
                )
            }
        };
        catalog.journal("offsite_verify", ok, &line, Outcome::default());
        runs.push(TargetVerify {
            target: t.name.clone(),
            result,
        });
    }
    Ok((runs, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_that_cannot_be_opened_is_recorded_as_failing() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[paths]\nbackup_dir = \"{}/backups\"\n[[offsite]]\nname = \"b2\"\nurl = \"s3://bucket/p\"\n\
             credentials_file = \"{}\"\n",
            dir.path().display(),
            dir.path().join("no-such-credentials").display()
        );
        let config = Config::parse(&text, None, dir.path(), &|_| None).unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let (runs, events) = upload(&config, None, &Cancel::new()).unwrap();
        assert!(runs[0].result.is_err(), "{runs:?}");
        assert!(
            matches!(events.as_slice(), [Event::OffsiteUploadFailed { target, .. }] if target == "b2"),
            "{events:?}"
        );
        let store = super::super::OffsiteStore::new(&backups, 0o600);
        let first = store.load().targets["b2"].clone();
        let failure = first.last_failure.expect("the failure is recorded");
        assert!(failure.error.contains("b2"), "{}", failure.error);
        let since = first.failing_since.expect("failing since then");
        // A second failure keeps when the failing began.
        upload(&config, None, &Cancel::new()).unwrap();
        assert_eq!(store.load().targets["b2"].failing_since, Some(since));
    }
}
