//! Where the chain cannot go on, a new generation — never a restore that silently lacks
//! transactions or replays frames onto the wrong base: the app checkpointing (TRUNCATE)
//! and VACUUMing while the daemon is down, the database file replaced by the app (a new
//! inode). Each is told to the chat with its reason, and a restore from the bucket gives
//! the newest state, and a time before the gap the state then. And one transaction of
//! 200 MiB goes through whole.

use sha2::{Digest, Sha256};

use super::*;
use crate::telegram::{FakeBotApi, Reply, telegram_section, text_of};

#[test]
fn a_checkpoint_and_vacuum_while_down_or_a_replaced_file_start_a_new_generation() {
    let Some(s3) = s3_server() else { return };
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let (app, text, bucket) = replicated_app(
        &s3,
        &telegram_section(&fake.base, "7", "\"warning\", \"lifecycle\"", "10s"),
    );
    let fresh = FreshServer::new(&text);

    let mut daemon = start_daemon(&app);
    insert_rows(&app, 1, 100);
    wait_caught_up(&mut daemon, "s3");
    daemon.stop();
    let before_gap = ledger(&app.db);
    let gap_at = now_ms();

    // While nothing replicates: the app empties the log into the file and rewrites it.
    {
        let conn = app.open_db();
        conn.execute_batch(
            "DELETE FROM ledger WHERE id % 2 = 0; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("checkpoint and vacuum");
        std::mem::forget(conn);
    }
    insert_rows(&app, 101, 50);
    let mut daemon = start_daemon(&app);
    daemon.poll(DEADLINE, "a second generation", |_| {
        generations(&app).len() == 2
    });
    wait_caught_up(&mut daemon, "s3");
    let second = &generations(&app)[1];
    assert!(
        second["reason"]
            .as_str()
            .is_some_and(|r| r.contains("checkpointed") && r.contains("nothing replicated")),
        "{second}"
    );
    let told = daemon.poll_for(DEADLINE, "the new generation told to the chat", |_| {
        fake.messages()
            .iter()
            .map(text_of)
            .find(|t| t.contains("new generation") && t.contains("checkpointed"))
    });
    assert!(told.contains("nothing committed since is lost"), "{told}");
    // The ended generation's record is sent again with where its chain ends, so a
    // restore from the bucket into it names a lost last segment too.
    let ends = daemon.poll_for(DEADLINE, "the first generation's end on the bucket", |_| {
        let local = ended_generations(&app);
        let remote: Vec<_> = local
            .iter()
            .filter_map(|(name, _)| remote_record(&s3, &bucket, name))
            .collect();
        let same = !local.is_empty()
            && remote.len() == local.len()
            && local
                .iter()
                .zip(&remote)
                .all(|((_, l), r)| l["end_tx"] == r["end_tx"]);
        same.then_some(local)
    });
    assert!(
        ends[0].1["end_tx"].as_u64().is_some_and(|e| e > 0),
        "{ends:?}"
    );
    assert_eq!(
        fresh.restored(&["--latest", "database", "--from", "s3"]),
        ledger(&app.db)
    );
    let before = chrono::DateTime::from_timestamp_millis(gap_at)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        fresh.restored(&["--at", &before, "--type", "database", "--from", "s3"]),
        before_gap,
        "a time before the gap restores from the first generation"
    );

    // The app replaces its database file (a new inode) while the daemon runs.
    let replacement = app.root.join("app_data/replacement.db");
    std::fs::copy(&app.db, &replacement).expect("copy");
    {
        let conn = Connection::open(&replacement).expect("open the copy");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; INSERT INTO ledger (id, at_ms, body) VALUES (100000, 0, x'00');",
        )
        .expect("change the copy");
    }
    std::fs::rename(&replacement, &app.db).expect("replace the database");
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", app.db.display()));
    }
    daemon.poll(DEADLINE, "a third generation", |_| {
        generations(&app).len() == 3
    });
    let third = &generations(&app)[2];
    assert!(
        third["reason"]
            .as_str()
            .is_some_and(|r| r.contains("replaced")),
        "{third}"
    );
    wait_caught_up(&mut daemon, "s3");
    let restored = fresh.restored(&["--latest", "database", "--from", "s3"]);
    assert_eq!(restored, ledger(&app.db));
    assert_eq!(restored.last().map(|r| r.0), Some(100000));
    daemon.stop();
}

#[test]
fn a_transaction_of_200_mib_is_replicated_and_restored_whole() {
    let Some(s3) = s3_server() else { return };
    let (app, text, _) = replicated_app(&s3, "");
    let mut daemon = start_daemon(&app);
    let conn = app.open_db();
    conn.execute(
        "INSERT INTO ledger (id, at_ms, body) VALUES (1, ?1, randomblob(200 * 1024 * 1024))",
        [now_ms()],
    )
    .expect("a 200 MiB transaction");
    let digest = |db: &Path| {
        let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let body: Vec<u8> = c
            .query_row("SELECT body FROM ledger WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        (body.len(), hex::encode(Sha256::digest(&body)))
    };
    let live = digest(&app.db);
    std::mem::forget(conn);
    wait_caught_up(&mut daemon, "s3");
    daemon.stop();
    let fresh = FreshServer::new(&text);
    let (run, out) = fresh.restore(&["--latest", "database", "--from", "s3"], &[]);
    run.assert_code(0);
    assert_eq!(digest(&out), live);
    assert_eq!(live.0, 200 << 20);
}

/// The local generations that a newer one ended: directory name and record.
fn ended_generations(app: &TestApp) -> Vec<(String, serde_json::Value)> {
    named_generations(app)
        .into_iter()
        .filter(|(_, g)| g.get("end_tx").is_some())
        .collect()
}

/// The record of generation `name` as the bucket holds it.
fn remote_record(s3: &S3Server, bucket: &str, name: &str) -> Option<serde_json::Value> {
    let suffix = format!("replication/{name}/generation.json");
    let key = s3
        .list(bucket, "")
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.ends_with(&suffix))?;
    serde_json::from_slice(&s3.get(bucket, &key)?).ok()
}
