//! Operability: `/metrics` shows the stream (lag per target, the window, the generation),
//! `status` prints it, and the scheduled `verify` drill replays the stream — a damaged
//! segment in the backup directory fails the drill, told to the chat naming it.

use std::time::Duration;

use super::*;
use crate::telegram::{FakeBotApi, Reply, telegram_section, text_of};

const TOKEN: &str = "api-token-0123456789abcdef";

#[test]
fn metrics_and_status_show_the_stream_and_the_drill_replays_it() {
    let Some(s3) = s3_server() else { return };
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let bucket = s3.new_bucket();
    let app = TestApp::new();
    create_ledger(&app);
    let text = schedule_config(
        &app,
        "",
        &[("verify", "*/2 * * * * *")],
        &format!(
            "[replication]\nenabled = true\ninterval = \"1s\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nmetrics_public = true\n{}{}",
            telegram_section(&fake.base, "7", "\"failure\"", "10s"),
            s3_target("s3", &bucket, s3.endpoint(), "")
        ),
    );
    app.write_config_raw(&text);
    let mut daemon = start_daemon(&app);
    insert_rows(&app, 1, 30);
    wait_caught_up(&mut daemon, "s3");

    let base = daemon.poll_for(DEADLINE, "the API to listen", |d| {
        let err = d.stderr();
        let at = err.find("REST API listening on ")?;
        Some(err[at + 22..].split_whitespace().next()?.to_string())
    });
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for series in [
        "vertex_backup_replication_lag_seconds{target=\"s3\"} 0",
        "vertex_backup_replication_up 1",
        "vertex_backup_replication_window_start_timestamp_seconds ",
        "vertex_backup_replication_generation_start_timestamp_seconds ",
        "vertex_backup_replication_requests_last_hour{target=\"s3\"} ",
    ] {
        assert!(metrics.contains(series), "no `{series}` in\n{metrics}");
    }
    let status = app.run(["status"]);
    assert!(
        status.stdout.contains("replication (every 1.0 s")
            && status.stdout.contains("restore to any time from"),
        "{}",
        status.describe()
    );

    // Damage a segment of the stream: the next drill replays it and fails, naming it.
    let generation = generations(&app)[0].clone();
    let dir = std::fs::read_dir(app.backups.join("replication"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("generation.json").exists())
        .unwrap();
    let segment = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();
    let told = daemon.poll_for(DEADLINE, "the failed drill told to the chat", |_| {
        fake.messages()
            .iter()
            .map(text_of)
            .find(|t| t.contains("replicated database"))
    });
    assert!(told.contains("FAILED"), "{told} ({generation})");
    daemon.stop();
}
