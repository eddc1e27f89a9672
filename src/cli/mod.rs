//! Command-line definitions (clap) and the handlers that turn a checked config plus a
//! subcommand into engine calls and printed output. Raw flags become a [`Config`] once,
//! in [`load_config`]; nothing below looks at flags again.

/// `out!` for command output, except that a closed stdout (`… | head -1`,
/// `… | true`) is not a failure: the work is done and recorded whoever reads the report,
/// so a broken pipe is ignored instead of panicking (exit 101) before, say, the rotation
/// `create --max-backups` was asked for.
macro_rules! out {
    () => {
        crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod completions;
mod containers;
mod daemon;
mod interrupt;
mod offsite;
mod output;
mod progress;
mod repair_cmd;
mod replica_restore;
mod replica_status;
mod restore_cmd;
mod snapshot_cmd;
mod verify_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use vertex_backup::catalog::{self, Stats};
use vertex_backup::config::{ConfigSource, JobSchedule};
use vertex_backup::docker;
use vertex_backup::engine::backup::{BackupFailure, catalog_for};
use vertex_backup::engine::{Progress, Silent, browse, rotate, select};
use vertex_backup::retention::RetentionPolicy;
use vertex_backup::{BackupKind, Config, Error};

use progress::TerminalProgress;

#[derive(Debug, Parser)]
#[command(
    name = "vertex-backup",
    version,
    about = "Backups of the Vertex AR app: SQLite database and media storage, verified, rotated, restorable"
)]
pub struct Cli {
    /// Config file (else $VERTEX_BACKUP_CONFIG, else /etc/vertex-backup/config.toml, else built-in defaults)
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Override [paths] backup_dir
    #[arg(long, global = true, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Keep N backups: overrides [retention] keep_last for `rotate`, `daemon` and
    /// `check-config`; with `create`, also rotate after a successful backup
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_backups: Option<u32>,
    /// age identity file to open encrypted backups with (restore, verify, ls; else $VERTEX_BACKUP_IDENTITY). Keep it off the production server
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// No progress bar on the terminal
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// The commands `--max-backups` changes something for.
const MAX_BACKUPS_USED_BY: [&str; 4] = ["create", "rotate", "daemon", "check-config"];

/// [`Cli`]'s clap command, with `--max-backups` left out of the help (and completions) of
/// the commands that ignore it. It stays a global flag — `vertex-backup --max-backups 7
/// rotate` is how the seed's users write it — so every other command gets a hidden copy,
/// which clap then does not replace with the visible global one.
pub fn cli_command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let hidden = cmd
        .get_arguments()
        .find(|a| a.get_id() == "max_backups")
        .map(|a| a.clone().global(false).hide(true));
    let ignoring: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| !MAX_BACKUPS_USED_BY.contains(&n.as_str()))
        .collect();
    if let Some(hidden) = hidden {
        for name in ignoring {
            cmd = cmd.mut_subcommand(name, |sc| sc.arg(hidden.clone()));
        }
    }
    cmd
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Full,
    Database,
    Storage,
}

impl From<TypeArg> for BackupKind {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Full => BackupKind::Full,
            TypeArg::Database => BackupKind::Database,
            TypeArg::Storage => BackupKind::Storage,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ListType {
    All,
    Full,
    Database,
    Storage,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take one backup now (the seed's `backup_cli.py create` and `backup.sh`)
    Create {
        /// What to back up: the database and the storage (full), or one of them
        #[arg(long = "type", short = 't', value_enum, default_value = "full")]
        kind: TypeArg,
        /// Print the new backup's metadata as JSON
        #[arg(long)]
        json: bool,
        /// Do not upload to the [[offsite]] targets afterwards
        #[arg(long)]
        no_offsite: bool,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// List backups, newest first
    List {
        /// Only backups of this type
        #[arg(long = "type", short = 't', value_enum, default_value = "all")]
        kind: ListType,
        /// Print the backups' metadata as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Totals per type, sizes, newest/oldest, last failure
    Stats {
        /// Print the totals as JSON
        #[arg(long)]
        json: bool,
    },
    /// Restore a database backup, a storage archive or a full backup (type from the path)
    Restore(restore_cmd::RestoreArgs),
    /// Check backups (checksum, SQLite integrity, archive readable end to end); changes nothing
    Verify(verify_cmd::VerifyArgs),
    /// List the files in a storage or full backup (path, type, size, mode, mtime), or a database backup's tables
    Ls(LsArgs),
    /// Apply the retention policy; --dry-run prints what would be deleted
    Rotate {
        /// Print what would be deleted and why the rest is kept; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the kept and deleted backups as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Validate the config and print the resolved schedule with the next run times
    CheckConfig(CheckConfigArgs),
    /// Run as a service: scheduled backups, rotation and restore drills, reload on SIGHUP or edit
    Daemon,
    /// Send a test message through the configured Telegram bot
    NotifyTest,
    /// Last success and failure per type, staleness, next runs
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the REST API's OpenAPI document (what the daemon serves at /openapi.json)
    Openapi,
    /// Print a shell completion script (scripts/install.sh installs them)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; scripts/install.sh installs it as vertex-backup.1)
    Man,
    /// Copies off this machine: push, list, prune and verify the [[offsite]] targets
    Offsite(offsite::OffsiteArgs),
    /// Write a storage snapshot out as a plain .tar.zst that GNU tar extracts
    Export(snapshot_cmd::ExportArgs),
    /// What changed between two storage snapshots: + added, - removed, M modified, U metadata only
    Diff(snapshot_cmd::DiffArgs),
    /// Check the snapshot store, mend snapshots whose data is gone (naming every file lost) and rebuild the index
    Repair(repair_cmd::RepairArgs),
}

/// Which backup a command works on, besides a name or path: `--latest [TYPE]` or
/// `--at TIME` (see [`vertex_backup::engine::select`]).
#[derive(Debug, Args)]
pub(crate) struct BackupChoice {
    /// The newest good backup (complete, not failed verification) of TYPE
    #[arg(long, value_enum, value_name = "TYPE", num_args = 0..=1, conflicts_with = "at")]
    latest: Option<Option<TypeArg>>,
    /// The newest good backup taken at or before TIME ("2026-11-30 14:00" in the [schedule] timezone, or RFC 3339)
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// With --at: the type of backup wanted (default: full)
    #[arg(
        long = "type",
        short = 't',
        value_enum,
        value_name = "TYPE",
        requires = "at"
    )]
    at_type: Option<TypeArg>,
}

impl BackupChoice {
    /// What was asked for, if `--latest` or `--at` was given; `default` is the type a bare
    /// `--latest` or `--at` means (`None`: the caller handles a bare `--latest` itself).
    pub(crate) fn chosen(&self, default: Option<BackupKind>) -> Option<select::BackupRef> {
        if let Some(time) = &self.at {
            let kind = self
                .at_type
                .map(BackupKind::from)
                .unwrap_or(BackupKind::Full);
            return Some(select::BackupRef::At {
                time: time.clone(),
                kind,
            });
        }
        let kind = self.latest?.map(BackupKind::from).or(default)?;
        Some(select::BackupRef::Latest(kind))
    }
}

/// `--wait`, on the commands that take the backup directory's lock.
#[derive(Debug, Args, Clone, Copy)]
struct WaitArg {
    /// If another run holds the backup directory's lock, wait up to DURATION (e.g. 30s, 10m) for it instead of failing at once
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    wait: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// A backup (name as `list` prints it, or a path); with --latest/--at, omit it and give only PATH
    backup: Option<String>,
    /// Show only this path and what is under it (as `ls` prints paths, e.g. client_1/)
    path: Option<String>,
    #[command(flatten)]
    choice: BackupChoice,
    /// One JSON document: the backup and its entries (or a database backup's tables)
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// How many upcoming runs to show per job
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Write command output to stdout; a reader that went away is ignored (see [`out!`]),
/// any other write error is reported on stderr and otherwise ignored too.
pub fn write_out(text: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(text)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("warning: cannot write to standard output: {e}");
    }
}

/// Parse flags, load the config, run the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&cli_command().get_matches()).map_err(|e| e.exit())?
    };
    let args = ConfigArgs {
        config: cli.config.clone(),
        backup_dir: cli.backup_dir.clone(),
        max_backups: cli.max_backups,
        identity: cli.identity.clone(),
    };
    daemon::init_tracing(matches!(cli.command, Command::Daemon));
    if let Command::Openapi = cli.command {
        // The document does not depend on the config, so none is needed.
        out!("{}", vertex_backup::api::openapi::document());
        return Ok(ExitCode::SUCCESS);
    }
    // Generated from the definitions above, so they need no config either.
    match cli.command {
        Command::Completions { shell } => return completions::print_completions(shell),
        Command::Man => return completions::print_man_page(),
        _ => {}
    }
    let mut config = load_config(&args)?;
    config.lock_wait = match &cli.command {
        Command::Create { wait, .. } | Command::Rotate { wait, .. } => wait.wait,
        Command::Restore(r) => r.wait.wait,
        _ => None,
    };
    if matches!(
        cli.command,
        Command::Create { .. }
            | Command::Restore(_)
            | Command::Verify(_)
            | Command::Rotate { .. }
            | Command::Repair(_)
    ) {
        // The jobs' priority, set on the main thread before any other starts, so the
        // engine's workers and the hooks inherit it; the daemon sets it per job instead.
        for p in vertex_backup::priority::apply_to_current_thread((&config.backup).into()) {
            eprintln!("warning: {p}");
        }
    }
    let quiet = cli.quiet;
    match cli.command {
        Command::Daemon => daemon::cmd_daemon(config, args),
        Command::Status { json } => daemon::cmd_status(&config, json),
        Command::NotifyTest => cmd_notify_test(&config),
        Command::Create {
            kind,
            json,
            no_offsite,
            ..
        } => cmd_create(
            &config,
            kind.into(),
            json,
            quiet,
            cli.max_backups,
            no_offsite,
        ),
        Command::Offsite(args) => offsite::cmd_offsite(&config, args),
        Command::List { kind, json } => cmd_list(&config, kind, json),
        Command::Stats { json } => cmd_stats(&config, json),
        Command::Restore(args) => restore_cmd::cmd_restore(&config, args, quiet),
        Command::Verify(args) => verify_cmd::cmd_verify(&config, args, quiet),
        Command::Export(args) => snapshot_cmd::cmd_export(&config, args, quiet),
        Command::Diff(args) => snapshot_cmd::cmd_diff(&config, args),
        Command::Repair(args) => repair_cmd::cmd_repair(&config, args),
        Command::Ls(args) => cmd_ls(&config, args, quiet),
        Command::Rotate { dry_run, json, .. } => cmd_rotate(&config, dry_run, json),
        Command::CheckConfig(args) => cmd_check_config(&config, args.runs),
        Command::Openapi | Command::Completions { .. } | Command::Man => {
            unreachable!("answered before the config is loaded")
        }
    }
}

/// The exit code of an error (cancelled by Ctrl-C → 130, usage/config → 2, else 1) and
/// its operator hint.
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    for cause in err.chain() {
        let ours = cause.downcast_ref::<Error>().or_else(|| {
            cause
                .downcast_ref::<BackupFailure>()
                .map(|f| f.error.as_ref())
        });
        if let Some(e) = ours {
            let code = match e {
                Error::Cancelled => interrupt::EXIT_INTERRUPTED,
                e if e.is_usage() => 2,
                _ => 1,
            };
            return (code, e.hint());
        }
    }
    (1, None)
}

/// The flags that shape the config, kept so the daemon can reload with the same ones.
#[derive(Debug, Clone)]
pub struct ConfigArgs {
    config: Option<PathBuf>,
    backup_dir: Option<PathBuf>,
    max_backups: Option<u32>,
    identity: Option<PathBuf>,
}

pub fn load_config(cli: &ConfigArgs) -> vertex_backup::Result<Config> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", "the working directory", e))?;
    let source = match &cli.config {
        Some(p) => ConfigSource::Explicit(p.clone()),
        None => ConfigSource::Discover,
    };
    let mut config = Config::discover(&source, &cwd, &|k| std::env::var(k).ok())?;
    if let Some(dir) = &cli.backup_dir {
        config.paths.backup_dir = cwd.join(dir);
    }
    if let Some(n) = cli.max_backups {
        config.retention.keep_last = n;
    }
    if let Some(id) = &cli.identity {
        config.identity = Some(cwd.join(id));
    }
    if let Some(w) = config.permission_warning() {
        eprintln!("warning: {w}");
    }
    Ok(config)
}

pub(crate) fn progress_for(bar: &Option<TerminalProgress>) -> &dyn Progress {
    match bar {
        Some(b) => b,
        None => &Silent,
    }
}

fn cmd_create(
    config: &Config,
    kind: BackupKind,
    json: bool,
    quiet: bool,
    rotate_to: Option<u32>,
    no_offsite: bool,
) -> anyhow::Result<ExitCode> {
    let bar = TerminalProgress::for_stderr(quiet || json);
    let pings = vertex_backup::healthchecks::OneShot::start(config);
    pings.send(&vertex_backup::events::Event::JobStarted {
        job: vertex_backup::kind::JobName::creating(kind),
    });
    let (result, containers) = vertex_backup::jobs::live::take_backup(
        config,
        kind,
        progress_for(&bar),
        interrupt::cancel_on_sigint(),
    );
    // The seed's cron + backup.sh flow: a one-shot backup notifies too.
    let next = vertex_backup::schedule::next_runs(
        config
            .schedule
            .of(vertex_backup::kind::JobName::creating(kind)),
        config.schedule.timezone,
        chrono::Utc::now(),
        1,
    )
    .first()
    .copied();
    let event = vertex_backup::events::backup_event(config, kind, &result, next);
    pings.send(&event);
    vertex_backup::telegram::notify_blocking(config, &event, config.telegram.timeout.0);
    let app_down = report_containers(config, &format!("{kind} backup"), &containers);
    pings.finish();
    let report = result?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report.metadata)?);
    } else {
        output::print_created(&report);
    }
    // The seed's `backup.sh --max-backups N`: rotate after a successful backup.
    if rotate_to.is_some() {
        let rotated = rotate::rotate(config, &RetentionPolicy::from(&config.retention), false)?;
        if !json {
            output::print_rotation(&rotated);
        }
    }
    // Then offsite, like the daemon after every good backup: a failed upload fails the
    // command (exit 1) but the local backup stands.
    if !no_offsite
        && !config.offsite.is_empty()
        && !offsite::upload_after_create(config, quiet || json)?
    {
        return Ok(ExitCode::FAILURE);
    }
    Ok(if app_down {
        // The backup stands, but the app is down: that is a failure to act on.
        ExitCode::FAILURE
    } else if report.warnings().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Say on stderr (and in Telegram, as the daemon would) what happened to the app's
/// containers; true when some could not be started again (the app is down: exit 1).
pub(crate) fn report_containers(
    config: &Config,
    job: &str,
    report: &vertex_backup::docker::ContainerReport,
) -> bool {
    for event in vertex_backup::jobs::live::container_events(job, report) {
        if matches!(
            event,
            vertex_backup::events::Event::ContainersNotStarted { .. }
                | vertex_backup::events::Event::ContainersStarted { .. }
        ) {
            eprintln!("{}", event.summary());
        }
        vertex_backup::telegram::notify_blocking(config, &event, config.telegram.timeout.0);
    }
    report.not_started.is_some()
}

fn cmd_ls(config: &Config, mut args: LsArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let wanted = match args.choice.chosen(Some(BackupKind::Full)) {
        Some(chosen) => {
            // With --latest/--at the one positional given is the PATH.
            if args.path.is_some() {
                return Err(Error::Refused(
                    "with --latest or --at, give no backup name: `ls --latest [TYPE] [PATH]`"
                        .into(),
                )
                .into());
            }
            args.path = args.backup.take();
            chosen
        }
        None => match &args.backup {
            Some(given) => select::BackupRef::Given(PathBuf::from(given)),
            None => {
                return Err(Error::Refused(
                    "name a backup (as `list` prints it), or pass --latest [TYPE] or --at TIME"
                        .into(),
                )
                .into());
            }
        },
    };
    let chosen = select::select_backup(config, &cwd, &wanted)?;
    let prefix = browse::path_prefix(args.path.as_deref().unwrap_or(""))?;
    let name = select::listed_name(&chosen.entry);
    let Some(archive) = browse::storage_archive(&chosen.entry, &chosen.listing)? else {
        let tables = match chosen.entry.kind {
            BackupKind::Database => Some(browse::database_tables(
                &chosen.entry,
                config.identity.as_deref(),
            )?),
            _ => None,
        };
        output::print_ls_no_archive(&name, chosen.entry.kind, tables.as_deref(), args.json)?;
        return Ok(ExitCode::SUCCESS);
    };
    let bar = TerminalProgress::for_stderr(quiet || !args.json);
    let cancel = interrupt::cancel_on_sigint();
    let mut entries = Vec::new();
    let shown = browse::list_archive(
        archive,
        config.identity.as_deref(),
        &prefix,
        progress_for(&bar),
        &cancel,
        &mut |e| {
            if args.json {
                entries.push(e);
            } else {
                output::print_ls_entry(&e, config.schedule.timezone);
            }
        },
    )?;
    if args.json {
        output::print_ls_json(&name, &chosen.entry, archive, &entries)?;
    } else if shown == 0 && !prefix.as_os_str().is_empty() {
        eprintln!("nothing under {} in {name}", prefix.display());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_rotate(config: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let report = rotate::rotate(config, &RetentionPolicy::from(&config.retention), dry_run)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_rotation(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_notify_test(config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(vertex_backup::telegram::send_test(config)) {
        Ok(chats) => {
            out!(
                "test message sent to {} chat(s): {}",
                chats.len(),
                chats
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("error: the test message was not delivered: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Reading commands on a backup directory that does not exist: a wrong path (a typo in
/// `--backup-dir`), not an empty directory — "no backups" with exit 0 would hide it.
fn require_backup_dir(config: &Config) -> vertex_backup::Result<()> {
    let dir = &config.paths.backup_dir;
    if dir.is_dir() {
        return Ok(());
    }
    Err(config.key_error(
        "paths.backup_dir",
        format!(
            "the backup directory {} does not exist (or is not a directory); check --backup-dir or [paths] backup_dir",
            vertex_backup::names::shown(dir)
        ),
    ))
}

fn cmd_list(config: &Config, kind: ListType, json: bool) -> anyhow::Result<ExitCode> {
    require_backup_dir(config)?;
    let catalog = catalog_for(config);
    let listing = catalog.list()?;
    let wanted: Option<BackupKind> = match kind {
        ListType::All => None,
        ListType::Full => Some(BackupKind::Full),
        ListType::Database => Some(BackupKind::Database),
        ListType::Storage => Some(BackupKind::Storage),
    };
    let entries: Vec<_> = listing
        .backups
        .iter()
        .filter(|b| wanted.is_none_or(|k| b.kind == k))
        .collect();
    if json {
        output::print_list_json(&entries, &listing)?;
    } else {
        let verdicts = catalog.load_verdicts();
        let now = chrono::Utc::now();
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let mut notes = catalog::entry_notes(e, &verdicts, now);
                if let Some(added) = listing.added_to_store(e) {
                    notes.push(format!(
                        "snapshot: {} added to the store",
                        vertex_backup::units::format_bytes(added)
                    ));
                }
                let opened = vertex_backup::engine::restore::opened_metadata(
                    &e.metadata,
                    config.identity.as_deref(),
                );
                (*e, notes, opened)
            })
            .collect();
        let running = catalog::running_operation(catalog.root());
        let leftovers: Vec<_> = listing
            .leftovers
            .iter()
            .map(|p| (p.clone(), catalog::leftover_note(p, running.as_deref())))
            .collect();
        output::print_list(&rows, &leftovers);
        let copies: Vec<_> = vertex_backup::engine::safety_copies::find(config)
            .into_iter()
            .filter(|c| wanted.is_none_or(|k| c.kind == k))
            .collect();
        output::print_safety_copies(&copies, config.retention.keep_pre_restore);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_stats(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    require_backup_dir(config)?;
    let catalog = catalog_for(config);
    let listing = catalog.list()?;
    let state = catalog.load_state();
    let free = vertex_backup::sys::available_space(catalog.root()).ok();
    let stats = Stats::compute(
        catalog.root(),
        &listing,
        &state,
        &catalog.load_verdicts(),
        free,
    );
    if json {
        // The REST API's shape plus, with targets, `offsite` per target (the API's stays
        // the seed's).
        #[derive(serde::Serialize)]
        struct WithOffsite<'a> {
            #[serde(flatten)]
            stats: &'a Stats,
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            offsite:
                std::collections::BTreeMap<String, vertex_backup::offsite::summary::TargetStats>,
        }
        let offsite = if config.offsite.is_empty() {
            Default::default()
        } else {
            let store = vertex_backup::offsite::OffsiteStore::new(
                &config.paths.backup_dir,
                config.backup.file_mode.0,
            );
            vertex_backup::offsite::summary::stats(config, &store.load())
        };
        let shown = WithOffsite {
            stats: &stats,
            offsite,
        };
        out!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        output::print_stats(&stats);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check_config(config: &Config, runs: usize) -> anyhow::Result<ExitCode> {
    // The daemon's own token reader: what it would refuse, this refuses.
    // Volume paths are checked where the engine resolves them, when it can (what the
    // engine says is reported with its listing below; a resolved path that breaks a
    // rule, the backup directory inside a volume, here).
    let (resolved, refused) = match config.docker.as_ref().map(|_| docker::for_job(config)) {
        Some(Ok(live)) => (Some(live), None),
        Some(Err(Error::Container { .. })) | None => (None, None),
        Some(Err(e)) => (None, Some(e)),
    };
    let mut live = resolved
        .as_ref()
        .map_or(config, |l| &l.config)
        .check_live(&vertex_backup::api::api_token);
    live.problems.extend(refused);
    output::print_config(config);
    let now = chrono::Utc::now();
    out!("\nschedule (time zone: {}):", config.schedule.timezone);
    for (name, sched) in config.jobs() {
        match sched {
            JobSchedule::Off => out!("  {name:<14} off"),
            JobSchedule::Cron { expression, .. } => {
                let next =
                    vertex_backup::schedule::next_runs(sched, config.schedule.timezone, now, runs);
                let times: Vec<String> = next
                    .iter()
                    .map(|t| t.format("%a %Y-%m-%d %H:%M:%S %:z").to_string())
                    .collect();
                out!("  {name:<14} {expression:<16} next: {}", times.join(", "));
            }
        }
    }
    if !config.offsite.is_empty() {
        out!("\noffsite targets (`vertex-backup offsite list` checks that each answers):");
        for t in &config.offsite {
            let kinds: Vec<&str> = t.upload.iter().map(|k| k.as_str()).collect();
            out!("  {:<14} {}  ({})", t.name, t.url, kinds.join(", "));
        }
    }
    containers::check(config, &mut live);
    for w in &live.warnings {
        eprintln!("warning: {w}");
    }
    let mut problems = live.problems;
    match problems.len() {
        0 => {}
        1 => return Err(problems.remove(0).into()),
        _ => return Err(Error::ConfigProblems(problems).into()),
    }
    out!("\nconfiguration OK");
    Ok(ExitCode::SUCCESS)
}
