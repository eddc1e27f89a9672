//! Dead-man pings against a fake monitor: a local axum server on 127.0.0.1:0 that
//! records every request (method, path and query, body) and answers 200 or 500 as told.
//! Covers the healthchecks.io protocol (`/start`, success, `/fail` with the error as the
//! body) in its UUID, slug and full-URL forms, the generic `ping_url` template, and a
//! monitor that is down or failing: the backup still succeeds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};

use crate::util::{LocalServer, TestApp, poll_until};

/// In tests/util/process.rs TEST_SECRETS: no output may show them.
const UUID: &str = "7e57a5ec-0bad-4bad-8bad-7e57a5ec0001";
const PING_KEY: &str = "TESTpingKEYsecret42";
const PUSH_TOKEN: &str = "TESTkumaPUSHtoken77";

#[derive(Clone, Debug)]
struct Hit {
    method: Method,
    /// Path and query, as sent.
    target: String,
    body: String,
}

#[derive(Default)]
struct Monitor {
    hits: Vec<Hit>,
    failing: bool,
}

/// A fake healthchecks.io / Uptime Kuma.
struct FakeMonitor {
    base: String,
    state: Arc<Mutex<Monitor>>,
    _server: LocalServer,
}

async fn record(
    State(state): State<Arc<Mutex<Monitor>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> StatusCode {
    let mut st = state.lock().unwrap();
    st.hits.push(Hit {
        method,
        target: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if st.failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl FakeMonitor {
    fn start(failing: bool) -> FakeMonitor {
        let state = Arc::new(Mutex::new(Monitor {
            hits: Vec::new(),
            failing,
        }));
        let server = LocalServer::start(
            axum::Router::new()
                .fallback(record)
                .with_state(state.clone()),
        );
        FakeMonitor {
            base: server.base.clone(),
            state,
            _server: server,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// The targets hit, in order, that start with `prefix`.
    fn targets(&self, prefix: &str) -> Vec<String> {
        self.hits()
            .into_iter()
            .map(|h| h.target)
            .filter(|t| t.starts_with(prefix))
            .collect()
    }
}

/// A port nobody listens on.
fn dead_base() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    base
}

#[test]
fn create_pings_start_then_success_and_fail_with_the_error_as_body() {
    let hc = FakeMonitor::start(false);
    let kuma = FakeMonitor::start(false);
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[healthchecks]\nbase_url = \"{}\"\ndatabase = \"{UUID}\"\n\
             ping_url = \"{}/api/push/{PUSH_TOKEN}?status={{status}}&msg={{message}}&job={{job}}\"\n",
            hc.base, kuma.base
        ),
    ));
    app.create("database");
    let uuid = format!("/{UUID}");
    assert_eq!(
        hc.targets("/"),
        vec![format!("{uuid}/start"), uuid.clone()],
        "start, then success"
    );
    let pushes = kuma.targets("/");
    assert_eq!(
        pushes.len(),
        1,
        "ping_url on success only by default: {pushes:?}"
    );
    let push = &pushes[0];
    assert!(
        push.starts_with(&format!(
            "/api/push/{PUSH_TOKEN}?status=up&msg=database%20backup%20"
        )),
        "{push}"
    );
    assert!(push.ends_with("&job=database"), "{push}");

    // A failure: the database is gone.
    std::fs::remove_file(app.path().join("app_data/app_data.db")).unwrap();
    let run = app.run(["create", "--type", "database"]);
    assert_ne!(run.code(), Some(0), "{}", run.describe());
    let hits = hc.hits();
    assert_eq!(hits.len(), 4, "{hits:?}");
    assert_eq!(hits[2].target, format!("{uuid}/start"));
    assert_eq!(hits[3].target, format!("{uuid}/fail"));
    assert_eq!(hits[3].method, Method::POST);
    assert!(
        hits[3].body.contains("app_data.db"),
        "the error names the database: {:?}",
        hits[3].body
    );
    let pushes = kuma.targets("/");
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    assert!(pushes[1].contains("?status=down&msg="), "{}", pushes[1]);
    assert!(
        pushes[1].contains("app_data.db"),
        "the message says why: {}",
        pushes[1]
    );
}

#[test]
fn daemon_pings_slug_and_full_url_checks_for_each_job() {
    let hc = FakeMonitor::start(false);
    let app = TestApp::new();
    let schedule = "[schedule]\ntimezone = \"UTC\"\ncatch_up = false\nfull = \"off\"\nrotate = \"off\"\nverify = \"off\"\n\
                    database = \"*/1 * * * * *\"\nstorage = \"*/1 * * * * *\"\n";
    // The storage job fails every time: its directory does not exist.
    let text = app
        .config_text(
            "",
            &format!(
                "{schedule}[healthchecks]\nbase_url = \"{base}/\"\nping_key = \"{PING_KEY}\"\n\
                 database = \"db-backup\"\nstorage = \"{base}/self-hosted/{UUID}\"\n",
                base = hc.base
            ),
        )
        .replace("storage = \"storage\"", "storage = \"no-such-storage\"");
    app.write_config_raw(&text);
    let slug = format!("/{PING_KEY}/db-backup");
    let full = format!("/self-hosted/{UUID}");
    let daemon = app.spawn(["daemon"]);
    poll_until(
        Duration::from_secs(30),
        "a database success ping and a storage /fail ping",
        || {
            let t = hc.targets("/");
            t.contains(&slug) && t.contains(&format!("{full}/fail"))
        },
    );
    daemon.signal(libc::SIGTERM);
    let run = daemon.wait(Duration::from_secs(30));
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    let db = hc.targets(&slug);
    assert_eq!(
        db[0],
        format!("{slug}/start"),
        "a start comes first: {db:?}"
    );
    // Every run is a start followed by its outcome, never two starts in a row (the last
    // run may have been cut short by the stop: its outcome is not checked).
    let complete = db.len().saturating_sub(2) / 2 * 2;
    for pair in db[..complete].chunks(2) {
        assert_eq!(pair, [format!("{slug}/start"), slug.clone()], "{db:?}");
    }
    let storage: Vec<Hit> = hc
        .hits()
        .into_iter()
        .filter(|h| h.target == format!("{full}/fail"))
        .collect();
    assert!(
        storage[0].body.contains("no-such-storage"),
        "the /fail body is the error: {:?}",
        storage[0].body
    );
    assert!(hc.targets(&full).contains(&format!("{full}/start")));
}

#[test]
fn a_monitor_down_or_failing_never_fails_a_backup() {
    // Nobody listening: every attempt is refused at once.
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[healthchecks]\nbase_url = \"{}\"\ndatabase = \"{UUID}\"\ntimeout = \"2s\"\nattempts = 2\n",
            dead_base()
        ),
    ));
    let mut cmd = app.command(["create", "--type", "database"]);
    cmd.env("RUST_LOG", "trace");
    let run = crate::util::run(cmd);
    run.assert_code(0);
    assert!(
        run.stderr.contains("healthchecks") && run.stderr.contains("dropped after 2 attempt(s)"),
        "a warning is logged: {}",
        run.describe()
    );
    assert_eq!(app.list_of("database").len(), 1);

    // Answering 500: retried, then dropped; the backup stands.
    let failing = FakeMonitor::start(true);
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[healthchecks]\nbase_url = \"{}\"\ndatabase = \"{UUID}\"\ntimeout = \"2s\"\nattempts = 2\n",
            failing.base
        ),
    ));
    let run = app.run(["create", "--type", "database"]);
    run.assert_code(0);
    assert!(run.stderr.contains("500"), "{}", run.describe());
    let uuid = format!("/{UUID}");
    assert_eq!(
        failing.targets("/"),
        vec![
            format!("{uuid}/start"),
            format!("{uuid}/start"),
            uuid.clone(),
            uuid
        ],
        "two attempts each, in order"
    );
    assert_eq!(app.list_of("database").len(), 2);
}

#[test]
fn check_config_refuses_a_slug_without_a_ping_key() {
    let app = TestApp::new();
    app.write_config_raw(&app.config_text("", "[healthchecks]\ndatabase = \"db-backup\"\n"));
    let run = app.run(["check-config"]);
    assert_ne!(run.code(), Some(0), "{}", run.describe());
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("healthchecks.database"), "{all}");
    assert!(all.contains("ping_key"), "{all}");
}

#[test]
fn check_config_names_the_pinging_jobs_never_their_urls() {
    let app = TestApp::new();
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[healthchecks]\ndatabase = \"{UUID}\"\nping_url = \"https://kuma.example/api/push/{PUSH_TOKEN}\"\n"
        ),
    ));
    // The secrets themselves are checked in every output by the runner (TEST_SECRETS).
    let run = app.run(["check-config"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("pings:      checks for database; ping_url on success, failure"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("chmod 600"),
        "a readable file of ping URLs draws the warning: {}",
        run.describe()
    );
}
