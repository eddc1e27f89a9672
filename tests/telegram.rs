//! Telegram notifications and chat commands against a fake Bot API: a local axum server
//! on 127.0.0.1:0 that records every request and answers the way api.telegram.org does
//! (ok, 429 with `retry_after`, 401, 5xx), and serves queued chat messages to
//! `getUpdates` long polls. The real API is unreachable from tests; everything else —
//! the binary, the daemon, SQLite — is real.

use std::collections::VecDeque;
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::util::{Daemon, LocalServer, TestApp, name_of, poll_until, schedule_config};

const TOKEN: &str = "123456789:TESTsecretTOKENvalueXYZ";
const SECRET: &str = "TESTsecretTOKENvalueXYZ";

#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Ok,
    RetryAfter(u64),
    ServerError,
    Unauthorized,
}

#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    path: String,
    pub(crate) body: Value,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    /// Chat messages waiting for `getUpdates`, as Bot API `Update` objects.
    updates: Vec<Value>,
    next_update_id: u64,
    /// Wakes a waiting long poll when a message is queued.
    arrived: Arc<tokio::sync::Notify>,
}

/// The longest the fake holds an empty long poll: the bot's own `timeout` (seconds) would
/// slow every test and every shutdown down; a prompt empty answer is still an answer.
const LONG_POLL_HOLD: Duration = Duration::from_millis(200);

/// `getUpdates`: confirm everything below `offset`, answer what is left, or wait a little
/// for news.
async fn get_updates(state: &Arc<Mutex<FakeState>>, body: &Value) -> Response {
    let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0);
    let arrived = {
        let mut st = state.lock().unwrap();
        st.updates
            .retain(|u| u["update_id"].as_u64().unwrap_or(0) >= offset);
        if st.updates.is_empty() {
            Some(st.arrived.clone())
        } else {
            None
        }
    };
    if let Some(arrived) = arrived {
        let _ = tokio::time::timeout(LONG_POLL_HOLD, arrived.notified()).await;
    }
    let updates = state.lock().unwrap().updates.clone();
    axum::Json(json!({"ok": true, "result": updates})).into_response()
}

/// A fake Bot API server running on its own thread (also used by tests/faults.rs).
pub(crate) struct FakeBotApi {
    pub(crate) base: String,
    state: Arc<Mutex<FakeState>>,
    /// Serves the fake until dropped.
    _server: LocalServer,
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, uri: Uri, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let chat = body.get("chat_id").cloned().unwrap_or(json!(0));
    let polling = uri.path().to_ascii_lowercase().ends_with("/getupdates");
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            path: uri.path().to_string(),
            body: body.clone(),
            at: Instant::now(),
        });
        // The script is for messages sent; polls always succeed.
        (!polling).then(|| st.script.pop_front().or(st.default).unwrap_or(Reply::Ok))
    };
    let Some(reply) = reply else {
        return get_updates(&state, &body).await;
    };
    match reply {
        Reply::Ok => (
            StatusCode::OK,
            axum::Json(json!({"ok": true, "result": {
                "message_id": 1, "date": 1_700_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "op"},
                "text": body.get("text").cloned().unwrap_or(json!(""))
            }})),
        )
            .into_response(),
        Reply::RetryAfter(s) => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {s}"),
                "parameters": {"retry_after": s}})),
        )
            .into_response(),
        Reply::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
            ),
        )
            .into_response(),
        Reply::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response(),
    }
}

impl FakeBotApi {
    pub(crate) fn start(script: &[Reply], default: Option<Reply>) -> FakeBotApi {
        let state = Arc::new(Mutex::new(FakeState {
            requests: Vec::new(),
            script: script.iter().copied().collect(),
            default,
            ..FakeState::default()
        }));
        let server = LocalServer::start(
            axum::Router::new()
                .fallback(handle)
                .with_state(state.clone()),
        );
        FakeBotApi {
            base: server.base.clone(),
            state,
            _server: server,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Queue a text message from `chat` for the bot's next `getUpdates` (a private chat
    /// for positive ids, a group for negative ones, as Telegram numbers them).
    pub(crate) fn say(&self, chat: i64, text: &str) {
        let mut st = self.state.lock().unwrap();
        st.next_update_id += 1;
        let id = st.next_update_id;
        let chat_obj = if chat < 0 {
            json!({"id": chat, "type": "group", "title": "ops"})
        } else {
            json!({"id": chat, "type": "private", "first_name": "op"})
        };
        st.updates.push(json!({
            "update_id": id,
            "message": {
                "message_id": id, "date": 1_700_000_000, "chat": chat_obj,
                "from": {"id": chat.abs(), "is_bot": false, "first_name": "op"},
                "text": text
            }
        }));
        st.arrived.notify_waiters();
    }

    /// getUpdates requests.
    fn polls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.to_ascii_lowercase().ends_with("/getupdates"))
            .collect()
    }

    /// sendMessage requests (method names are matched case-insensitively, as teloxide
    /// writes `SendMessage`).
    pub(crate) fn messages(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.to_ascii_lowercase().ends_with("/sendmessage"))
            .collect()
    }
}

pub(crate) fn telegram_section(
    api_url: &str,
    chats: &str,
    notify_on: &str,
    timeout: &str,
) -> String {
    format!(
        "[telegram]\nbot_token = \"{TOKEN}\"\nchat_ids = [{chats}]\nnotify_on = [{notify_on}]\napi_url = \"{api_url}\"\ntimeout = \"{timeout}\"\n"
    )
}

pub(crate) fn text_of(r: &Recorded) -> String {
    r.body
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn chat_of(r: &Recorded) -> i64 {
    r.body
        .get("chat_id")
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

#[test]
fn create_notifies_every_chat_once_with_the_facts() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &telegram_section(&fake.base, "11, 22", "\"success\", \"failure\"", "10s"),
    ));
    let meta = app.create("database");
    let name = std::path::Path::new(meta["backup_path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 2, "one message per chat: {msgs:?}");
    let mut chats: Vec<i64> = msgs.iter().map(chat_of).collect();
    chats.sort();
    assert_eq!(chats, vec![11, 22]);
    for m in &msgs {
        assert!(m.path.contains(&format!("/bot{TOKEN}/")), "{}", m.path);
        assert_eq!(m.body["parse_mode"], "HTML");
        let text = text_of(m);
        assert!(text.contains("database backup"), "{text}");
        assert!(text.contains(&name), "{text}");
        assert!(text.contains("KiB"), "size: {text}");
        assert!(
            text.contains(" s\n") || text.contains(" s ·"),
            "duration: {text}"
        );
        assert!(text.contains("next: database"), "next run: {text}");
        assert!(text.contains("free ("), "disk: {text}");
    }

    // A failure: the storage directory is gone.
    std::fs::remove_dir_all(app.path().join("storage")).unwrap();
    let run = app.run(["create", "--type", "storage"]);
    assert_ne!(run.code(), Some(0), "{}", run.describe());
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 4, "one failure message per chat: {msgs:?}");
    for m in &msgs[2..] {
        let text = text_of(m);
        assert!(
            text.contains("storage backup FAILED at \"check sources\""),
            "{text}"
        );
        assert!(text.contains("storage"), "{text}");
    }
}

#[test]
fn daemon_jobs_notify_once_per_chat_for_success_and_failure() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let schedule = "[schedule]\ntimezone = \"UTC\"\ncatch_up = false\nfull = \"off\"\nrotate = \"off\"\nverify = \"off\"\n\
                    database = \"*/1 * * * * *\"\nstorage = \"*/1 * * * * *\"\n";
    // Storage points at a directory that does not exist: that job fails every time.
    let text = app
        .config_text(
            "",
            &format!(
                "{schedule}{}",
                telegram_section(&fake.base, "7, 8", "\"success\", \"failure\"", "10s")
            ),
        )
        .replace("storage = \"storage\"", "storage = \"no-such-storage\"");
    app.write_config_raw(&text);
    let daemon = app.spawn(["daemon"]);
    poll_until(
        Duration::from_secs(30),
        "a database backup and a storage failure to be notified",
        || {
            let msgs = fake.messages();
            msgs.iter().any(|m| text_of(m).contains("database backup"))
                && msgs
                    .iter()
                    .any(|m| text_of(m).contains("storage backup FAILED"))
        },
    );
    daemon.signal(libc::SIGTERM);
    let run = daemon.wait(Duration::from_secs(30));
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    let msgs = fake.messages();
    // Every database backup that landed was told exactly once to each chat.
    let backups = app.list_of("database");
    assert!(!backups.is_empty());
    for b in &backups {
        let name = b["name"].as_str().unwrap();
        for chat in [7, 8] {
            let n = msgs
                .iter()
                .filter(|m| chat_of(m) == chat && text_of(m).contains(name))
                .count();
            assert_eq!(n, 1, "{name} to chat {chat}: {n} messages");
        }
    }
    let failure = msgs
        .iter()
        .find(|m| text_of(m).contains("storage backup FAILED"))
        .unwrap();
    let text = text_of(failure);
    assert!(
        text.contains("at \"check sources\""),
        "failing step: {text}"
    );
    assert!(
        text.contains("no-such-storage"),
        "error names the path: {text}"
    );
    assert!(text.contains("Next try"), "next run: {text}");
}

#[test]
fn a_rate_limited_message_arrives_once_after_retry_after() {
    let fake = FakeBotApi::start(&[Reply::RetryAfter(1)], Some(Reply::Ok));
    let app = TestApp::new();
    app.write_config_raw(
        &app.config_text("", &telegram_section(&fake.base, "5", "\"success\"", "20s")),
    );
    app.create("database");
    let reqs = fake.messages();
    assert_eq!(reqs.len(), 2, "the 429 and the retry: {reqs:?}");
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before retry_after"
    );
    assert_eq!(
        text_of(&reqs[0]),
        text_of(&reqs[1]),
        "the same message, once delivered"
    );
}

#[test]
fn telegram_failing_or_down_never_fails_a_backup() {
    // 5xx forever. teloxide itself pauses 10 s after a 5xx before it reports the error,
    // so 13 s leaves room for exactly one retry of ours.
    let fake = FakeBotApi::start(&[], Some(Reply::ServerError));
    let app = TestApp::new();
    app.write_config_raw(
        &app.config_text("", &telegram_section(&fake.base, "5", "\"success\"", "13s")),
    );
    let started = Instant::now();
    let run = app.run(["create", "--type", "database"]);
    run.assert_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "bounded by [telegram] timeout"
    );
    assert!(fake.messages().len() >= 2, "it retried: {}", run.describe());
    assert!(
        run.stderr.contains("dropped"),
        "a warning is logged: {}",
        run.describe()
    );
    assert_eq!(app.list_of("database").len(), 1);

    // Nobody listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    app.write_config_raw(&app.config_text("", &telegram_section(&dead, "5", "\"success\"", "3s")));
    let run = app.run(["create", "--type", "database"]);
    run.assert_code(0);
    assert!(run.stderr.contains("dropped"), "{}", run.describe());
    assert_eq!(app.list_of("database").len(), 2);
}

#[test]
fn html_in_names_and_errors_is_escaped() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let text = app
        .config_text("", &telegram_section(&fake.base, "5", "\"failure\"", "10s"))
        .replace(
            "database = \"app_data/app_data.db\"",
            "database = \"app_data/<b>x&y_z</b>.db\"",
        );
    app.write_config_raw(&text);
    let run = app.run(["create", "--type", "database"]);
    assert_ne!(run.code(), Some(0));
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let sent = text_of(&msgs[0]);
    assert!(
        sent.contains("&lt;b&gt;x&amp;y_z&lt;/b&gt;.db"),
        "escaped literally: {sent}"
    );
    // Our own markup is the only markup: one bold host name.
    assert_eq!(sent.matches("<b>").count(), 1, "{sent}");
    assert_eq!(sent.matches("</b>").count(), 1, "{sent}");
}

#[test]
fn a_rejected_token_never_shows_up_in_any_output() {
    let fake = FakeBotApi::start(&[], Some(Reply::Unauthorized));
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &telegram_section(&fake.base, "5", "\"success\", \"failure\"", "3s"),
    ));
    let mut cmd = app.command(["create", "--type", "database"]);
    cmd.env("RUST_LOG", "trace");
    let run = crate::util::run(cmd);
    run.assert_code(0);
    let test = app.run(["notify-test"]);
    assert_eq!(test.code(), Some(1), "{}", test.describe());
    assert!(
        test.stderr.contains("bot token was rejected"),
        "{}",
        test.describe()
    );
    let check = app.run(["check-config"]);
    let log = std::fs::read_to_string(app.path().join("backups/backup.log")).unwrap_or_default();
    for (what, text) in [
        ("create stdout", &run.stdout),
        ("create stderr", &run.stderr),
        ("notify-test", &format!("{}{}", test.stdout, test.stderr)),
        ("check-config", &format!("{}{}", check.stdout, check.stderr)),
        ("backup.log", &log),
    ] {
        assert!(!text.contains(SECRET), "{what} leaks the token:\n{text}");
    }
}

#[test]
fn notify_test_succeeds_against_the_fake_api() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &telegram_section(&fake.base, "42, 43", "\"failure\"", "5s"),
    ));
    let run = app.run(["notify-test"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("sent to 2 chat(s)"),
        "{}",
        run.describe()
    );
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 2);
    assert!(text_of(&msgs[0]).contains("test message"));
}

#[test]
fn a_config_holding_a_token_warns_when_others_can_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &telegram_section("http://127.0.0.1:9", "5", "\"failure\"", "1s"),
    ));
    let cfg = app.path().join("config.toml");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = app.run(["check-config"]);
    assert!(
        run.stderr.contains("readable by group or others"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("chmod 600"), "{}", run.describe());
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = app.run(["check-config"]);
    assert!(
        !run.stderr.contains("readable by group or others"),
        "{}",
        run.describe()
    );
}

/// A daemon with chat commands on (or off) for chat 7, every job off unless `jobs` says.
fn command_daemon<'a>(
    app: &'a TestApp,
    fake: &FakeBotApi,
    commands: bool,
    jobs: &[(&str, &str)],
) -> Daemon<'a> {
    let telegram = telegram_section(&fake.base, "7", "\"success\"", "10s");
    let text = schedule_config(app, "", jobs, &format!("{telegram}commands = {commands}\n"));
    app.write_config_raw(&text);
    Daemon::start(app)
}

/// Wait for a message to `chat` whose text satisfies `pred`; return its text.
fn answer_to(
    fake: &FakeBotApi,
    d: &mut Daemon,
    chat: i64,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    d.poll_for(Duration::from_secs(30), what, |_| {
        fake.messages()
            .iter()
            .filter(|m| chat_of(m) == chat)
            .map(text_of)
            .find(|t| pred(t))
    })
}

#[test]
fn status_is_answered_in_an_allowed_chat_and_a_foreign_chat_gets_nothing() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let mut d = command_daemon(&app, &fake, true, &[]);
    // The stranger speaks first: when the allowed chat has its answer, the stranger's
    // command has been handled (updates are handled in order) and must have none.
    fake.say(99, "/status");
    fake.say(7, "/status");
    let status = answer_to(&fake, &mut d, 7, "an answer to /status", |t| {
        t.contains("status")
    });
    for kind in ["full:", "database:", "storage:"] {
        assert!(status.contains(kind), "{status}");
    }
    d.poll(Duration::from_secs(10), "the stranger to be logged", |d| {
        d.stderr().contains("ignored a command from chat 99")
    });
    fake.say(7, "/frobnicate");
    let help = answer_to(&fake, &mut d, 7, "help for an unknown command", |t| {
        t.contains("commands:")
    });
    assert!(help.contains("/backup full|database|storage"), "{help}");
    assert!(help.lines().count() <= 3, "help is short: {help}");
    fake.say(7, "/restore");
    answer_to(&fake, &mut d, 7, "/restore refused", |t| {
        t.contains("not offered from chat")
    });
    let stranger: Vec<String> = fake
        .messages()
        .iter()
        .filter(|m| chat_of(m) == 99)
        .map(text_of)
        .collect();
    assert!(
        stranger.is_empty(),
        "a foreign chat got answers: {stranger:?}"
    );
    d.stop();
}

#[test]
fn backup_from_chat_runs_through_the_queue_and_is_answered_when_done() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let mut d = command_daemon(&app, &fake, true, &[]);
    assert!(app.list_of("database").is_empty());
    fake.say(7, "/backup database");
    answer_to(&fake, &mut d, 7, "the queued note", |t| {
        t.contains("database queued")
    });
    let done = answer_to(&fake, &mut d, 7, "the backup's answer", |t| {
        t.contains("database backup done")
    });
    let backups = app.list_of("database");
    assert_eq!(backups.len(), 1, "{backups:?}");
    let name = backups[0]["name"].as_str().unwrap().to_string();
    let stem = name.split('.').next().unwrap().to_string();
    assert!(done.contains(&stem), "{done} names {stem}");
    fake.say(7, "/list database");
    let list = answer_to(&fake, &mut d, 7, "the /list answer", |t| {
        t.contains("newest database backups")
    });
    assert!(list.contains(&stem), "{list}");
    fake.say(7, "/verify latest");
    // The drill's own notification ("<b>vm</b> · restore drill: …") may reach the chat
    // too, before or after the bot's answer: wait for the answer itself.
    let verified = answer_to(&fake, &mut d, 7, "the /verify answer", |t| {
        !t.contains("restore drill") && (t.contains("verified") || t.contains("FAILED"))
    });
    assert!(verified.contains("✅ verified 1 backup"), "{verified}");
    fake.say(7, "/list storage");
    answer_to(&fake, &mut d, 7, "an empty /list", |t| {
        t.contains("no storage backups yet")
    });
    d.stop();
}

#[test]
fn list_shows_backups_only_and_status_names_what_latest_passes_over() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    app.write_config("");
    app.create("full");
    let fulls = app.list_of("full");
    let full_stem = fulls[0]["name"]
        .as_str()
        .unwrap()
        .trim_end_matches(".json")
        .to_string();
    let parts: Vec<String> = app
        .list()
        .iter()
        .filter(|b| b["part_of"].is_string())
        .map(|b| {
            b["name"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(parts.len(), 2, "{:#?}", app.list());
    // A safety copy (an in-place restore), then a newer database backup made incomplete.
    app.run(["restore", "--latest", "database", "--yes"])
        .assert_code(0);
    let newer = app.create("database");
    fs::remove_file(newer["backup_path"].as_str().unwrap()).unwrap();
    let newer_name = name_of(&newer);

    let mut d = command_daemon(&app, &fake, true, &[]);
    fake.say(7, "/list");
    let list = answer_to(&fake, &mut d, 7, "the /list answer", |t| {
        t.contains("newest backups")
    });
    assert!(list.contains(&full_stem), "{list}");
    for part in &parts {
        assert!(
            !list.contains(&format!("• {part} ·")),
            "a part of the full is listed: {list}"
        );
    }
    assert!(!list.contains("pre-restore"), "{list}");
    assert!(
        list.contains("and 1 safety copy set aside by restores"),
        "{list}"
    );

    fake.say(7, "/status");
    let status = answer_to(&fake, &mut d, 7, "the /status answer", |t| {
        t.contains("· status")
    });
    assert!(
        status.contains(&format!("{newer_name} passed over: incomplete")),
        "{status}"
    );

    // A job started from the chat is logged as such.
    fake.say(7, "/backup storage");
    answer_to(&fake, &mut d, 7, "the backup's answer", |t| {
        t.contains("storage backup done")
    });
    d.poll(Duration::from_secs(10), "the job's start line", |d| {
        d.logs()
            .contains("storage: job started (requested from Telegram)")
    });
    d.stop();
}

#[test]
fn replies_arrive_in_the_order_the_commands_were_sent() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let mut d = command_daemon(&app, &fake, true, &[]);
    // What each reply starts or contains, per command.
    let kinds = [
        ("/status", "· status"),
        ("/list", "no backups yet"),
        ("/frobnicate", "commands:"),
        ("/restore", "not offered from chat"),
    ];
    let mut expected = Vec::new();
    for round in 0..4 {
        // Rotated each round, so no fixed pattern of answers can pass by luck.
        for i in 0..kinds.len() {
            let (command, reply) = kinds[(i + round) % kinds.len()];
            fake.say(7, command);
            expected.push(reply);
        }
    }
    let replies = d.poll_for(Duration::from_secs(30), "every reply", |_| {
        let texts: Vec<String> = fake
            .messages()
            .iter()
            .filter(|m| chat_of(m) == 7)
            .map(text_of)
            .collect();
        (texts.len() >= expected.len()).then_some(texts)
    });
    for (n, (text, want)) in replies.iter().zip(&expected).enumerate() {
        assert!(
            text.contains(want),
            "reply {n} is not the answer to command {n} ({want}):\n{replies:#?}"
        );
    }

    // A job's "queued" note comes before the job's own notification.
    fake.say(7, "/backup database");
    let texts = d.poll_for(Duration::from_secs(60), "the backup's answer", |_| {
        let texts: Vec<String> = fake
            .messages()
            .iter()
            .filter(|m| chat_of(m) == 7)
            .map(text_of)
            .collect();
        texts
            .iter()
            .any(|t| t.contains("database backup done"))
            .then_some(texts)
    });
    let queued = texts.iter().position(|t| t.contains("database queued"));
    let notified = texts.iter().position(|t| {
        t.contains("database backup") && !t.contains("done") && !t.contains("queued")
    });
    assert!(
        queued.is_some() && notified.is_some() && queued < notified,
        "the queued note must come first: {texts:#?}"
    );
    d.stop();
}

#[test]
fn with_commands_off_the_bot_never_polls() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    // A scheduled backup being notified shows the daemon is past the point where the
    // bot starts; with commands on, it would have polled by then.
    let mut d = command_daemon(&app, &fake, false, &[("database", "*/1 * * * * *")]);
    answer_to(&fake, &mut d, 7, "a scheduled backup notified", |t| {
        t.contains("database backup")
    });
    assert!(
        fake.polls().is_empty(),
        "getUpdates with commands = false: {:?}",
        fake.polls()
    );
    d.stop();
}

#[test]
fn chat_ids_take_channel_names_and_group_ids_and_a_wrong_one_shows_the_forms() {
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        "[telegram]\nbot_token = \"1:x\"\nchat_ids = [-1001234567890, \"@vertex_ops\"]\n",
    ));
    let run = app.run(["check-config"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert!(run.stdout.contains("2 chats"), "{}", run.stdout);
    app.write_config_raw(&app.config_text("", "[telegram]\nchat_ids = [\"vertex_ops\"]\n"));
    let run = app.run(["check-config"]);
    assert_ne!(run.code(), Some(0), "{}", run.describe());
    let err = run.stderr;
    assert!(err.contains("chat_ids"), "{err}");
    assert!(
        err.contains("-1001234567890") && err.contains("\"@username\""),
        "{err}"
    );
}
