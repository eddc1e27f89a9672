//! `vertex-backup restore`: its flags, the plan shown before anything changes, the
//! confirmation an in-place restore needs, and a backup fetched from an offsite target
//! first when one is named.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use vertex_backup::engine::live_app::{LiveApp, NoApp, StopFor};
use vertex_backup::engine::{restore, select};
use vertex_backup::{BackupKind, Config, Error};

use super::progress::TerminalProgress;
use super::replica_restore::{self, StreamPoint};
use super::{BackupChoice, WaitArg, interrupt, offsite, output, progress_for};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup: its name as `list` prints it (db_backup_….db, storage_backup_….tar.zst, full_backup_….json) or a path
    #[arg(required_unless_present_any = ["latest", "at"], conflicts_with_all = ["latest", "at"])]
    pub(super) backup: Option<PathBuf>,
    #[command(flatten)]
    choice: BackupChoice,
    /// Take the backup from this offsite target (downloaded into the backup directory and checked first); also `NAME:backup`
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
    /// With --from: read the target as it was at TIME (from S3 object versions), through
    /// later delete markers and overwritten objects; "YYYY-MM-DD HH:MM[:SS]" or RFC 3339
    #[arg(long, value_name = "TIME", requires = "from")]
    as_of: Option<String>,
    /// Skip checksum and integrity verification (not recommended)
    #[arg(long)]
    no_verify: bool,
    /// Restore elsewhere (a new file for a database, a new directory otherwise); nothing live is touched
    #[arg(long, value_name = "DIR|FILE")]
    target: Option<PathBuf>,
    /// Restore only this path of the storage (relative to the storage directory, e.g. client_1/); repeatable. In place, only these paths are replaced; a full backup's database is then left alone
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Do not ask for confirmation (required when not on a terminal)
    #[arg(long, short)]
    yes: bool,
    /// Print the plan and stop
    #[arg(long)]
    dry_run: bool,
    /// Print the plan (with --dry-run) or the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) wait: WaitArg,
}

pub(super) fn cmd_restore(
    config: &Config,
    args: RestoreArgs,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let target = args.target.as_ref().map(|t| cwd.join(t));
    let as_of = offsite::parse_as_of(config, args.as_of.as_deref())?;
    // The database to a time, or its newest state, from the replicated stream.
    let mut skipped_stream = 0;
    if let Some(wanted) = stream_wanted(config, &args)? {
        match replica_restore::prepare(config, args.from.as_deref(), wanted, as_of) {
            Ok(file) => {
                let live = match target {
                    Some(_) => None,
                    None => Some(vertex_backup::docker::for_job(config)?),
                };
                let live_config = live.as_ref().map_or(config, |l| &l.config);
                let plan = replica_restore::plan(live_config, &file, target.as_deref())?;
                let done = carry_out(config, plan, live.as_ref(), &args, quiet, 0);
                drop(file);
                return done;
            }
            Err(e) => {
                eprintln!(
                    "WARNING: the replicated stream could not be used: {}; restoring the newest database backup {} instead",
                    vertex_backup::error_chain(&e),
                    if args.choice.at.is_some() {
                        "taken at or before that time"
                    } else {
                        "there is"
                    }
                );
                skipped_stream = 1;
            }
        }
    }
    let fetched = offsite::fetch_for_restore(
        config,
        as_of,
        args.from.as_deref(),
        args.backup.as_ref().and_then(|b| b.to_str()),
        args.choice
            .latest
            .map(|k| k.map(BackupKind::from).unwrap_or(BackupKind::Full)),
        args.choice.at.is_some(),
    )?;
    let passed_over = fetched.as_ref().map_or(0, |f| f.skipped);
    let wanted = match (
        fetched,
        &args.backup,
        args.choice.chosen(Some(BackupKind::Full)),
    ) {
        (Some(f), _, _) => select::BackupRef::Given(f.path.clone()),
        (None, Some(given), _) => select::BackupRef::Given(given.clone()),
        (None, None, Some(chosen)) => chosen,
        (None, None, None) => unreachable!("clap requires a backup, --latest or --at"),
    };
    // In place, the live paths may name volumes and the app's containers stop around
    // the swap; a restore elsewhere needs neither (nor a running engine: a rebuilt server).
    let live = match target {
        Some(_) => None,
        None => Some(vertex_backup::docker::for_job(config)?),
    };
    let config = live.as_ref().map_or(config, |l| &l.config);
    let chosen = select::select_backup(config, &cwd, &wanted)?;
    for (name, why) in &chosen.passed_over {
        eprintln!("WARNING: passed over the newer {name}: {why}");
    }
    let passed_over = passed_over + chosen.passed_over.len() + skipped_stream;
    let plan = restore::plan_restore_paths(
        config,
        &chosen.entry.data_path,
        target.as_deref(),
        !args.no_verify,
        &args.paths,
    )?;
    carry_out(config, plan, live.as_ref(), &args, quiet, passed_over)
}

/// The point the replicated stream should restore to, when it should: a database asked
/// for by `--latest database` or `--at TIME --type database` (no backup named, no
/// `--path`), with `[replication]` on.
fn stream_wanted(config: &Config, args: &RestoreArgs) -> anyhow::Result<Option<StreamPoint>> {
    if config.replication.is_none() || args.backup.is_some() || !args.paths.is_empty() {
        return Ok(None);
    }
    match (&args.choice.at, args.choice.chosen(Some(BackupKind::Full))) {
        (
            Some(time),
            Some(select::BackupRef::At {
                kind: BackupKind::Database,
                ..
            }),
        ) => {
            let at = vertex_backup::engine::select::parse_time(time, config.schedule.timezone)?;
            Ok(Some(StreamPoint::At(at.with_timezone(&chrono::Utc))))
        }
        (None, Some(select::BackupRef::Latest(BackupKind::Database))) => {
            Ok(Some(StreamPoint::Newest))
        }
        _ => Ok(None),
    }
}

/// The rest of a restore once its plan is made: shown, confirmed, carried out with the
/// app stopped around the swap.
fn carry_out(
    config: &Config,
    mut plan: restore::RestorePlan,
    live: Option<&vertex_backup::docker::JobLive>,
    args: &RestoreArgs,
    quiet: bool,
    passed_over: usize,
) -> anyhow::Result<ExitCode> {
    let config = live.map_or(config, |l| &l.config);
    if plan.in_place
        && let Some(containers) = live.and_then(|l| l.containers.as_ref())
    {
        plan.stops = containers.would_stop(StopFor::Restore)?;
    }
    if args.no_verify {
        eprintln!(
            "WARNING: --no-verify: the backup's checksum and integrity are NOT checked before it replaces data"
        );
    }
    if !args.json || args.dry_run {
        output::print_restore_plan(&plan, args.json)?;
    }
    if args.dry_run {
        return Ok(warned_exit(passed_over));
    }
    if plan.in_place && !args.yes {
        confirm("Replace the live data as planned above?")?;
    }
    // Only now: Ctrl-C at the question or during verification still ends it at once,
    // with nothing written.
    let cancel = interrupt::cancel_on_sigint();
    let bar = TerminalProgress::for_stderr(quiet || args.json);
    let app = live.map_or(&NoApp as &dyn LiveApp, |l| l.app());
    let applied = restore::apply(&plan, config, progress_for(&bar), &cancel, app);
    let app_down = live.is_some_and(|l| {
        let containers = l.finish();
        super::report_containers(config, "restore", &containers)
    });
    let report = applied?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_restored(&report);
    }
    if app_down {
        return Ok(ExitCode::FAILURE);
    }
    Ok(warned_exit(passed_over))
}

/// Done, but (with `passed_over` > 0) not with the newest backup there is: said on
/// stderr, and in the exit code, 3 (succeeded with warnings).
fn warned_exit(passed_over: usize) -> ExitCode {
    if passed_over > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Ask on a terminal; refuse without one (a script must say --yes).
fn confirm(question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused("refusing to restore in place without --yes: standard input is not a terminal, so nobody can confirm".into()).into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Refused("restore cancelled; nothing was changed".into()).into())
    }
}
