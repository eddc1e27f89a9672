//! `repair`: check the snapshot store, mend the snapshots whose data is gone (naming
//! every file lost), and write the index anew.

use std::process::ExitCode;

use clap::Args;
use vertex_backup::Config;
use vertex_backup::engine::Cancel;
use vertex_backup::engine::backup::catalog_for;
use vertex_backup::engine::repair::{self, RepairOptions, RepairReport};

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Say what would be repaired and what would be lost; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Read every pack and check its SHA-256 (default: each is present at its recorded size)
    #[arg(long)]
    read_data: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn cmd_repair(config: &Config, args: RepairArgs) -> anyhow::Result<ExitCode> {
    let opts = RepairOptions {
        dry_run: args.dry_run,
        read_data: args.read_data,
        identity: config.identity.as_deref(),
        recipients: config.local_recipients(),
    };
    let report = repair::repair(&catalog_for(config), &opts, &Cancel::new())?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    // A backup that could not be repaired: 1. Files lost (said above): 3. Else 0.
    Ok(if report.failed() {
        ExitCode::from(1)
    } else if report.lost_files() > 0 || !report.index.warnings.is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &RepairReport) {
    let would = if r.dry_run { "would be " } else { "" };
    out!(
        "{} packs checked ({}): {} damaged\n",
        r.packs_checked,
        r.checked,
        r.damaged_packs.len()
    );
    for p in &r.damaged_packs {
        out!("  pack {}: {}\n", p.pack, p.problem);
    }
    for b in &r.backups {
        match (&b.error, &b.repaired_as) {
            (Some(e), _) => out!("{}: NOT repaired: {e}\n", b.backup),
            (None, Some(name)) => out!("{}: repaired as {name}\n", b.backup),
            (None, None) => out!("{}: {would}repaired\n", b.backup),
        }
        if b.relocated_chunks > 0 {
            out!(
                "  {} chunk(s) {would}taken from another pack that holds them\n",
                b.relocated_chunks
            );
        }
        if b.salvaged_chunks > 0 {
            out!(
                "  {} chunk(s) {would}copied out of a damaged pack into a new one (they still read back right)\n",
                b.salvaged_chunks
            );
        }
        if !b.lost_files.is_empty() {
            out!(
                "  {} file(s) {would}left out, their data is gone (the next backup reads them again):\n",
                b.lost_files.len()
            );
            for f in &b.lost_files {
                out!("    {f}\n");
            }
        }
        if let Some(dir) = &b.kept_in {
            out!("  the original is kept in {}\n", dir.display());
        }
    }
    if r.backups.is_empty() {
        out!("no snapshot needs repairing\n");
    }
    let i = &r.index;
    out!(
        "index: {} pack(s) {would}indexed from their trailers, {} from entry lists{}\n",
        i.from_trailers,
        i.from_entry_lists,
        if i.replaced_files > 0 {
            format!(" ({} old index file(s) replaced)", i.replaced_files)
        } else {
            String::new()
        }
    );
    for p in &i.damaged_trailers {
        out!("  pack {}: {}\n", p.pack, p.problem);
    }
    for w in &i.warnings {
        eprintln!("warning: {w}");
    }
}
