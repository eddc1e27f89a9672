//! Telegram notifications (docs/design.md §7): the events an operator chose in `notify_on`, as short
//! HTML messages readable on a phone, to every configured chat. Sending never holds a
//! backup back: the sink only formats and queues; a task delivers, retrying transient
//! failures with capped exponential backoff and honouring Telegram's `retry_after`, and
//! drops a message with a logged warning when retries run out. The bot token never
//! appears in a log or an error: every error text is redacted before it is shown.

use std::sync::Arc;
use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{ChatId, MessageId, ParseMode, Recipient, ThreadId};
use teloxide::{ApiError, RequestError};
use tokio::sync::{mpsc, watch};

use crate::config::{ChatRef, Config, TelegramSection};
use crate::events::{DiskSpace, Event, Sink};
use crate::units::{format_bytes, format_duration};

pub mod bot;
mod offsite;
mod replication;

/// Telegram's limit for one message.
pub const MAX_MESSAGE: usize = 4096;
/// Attempts per message and chat before it is dropped.
const ATTEMPTS: u32 = 6;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how to send, checked: `None` when Telegram is not configured.
#[derive(Clone)]
pub struct TelegramTarget {
    token: String,
    chats: Vec<ChatRef>,
    thread: Option<i32>,
    api_url: url::Url,
    /// Total time one message may take, retries included.
    timeout: Duration,
}

impl TelegramTarget {
    pub fn from_config(t: &TelegramSection) -> Option<Result<TelegramTarget, String>> {
        let token = t.bot_token.as_ref()?.expose().to_string();
        if t.chat_ids.is_empty() {
            return Some(Err(
                "a bot token is set but no chat ids ([telegram] chat_ids or $TELEGRAM_CHAT_ID)"
                    .into(),
            ));
        }
        let api_url = match url::Url::parse(&t.api_url) {
            Ok(u) => u,
            Err(e) => return Some(Err(format!("[telegram] api_url is not a URL: {e}"))),
        };
        Some(Ok(TelegramTarget {
            token,
            chats: t.chat_ids.clone(),
            thread: t.message_thread_id,
            api_url,
            timeout: t.timeout.0,
        }))
    }

    pub(crate) fn bot(&self) -> Bot {
        Bot::new(&self.token).set_api_url(self.api_url.clone())
    }

    /// Remove the token (and anything shaped like a bot token) from a text.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.token)
    }
}

/// Replace `token` and its numeric bot id with `<redacted>`.
pub fn redact(text: &str, token: &str) -> String {
    let mut out = if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "<redacted>")
    };
    // The secret half alone can also show up (URL-encoded paths, partial prints).
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 8
    {
        out = out.replace(secret, "<redacted>");
    }
    out
}

/// Why a send failed, for `notify-test` and the logs (token-free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Worth retrying: network, 5xx, 429.
    Transient(String, Option<Duration>),
    /// Not worth retrying: bad token, unknown chat, bad request.
    Permanent(String),
}

impl SendFailure {
    pub fn message(&self) -> &str {
        match self {
            SendFailure::Transient(m, _) | SendFailure::Permanent(m) => m,
        }
    }
}

fn classify(e: &RequestError, target: &TelegramTarget) -> SendFailure {
    match e {
        RequestError::RetryAfter(s) => SendFailure::Transient("rate limited by Telegram (429)".into(), Some(s.duration())),
        RequestError::Network(n) => SendFailure::Transient(target.redact(&format!("network error: {}", crate::error_chain(n.as_ref()))), None),
        RequestError::InvalidJson { .. } => SendFailure::Transient("Telegram answered with something that is not its API (a proxy or a 5xx page?)".into(), None),
        RequestError::Api(ApiError::InvalidToken) => SendFailure::Permanent("the bot token was rejected (401 Unauthorized): check [telegram] bot_token / $TELEGRAM_BOT_TOKEN".into()),
        RequestError::Api(ApiError::ChatNotFound) => SendFailure::Permanent("chat not found: check [telegram] chat_ids, and that the bot was added to the chat".into()),
        RequestError::Api(ApiError::BotBlocked) => SendFailure::Permanent("the bot was blocked by the user of this chat".into()),
        RequestError::Api(ApiError::Unknown(text)) => {
            let lower = text.to_ascii_lowercase();
            let transient = ["internal", "gateway", "unavailable", "timeout", "too many"].iter().any(|w| lower.contains(w));
            let msg = target.redact(&format!("Telegram refused the message: {text}"));
            if transient { SendFailure::Transient(msg, None) } else { SendFailure::Permanent(msg) }
        }
        other => SendFailure::Permanent(target.redact(&format!("Telegram refused the message: {other}"))),
    }
}

/// The Bot API's form of a configured chat.
fn recipient(chat: &ChatRef) -> Recipient {
    match chat {
        ChatRef::Id(id) => Recipient::Id(ChatId(*id)),
        ChatRef::Channel(name) => Recipient::ChannelUsername(name.clone()),
    }
}

/// Send one message to one chat, once.
pub async fn send_once(
    target: &TelegramTarget,
    bot: &Bot,
    chat: &ChatRef,
    text: &str,
) -> Result<(), SendFailure> {
    let mut req = bot
        .send_message(recipient(chat), text)
        .parse_mode(ParseMode::Html);
    if let Some(t) = target.thread {
        req = req.message_thread_id(ThreadId(MessageId(t)));
    }
    req.await.map(|_| ()).map_err(|e| classify(&e, target))
}

/// Send with retries: backoff 1 s, 2 s, 4 s… capped; `retry_after` when Telegram says;
/// never longer in total than the target's timeout.
pub async fn send_with_retries(
    target: &TelegramTarget,
    bot: &Bot,
    chat: &ChatRef,
    text: &str,
) -> Result<(), SendFailure> {
    let deadline = tokio::time::Instant::now() + target.timeout;
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let outcome =
            match tokio::time::timeout(remaining, send_once(target, bot, chat, text)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(SendFailure::Transient(
                        format!("no answer within {:?}", target.timeout),
                        None,
                    ));
                }
            };
        match outcome {
            Ok(()) => return Ok(()),
            Err(SendFailure::Transient(msg, after)) => {
                let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if attempt == ATTEMPTS || wait >= remaining {
                    return Err(SendFailure::Transient(
                        format!("{msg} (gave up after {attempt} attempts)"),
                        after,
                    ));
                }
                tracing::debug!(
                    "telegram: {msg}; retrying in {wait:?} (attempt {attempt}/{ATTEMPTS})"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(permanent) => return Err(permanent),
        }
    }
    Err(SendFailure::Transient("gave up".into(), None))
}

/// The sink: formats the events `notify_on` selects and queues them for the sender task.
/// It reads the live config, so a reload can change chats, token or `notify_on`.
pub struct TelegramSink {
    tx: mpsc::Sender<String>,
    config: watch::Receiver<Arc<Config>>,
    host: String,
}

impl TelegramSink {
    /// Start the sender task. It ends when the sink is dropped and its queue is drained.
    pub fn start(
        config: watch::Receiver<Arc<Config>>,
    ) -> (Arc<TelegramSink>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            let mut warned = false;
            while let Some(text) = rx.recv().await {
                let target = TelegramTarget::from_config(&cfg.borrow().telegram);
                let target = match target {
                    Some(Ok(t)) => t,
                    Some(Err(why)) => {
                        if !warned {
                            tracing::warn!("telegram notifications are off: {why}");
                            warned = true;
                        }
                        continue;
                    }
                    None => continue,
                };
                deliver(&target, &text).await;
            }
        });
        let sink = TelegramSink {
            tx,
            config,
            host: crate::sys::hostname(),
        };
        (Arc::new(sink), task)
    }
}

/// Send `text` to every chat of `target`, with retries; failures are logged, not raised.
pub async fn deliver(target: &TelegramTarget, text: &str) {
    let bot = target.bot();
    for chat in &target.chats {
        if let Err(f) = send_with_retries(target, &bot, chat, text).await {
            tracing::warn!("telegram message to chat {chat} dropped: {}", f.message());
        }
    }
}

impl Sink for TelegramSink {
    fn handle(&self, event: &Event) {
        {
            let cfg = self.config.borrow();
            if cfg.telegram.bot_token.is_none() || !event.chosen_by(&cfg.telegram.notify_on) {
                return;
            }
        }
        let text = format_message(event, &self.host);
        if self.tx.try_send(text).is_err() {
            tracing::warn!("telegram queue full; a message was dropped");
        }
    }
}

/// For one-shot commands (`create` from cron): send the event now if `notify_on` selects
/// it, with retries bounded by `limit`. Never fails the caller.
pub fn notify_blocking(config: &Config, event: &Event, limit: Duration) {
    let Some(Ok(target)) = TelegramTarget::from_config(&config.telegram) else {
        if let Some(Err(why)) = TelegramTarget::from_config(&config.telegram) {
            tracing::warn!("telegram notifications are off: {why}");
        }
        return;
    };
    if !event.chosen_by(&config.telegram.notify_on) {
        return;
    }
    let text = format_message(event, &crate::sys::hostname());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("telegram: cannot start a runtime: {e}");
            return;
        }
    };
    let limit = limit.max(target.timeout * (target.chats.len() as u32 + 1));
    runtime.block_on(async {
        if tokio::time::timeout(limit, deliver(&target, &text))
            .await
            .is_err()
        {
            tracing::warn!("telegram: gave up after {limit:?}; the backup result is unaffected");
        }
    });
}

/// Escape text for Telegram's HTML parse mode.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn short_sum(sum: &str) -> String {
    if sum.len() > 12 {
        format!("{}…{}", &sum[..4], &sum[sum.len() - 4..])
    } else {
        sum.to_string()
    }
}

fn free_text(disk: Option<DiskSpace>) -> Option<String> {
    let d = disk?;
    Some(match (d.free * 100).checked_div(d.total) {
        Some(pct) => format!("{} free ({pct} %)", format_bytes(d.free)),
        None => format!("{} free", format_bytes(d.free)),
    })
}

/// A next-run time, as short as it can be: the date only when it is not today, the
/// seconds only when the schedule has them (a run at 12:00:30 is not "12:00").
fn when(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    when_from(t, &chrono::Utc::now().with_timezone(t.offset()))
}

fn when_from(
    t: &chrono::DateTime<chrono::FixedOffset>,
    now: &chrono::DateTime<chrono::FixedOffset>,
) -> String {
    use chrono::Timelike;
    let time = if t.second() == 0 { "%H:%M" } else { "%H:%M:%S" };
    let format = if t.date_naive() == now.date_naive() {
        time.to_string()
    } else if (t.date_naive() - now.date_naive()).num_days() < 7 {
        format!("%a {time}")
    } else {
        format!("%Y-%m-%d {time}")
    };
    t.format(&format).to_string()
}

/// Cut `text` (already escaped) so the message fits, with a note.
fn fit(mut text: String) -> String {
    const NOTE: &str = "\n… (cut to fit Telegram's limit)";
    if text.chars().count() <= MAX_MESSAGE {
        return text;
    }
    let keep = MAX_MESSAGE - NOTE.chars().count();
    let mut cut: String = text.chars().take(keep).collect();
    // Never leave half an entity (`&am`) or an unclosed tag behind.
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    if let Some(lt) = cut.rfind('<')
        && !cut[lt..].contains('>')
    {
        cut.truncate(lt);
    }
    text = cut;
    text.push_str(NOTE);
    text
}

/// The message for an event. `host` leads every message so one chat can serve several
/// servers; every dynamic value is escaped.
pub fn format_message(event: &Event, host: &str) -> String {
    let h = format!("<b>{}</b>", escape(host));
    if let Some(text) = offsite::message(event, &h).or_else(|| replication::message(event, &h)) {
        return fit(text);
    }
    let text = match event {
        Event::BackupSucceeded { facts, next_run } => {
            let mark = if facts.warnings.is_empty() {
                "✅"
            } else {
                "⚠️"
            };
            let mut s = format!(
                "{mark} {h} · {} backup{}\n{} · {} · {} · {}",
                facts.kind,
                if facts.warnings.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with {}",
                        crate::units::plural(facts.warnings.len() as u64, "warning")
                    )
                },
                escape(&facts.file_name),
                facts.size_text(),
                crate::units::plural(facts.file_count, "file"),
                format_duration(facts.duration)
            );
            s.push_str(&format!("\nsha256 {}", escape(&short_sum(&facts.checksum))));
            if let Some(ic) = &facts.integrity_check {
                s.push_str(&format!(" · integrity {}", escape(ic)));
            }
            if !facts.stopped.is_empty() {
                s.push_str(&format!(
                    "\napp stopped while its files were read, started again: {}",
                    escape(&facts.stopped.join(", "))
                ));
            }
            let mut tail = Vec::new();
            if let Some(f) = free_text(facts.disk) {
                tail.push(format!("disk: {f}"));
            }
            if let Some(n) = next_run {
                tail.push(format!("next: {} {}", facts.kind, when(n)));
            }
            if !tail.is_empty() {
                s.push('\n');
                s.push_str(&tail.join(" · "));
            }
            for w in facts.warnings.iter().take(3) {
                s.push_str(&format!("\n• {}", escape(w)));
            }
            if facts.warnings.len() > 3 {
                s.push_str(&format!(
                    "\n• … and {} more (see backup.log)",
                    facts.warnings.len() - 3
                ));
            }
            s
        }
        Event::BackupFailed {
            job,
            cancelled: true,
            ..
        } => format!("⏹ {h} · {job} backup cancelled by the shutdown; nothing partial was kept"),
        Event::BackupFailed {
            job,
            step,
            error,
            hint,
            disk,
            last_success,
            next_run,
            cancelled: false,
        } => {
            let mut s = format!(
                "❌ {h} · {job} backup FAILED at \"{}\"\n{}",
                escape(step),
                escape(error)
            );
            let mut tail = Vec::new();
            if let Some(f) = free_text(*disk) {
                tail.push(format!("disk: {f}"));
            }
            tail.push(match last_success {
                Some(t) => format!("last good {job} backup: {}", escape(t)),
                None => format!("no good {job} backup recorded yet"),
            });
            s.push('\n');
            s.push_str(&tail.join(" · "));
            let mut advice = hint.as_deref().map(escape).unwrap_or_default();
            if let Some(n) = next_run {
                if !advice.is_empty() {
                    advice.push_str(". ");
                }
                advice.push_str(&format!("Next try: {}", when(n)));
            }
            if !advice.is_empty() {
                s.push_str(&format!("\n→ {advice}"));
            }
            s
        }
        Event::Stale {
            kind,
            age,
            max_age,
            last_success,
            last_failure,
        } => {
            let mut s = format!(
                "⚠️ {h} · no successful {kind} backup for {} (max_age {})",
                age.map(format_duration)
                    .unwrap_or_else(|| "as long as the daemon has run".into()),
                format_duration(*max_age)
            );
            let mut tail = Vec::new();
            if let Some(t) = last_success {
                tail.push(format!("last success: {}", escape(t)));
            }
            if let Some(f) = last_failure {
                tail.push(format!("last failure: {}", escape(f)));
            }
            if !tail.is_empty() {
                s.push('\n');
                s.push_str(&tail.join(" · "));
            }
            s
        }
        Event::Recovered { kind, backup } => {
            format!("✅ {h} · {kind} backups are back: {}", escape(backup))
        }
        Event::VerifyFailed { failures } => {
            let list: Vec<String> = failures
                .iter()
                .map(|f| format!("• {}", escape(f)))
                .collect();
            format!(
                "❌ {h} · restore drill FAILED\n{}\n→ these backups cannot be trusted; take a fresh one",
                list.join("\n")
            )
        }
        Event::VerifyPassed { checked } => {
            format!(
                "✅ {h} · restore drill: {} verified",
                crate::units::plural(*checked as u64, "backup")
            )
        }
        Event::RotationDone {
            deleted,
            kept,
            freed,
        } => {
            format!(
                "🧹 {h} · rotation: {deleted} deleted, {kept} kept, {} freed",
                format_bytes(*freed)
            )
        }
        Event::RotationFailed { error } => format!("❌ {h} · rotation FAILED\n{}", escape(error)),
        Event::RestoreDone {
            backup,
            restored,
            stopped,
        } => {
            let mut s = format!("♻️ {h} · restored {}", escape(backup));
            for part in restored {
                s.push_str(&format!("\n{}", escape(&part.describe())));
            }
            s.push_str(&escape(&crate::events::stopped_text(stopped)));
            s
        }
        Event::ContainersNotStarted {
            job,
            containers,
            error,
        } => format!(
            "❌ {h} · the app is DOWN: after the {}, {} could not be started again\n{}\n→ start them by hand (`docker start {}`); the daemon keeps trying every minute",
            escape(job),
            escape(&containers.join(", ")),
            escape(error),
            escape(&containers.join(" "))
        ),
        Event::ContainersStarted { containers } => format!(
            "✅ {h} · the app is running again: {} started",
            escape(&containers.join(", "))
        ),
        Event::RestoreFailed { backup, error } => format!(
            "❌ {h} · restore of {} FAILED\n{}",
            escape(backup),
            escape(error)
        ),
        Event::JobSkipped { job, reason } => {
            format!("⚠️ {h} · {job} job skipped: {}", escape(reason))
        }
        Event::FutureDated { backups } => format!(
            "⚠️ {h} · backups dated in the future (check the clock); kept, not counted as the newest\n{}",
            escape(&backups.join(", "))
        ),
        Event::ConfigReloaded { next_runs } => {
            let runs: Vec<String> = next_runs
                .iter()
                .map(|(j, t)| format!("{} {}", escape(j), escape(t)))
                .collect();
            format!("🔄 {h} · configuration reloaded\nnext: {}", runs.join(", "))
        }
        Event::ConfigRejected { error } => {
            format!(
                "⚠️ {h} · configuration change REJECTED; the previous schedule keeps running\n{}",
                escape(error)
            )
        }
        Event::StateFileCorrupt {
            file,
            moved_to,
            error,
        } => format!(
            "⚠️ {h} · state file {} was corrupt; kept aside as {}, starting afresh\n{}",
            escape(file),
            escape(moved_to),
            escape(error)
        ),
        Event::DaemonStarted { version } => {
            format!("▶️ {h} · vertex-backup {} started", escape(version))
        }
        Event::JobStarted { job } => format!("▶️ {h} · {job} job started"),
        Event::DaemonStopping { reason } => {
            format!("⏹ {h} · vertex-backup stopping: {}", escape(reason))
        }
        // Formatted by `offsite::message` above.
        Event::OffsiteUploaded { .. }
        | Event::OffsiteUploadFailed { .. }
        | Event::OffsiteRecovered { .. }
        | Event::ContainerStopFailed { .. }
        | Event::OffsiteVerifyPassed { .. }
        | Event::OffsiteVerifyFailed { .. }
        | Event::OffsiteStale { .. }
        // Formatted by `replication::message` above.
        | Event::ReplicationFailed { .. }
        | Event::ReplicationBehind { .. }
        | Event::ReplicationRecovered { .. }
        | Event::ReplicationGeneration { .. } => String::new(),
    };
    fit(text)
}

/// `notify-test`: one test message to every chat, at once, with a clear reason on failure.
pub async fn send_test(config: &Config) -> Result<Vec<ChatRef>, String> {
    let target = match TelegramTarget::from_config(&config.telegram) {
        None => return Err("Telegram is not configured: set [telegram] bot_token (or $TELEGRAM_BOT_TOKEN) and chat_ids (or $TELEGRAM_CHAT_ID)".into()),
        Some(Err(why)) => return Err(why),
        Some(Ok(t)) => t,
    };
    let bot = target.bot();
    let text = format!(
        "🔔 <b>{}</b> · vertex-backup test message\nnotifications for: {}",
        escape(&crate::sys::hostname()),
        escape(&crate::config::NotifyOn::list(&config.telegram.notify_on))
    );
    let mut sent = Vec::new();
    for chat in &target.chats {
        match send_once(&target, &bot, chat, &text).await {
            Ok(()) => sent.push(chat.clone()),
            Err(SendFailure::Transient(m, _)) | Err(SendFailure::Permanent(m)) => {
                return Err(format!("chat {chat}: {m}"));
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests;
