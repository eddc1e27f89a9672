//! `verify`: check backups and remember the verdicts, so retention never keeps a
//! known-bad backup as the good one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use vertex_backup::Config;
use vertex_backup::engine::backup::catalog_for;
use vertex_backup::engine::snapshot::keys::Opening;
use vertex_backup::engine::{Cancel, select, verify};

use super::progress::TerminalProgress;
use super::{BackupChoice, output, progress_for};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One backup to verify, by name as `list` prints it or by path (default: the newest of each type)
    #[arg(conflicts_with_all = ["all", "latest", "at"])]
    backup: Option<PathBuf>,
    /// Verify every backup
    #[arg(long, conflicts_with_all = ["latest", "at"])]
    all: bool,
    /// --latest: the newest backup of each type (the default); --latest TYPE: the newest good one of TYPE
    #[command(flatten)]
    choice: BackupChoice,
    /// Print one JSON report per backup verified
    #[arg(long)]
    json: bool,
    /// Snapshots: read every chunk back and hash it (default: check each chunk is present in its pack)
    #[arg(long)]
    read_data: bool,
}

pub fn cmd_verify(config: &Config, args: VerifyArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let bar = TerminalProgress::for_stderr(quiet || args.json);
    let wanted = match &args.backup {
        Some(given) => Some(select::BackupRef::Given(given.clone())),
        None => args.choice.chosen(None),
    };
    let (listing, single) = match &wanted {
        Some(wanted) => {
            let cwd = std::env::current_dir().context("cannot read the working directory")?;
            let chosen = select::select_backup(config, &cwd, wanted)?;
            (chosen.listing, Some(chosen.entry))
        }
        None => (catalog_for(config).list()?, None),
    };
    let selection = match &single {
        Some(e) => verify::Selection::One(e),
        None if args.all => verify::Selection::All,
        None => verify::Selection::Latest,
    };
    let chosen = verify::select(&listing, selection);
    let cancel = Cancel::new();
    // Each pack is read once in the run, however many of the chosen snapshots list it.
    let packs = vertex_backup::engine::snapshot::check::PackRun::default();
    let reports: Vec<_> = chosen
        .iter()
        .map(|e| {
            let keys = verify::Keys {
                read_data: args.read_data,
                packs: Some(&packs),
                ..verify::Keys::given(config.identity.as_deref())
            };
            let r = verify::verify_entry(e, &listing, keys, progress_for(&bar), &cancel);
            if !args.json {
                output::print_verify_line(&r);
            }
            r
        })
        .collect();
    if args.json {
        out!("{}", serde_json::to_string_pretty(&reports)?);
    }
    record_verdicts(config, &reports);
    // `--all` read every pack: the index is checked against their trailers too.
    let index_problems = match (
        args.all,
        Opening::new(config.identity.as_deref(), &config.paths.backup_dir),
    ) {
        (true, Ok(opening)) => packs.index_disagreements(&config.paths.backup_dir, &opening),
        (true, Err(e)) => vec![format!("the index could not be opened: {e}")],
        (false, _) => Vec::new(),
    };
    for p in &index_problems {
        eprintln!("warning: the store's index: {p}; `vertex-backup repair` writes it anew");
    }
    if reports.is_empty() {
        eprintln!(
            "no backups to verify in {}",
            config.paths.backup_dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        eprintln!("{failed} of {} backups FAILED verification", reports.len());
        return Ok(ExitCode::from(1));
    }
    // Could not check is neither failed nor good: said, and exit 3 (warnings).
    let partial = reports.iter().filter(|r| !r.fully_checked).count();
    if !index_problems.is_empty() {
        return Ok(ExitCode::from(3));
    }
    if partial > 0 {
        eprintln!(
            "{partial} of {} backups could not be fully checked here (their last verdict stands); see above",
            reports.len()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Remember the verdicts so retention never keeps a known-bad backup as the good one.
fn record_verdicts(config: &Config, reports: &[verify::VerifyReport]) {
    let at = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let results = reports
        .iter()
        .filter_map(|r| r.verdict(&at).map(|v| (r.id.clone(), v)));
    if let Err(e) = catalog_for(config).record_verdicts(results) {
        eprintln!("warning: could not record the verification results: {e}");
    }
}
