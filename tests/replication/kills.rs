//! The daemon and the app SIGKILLed together at 20 seeded moments, the daemon started
//! again each time on the same backup directory (the app too, from the next id): after
//! every kill a rebuilt server restores from the bucket alone a prefix of what was
//! committed — every transaction written more than `interval` + 1 s before the kill,
//! nothing that was not committed — checked by `integrity_check` on the way (the restore
//! refuses otherwise). A kill costs a new generation only in the second after one of
//! the daemon's checkpoints (see below); otherwise the chain goes on.

use std::time::Duration;

use super::*;

/// Moments are drawn from this seed (a failure names the round and its moment).
const SEED: u64 = 0x5eed_2026_1207;
const ROUNDS: usize = 20;
/// The app's pace: tens of transactions a second.
const RATE: u32 = 40;

#[test]
fn a_kill_of_daemon_and_app_together_loses_nothing_older_than_the_interval() {
    let Some(s3) = s3_server() else { return };
    if !has_python() {
        return;
    }
    let (app, text, _) = replicated_app(&s3, "");
    let fresh = FreshServer::new(&text);
    let mut rng = SEED;
    let mut next_id = 1;
    for round in 0..ROUNDS {
        // 1.2 to 4 s of traffic: kills land anywhere in a pass, an upload, a checkpoint.
        let run_for = Duration::from_millis(1200 + next_random(&mut rng) % 2800);
        let daemon = start_daemon(&app);
        let writer = Writer::start(&app.db, next_id, RATE);
        // The app's traffic for this long (a workload, not a wait for anything).
        std::thread::sleep(run_for);
        // Together: the daemon first, the app a moment after (still committing).
        daemon.signal(libc::SIGKILL);
        writer.kill();
        let killed_ms = now_ms();
        drop(daemon.wait_exit(Duration::from_secs(10)));
        let live = ledger(&app.db);
        let restored = fresh.restored(&["--latest", "database", "--from", "s3"]);
        assert_prefix(
            &restored,
            &live,
            killed_ms - 2_000,
            i64::MAX,
            &format!("round {round} (killed after {run_for:?})"),
        );
        next_id = live.last().map_or(1, |r| r.0 + 1);
    }
    // A kill in the second after one of the daemon's checkpoints, with the app's log
    // restarted in it, cannot be told from a checkpoint while down (the file changed
    // less than a clock tick before the last look): a new generation, never a loss. Any
    // other kill goes on with the chain.
    let generations = generations(&app);
    let extra: Vec<&serde_json::Value> = generations.iter().skip(1).collect();
    assert!(
        extra.len() <= ROUNDS / 4
            && extra.iter().all(|g| g["reason"]
                .as_str()
                .is_some_and(|r| r.contains("while nothing replicated"))),
        "kills started needless generations: {generations:#?}"
    );
}
