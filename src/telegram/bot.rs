//! Chat commands (`[telegram] commands = true`): the bot long-polls `getUpdates` through
//! teloxide and answers `/status`, `/list [type]`, `/backup full|database|storage` and
//! `/verify [latest]` — only in the chats of `chat_ids`; anyone else gets no answer and a
//! log line. Jobs go through the daemon's one job queue like scheduled and API runs, and
//! are answered when they finish. Restoring is never offered from a chat: a phone message
//! must not be able to overwrite the live data.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use teloxide::prelude::*;
use teloxide::types::{AllowedUpdate, Chat, UpdateKind};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{TelegramTarget, escape, send_with_retries};
use crate::config::{ChatRef, Config};
use crate::engine::backup::catalog_for;
use crate::jobs::{JobOutcome, Queue, Rejected, Trigger, Work};
use crate::kind::{BackupKind, JobName};
use crate::units::{format_bytes, format_duration};

/// How long one `getUpdates` call waits for news (below teloxide's 17 s client timeout).
const POLL_SECONDS: u32 = 10;
/// Wait after a failed poll, so an unreachable API is not hammered.
const POLL_BACKOFF: Duration = Duration::from_secs(5);
/// How many backups `/list` shows.
const LIST_NEWEST: usize = 5;

const HELP: &str = "commands: /status · /list [full|database|storage] · \
/backup full|database|storage · /verify [latest]\n(restore runs on the server only)";

/// Start the command bot over the daemon's config and job queue, if `[telegram] commands`
/// is on and Telegram is configured; it stops at `shutdown`.
pub fn start(
    config: watch::Receiver<Arc<Config>>,
    queue: Queue,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let cfg = config.borrow().clone();
    if !cfg.telegram.commands {
        return None;
    }
    match TelegramTarget::from_config(&cfg.telegram) {
        Some(Ok(_)) => {}
        Some(Err(why)) => {
            tracing::warn!("telegram commands are off: {why}");
            return None;
        }
        None => {
            tracing::warn!("telegram commands are off: no bot token ([telegram] bot_token)");
            return None;
        }
    }
    tracing::info!("telegram commands: polling for messages from the configured chats");
    Some(tokio::spawn(poll(config, queue, shutdown)))
}

/// The long-poll loop: `offset` confirms every update seen, so none is answered twice.
async fn poll(config: watch::Receiver<Arc<Config>>, queue: Queue, shutdown: CancellationToken) {
    let mut offset: i32 = 0;
    // The turn of the command answered last: the next one answers after it.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    loop {
        let cfg = config.borrow().clone();
        // A reload may have removed the token or the chats; the next one may bring them back.
        let Some(Ok(target)) = TelegramTarget::from_config(&cfg.telegram) else {
            if pause(&shutdown, POLL_BACKOFF).await {
                return;
            }
            continue;
        };
        let bot = target.bot();
        let request = bot
            .get_updates()
            .offset(offset)
            .timeout(POLL_SECONDS)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::ChannelPost]);
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = request.into_future() => a,
        };
        match answer {
            Ok(updates) => {
                for update in updates {
                    offset = offset.max(update.id.0 as i32 + 1);
                    handle(update, &cfg, &target, &bot, &queue, &mut previous);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "telegram: getUpdates failed: {}",
                    target.redact(&e.to_string())
                );
                if pause(&shutdown, POLL_BACKOFF).await {
                    return;
                }
            }
        }
    }
}

/// Sleep `d` unless shutdown comes first; true when it did.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// A command's place in line: its replies go out after the previous command's first
/// reply (its answer, or a job's "queued" note) and before the next command's, so the
/// chat reads them in the order it asked. A job's final answer comes when the job is done.
struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Wait for the previous command's first reply to have been sent (or given up).
    async fn wait(&mut self) {
        if let Some(previous) = self.after.take() {
            let _ = previous.await;
        }
    }
    /// Let the next command reply.
    fn pass(&mut self) {
        if let Some(next) = self.done.take() {
            let _ = next.send(());
        }
    }
}

/// Answer one update in a task of its own, so a `/backup` that waits for its job does not
/// hold up the polling; its place in line is taken here, in the order of the updates.
fn handle(
    update: Update,
    cfg: &Arc<Config>,
    target: &TelegramTarget,
    bot: &Bot,
    queue: &Queue,
    previous: &mut Option<oneshot::Receiver<()>>,
) {
    let (UpdateKind::Message(msg) | UpdateKind::ChannelPost(msg)) = update.kind else {
        return;
    };
    let Some(text) = msg.text() else {
        return;
    };
    if !text.starts_with('/') {
        return;
    }
    if !allowed(&cfg.telegram.chat_ids, &msg.chat) {
        tracing::warn!(
            "telegram: ignored a command from chat {} ({}): not in [telegram] chat_ids",
            msg.chat.id.0,
            msg.chat.username().unwrap_or("no username")
        );
        return;
    }
    let command = Command::parse(text);
    let chat = ChatRef::Id(msg.chat.id.0);
    let (cfg, target, bot, queue) = (cfg.clone(), target.clone(), bot.clone(), queue.clone());
    let (done, next) = oneshot::channel();
    let mut turn = Turn {
        after: previous.replace(next),
        done: Some(done),
    };
    tokio::spawn(async move {
        turn.wait().await;
        let answer = answer(command, &cfg, &queue, &target, &bot, &chat, &mut turn).await;
        if let Err(f) = send_with_retries(&target, &bot, &chat, &answer).await {
            tracing::warn!("telegram answer to chat {chat} dropped: {}", f.message());
        }
        turn.pass();
    });
}

/// Whether `chat` is one of the configured chats, by id or by channel username.
pub fn allowed(chat_ids: &[ChatRef], chat: &Chat) -> bool {
    chat_ids.iter().any(|c| match c {
        ChatRef::Id(id) => *id == chat.id.0,
        ChatRef::Channel(name) => chat
            .username()
            .is_some_and(|u| name.trim_start_matches('@').eq_ignore_ascii_case(u)),
    })
}

/// A command as typed: `/backup@my_bot database` is `/backup database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    List(Option<BackupKind>),
    Backup(JobName),
    Verify,
    Restore,
    Help,
}

impl Command {
    pub fn parse(text: &str) -> Command {
        let mut words = text.split_whitespace();
        let head = words.next().unwrap_or_default();
        let name = head
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let arg = words.next().map(str::to_ascii_lowercase);
        let extra = words.next().is_some();
        match (name.as_str(), arg.as_deref(), extra) {
            ("/status", None, false) => Command::Status,
            ("/list", None, false) => Command::List(None),
            ("/list", Some(kind), false) => match kind.parse::<BackupKind>() {
                Ok(k) => Command::List(Some(k)),
                Err(_) => Command::Help,
            },
            ("/backup", Some(kind), false) => match JobName::parse(kind) {
                Some(j @ (JobName::Full | JobName::Database | JobName::Storage)) => {
                    Command::Backup(j)
                }
                _ => Command::Help,
            },
            ("/verify", None | Some("latest"), false) => Command::Verify,
            ("/restore", _, _) => Command::Restore,
            _ => Command::Help,
        }
    }
}

async fn answer(
    command: Command,
    cfg: &Config,
    queue: &Queue,
    target: &TelegramTarget,
    bot: &Bot,
    chat: &ChatRef,
    turn: &mut Turn,
) -> String {
    match command {
        Command::Status => status_text(cfg),
        Command::List(kind) => list_text(cfg, kind),
        Command::Backup(job) => run(queue, job, target, bot, chat, turn).await,
        Command::Verify => run(queue, JobName::Verify, target, bot, chat, turn).await,
        Command::Restore => {
            "restore is not offered from chat: run `vertex-backup restore` on the server".into()
        }
        Command::Help => HELP.into(),
    }
}

/// Queue `job`, say so, and answer with its outcome when it is done.
async fn run(
    queue: &Queue,
    job: JobName,
    target: &TelegramTarget,
    bot: &Bot,
    chat: &ChatRef,
    turn: &mut Turn,
) -> String {
    let work = Work::Job(job);
    let refused = |k| format!("a {k} job is already queued or running; try again when it is done");
    if queue.busy().contains(&work.key()) {
        return refused(work.key());
    }
    // The note goes out before the job is queued, so it is never read after the job's
    // own notification (a quick job can finish while a note is still on its way).
    let queued = format!("⏳ {job} queued; I will answer when it is done");
    if let Err(f) = send_with_retries(target, bot, chat, &queued).await {
        tracing::debug!(
            "telegram: the queued note was not delivered: {}",
            f.message()
        );
    }
    turn.pass();
    let rx = match queue.request(work, Trigger::Telegram) {
        Ok(rx) => rx,
        // Queued by someone else between the check and now.
        Err(Rejected::AlreadyQueued(k)) => return refused(k),
        Err(Rejected::ShuttingDown) => return "the daemon is shutting down".into(),
    };
    match rx.await {
        Ok(outcome) => outcome_text(job, &outcome),
        Err(_) => format!("{job} was dropped: the daemon is shutting down"),
    }
}

/// The answer for a finished job.
pub fn outcome_text(job: JobName, outcome: &JobOutcome) -> String {
    match outcome {
        JobOutcome::Backup(result) => match result.as_ref() {
            Ok(r) => format!(
                "✅ {job} backup done: {} · {}",
                escape(&r.stem),
                match r.added_to_store() {
                    Some(added) => format!(
                        "{}, {} added",
                        format_bytes(r.metadata.shown_size()),
                        format_bytes(added)
                    ),
                    None => format_bytes(r.metadata.file_size),
                }
            ),
            Err(f) => format!(
                "❌ {job} backup FAILED at \"{}\"\n{}",
                escape(f.step),
                escape(&crate::error_chain(f.error.as_ref()))
            ),
        },
        JobOutcome::Verify(Ok(reports)) => {
            let failed: Vec<String> = reports
                .iter()
                .filter(|r| !r.ok)
                .map(|r| {
                    format!(
                        "• {}: {}",
                        escape(&r.name),
                        escape(&r.failure().unwrap_or_default())
                    )
                })
                .collect();
            if failed.is_empty() {
                format!(
                    "✅ verified {}",
                    crate::units::plural(reports.len() as u64, "backup")
                )
            } else {
                format!("❌ verification FAILED\n{}", failed.join("\n"))
            }
        }
        JobOutcome::Verify(Err(e)) | JobOutcome::Rotate(Err(e)) => {
            format!("❌ {job} FAILED\n{}", escape(&crate::error_chain(e)))
        }
        JobOutcome::Offsite(Err(e)) | JobOutcome::OffsiteVerify(Err(e)) => {
            format!("❌ {job} FAILED\n{}", escape(&crate::error_chain(e)))
        }
        outcome @ (JobOutcome::Offsite(Ok(_)) | JobOutcome::OffsiteVerify(Ok(_))) => {
            if outcome.ok() {
                format!("✅ {job} done")
            } else {
                format!("❌ {job} FAILED on a target (the notification says which)")
            }
        }
        JobOutcome::Rotate(Ok(_)) | JobOutcome::Restore(_) => format!("✅ {job} done"),
        JobOutcome::Crashed(why) => format!("❌ {job} crashed: {}", escape(why)),
    }
}

/// The backups on disk, or the answer saying why they cannot be listed.
fn listing(cfg: &Config) -> Result<crate::catalog::Listing, String> {
    catalog_for(cfg).list().map_err(|e| {
        format!(
            "❌ cannot list backups: {}",
            escape(&crate::error_chain(&e))
        )
    })
}

/// `status`, short: the newest backup of each type with its age, and each job's next run.
pub fn status_text(cfg: &Config) -> String {
    let listing = match listing(cfg) {
        Ok(l) => l,
        Err(answer) => return answer,
    };
    let now = Utc::now();
    let verdicts = catalog_for(cfg).load_verdicts();
    let mut lines = vec![format!(
        "<b>{}</b> · status",
        escape(&crate::sys::hostname())
    )];
    for kind in BackupKind::ALL {
        let passed_over = crate::catalog::choice::latest_good(&listing, &verdicts, kind)
            .map(|(_, skipped)| skipped)
            .unwrap_or_default();
        let newest = listing.newest_present(kind, now);
        let age = newest
            .and_then(|b| b.created)
            .and_then(|c| (now - c.with_timezone(&Utc)).to_std().ok());
        let stale = match (age, crate::schedule::max_age(cfg, kind, now)) {
            (Some(a), Some(max)) => a > max,
            (None, Some(_)) => true,
            _ => false,
        };
        lines.push(format!(
            "{kind}: {}{}{}",
            newest
                .map(|b| escape(&b.stem))
                .unwrap_or_else(|| "none".into()),
            age.map(|a| format!(" ({} ago)", format_duration(a)))
                .unwrap_or_default(),
            if stale { " STALE" } else { "" }
        ));
        // What a restore of the newest would pass over, said here as `restore` says it.
        for (name, why) in passed_over {
            lines.push(format!(
                "  ⚠ {} passed over: {}",
                escape(&name),
                escape(&why)
            ));
        }
    }
    let next: Vec<String> = JobName::ALL
        .into_iter()
        .filter_map(|job| {
            let t = crate::schedule::next_runs(cfg.schedule_of(job), cfg.schedule.timezone, now, 1)
                .into_iter()
                .next()?;
            Some(format!("{job} {}", cfg.schedule.timezone.format(&t)))
        })
        .collect();
    if !next.is_empty() {
        lines.push(format!("next: {}", escape(&next.join(", "))));
    }
    lines.join("\n")
}

/// The newest few backups, of one type or all.
pub fn list_text(cfg: &Config, kind: Option<BackupKind>) -> String {
    let listing = match listing(cfg) {
        Ok(l) => l,
        Err(answer) => return answer,
    };
    // A full backup's parts are listed under it, not beside it; a restore's safety copy
    // is not a backup (`vertex-backup list` on the server shows both).
    let backups = || {
        listing
            .backups
            .iter()
            .filter(move |b| kind.is_none_or(|k| b.kind == k))
    };
    let safety_copies = backups().filter(|b| b.metadata.is_pre_restore()).count();
    let shown: Vec<String> = backups()
        .filter(|b| b.part_of().is_none() && !b.metadata.is_pre_restore())
        .take(LIST_NEWEST)
        .map(|b| {
            format!(
                "• {} · {}{}",
                escape(&b.stem),
                format_bytes(b.metadata.shown_size()),
                if b.is_complete() { "" } else { " (incomplete)" }
            )
        })
        .collect();
    let what = kind
        .map(|k| format!("{k} backups"))
        .unwrap_or_else(|| "backups".into());
    let aside = if safety_copies > 0 {
        let copies = if safety_copies == 1 {
            "1 safety copy".to_string()
        } else {
            format!("{safety_copies} safety copies")
        };
        format!("\n(and {copies} set aside by restores: vertex-backup list)")
    } else {
        String::new()
    };
    if shown.is_empty() {
        return format!("no {what} yet{aside}");
    }
    format!("newest {what}:\n{}{aside}", shown.join("\n"))
}
