//! Dead-man pings (`[healthchecks]`): the staleness alert catches a dead scheduler, a
//! monitor that expects a ping catches a dead host. Per job, the healthchecks.io protocol
//! (`URL/start` when the job starts, `URL` on success, `URL/fail` with the error as the
//! body), and one generic `ping_url` template for other monitors (Uptime Kuma, Cronitor).
//! Pings travel off the job path: the sink only queues them, a task sends them one after
//! another (so a `/start` arrives before its result) with a few short attempts, and a
//! ping that cannot be delivered is dropped with a warning — it never holds back or fails
//! a backup. A ping URL is a credential (anyone holding it can ping the check): logs and
//! errors name only its host.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, HealthchecksSection, is_uuid};
use crate::events::{Event, Sink};
use crate::kind::JobName;

/// The first pause between attempts; it doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How much of a message goes into a template URL, and of an error into a `/fail` body.
const MAX_URL_MESSAGE: usize = 200;
const MAX_BODY: usize = 10_000;
/// Pings waiting to be sent; a full queue drops (a monitor misses one ping, no more).
const QUEUE: usize = 64;

/// What happened to a job, as a monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Start,
    Success,
    /// The error text, the `/fail` body.
    Failure(String),
}

impl Signal {
    /// The `ping_url_on` name.
    fn name(&self) -> &'static str {
        match self {
            Signal::Start => "start",
            Signal::Success => "success",
            Signal::Failure(_) => "failure",
        }
    }
}

/// One HTTP request to make. `Debug` shows the host only.
#[derive(Clone)]
pub struct Ping {
    url: String,
    /// Sent as a POST body (`/fail`); `None` is a GET.
    body: Option<String>,
    /// "database start" — for log lines, never the URL.
    label: String,
    timeout: Duration,
    attempts: u32,
}

impl std::fmt::Debug for Ping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ping({} to {})", self.label, host_of(&self.url))
    }
}

impl Ping {
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// The job an event is about and what it says, if it is a job's start or outcome.
pub fn signal_of(event: &Event) -> Option<(JobName, Signal)> {
    Some(match event {
        Event::JobStarted { job } => (*job, Signal::Start),
        Event::BackupSucceeded { facts, .. } => (JobName::creating(facts.kind), Signal::Success),
        Event::BackupFailed {
            job, error, hint, ..
        } => {
            let text = match hint {
                Some(h) => format!("{error}\nhint: {h}"),
                None => error.clone(),
            };
            (*job, Signal::Failure(text))
        }
        Event::RotationDone { .. } => (JobName::Rotate, Signal::Success),
        Event::RotationFailed { error } => (JobName::Rotate, Signal::Failure(error.clone())),
        Event::VerifyPassed { .. } => (JobName::Verify, Signal::Success),
        Event::VerifyFailed { failures } => (JobName::Verify, Signal::Failure(failures.join("\n"))),
        _ => return None,
    })
}

/// The pings `event` calls for under `hc`: the job's check, and the template.
pub fn pings_for(hc: &HealthchecksSection, event: &Event) -> Vec<Ping> {
    let Some((job, signal)) = signal_of(event) else {
        return Vec::new();
    };
    let ping = |url: String, body: Option<String>, what: &str| Ping {
        url,
        body,
        label: format!("{job} {} {what}", signal.name()),
        timeout: hc.timeout.0,
        attempts: hc.attempts,
    };
    let mut pings = Vec::new();
    if let Some(base) = check_url(hc, job) {
        let (url, body) = match &signal {
            Signal::Start => (format!("{base}/start"), None),
            Signal::Success => (base, None),
            Signal::Failure(e) => (format!("{base}/fail"), Some(truncate(e, MAX_BODY))),
        };
        pings.push(ping(url, body, "ping"));
    }
    if let Some(template) = &hc.ping_url
        && hc.ping_url_on.iter().any(|e| e == signal.name())
    {
        let url = fill_template(template.expose(), job, &signal, &event.summary());
        pings.push(ping(url, None, "ping_url"));
    }
    pings
}

/// The check URL of `job`: a full URL as written, a UUID under `base_url`, or a slug
/// under `base_url/ping_key`.
pub fn check_url(hc: &HealthchecksSection, job: JobName) -> Option<String> {
    let check = hc.check_of(job)?.expose().trim();
    let base = hc.base_url.trim_end_matches('/');
    if check.starts_with("http://") || check.starts_with("https://") {
        Some(check.trim_end_matches('/').to_string())
    } else if is_uuid(check) {
        Some(format!("{base}/{check}"))
    } else {
        // Config checks refuse a slug without a ping key; skip rather than guess.
        let key = hc.ping_key.as_ref()?.expose().trim();
        Some(format!("{base}/{key}/{check}"))
    }
}

/// `ping_url` with its placeholders filled: {job}; {event} start|success|failure;
/// {status} up|down (Uptime Kuma); {state} run|complete|fail (Cronitor); {message}.
/// Every value is percent-encoded.
pub fn fill_template(template: &str, job: JobName, signal: &Signal, message: &str) -> String {
    let (status, state) = match signal {
        Signal::Start => ("up", "run"),
        Signal::Success => ("up", "complete"),
        Signal::Failure(_) => ("down", "fail"),
    };
    let message = match signal {
        Signal::Failure(e) => e.lines().next().unwrap_or_default().to_string(),
        _ => message.to_string(),
    };
    template
        .replace("{job}", &encode(job.as_str()))
        .replace("{event}", signal.name())
        .replace("{status}", status)
        .replace("{state}", state)
        .replace("{message}", &encode(&truncate(&message, MAX_URL_MESSAGE)))
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The host (and port) of a URL: the one part of a ping URL safe to log.
fn host_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "an unparsable URL".into(),
        },
        Err(_) => "an unparsable URL".into(),
    }
}

/// A failed attempt: whether another is worth it, and why (URL-free).
struct Failed {
    retry: bool,
    why: String,
}

async fn send_once(client: &reqwest::Client, ping: &Ping) -> Result<(), Failed> {
    let req = match &ping.body {
        Some(body) => client.post(&ping.url).body(body.clone()),
        None => client.get(&ping.url),
    };
    match req.timeout(ping.timeout).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(Failed {
            retry: r.status().is_server_error() || r.status().as_u16() == 429,
            why: format!("the monitor answered {}", r.status()),
        }),
        Err(e) => Err(Failed {
            retry: true,
            why: error_text(e),
        }),
    }
}

/// A reqwest error and its causes, without the URL it carries.
fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        "no answer in time".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Send one ping with its attempts and backoff; a ping that fails is logged, not raised.
pub async fn deliver(client: &reqwest::Client, ping: &Ping) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ping.attempts.max(1) {
        match send_once(client, ping).await {
            Ok(()) => {
                tracing::debug!(
                    "healthchecks: {} delivered to {}",
                    ping.label,
                    host_of(&ping.url)
                );
                return;
            }
            Err(f) if f.retry && attempt < ping.attempts => {
                tracing::debug!(
                    "healthchecks: {} to {}: {}; retrying in {backoff:?}",
                    ping.label,
                    host_of(&ping.url),
                    f.why
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(f) => {
                tracing::warn!(
                    "healthchecks: the {} to {} was dropped after {attempt} attempt(s): {} (the job itself is unaffected)",
                    ping.label,
                    host_of(&ping.url),
                    f.why
                );
                return;
            }
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("vertex-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Send every queued ping in order until the queue closes.
async fn drain(mut rx: mpsc::Receiver<Ping>) {
    let client = client();
    while let Some(ping) = rx.recv().await {
        deliver(&client, &ping).await;
    }
}

fn queue(tx: &mpsc::Sender<Ping>, pings: Vec<Ping>) {
    for ping in pings {
        if tx.try_send(ping).is_err() {
            tracing::warn!("healthchecks: the ping queue is full; a ping was dropped");
        }
    }
}

/// The daemon's sink: turns job events into pings under the live config.
pub struct HealthchecksSink {
    tx: mpsc::Sender<Ping>,
    config: watch::Receiver<Arc<Config>>,
}

impl HealthchecksSink {
    /// Start the sender task; it ends when the sink is dropped and its queue is drained.
    pub fn start(
        config: watch::Receiver<Arc<Config>>,
    ) -> (Arc<HealthchecksSink>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(drain(rx));
        (Arc::new(HealthchecksSink { tx, config }), task)
    }
}

impl Sink for HealthchecksSink {
    fn handle(&self, event: &Event) {
        let pings = pings_for(&self.config.borrow().healthchecks, event);
        queue(&self.tx, pings);
    }
}

/// For one-shot commands (`create` from cron): pings sent from a thread of their own, so
/// the `/start` goes out while the backup runs; [`OneShot::finish`] waits, bounded.
pub struct OneShot {
    hc: HealthchecksSection,
    tx: Option<mpsc::Sender<Ping>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl OneShot {
    /// A no-op when nothing is configured (no thread, no runtime).
    pub fn start(config: &Config) -> OneShot {
        let hc = config.healthchecks.clone();
        if !hc.enabled() {
            return OneShot {
                hc,
                tx: None,
                done: None,
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("healthchecks".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(drain(rx)),
                    Err(e) => tracing::warn!("healthchecks: cannot start a runtime: {e}"),
                }
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!("healthchecks: cannot start the ping thread: {e}");
            return OneShot {
                hc,
                tx: None,
                done: None,
            };
        }
        OneShot {
            hc,
            tx: Some(tx),
            done: Some(done),
        }
    }

    pub fn send(&self, event: &Event) {
        if let Some(tx) = &self.tx {
            queue(tx, pings_for(&self.hc, event));
        }
    }

    /// Wait for the queued pings, at most as long as their attempts can take.
    pub fn finish(mut self) {
        drop(self.tx.take());
        let Some(done) = self.done.take() else {
            return;
        };
        // Two pings (start and outcome) per target, each all attempts and pauses.
        let per_ping = (self.hc.timeout.0 + FIRST_BACKOFF * (1 << self.hc.attempts.min(10)))
            * self.hc.attempts;
        let limit = per_ping * 4;
        if done.recv_timeout(limit).is_err() {
            tracing::warn!(
                "healthchecks: gave up on pings after {limit:?}; the backup result is unaffected"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0f3c1d2e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

    fn section(text: &str) -> HealthchecksSection {
        let cfg = Config::parse(text, None, std::path::Path::new("/tmp"), &|_| None).unwrap();
        cfg.healthchecks
    }

    fn failed(job: JobName, error: &str) -> Event {
        Event::BackupFailed {
            job,
            step: "check sources".into(),
            error: error.into(),
            hint: None,
            disk: None,
            last_success: None,
            next_run: None,
            cancelled: false,
        }
    }

    #[test]
    fn uuid_full_url_and_slug_forms_resolve() {
        let hc = section(&format!(
            "[healthchecks]\nping_key = \"KEY123\"\nfull = \"https://hc.example/ping/{UUID}/\"\ndatabase = \"{UUID}\"\nstorage = \"storage-job\"\n"
        ));
        assert_eq!(
            check_url(&hc, JobName::Full).as_deref(),
            Some(format!("https://hc.example/ping/{UUID}").as_str())
        );
        assert_eq!(
            check_url(&hc, JobName::Database).as_deref(),
            Some(format!("https://hc-ping.com/{UUID}").as_str())
        );
        assert_eq!(
            check_url(&hc, JobName::Storage).as_deref(),
            Some("https://hc-ping.com/KEY123/storage-job")
        );
        assert_eq!(check_url(&hc, JobName::Rotate), None);
    }

    #[test]
    fn start_success_and_fail_follow_the_protocol() {
        let hc = section(&format!(
            "[healthchecks]\nbase_url = \"http://hc.local/\"\ndatabase = \"{UUID}\"\n"
        ));
        let start = pings_for(
            &hc,
            &Event::JobStarted {
                job: JobName::Database,
            },
        );
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].url(), format!("http://hc.local/{UUID}/start"));
        assert_eq!(start[0].body(), None);
        let fail = pings_for(&hc, &failed(JobName::Database, "no database at /x"));
        assert_eq!(fail[0].url(), format!("http://hc.local/{UUID}/fail"));
        assert_eq!(fail[0].body(), Some("no database at /x"));
        assert!(pings_for(&hc, &failed(JobName::Storage, "x")).is_empty());
        assert!(
            !format!("{:?}", fail[0]).contains(UUID),
            "Debug hides the URL"
        );
    }

    #[test]
    fn the_template_is_filled_and_encoded() {
        let hc = section(
            "[healthchecks]\nping_url = \"https://kuma.example/api/push/TOK?status={status}&msg={message}&job={job}&s={state}\"\nping_url_on = [\"start\", \"failure\"]\n",
        );
        let fail = pings_for(&hc, &failed(JobName::Storage, "gone: a&b c/d"));
        assert_eq!(
            fail[0].url(),
            "https://kuma.example/api/push/TOK?status=down&msg=gone%3A%20a%26b%20c%2Fd&job=storage&s=fail"
        );
        let start = pings_for(&hc, &Event::JobStarted { job: JobName::Full });
        assert!(
            start[0]
                .url()
                .contains("status=up&msg=full%20job%20started&job=full&s=run")
        );
        assert!(
            pings_for(&hc, &Event::VerifyPassed { checked: 1 }).is_empty(),
            "success not in ping_url_on"
        );
    }

    #[test]
    fn bad_sections_are_refused_with_the_key() {
        for (text, key) in [
            (
                "[healthchecks]\ndatabase = \"a-slug\"\n",
                "healthchecks.database",
            ),
            (
                "[healthchecks]\nbase_url = \"hc-ping.com\"\n",
                "healthchecks.base_url",
            ),
            (
                "[healthchecks]\nping_url = \"kuma/x\"\n",
                "healthchecks.ping_url",
            ),
            (
                "[healthchecks]\nping_url_on = [\"done\"]\n",
                "healthchecks.ping_url_on",
            ),
            ("[healthchecks]\nattempts = 0\n", "healthchecks.attempts"),
        ] {
            let err = Config::parse(text, None, std::path::Path::new("/tmp"), &|_| None)
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
