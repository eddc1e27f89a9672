//! How results look: aligned tables for people, stable JSON for scripts.

use std::path::PathBuf;

use vertex_backup::catalog::{BackupEntry, BackupMetadata, ListRow, Listing, Stats};
use vertex_backup::config::Timezone;
use vertex_backup::engine::backup::BackupReport;
use vertex_backup::engine::browse::{ListedEntry, TableRows};
use vertex_backup::engine::restore::{RestorePlan, RestoreReport};
use vertex_backup::engine::rotate::RotateReport;
use vertex_backup::engine::safety_copies::SafetyCopy;
use vertex_backup::engine::verify::VerifyReport;
use vertex_backup::units::{format_bytes, format_duration, plural};
use vertex_backup::{BackupKind, Config};

pub fn print_created(r: &BackupReport) {
    // A snapshot: what it holds, then what it cost (its entry list is a few KiB).
    let size = match r.added_to_store() {
        Some(added) => format!(
            "{} of data, {} added to the store",
            format_bytes(r.metadata.shown_size()),
            format_bytes(added)
        ),
        None => format_bytes(r.metadata.file_size),
    };
    out!(
        "{} backup created: {} ({size}, {}, {})",
        r.kind,
        r.path.display(),
        plural(r.metadata.file_count, "file"),
        format_duration(std::time::Duration::from_millis(r.metadata.duration_ms))
    );
    if !r.stopped.is_empty() {
        out!(
            "  stopped while the storage was read, then started again: {}",
            r.stopped.join(", ")
        );
    }
    for p in &r.parts {
        let size = if p.metadata.is_snapshot() {
            format!(
                "{} of data, entry list {}",
                format_bytes(p.metadata.shown_size()),
                format_bytes(p.metadata.file_size)
            )
        } else {
            format_bytes(p.metadata.file_size)
        };
        out!(
            "  part: {} ({size}, sha256 {})",
            p.path.display(),
            short(&p.metadata.checksum)
        );
    }
    if r.parts.is_empty() {
        out!("  sha256 {}", r.metadata.checksum);
    }
    for m in std::iter::once(&r.metadata).chain(r.parts.iter().map(|p| &p.metadata)) {
        if let Some(s) = &m.snapshot {
            out!(
                "  {} snapshot: {} added ({} new of {} chunks; {} read, {} unchanged), {} in {}",
                m.kind,
                format_bytes(s.added_bytes),
                s.added_chunks,
                s.chunks,
                plural(s.read_files, "file"),
                s.unchanged_files,
                format_bytes(s.packs.iter().map(|p| p.size).sum()),
                plural(s.packs.len() as u64, "pack")
            );
        }
    }
    if let Some(ic) = &r.metadata.integrity_check {
        out!("  integrity check: {ic}");
    }
    if !r.cleaned.is_empty() {
        out!(
            "  removed {} leftover file(s) of an interrupted run",
            r.cleaned.len()
        );
    }
    if let Some(free) = r.free_after {
        out!("  free space left: {}", format_bytes(free));
    }
    for w in r.warnings() {
        eprintln!("warning: {w}");
    }
}

fn short(checksum: &str) -> String {
    if checksum.len() > 12 {
        format!("{}…{}", &checksum[..8], &checksum[checksum.len() - 4..])
    } else {
        checksum.to_string()
    }
}

/// The `list` table: each backup with its notes, then each file that is not a backup
/// with what it is (from [`vertex_backup::catalog::entry_notes`] and `leftover_note`).
/// One `list` row: the backup, its notes, and its metadata as opened when it came sealed
/// from an encrypted target and an identity opens it (else `None`).
pub type ListedBackup<'a> = (&'a BackupEntry, Vec<String>, Option<BackupMetadata>);

pub fn print_list(entries: &[ListedBackup], leftovers: &[(PathBuf, String)]) {
    if entries.is_empty() {
        out!("no backups");
    } else {
        out!(
            "{:<9} {:<40} {:>10} {:>7}  {:<25} NOTE",
            "TYPE",
            "NAME",
            "SIZE",
            "FILES",
            "CREATED"
        );
        for (e, notes, opened) in entries {
            let name = e
                .data_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut notes = notes.clone();
            let keys = e.recipients();
            if !keys.is_empty() {
                // Which keys open it: `check-config` maps fingerprints to public keys.
                notes.insert(0, format!("🔒 {}", keys.join(", ")));
            }
            // A copy fetched from an encrypted target keeps its count and size sealed
            // until an identity opens them: "sealed", never a false 0.
            let recorded = opened.as_ref().unwrap_or(&e.metadata);
            let files = match recorded.recorded_file_count() {
                Some(n) => n.to_string(),
                None => "sealed".to_string(),
            };
            let size = if recorded.sealed.is_some() && recorded.is_snapshot() {
                "sealed".to_string()
            } else {
                format_bytes(recorded.shown_size())
            };
            out!(
                "{:<9} {:<40} {:>10} {:>7}  {:<25} {}",
                e.kind.as_str(),
                name,
                size,
                files,
                e.metadata.created_at,
                notes.join("; ")
            );
        }
    }
    if !leftovers.is_empty() {
        out!("\n{} file(s) that are not backups:", leftovers.len());
        for (path, what) in leftovers {
            out!("  {}  ({what})", path.display());
        }
    }
}

/// The safety copies restores set aside beside the live data, with what they occupy and
/// the retention that applies to them.
pub fn print_safety_copies(copies: &[SafetyCopy], keep: u32) {
    if copies.is_empty() {
        return;
    }
    out!(
        "\nsafety copies set aside by restores: {}, {} in all ([retention] keep_pre_restore = {keep} of each kind)",
        copies.len(),
        format_bytes(copies.iter().map(|c| c.bytes).sum())
    );
    for c in copies {
        out!(
            "  {:<9} {}  {:>10}  {}",
            c.kind.as_str(),
            c.path.display(),
            format_bytes(c.bytes),
            c.created.format("%Y-%m-%d %H:%M:%S")
        );
    }
}

pub fn print_list_json(entries: &[&BackupEntry], listing: &Listing) -> anyhow::Result<()> {
    let rows: Vec<ListRow> = entries.iter().map(|e| ListRow::new(e, listing)).collect();
    out!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

pub fn print_stats(s: &Stats) {
    out!("backup directory: {}", s.backup_dir);
    out!(
        "total: {}, {}",
        plural(s.total_backups as u64, "backup"),
        format_bytes(s.total_size)
    );
    for (kind, k) in &s.by_type {
        out!(
            "\n{kind}: {}, {}",
            plural(k.count as u64, "backup"),
            format_bytes(k.size)
        );
        if k.snapshot_data > 0 {
            out!(
                "  snapshots: {} of data, {} added to the store",
                format_bytes(k.snapshot_data),
                format_bytes(k.snapshot_added)
            );
        }
        if k.parts_of_full > 0 {
            out!("  parts of full backups: {}", k.parts_of_full);
        }
        if k.pre_restore > 0 {
            out!("  pre-restore safety copies: {}", k.pre_restore);
        }
        if let Some(n) = &k.newest {
            out!(
                "  newest: {} ({}, {})",
                n.name,
                format_bytes(n.size),
                n.created_at
            );
        }
        for p in &k.passed_over {
            out!(
                "  WARNING: `restore --latest` passes over {}: {}",
                p.name,
                p.why
            );
        }
        if let Some(o) = &k.oldest {
            out!(
                "  oldest: {} ({}, {})",
                o.name,
                format_bytes(o.size),
                o.created_at
            );
        }
        if let Some(f) = &k.last_failure {
            out!(
                "  last failure: {} at \"{}\": {}",
                f.at,
                f.step.as_deref().unwrap_or("?"),
                f.error.as_deref().unwrap_or("?")
            );
        }
    }
    if s.store_packs > 0 {
        out!(
            "\ncontent store (shared by the snapshots): {}, {}",
            plural(s.store_packs as u64, "pack"),
            format_bytes(s.store_size)
        );
    }
    if s.incomplete > 0 || s.leftovers > 0 {
        out!(
            "\nincomplete backups: {}, leftover files: {}",
            s.incomplete,
            s.leftovers
        );
    }
    if let Some(free) = s.free_space {
        out!("\nfree space: {}", format_bytes(free));
    }
}

pub fn print_config(c: &Config) {
    match &c.file {
        Some(f) => out!("config: {}", f.display()),
        None => out!("config: built-in defaults (no file found)"),
    }
    out!("database:   {}", c.paths.database.display());
    out!("storage:    {}", c.paths.storage.display());
    out!("backup_dir: {}", c.paths.backup_dir.display());
    if let Some(e) = &c.encryption {
        let what = match e.encrypt {
            vertex_backup::config::EncryptWhat::All => "every backup (local and offsite)",
            vertex_backup::config::EncryptWhat::Offsite => "what goes offsite",
        };
        out!("encryption: age, {what}, to:");
        for (key, fingerprint) in e.recipients.keys() {
            out!("  {fingerprint}  {key}");
        }
    }
    if let Some(r) = &c.replication {
        out!(
            "replication: every {} to the backup directory{}; window {}, alert past {}",
            vertex_backup::units::format_duration(r.interval),
            if r.targets.is_empty() {
                String::new()
            } else {
                format!(" and {}", r.targets.join(", "))
            },
            vertex_backup::units::format_duration(r.retain),
            vertex_backup::units::format_duration(r.max_lag)
        );
    }
    if let Some(identity) = &c.identity {
        out!(
            "identity:   {} (decrypts for restore, verify, ls)",
            identity.display()
        );
    }
    out!(
        "backup:     {} level {}, {} threads, integrity check {}, min free {}",
        c.backup.compression.name(),
        c.backup.compression_level,
        c.compressor_threads(),
        c.backup.integrity_check.as_str(),
        format_bytes(c.backup.min_free_space.0)
    );
    use vertex_backup::config::{DatabaseFormat, StorageFormat};
    out!(
        "formats:    storage {}, database {}",
        match c.backup.storage_format {
            StorageFormat::Archive => "archive (a tar archive each)",
            StorageFormat::Snapshot => "snapshot (content store, only changes stored)",
        },
        match c.backup.database_format {
            DatabaseFormat::Copy => "copy (a whole SQLite copy each)",
            DatabaseFormat::Snapshot => "snapshot (content store, only changed chunks stored)",
        }
    );
    let r = &c.retention;
    out!(
        "retention:  keep_last {}{}{}{}{}",
        r.keep_last,
        r.keep_daily
            .map(|n| format!(", keep_daily {n}"))
            .unwrap_or_default(),
        r.keep_weekly
            .map(|n| format!(", keep_weekly {n}"))
            .unwrap_or_default(),
        r.keep_monthly
            .map(|n| format!(", keep_monthly {n}"))
            .unwrap_or_default(),
        r.keep_within
            .map(|d| format!(", keep_within {}", humantime::format_duration(d.0)))
            .unwrap_or_default(),
    );
    let tg = &c.telegram;
    match (&tg.bot_token, tg.chat_ids.is_empty()) {
        (Some(_), false) => out!(
            "telegram:   token set, {}, notify on {}, chat commands {}",
            plural(tg.chat_ids.len() as u64, "chat"),
            vertex_backup::config::NotifyOn::list(&tg.notify_on),
            if tg.commands { "on" } else { "off" }
        ),
        (Some(_), true) => out!("telegram:   token set but no chat_ids: nothing will be sent"),
        (None, _) => out!("telegram:   off (no bot token)"),
    }
    let api = &c.api;
    if api.enabled {
        let token = if api.token.is_some() || api.token_file.is_some() {
            "token set"
        } else {
            "NO TOKEN: the API will not start"
        };
        out!("api:        {} ({token})", api.listen);
    } else {
        out!("api:        disabled");
    }
    // Which jobs ping, never the URLs: they are credentials.
    let hc = &c.healthchecks;
    let jobs: Vec<&str> = vertex_backup::kind::JobName::ALL
        .iter()
        .filter(|j| hc.check_of(**j).is_some())
        .map(|j| j.as_str())
        .collect();
    match (jobs.is_empty(), &hc.ping_url) {
        (true, None) => out!("pings:      off"),
        (_, url) => out!(
            "pings:      {}{}",
            if jobs.is_empty() {
                "no job checks".to_string()
            } else {
                format!("checks for {}", jobs.join(", "))
            },
            if url.is_some() {
                format!("; ping_url on {}", hc.ping_url_on.join(", "))
            } else {
                String::new()
            }
        ),
    }
}

pub fn print_restore_plan(plan: &RestorePlan, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    out!(
        "restore plan for {} ({}):",
        plan.backup.display(),
        plan.kind
    );
    for (i, line) in plan.describe().iter().enumerate() {
        out!("  {}. {line}", i + 1);
    }
    Ok(())
}

pub fn print_restored(r: &RestoreReport) {
    if !r.stopped.is_empty() {
        out!(
            "stopped while the live data was replaced, then started again: {}",
            r.stopped.join(", ")
        );
    }
    if let Some(d) = &r.database {
        out!("database restored into {}", d.target.display());
        if let Some(s) = &d.safety_copy {
            out!("  the previous database was saved as {}", s.display());
        }
    }
    if let Some(s) = &r.storage {
        out!(
            "storage restored into {} ({} entries, {} of them files; {} of file data)",
            s.target.display(),
            s.entries,
            s.files,
            format_bytes(s.bytes)
        );
        if let Some(p) = &s.previous_tree {
            out!("  the previous tree was kept as {}", p.display());
        }
    }
    out!(
        "restore completed in {}{}",
        format_duration(std::time::Duration::from_millis(r.duration_ms)),
        if r.verified {
            " (verified)"
        } else {
            " (NOT verified)"
        }
    );
}

pub fn print_verify_line(r: &VerifyReport) {
    if r.ok && !r.fully_checked {
        out!(
            "PART  {:<9} {}  checked what needs no key; not checked: {}",
            r.kind.as_str(),
            r.name,
            r.not_checked().unwrap_or_default()
        );
    } else if r.ok {
        let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
        out!(
            "OK    {:<9} {}  [{}] ({}, {})",
            r.kind.as_str(),
            r.name,
            names.join(", "),
            format_bytes(r.bytes_read),
            format_duration(std::time::Duration::from_millis(r.duration_ms))
        );
    } else {
        out!(
            "FAIL  {:<9} {}  {}",
            r.kind.as_str(),
            r.name,
            r.failure().unwrap_or_default()
        );
    }
}

pub fn print_rotation(r: &RotateReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    for d in &r.plan.keep {
        out!(
            "keep    {:<9} {}  ({})",
            d.kind.as_str(),
            d.id,
            d.explained.join("; ")
        );
    }
    for d in &r.plan.delete {
        out!(
            "{}  {:<9} {}  ({})",
            if r.dry_run { "would delete" } else { "delete" },
            d.kind.as_str(),
            d.id,
            d.explained.join("; ")
        );
    }
    for d in &r.plan.ignored {
        out!(
            "skip    {:<9} {}  (incomplete or failed verification: not counted, not deleted; inspect it)",
            d.kind.as_str(),
            d.id
        );
    }
    if !r.cleaned.is_empty() {
        out!(
            "removed {} leftover file(s) of interrupted runs",
            r.cleaned.len()
        );
    }
    out!(
        "rotation: {verb} {} backup(s), {} freed, {} kept{}",
        r.plan.delete.len(),
        format_bytes(r.freed_bytes),
        r.plan.keep.len(),
        if r.dry_run {
            " (dry run: nothing was deleted)"
        } else {
            ""
        }
    );
    if let Some(p) = &r.repack {
        print_repack(p);
    }
}

/// What repacking the snapshot store did (or, a dry run, would do).
fn print_repack(p: &vertex_backup::engine::repack::RepackReport) {
    if let Some(e) = &p.error {
        out!("store: repacking failed, nothing reclaimed: {e}");
        return;
    }
    let share = |n: u64| match p.used_bytes {
        0 => String::new(),
        used => format!(
            " ({:.1} % of the {} used)",
            n as f64 * 100.0 / used as f64,
            format_bytes(used)
        ),
    };
    if p.packs_rewritten == 0 {
        out!(
            "store: {} unused{}: within max_unused, nothing to repack",
            format_bytes(p.unused_bytes),
            share(p.unused_bytes)
        );
    } else if p.dry_run {
        out!(
            "store: {} unused{}: would repack {} pack(s) ({}), reclaiming about {}",
            format_bytes(p.unused_bytes),
            share(p.unused_bytes),
            p.packs_rewritten,
            format_bytes(p.rewritten_bytes),
            format_bytes(p.reclaimed_bytes)
        );
    } else {
        out!(
            "store: repacked {} pack(s) ({}) into {} ({}): {} reclaimed, {} backup(s) rewritten",
            p.packs_rewritten,
            format_bytes(p.rewritten_bytes),
            p.packs_written,
            format_bytes(p.written_bytes),
            format_bytes(p.reclaimed_bytes),
            p.backups_rewritten.len()
        );
    }
    for why in &p.left {
        out!("store: left as is: {why}");
    }
}

/// One `ls` line, like `tar -tv`: mode, size, mtime (in the configured zone), path.
pub fn print_ls_entry(e: &ListedEntry, zone: Timezone) {
    let kind_char = match e.kind {
        "dir" => 'd',
        "symlink" => 'l',
        "hardlink" => 'h',
        _ => '-',
    };
    let mode = u32::from_str_radix(&e.mode, 8).unwrap_or(0);
    let rwx: String = (0..9)
        .map(|i| {
            let bit = 1 << (8 - i);
            match (mode & bit != 0, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect();
    let size = match e.kind {
        "file" => format_bytes(e.size),
        _ => "-".into(),
    };
    let mtime = i64::try_from(e.mtime)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| zone.localize(&t).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "?".into());
    let slash = if e.kind == "dir" { "/" } else { "" };
    let link = match (&e.link_target, e.kind) {
        (Some(t), "symlink") => format!(" -> {t}"),
        (Some(t), _) => format!(" link to {t}"),
        (None, _) => String::new(),
    };
    out!(
        "{kind_char}{rwx} {size:>10}  {mtime}  {}{slash}{link}",
        e.path
    );
}

/// `ls --json` of a storage or full backup: one document, its shape documented in README.
pub fn print_ls_json(
    name: &str,
    entry: &BackupEntry,
    archive: &BackupEntry,
    entries: &[ListedEntry],
) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "backup": name,
        "type": entry.kind,
        "archive": archive.data_path,
        "entries": entries,
    });
    out!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// `ls` of a backup without files: a database backup (its tables, when read), or a full
/// backup made without storage.
pub fn print_ls_no_archive(
    name: &str,
    kind: BackupKind,
    tables: Option<&[TableRows]>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({
            "backup": name,
            "type": kind,
            "entries": [],
            "tables": tables,
        });
        out!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match tables {
        Some(tables) => {
            out!("{name} is a database backup (SQLite), not a file archive; its tables:");
            let width = tables.iter().map(|t| t.name.len()).max().unwrap_or(0);
            for t in tables {
                out!("  {:<width$}  {}", t.name, plural(t.rows, "row"));
            }
        }
        None => out!("{name} holds no storage archive (a {kind} backup without files)"),
    }
    Ok(())
}
