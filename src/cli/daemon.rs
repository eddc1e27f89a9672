//! `daemon` and `status`: the service wired to signals and logs, with the REST API and the
//! Telegram command bot started beside it over the daemon's job queue, and a look at its state.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use vertex_backup::daemon::{self, Control, Daemon, JobRuns, Services, Timetable};
use vertex_backup::engine::backup::catalog_for;
use vertex_backup::kind::JobName;
use vertex_backup::offsite::OffsiteStore;
use vertex_backup::offsite::summary::TargetStatus;
use vertex_backup::units::format_duration;
use vertex_backup::{BackupKind, Config};

use super::{ConfigArgs, load_config};

/// Logs to stderr: journald-friendly (no colours off a terminal, no timestamps under
/// systemd, which adds its own). `RUST_LOG` overrides the level.
pub fn init_tracing(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

pub fn cmd_daemon(config: Config, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    return_freed_buffers_to_the_system();
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vertex-backup")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let control = Control::default();
        let signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(|e| {
            vertex_backup::Error::io("install signal handlers for", "SIGHUP/SIGTERM/SIGINT", e)
        })?;
        let signals_handle = signals.handle();
        let c = control.clone();
        let listener = tokio::spawn(async move {
            let mut signals = signals;
            while let Some(sig) = signals.next().await {
                match sig {
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        c.reload.notify_one();
                    }
                    _ => {
                        tracing::info!("signal {sig}: stopping");
                        c.shutdown.cancel();
                    }
                }
            }
        });
        let loader: daemon::ConfigLoader = Arc::new(move || load_config(&args));
        let result = async {
            let daemon = Daemon::start(config, loader, Vec::new()).await?;
            let api = start_api(daemon.services(), control.shutdown.clone()).await;
            let bot = start_bot(daemon.services(), control.shutdown.clone());
            let result = daemon.run(control).await;
            // The bot stops polling at the shutdown; answers in flight are not waited for.
            if let Some(bot) = bot {
                bot.abort();
            }
            // The API stopped taking requests with the shutdown; let open ones finish.
            if let Some(api) = api {
                let _ = tokio::time::timeout(API_DRAIN, api).await;
            }
            result
        }
        .await;
        signals_handle.close();
        listener.abort();
        result
    })?;
    // The blocking pool may still hold a cancelled job's thread; do not wait on it forever.
    Ok(ExitCode::SUCCESS)
}

/// How long a stopping daemon waits for the API's open requests.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The REST API, if enabled, over the daemon's services until `shutdown`; without a token
/// it stays off and says why (the daemon runs either way).
async fn start_api(
    services: Services,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !services.config.borrow().api.enabled {
        return None;
    }
    let Services {
        config,
        queue,
        health,
        metrics,
    } = services;
    match vertex_backup::api::start(config, queue, health, metrics, shutdown).await {
        Ok((addr, bound, task)) => {
            tracing::info!(
                "REST API listening on http://{addr} (at most {bound} connections at once)"
            );
            Some(task)
        }
        Err(why) => {
            tracing::error!("the REST API is not started: {why}");
            None
        }
    }
}

/// The Telegram command bot, if `[telegram] commands` is on, over the daemon's config and
/// job queue until `shutdown` (like the API, a client of the daemon's services).
fn start_bot(
    services: Services,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    vertex_backup::telegram::bot::start(services.config, services.queue, shutdown)
}

/// Keep the idle daemon small once a job is done (the idle daemon within 30 MiB RSS, docs/design.md §8).
/// glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB),
/// and its trim threshold to twice that: after the first backup, the job's multi-MiB zstd
/// and I/O buffers come from the per-thread arenas instead, and stay resident after they
/// are freed. Measured by the API storm test (tests/pressure): RSS 22.6 MiB at start, 59.4 MiB for good after
/// three backups. Setting the threshold turns the adjustment off, so large buffers are
/// mmapped and given back on free (RSS ~26 MiB after the same backups; peak unchanged).
/// Small allocations are unaffected. Other C libraries (musl) return large blocks anyway.
fn return_freed_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter (glibc's default value, fixed).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Raise the soft open-file limit to the hard one (systemd's default soft limit is 1024,
/// its hard limit far higher; the unit sets both). The REST API holds at most a quarter
/// of the soft limit in sockets, so the higher it is, the further the scheduler's own
/// files (lock, database, archives, hook pipes) are from "Too many open files".
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, which outlives the calls.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
    };
    if !raised {
        // The lower limit stays; the API's connection bound follows it.
        tracing::warn!(
            "cannot raise the open-file limit from {} to {}: {}",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
    }
}

#[derive(Serialize)]
struct KindStatus {
    #[serde(rename = "type")]
    kind: BackupKind,
    newest: Option<String>,
    newest_created_at: Option<String>,
    age_seconds: Option<u64>,
    max_age_seconds: Option<u64>,
    /// Where `max_age` comes from: `[alerts] max_age`, or how it was derived from the
    /// schedule ("1.5 × the full job's interval of 1d").
    max_age_from: Option<String>,
    stale: bool,
    last_success: Option<String>,
    last_failure: Option<String>,
    last_failure_error: Option<String>,
    /// Backups of this type dated after now (the clock ran ahead): never the newest.
    future_dated: Vec<String>,
}

#[derive(Serialize)]
struct JobStatus {
    job: JobName,
    schedule: String,
    next_run: Option<String>,
    last_run: Option<String>,
    last_ok: Option<bool>,
}

#[derive(Serialize)]
struct Status {
    backup_dir: String,
    timezone: String,
    types: Vec<KindStatus>,
    jobs: Vec<JobStatus>,
    /// Per `[[offsite]]` target, from its state file (absent without targets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    offsite: Vec<TargetStatus>,
    /// Continuous replication as the daemon's last step left it (absent when off).
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<super::replica_status::ReplicationView>,
}

pub fn cmd_status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = catalog_for(config);
    let listing = catalog.list()?;
    let state = catalog.load_state();
    let history = JobRuns::load(&config.paths.backup_dir);
    let now = Utc::now();
    let types: Vec<KindStatus> = BackupKind::ALL
        .into_iter()
        .map(|kind| {
            let newest = listing.newest_present(kind, now);
            let age = newest
                .and_then(|b| b.created)
                .and_then(|c| (now - c.with_timezone(&Utc)).to_std().ok());
            let explained = vertex_backup::schedule::max_age_explained(config, kind, now);
            let limit = explained.as_ref().map(|(limit, _)| *limit);
            let record = state.get(kind.as_str());
            KindStatus {
                kind,
                newest: newest.map(|b| {
                    b.data_path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                }),
                newest_created_at: newest.map(|b| b.metadata.created_at.clone()),
                age_seconds: age.map(|a| a.as_secs()),
                max_age_seconds: limit.map(|l| l.as_secs()),
                max_age_from: explained.map(|(_, why)| why),
                stale: match (age, limit) {
                    (Some(a), Some(l)) => a > l,
                    (None, Some(_)) => true,
                    _ => false,
                },
                last_success: record.and_then(|r| r.last_success.as_ref().map(|o| o.at.clone())),
                last_failure: record.and_then(|r| r.last_failure.as_ref().map(|o| o.at.clone())),
                last_failure_error: record
                    .and_then(|r| r.last_failure.as_ref().and_then(|o| o.error.clone())),
                future_dated: listing
                    .future_dated(now)
                    .filter(|b| b.kind == kind)
                    .map(|b| b.stem.clone())
                    .collect(),
            }
        })
        .collect();
    let timetable = Timetable::new(config, now);
    let jobs: Vec<JobStatus> = JobName::ALL
        .into_iter()
        .map(|job| {
            let run = history.jobs.get(job.as_str());
            JobStatus {
                job,
                schedule: config.schedule_of(job).expression().to_string(),
                next_run: timetable
                    .next_of(job)
                    .map(|t| config.schedule.timezone.format(&t)),
                last_run: run
                    .and_then(|r| r.finished)
                    .map(|t| config.schedule.timezone.format(&t)),
                last_ok: run.and_then(|r| r.ok),
            }
        })
        .collect();
    let status = Status {
        backup_dir: config.paths.backup_dir.display().to_string(),
        timezone: config.schedule.timezone.to_string(),
        types,
        jobs,
        offsite: vertex_backup::offsite::summary::status(
            config,
            &OffsiteStore::new(&config.paths.backup_dir, config.backup.file_mode.0).load(),
            now,
        ),
        replication: super::replica_status::view(config, now),
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        out!("backup directory: {}", status.backup_dir);
        for t in &status.types {
            let age = t
                .age_seconds
                .map(|s| format_duration(std::time::Duration::from_secs(s)))
                .unwrap_or_else(|| "never".into());
            let limit = match (t.max_age_seconds, &t.max_age_from) {
                (Some(s), Some(from)) => format!(
                    "{} = {from}",
                    format_duration(std::time::Duration::from_secs(s))
                ),
                (Some(s), None) => format_duration(std::time::Duration::from_secs(s)),
                (None, _) => "none: nothing makes it on a schedule".into(),
            };
            out!(
                "{:<9} newest: {} (age {age}, max_age {limit}){}",
                t.kind.as_str(),
                t.newest.as_deref().unwrap_or("-"),
                if t.stale { "  STALE" } else { "" }
            );
            if let Some(f) = &t.last_failure {
                out!(
                    "          last failure: {f}: {}",
                    t.last_failure_error.as_deref().unwrap_or("?")
                );
            }
            if !t.future_dated.is_empty() {
                out!(
                    "          WARNING: dated in the future (check the clock; not counted as newest): {}",
                    t.future_dated.join(", ")
                );
            }
        }
        out!("\njobs (time zone {}):", status.timezone);
        for j in &status.jobs {
            out!(
                "  {:<9} {:<16} next: {}   last run: {}{}",
                j.job.as_str(),
                j.schedule,
                j.next_run.as_deref().unwrap_or("-"),
                j.last_run.as_deref().unwrap_or("-"),
                match j.last_ok {
                    Some(true) => " (ok)",
                    Some(false) => " (FAILED)",
                    None => "",
                }
            );
        }
        print_offsite_status(&status.offsite);
        if let Some(r) = &status.replication {
            super::replica_status::print(r);
        }
    }
    let any_stale = status.types.iter().any(|t| t.stale)
        || status.replication.as_ref().is_some_and(|r| r.behind);
    Ok(if any_stale {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The offsite part of `status`: per target its last upload and failure, what is pending,
/// per type the lag of its newest remote copy, and its last verification.
fn print_offsite_status(targets: &[TargetStatus]) {
    use vertex_backup::units::format_bytes;
    let secs = |s: Option<u64>| s.map(|s| format_duration(std::time::Duration::from_secs(s)));
    for t in targets {
        out!("\noffsite {} ({}):", t.name, t.url);
        out!(
            "  last upload: {}   pending: {} ({})",
            t.last_success.as_deref().unwrap_or("never"),
            vertex_backup::units::plural(t.pending.len() as u64, "backup"),
            format_bytes(t.pending_bytes)
        );
        if let Some(f) = &t.last_failure {
            out!(
                "  last failure: {f}: {}{}",
                t.last_failure_error.as_deref().unwrap_or("?"),
                t.failing_since
                    .as_deref()
                    .map(|s| format!(" (failing since {s})"))
                    .unwrap_or_default()
            );
        }
        for k in &t.types {
            out!(
                "  {:<9} lag: {} (max_age {}){}",
                k.kind.as_str(),
                secs(k.lag_seconds).unwrap_or_else(|| "no remote copy".into()),
                secs(k.max_age_seconds).unwrap_or_else(|| "none".into()),
                if k.stale { "  STALE" } else { "" }
            );
        }
        out!(
            "  last verify: {}",
            t.last_verify.as_deref().unwrap_or("never")
        );
        if let Some(f) = &t.last_verify_failure {
            out!(
                "  last verify failure: {f}: {}",
                t.last_verify_error.as_deref().unwrap_or("?")
            );
        }
    }
}
