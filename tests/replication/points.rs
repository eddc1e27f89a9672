//! `restore --at TIME --type database` at ten random times of a busy stream, from the
//! bucket on a rebuilt server and from this server's backup directory: each time
//! exactly a prefix of what was committed — every transaction written more than the
//! interval (plus a second's slack) before TIME, none written after it. A transaction is
//! timed when it is read from the log, at most `interval` after its commit: that is the
//! resolution of a point in time.

use std::time::Duration;

use super::*;

const SEED: u64 = 0xa7_7123;

#[test]
fn a_restore_to_a_time_holds_exactly_what_was_committed_by_then() {
    let Some(s3) = s3_server() else { return };
    if !has_python() {
        return;
    }
    let (app, text, _) = replicated_app(&s3, "");
    let mut daemon = start_daemon(&app);
    let began = now_ms();
    let writer = Writer::start(&app.db, 1, 40);
    // Twelve seconds of the app's traffic (a workload, not a wait for anything).
    std::thread::sleep(Duration::from_secs(12));
    writer.kill();
    let ended = now_ms();
    wait_caught_up(&mut daemon, "s3");
    daemon.stop();
    let live = ledger(&app.db);
    assert!(live.len() > 200, "the app committed {} rows", live.len());

    let fresh = FreshServer::new(&text);
    let mut rng = SEED;
    for i in 0..10 {
        let at = began + 1_000 + next_random(&mut rng) as i64 % (ended - began - 1_000);
        let time = chrono::DateTime::from_timestamp_millis(at)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // From the bucket on a rebuilt server; every third from the backup directory.
        let restored = if i % 3 == 2 {
            let out = app.root.join(format!("at-{i}.db"));
            app.run([
                "restore",
                "--at",
                &time,
                "--type",
                "database",
                "--target",
                out.to_str().unwrap(),
                "--yes",
            ])
            .assert_code(0);
            ledger(&out)
        } else {
            fresh.restored(&["--at", &time, "--type", "database", "--from", "s3"])
        };
        assert_prefix(&restored, &live, at - 2_000, at, &format!("--at {time}"));
    }
}
