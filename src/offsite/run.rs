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
                let line = format!(
                    "offsite {}: {} uploaded ({}), {} already there, {} deleted by retention",
                    t.name,
                    pushed.uploaded.len(),
                    crate::units::format_bytes(pushed.uploaded.iter().map(|u| u.bytes).sum()),
                    pushed.already_there,
                    pruned.plan.delete.len()
                );
                catalog.journal("offsite", true, &line, Outcome::default());
            }
            Err(e) => {
                let state =
                    super::OffsiteStore::new(&config.paths.backup_dir, config.backup.file_mode.0)
                        .load()
                        .targets
                        .get(&t.name)
                        .cloned()
                        .unwrap_or_default();
                let chain = crate::error_chain(e);
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

/// `offsite_verify` on every target named by `only` (all when `None`).
pub fn verify(
    config: &Config,
    only: Option<&str>,
    cancel: &Cancel,
) -> Result<(Vec<TargetVerify>, Vec<Event>)> {
    let targets = config.offsite_selection(only)?;
    let catalog = catalog_for(config);
    let mut runs = Vec::new();
    let mut events = Vec::new();
    for t in targets {
        let result =
            Remote::open(config, t).and_then(|remote| check::verify(config, &remote, cancel));
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
                            .filter(|p| !p.repaired)
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
