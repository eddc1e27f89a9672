//! The daemon and its offsite targets, with the real binary: a scheduled backup goes to
//! the S3 server by the upload job queued after it, `/metrics` shows the target, the
//! scheduled `offsite_verify` journals its pass; an unreachable target is told to the
//! chat as a failed upload and then as stale, and `/health` says degraded.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::telegram::{FakeBotApi, Reply, telegram_section, text_of};
use crate::util::{Daemon, TestApp, s3_server, schedule_config};

const TOKEN: &str = "api-token-0123456789abcdef";
/// Scheduled jobs every few seconds, each upload and verification a few requests to a
/// local server: far below this even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// `[api]` on a free port with the metrics open.
fn api_section() -> String {
    format!("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nmetrics_public = true\n")
}

/// An `[[offsite]]` table named `name` for database backups.
fn target_section(name: &str, bucket: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[offsite]]\nname = \"{name}\"\nurl = \"s3://{bucket}/vb\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\npath_style = true\nupload = [\"database\"]\n{extra}"
    )
}

/// The daemon with dummy credentials (the test server does not check them).
fn start(app: &TestApp) -> Daemon<'_> {
    Daemon::start_with(app, |cmd| {
        cmd.env("AWS_ACCESS_KEY_ID", "vertex-test")
            .env("AWS_SECRET_ACCESS_KEY", "vertex-test-secret")
            .env_remove("AWS_SESSION_TOKEN");
    })
}

/// The API's base URL, from the daemon's log line.
fn api_base(daemon: &mut Daemon) -> String {
    daemon.poll_for(DEADLINE, "the API to listen", |d| {
        let err = d.stderr();
        let at = err.find("REST API listening on ")?;
        let rest = &err[at + "REST API listening on ".len()..];
        Some(rest.split_whitespace().next()?.to_string())
    })
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The value of the sample `series` (name and labels as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scheduled_backup_goes_offsite_shows_in_metrics_and_is_verified() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = TestApp::new();
    let text = schedule_config(
        &app,
        "",
        &[("database", "*/4 * * * * *")],
        &format!(
            "offsite_verify = \"*/3 * * * * *\"\n{}{}",
            api_section(),
            target_section("s3", &bucket, s3.endpoint(), "")
        ),
    );
    app.write_config_raw(&text);
    let mut daemon = start(&app);
    let base = api_base(&mut daemon);

    let key = daemon.poll_for(DEADLINE, "a backup's metadata in the bucket", |_| {
        s3.list(&bucket, "vb/database/")
            .into_iter()
            .map(|(k, _)| k)
            .find(|k| k.ends_with(".json"))
    });
    let stem = key
        .trim_start_matches("vb/database/")
        .trim_end_matches(".json")
        .to_string();
    assert!(
        app.list_of("database")
            .iter()
            .any(|b| b["name"].as_str().unwrap_or_default().starts_with(&stem)),
        "{key} is not one of the local backups"
    );

    let client = http();
    let scrape = daemon.poll_for(DEADLINE, "the upload in /metrics", |_| {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        let bytes = sample(
            &text,
            "vertex_backup_offsite_uploaded_bytes_total{target=\"s3\",type=\"database\"}",
        )?;
        (bytes > 0.0).then_some(text)
    });
    let last = sample(
        &scrape,
        "vertex_backup_offsite_last_success_timestamp_seconds{target=\"s3\",type=\"database\"}",
    )
    .unwrap_or_else(|| panic!("no last success\n{scrape}"));
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 600.0..=now + 5.0).contains(&last), "{last} vs {now}");
    for (series, value) in [
        ("vertex_backup_offsite_failures_total{target=\"s3\"}", 0.0),
        (
            "vertex_backup_offsite_stale{target=\"s3\",type=\"database\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&scrape, series), Some(value), "{series}\n{scrape}");
    }
    assert!(
        scrape.contains("vertex_backup_offsite_pending_backups{target=\"s3\"}"),
        "{scrape}"
    );

    // A verification that found the upload: not the empty pass before it.
    daemon.poll(DEADLINE, "offsite_verify to verify the upload", |d| {
        d.app
            .backup_log()
            .lines()
            .any(|l| l.contains("offsite s3: verified") && !l.contains("verified 0 backups"))
    });
    let status: Value = app.status_json();
    let target = &status["offsite"][0];
    assert_eq!(target["name"], "s3", "{status}");
    assert!(target["last_success"].is_string(), "{status}");
    assert!(target["last_verify"].is_string(), "{status}");
    assert!(target["types"][0]["lag_seconds"].is_u64(), "{status}");
    let stats = app.stats();
    assert!(
        stats["offsite"]["s3"]["uploaded_bytes"]["database"].as_u64() > Some(0),
        "{stats}"
    );
    daemon.stop();
}

#[test]
fn an_unreachable_target_is_told_as_failed_then_stale_and_health_is_degraded() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    // Port 1 on loopback: refused at once; no retries, so each upload job fails fast.
    let text = schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        &format!(
            "[alerts]\nmax_age = {{ database = \"8s\" }}\n{}{}{}",
            api_section(),
            telegram_section(&fake.base, "7", "\"failure\", \"stale\"", "10s"),
            target_section(
                "dead",
                "nowhere",
                "http://127.0.0.1:1",
                "retries = 0\ntimeout = \"2s\"\n"
            )
        ),
    );
    app.write_config_raw(&text);
    let mut daemon = start(&app);
    let base = api_base(&mut daemon);

    let told = |what: &str| {
        fake.messages()
            .iter()
            .map(text_of)
            .find(|t| t.contains("offsite <b>dead</b>") && t.contains(what))
    };
    let failed = daemon.poll_for(DEADLINE, "the failed upload told to the chat", |_| {
        told("upload FAILED")
    });
    // The error names the target's url and what failed; what is pending is counted.
    assert!(failed.contains("s3://nowhere/vb"), "{failed}");
    assert!(failed.contains("pending: "), "{failed}");
    let stale = daemon.poll_for(DEADLINE, "the stale target told to the chat", |_| {
        told("no complete database copy")
    });
    assert!(stale.contains("max_age 8.0 s"), "{stale}");

    // Local backups land every 2 s (fresh against 8 s): degraded, not unhealthy.
    let client = http();
    let health: Value = daemon.poll_for(DEADLINE, "/health to say degraded", |_| {
        let body: Value = client
            .get(format!("{base}/health"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (body["status"] == "degraded").then_some(body)
    });
    assert!(health["reasons"].to_string().contains("dead"), "{health}");
    let stale_told = fake
        .messages()
        .iter()
        .filter(|m| text_of(m).contains("no complete database copy"))
        .count();
    assert_eq!(stale_told, 1, "stale is told once while it lasts");
    daemon.stop();
}
