//! `export` and `diff`: the snapshot-only commands. `export` turns a snapshot into the
//! plain `.tar.zst` an archive backup would have been; `diff` says what changed between
//! two snapshots. Both take backups as every other command does (a name as `list` prints
//! it, a path, or `--latest`/`--at`), and a full backup means its storage part.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use vertex_backup::catalog::BackupEntry;
use vertex_backup::engine::snapshot::compare::diff_snapshots;
use vertex_backup::engine::snapshot::export::export_snapshot;
use vertex_backup::engine::{browse, select};
use vertex_backup::units::{format_bytes, plural};
use vertex_backup::{BackupKind, Config, Error};

use super::progress::TerminalProgress;
use super::{BackupChoice, interrupt, progress_for};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The snapshot (name as `list` prints it, or a path); omit it with --latest/--at
    backup: Option<PathBuf>,
    #[command(flatten)]
    choice: BackupChoice,
    /// The archive to write (refused if it exists)
    #[arg(short = 'o', long = "output", value_name = "FILE.tar.zst")]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (name as `list` prints it, or a path)
    a: PathBuf,
    /// The newer snapshot
    b: PathBuf,
    /// One JSON array of changes
    #[arg(long)]
    json: bool,
}

/// The snapshot-only command asking, for a refusal that speaks of it.
#[derive(Debug, Clone, Copy)]
enum SnapshotCommand {
    Export,
    Diff,
}

/// The storage snapshot `wanted` names (a full backup's storage part), or why not.
fn storage_snapshot(
    config: &Config,
    wanted: &select::BackupRef,
    command: SnapshotCommand,
) -> anyhow::Result<BackupEntry> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let chosen = select::select_backup(config, &cwd, wanted)?;
    let storage = browse::storage_archive(&chosen.entry, &chosen.listing)?.ok_or_else(|| {
        let name = select::listed_name(&chosen.entry);
        Error::Refused(match command {
            SnapshotCommand::Export => {
                format!("{name} holds no storage: `export` works on storage snapshots")
            }
            SnapshotCommand::Diff => format!(
                "{name} holds no storage: `diff` compares the files of two storage snapshots (or of two full backups made with storage_format = \"snapshot\")"
            ),
        })
    })?;
    let snapshot = storage
        .data_part()
        .and_then(|p| p.format.as_ref())
        .is_some_and(|f| f.is_snapshot());
    if !snapshot {
        let name = select::listed_name(storage);
        return Err(Error::Refused(match command {
            SnapshotCommand::Export => format!(
                "{name} is an archive, not a snapshot: it is already a plain archive (`tar -xf` reads it)"
            ),
            SnapshotCommand::Diff => format!(
                "{name} is an archive, not a snapshot: `diff` compares storage snapshots; `vertex-backup ls {name}` lists an archive's files"
            ),
        })
        .into());
    }
    Ok(storage.clone())
}

pub fn cmd_export(config: &Config, args: ExportArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let wanted = match (&args.backup, args.choice.chosen(Some(BackupKind::Storage))) {
        (Some(_), Some(_)) => {
            return Err(Error::Refused("give a snapshot or --latest/--at, not both".into()).into());
        }
        (Some(given), None) => select::BackupRef::Given(given.clone()),
        (None, Some(chosen)) => chosen,
        (None, None) => {
            return Err(Error::Refused(
                "name a snapshot (as `list` prints it), or pass --latest [TYPE] or --at TIME"
                    .into(),
            )
            .into());
        }
    };
    if args.output.exists() {
        return Err(Error::Refused(format!(
            "{} exists: name a new file, or remove it first",
            args.output.display()
        ))
        .into());
    }
    let snapshot = storage_snapshot(config, &wanted, SnapshotCommand::Export)?;
    let bar = TerminalProgress::for_stderr(quiet);
    let cancel = interrupt::cancel_on_sigint();
    let size = export_snapshot(
        &snapshot.data_path,
        (
            Some(snapshot.metadata.checksum.as_str()),
            config.identity.as_deref(),
        ),
        &args.output,
        config.backup.compression_level,
        progress_for(&bar),
        &cancel,
    )?;
    out!(
        "exported {} to {} ({}, {}); extract with: tar --zstd -xf {}",
        select::listed_name(&snapshot),
        args.output.display(),
        format_bytes(size),
        plural(snapshot.metadata.file_count, "file"),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_diff(config: &Config, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let a = storage_snapshot(
        config,
        &select::BackupRef::Given(args.a.clone()),
        SnapshotCommand::Diff,
    )?;
    let b = storage_snapshot(
        config,
        &select::BackupRef::Given(args.b.clone()),
        SnapshotCommand::Diff,
    )?;
    let mut changes = Vec::new();
    let mut counts = [0u64; 4];
    diff_snapshots(
        &a.data_path,
        &b.data_path,
        config.identity.as_deref(),
        &mut |c| {
            counts[c.change as usize] += 1;
            if args.json {
                changes.push(c);
            } else {
                out!("{}  {}", c.change.mark(), shown(&c.path));
            }
        },
    )?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&changes)?);
    } else {
        out!(
            "{} added, {} removed, {} modified, {} metadata only ({} → {})",
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            select::listed_name(&a),
            select::listed_name(&b)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn shown(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        ".".into()
    } else {
        vertex_backup::names::shown(path).to_string()
    }
}
