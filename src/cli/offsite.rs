//! `vertex-backup offsite …`: push, list, prune, verify the `[[offsite]]` targets by hand,
//! and what `create` and `restore` need of them (upload after a backup; fetch a remote
//! backup for restore). Output formatting only: the work is `vertex_backup::offsite`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use vertex_backup::engine::Cancel;
use vertex_backup::events::Event;
use vertex_backup::offsite::fetch::{self, RemotePick};
use vertex_backup::offsite::run::{self, TargetUpload};
use vertex_backup::offsite::{Remote, RemoteListing};
use vertex_backup::units::format_bytes;
use vertex_backup::{BackupKind, Config, Error};

use super::interrupt;

#[derive(Debug, Args)]
pub struct OffsiteArgs {
    #[command(subcommand)]
    pub command: OffsiteCommand,
}

#[derive(Debug, Subcommand)]
pub enum OffsiteCommand {
    /// Upload every backup a target lacks (oldest first), then apply its retention
    Push {
        /// Only this target (a `name` of an [[offsite]] table)
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Print what was uploaded as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the backups on the targets, newest first
    List {
        /// Only this target (a `name` of an [[offsite]] table)
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// The target as it was at TIME, from S3 object versions (through later delete
        /// markers and overwrites); "YYYY-MM-DD HH:MM[:SS]" or RFC 3339
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Print the backups as JSON, per target
        #[arg(long)]
        json: bool,
    },
    /// Apply a target's [offsite.retention]; --dry-run prints what would be deleted
    Prune {
        /// Only this target (a `name` of an [[offsite]] table)
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Print what would be deleted and why the rest is kept; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the plans as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make this server the owner of a target's prefix (after a disaster recovery: the
    /// old server, should it come back, is then refused instead of deleting this one's
    /// uploads)
    Claim {
        /// The target (a `name` of an [[offsite]] table)
        #[arg(long, value_name = "NAME")]
        target: String,
    },
    /// Check what the targets hold (sizes, checksums, a sample read back); repair from local
    Verify {
        /// Only this target (a `name` of an [[offsite]] table)
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Check the target as it was at TIME (read-only: nothing repaired or recorded)
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn cmd_offsite(config: &Config, args: OffsiteArgs) -> anyhow::Result<ExitCode> {
    if config.offsite.is_empty() {
        return Err(Error::UnknownTarget(
            "no offsite targets: add an [[offsite]] table (name, url) to the config".into(),
        )
        .into());
    }
    let cancel = interrupt::cancel_on_sigint();
    match args.command {
        OffsiteCommand::Push { target, json } => push(config, target.as_deref(), json, &cancel),
        OffsiteCommand::List {
            target,
            as_of,
            json,
        } => {
            let as_of = parse_as_of(config, as_of.as_deref())?;
            list(config, target.as_deref(), as_of, json, &cancel)
        }
        OffsiteCommand::Prune {
            target,
            dry_run,
            json,
        } => prune(config, target.as_deref(), dry_run, json, &cancel),
        OffsiteCommand::Verify {
            target,
            as_of,
            json,
        } => {
            let as_of = parse_as_of(config, as_of.as_deref())?;
            verify(config, target.as_deref(), as_of, json, &cancel)
        }
        OffsiteCommand::Claim { target } => claim(config, &target, &cancel),
    }
}

fn claim(config: &Config, target: &str, cancel: &Cancel) -> anyhow::Result<ExitCode> {
    use vertex_backup::offsite::writers;
    let t = config.offsite_target(target)?;
    let remote = Remote::open(config, t)?;
    let _lock = remote.store.lock_target(&t.name, "claim", cancel)?;
    let me = writers::this_writer(&remote)?;
    let before = writers::read_owner(&remote, cancel).ok().flatten();
    writers::claim(&remote, &me, cancel)?;
    match before {
        Some(old) if old.owner != me => out!(
            "{}: this server ({me}) now owns the prefix (it was {}'s, claimed {}); if that server runs again, its uploads are refused",
            t.name,
            old.who(),
            old.claimed_at
        ),
        _ => out!("{}: this server ({me}) owns the prefix", t.name),
    }
    Ok(ExitCode::SUCCESS)
}

/// Send the events a CLI run made to Telegram (as `create` does for its backup).
fn notify(config: &Config, events: &[Event]) {
    for e in events {
        vertex_backup::telegram::notify_blocking(config, e, config.telegram.timeout.0);
    }
}

/// Upload to every target; prints a line per target. Err when any target failed.
pub fn upload_after_create(config: &Config, quiet: bool) -> anyhow::Result<bool> {
    let (runs, events) = run::upload(config, None, &interrupt::cancel_on_sigint())?;
    notify(config, &events);
    if !quiet {
        print_uploads(&runs);
    }
    Ok(runs.iter().all(|r| r.result.is_ok()))
}

fn push(
    config: &Config,
    target: Option<&str>,
    json: bool,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let (runs, events) = run::upload(config, target, cancel)?;
    notify(config, &events);
    if json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| match &r.result {
                Ok((push, prune)) => serde_json::json!({
                    "target": r.target, "ok": true, "push": push, "prune": prune,
                }),
                Err(e) => serde_json::json!({
                    "target": r.target, "ok": false,
                    "error": vertex_backup::error_chain(e), "hint": e.hint(),
                }),
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_uploads(&runs);
    }
    Ok(exit(runs.iter().all(|r| r.result.is_ok())))
}

fn print_uploads(runs: &[TargetUpload]) {
    for r in runs {
        match &r.result {
            Ok((push, prune)) => {
                let bytes: u64 = push.uploaded.iter().map(|u| u.bytes).sum();
                out!(
                    "{}: {} uploaded ({}), {} already there, {} deleted by its retention",
                    r.target,
                    push.uploaded.len(),
                    format_bytes(bytes),
                    push.already_there,
                    prune.plan.delete.len()
                );
                for u in &push.uploaded {
                    out!("  + {} ({})", u.name, format_bytes(u.bytes));
                }
                for u in &push.repacked {
                    out!(
                        "  ~ {} brought up to date with the repacked store ({})",
                        u.name,
                        format_bytes(u.bytes)
                    );
                }
                for c in &push.cleaned {
                    out!("  cleaned up an interrupted upload: {c}");
                }
                if push.lock_extended > 0 {
                    out!(
                        "  extended the Object Lock of {} reused objects",
                        push.lock_extended
                    );
                }
                for o in &prune.locked_objects {
                    out!("  held, its delete refused under Object Lock: {o}");
                }
            }
            Err(e) => {
                eprintln!("error: {}", vertex_backup::error_chain(e));
                if let Some(h) = e.hint() {
                    eprintln!("hint: {h}");
                }
            }
        }
    }
}

/// `--as-of TIME` as a UTC instant (the [schedule] timezone for a wall-clock time).
pub fn parse_as_of(
    config: &Config,
    text: Option<&str>,
) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(text) = text else { return Ok(None) };
    let at = vertex_backup::engine::select::parse_time(text, config.schedule.timezone)?;
    Ok(Some(at.with_timezone(&chrono::Utc)))
}

/// The target, or the target as it was at `as_of`.
fn open_remote<'c>(
    config: &'c Config,
    t: &'c vertex_backup::config::OffsiteTarget,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
) -> vertex_backup::error::Result<Remote<'c>> {
    match as_of {
        Some(at) => Remote::open_as_of(config, t, at),
        None => Remote::open(config, t),
    }
}

fn list(
    config: &Config,
    target: Option<&str>,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for t in config.offsite_selection(target)? {
        let remote = open_remote(config, t, as_of)?;
        let listing = remote.with_retries("list the backups", cancel, || {
            RemoteListing::read(remote.target.as_ref())
        })?;
        all.push((t.name.clone(), t.url.clone(), listing));
    }
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|(name, url, l)| {
                serde_json::json!({ "target": name, "url": url, "backups": l.backups })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (name, url, l) in &all {
        out!("{name} ({url}): {} backups", l.backups.len());
        for b in &l.backups {
            let created = b
                .created
                .map(|c| c.format("%Y-%m-%d %H:%M:%S %:z").to_string());
            out!(
                "  {name}:{:<44} {:<8} {:>10}  {}{}",
                b.name,
                b.kind.as_str(),
                format_bytes(b.size),
                created.unwrap_or_else(|| "?".into()),
                b.problem
                    .as_deref()
                    .map(|p| format!("  INCOMPLETE: {p}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(
    config: &Config,
    target: Option<&str>,
    dry_run: bool,
    json: bool,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for t in config.offsite_selection(target)? {
        let remote = Remote::open(config, t)?;
        reports.push(vertex_backup::offsite::prune::prune(
            config, &remote, dry_run, cancel,
        )?);
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        let verb = if dry_run { "would delete" } else { "deleted" };
        out!(
            "{}: {verb} {} ({}), keeps {}",
            r.target,
            r.plan.delete.len(),
            format_bytes(r.freed_bytes),
            r.plan.keep.len()
        );
        for d in &r.plan.delete {
            out!("  - {} ({})", d.id, d.explained.join("; "));
        }
        for d in &r.plan.keep {
            out!("  keep {} ({})", d.id, d.explained.join("; "));
        }
        for o in &r.locked_objects {
            out!("  held, its delete refused under Object Lock: {o}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    config: &Config,
    target: Option<&str>,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let (runs, events) = run::verify(config, target, as_of, cancel)?;
    // A look at the past is the operator's, by hand: no alert about the present.
    if as_of.is_none() {
        notify(config, &events);
    }
    let ok = runs.iter().all(|r| r.result.as_ref().is_ok_and(|v| v.ok()));
    if json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| match &r.result {
                Ok(v) => serde_json::json!({ "target": r.target, "ok": v.ok(), "report": v }),
                Err(e) => serde_json::json!({
                    "target": r.target, "ok": false, "error": vertex_backup::error_chain(e),
                }),
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit(ok));
    }
    for r in &runs {
        match &r.result {
            Ok(v) => {
                out!(
                    "{}: {} checked, {} read back ({}){}",
                    r.target,
                    v.checked,
                    v.sampled.len(),
                    format_bytes(v.sampled_bytes),
                    if v.ok() { ", all good" } else { "" }
                );
                for p in &v.problems {
                    let state = match (p.lost, p.repaired) {
                        (true, true) => "LOST (uploaded again)",
                        (true, false) => "LOST",
                        (false, true) => "REPAIRED",
                        (false, false) => "BAD",
                    };
                    out!("  {state} {}: {}", p.backup, p.problem);
                }
            }
            Err(e) => eprintln!("error: {}", vertex_backup::error_chain(e)),
        }
    }
    Ok(exit(ok))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A remote backup brought home for a restore.
pub struct Fetched {
    pub path: std::path::PathBuf,
    /// Newer backups `--latest` passed over (each named on stderr): the restore then
    /// exits 3, succeeded with warnings.
    pub skipped: usize,
}

/// For `restore`: a remote backup (`--from NAME`, or `NAME:backup`) downloaded into the
/// backup directory, verified. `None`: the backup is local.
pub fn fetch_for_restore(
    config: &Config,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    from: Option<&str>,
    given: Option<&str>,
    latest: Option<BackupKind>,
    at: bool,
) -> anyhow::Result<Option<Fetched>> {
    let (target, pick) = match (from, given) {
        (Some(name), g) => {
            let t = config.offsite_target(name)?;
            let pick = match (g, latest) {
                (Some(g), _) => RemotePick::Named(g.to_string()),
                (None, kind) => RemotePick::Latest(kind),
            };
            (t, pick)
        }
        (None, Some(g)) => match vertex_backup::offsite::split_remote_name(config, g) {
            Some((t, name)) => (t, RemotePick::Named(name)),
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    if at {
        return Err(Error::Refused(
            "--at is not supported with an offsite target: pass the backup's name (`vertex-backup offsite list`) or --latest TYPE".into(),
        )
        .into());
    }
    let remote = open_remote(config, target, as_of)?;
    match as_of {
        Some(at) => eprintln!(
            "downloading from offsite target {} ({}) as it was at {at}…",
            target.name, target.url
        ),
        None => eprintln!(
            "downloading from offsite target {} ({})…",
            target.name, target.url
        ),
    }
    let (path, skipped) = fetch::fetch(config, &remote, &pick, &interrupt::cancel_on_sigint())?;
    for s in &skipped {
        eprintln!(
            "WARNING: passed over the newer {} on {}: {}",
            s.name, target.name, s.problem
        );
    }
    eprintln!("downloaded and checked: {}", path.display());
    Ok(Some(Fetched {
        path,
        skipped: skipped.len(),
    }))
}
