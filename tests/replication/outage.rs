//! The target unreachable for a minute while the app commits: the chat is told the
//! target is behind (past `max_lag`, with the error) once, `/health`-like status says so,
//! the backup directory keeps every transaction meanwhile, and once the target answers
//! again it catches up — told as recovered — and a rebuilt server restores everything.

use std::time::{Duration, Instant};

use super::*;
use crate::telegram::{FakeBotApi, Reply, telegram_section, text_of};

#[test]
fn a_target_gone_for_a_minute_is_alerted_then_catches_up_with_nothing_lost() {
    let Some(s3) = s3_server() else { return };
    if !has_python() {
        return;
    }
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let bucket = s3.new_bucket();
    let proxy = FaultProxy::start(s3.socket_addr());
    let app = TestApp::new();
    create_ledger(&app);
    let text = replication_config(
        &app,
        &s3_target("s3", &bucket, &proxy.endpoint(), ""),
        "interval = \"1s\"\nmax_lag = \"10s\"",
        &telegram_section(&fake.base, "7", "\"stale\", \"recovered\"", "10s"),
    );
    app.write_config_raw(&text);
    let mut daemon = start_daemon(&app);
    let writer = Writer::start(&app.db, 1, 20);
    daemon.poll(DEADLINE, "the first shipment", |_| {
        lag(&app, "s3") == Some(0.0)
    });

    proxy.set(Fault::Refuse);
    proxy.cut_all();
    let gone = Instant::now();
    let told = |what: &str| {
        fake.messages()
            .iter()
            .map(text_of)
            .find(|t| t.contains("replication") && t.contains(what))
    };
    let behind = daemon.poll_for(DEADLINE, "the lag told to the chat", |_| told("behind"));
    assert!(behind.contains("max_lag 10.0 s"), "{behind}");
    assert!(behind.contains("<b>s3</b>"), "{behind}");
    let run = app.run(["status", "--json"]);
    let status: serde_json::Value = run.json();
    assert_eq!(status["replication"]["behind"], true, "{status}");
    // The rest of the minute (a workload's length, not a wait for anything).
    std::thread::sleep(Duration::from_secs(60).saturating_sub(gone.elapsed()));
    proxy.set(Fault::Pass);
    let back = daemon.poll_for(DEADLINE, "the recovery told to the chat", |_| {
        told("works again")
    });
    assert!(back.contains("nothing was lost"), "{back}");
    writer.kill();
    wait_caught_up(&mut daemon, "s3");
    daemon.stop();
    let behind_told = fake
        .messages()
        .iter()
        .filter(|m| text_of(m).contains("behind"))
        .count();
    assert_eq!(behind_told, 1, "told once while it lasted");
    let fresh = FreshServer::new(&text.replace(&proxy.endpoint(), s3.endpoint()));
    assert_eq!(
        fresh.restored(&["--latest", "database", "--from", "s3"]),
        ledger(&app.db)
    );
}
