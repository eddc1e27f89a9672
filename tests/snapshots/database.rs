//! Database snapshots (`database_format = "snapshot"`): taken under a live WAL writer they
//! hold one transaction-consistent state, a second snapshot after a change of 100 rows
//! stores only the pages that change touched, and each restores to exactly the data of
//! its time and passes `verify`'s SQLite integrity check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::*;

/// Commit `i` of the app's writer: event `i` and the counter set to `i`, in one
/// transaction, so the state after `k` commits is known exactly.
fn app_write(conn: &mut Connection, i: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO events (id, payload) VALUES (?1, ?2)",
        rusqlite::params![i as i64, format!("event {i} of the live writer")],
    )?;
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'events'",
        [i as i64],
    )?;
    tx.commit()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The dump of the database as it was after the writer's first `k` commits, made from
/// the final database (whose only later changes are the writer's commits after `k`).
fn dump_after_commits(live: &Path, k: i64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("then.db");
    fs::copy(live, &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute("DELETE FROM events WHERE id > ?1", [k])
        .unwrap();
    conn.execute("UPDATE counters SET value = ?1 WHERE name = 'events'", [k])
        .unwrap();
    dump_db(&conn)
}

/// `verify NAME --json` passes, SQLite's integrity check among its checks.
#[track_caller]
fn assert_verifies_with_integrity_check(app: &TestApp, name: &str) {
    let (code, reports) = verify_reports(app, &[name]);
    let report = &reports[name];
    assert_eq!(code, Some(0), "{report:#}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "SQLite integrity_check" && c["ok"] == true),
        "verify ran no SQLite integrity check: {report:#}"
    );
}

#[test]
fn database_snapshots_under_a_live_writer_are_consistent_and_the_second_stores_only_the_change() {
    let app = snapshot_app();
    {
        let mut conn = app.open_db();
        add_clients(&mut conn, 20_000, 400);
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
             CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('events', 0);",
        )
        .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let db_size = fs::metadata(&app.db).unwrap().len();
    assert!(db_size >= 8 << 20, "the database is only {db_size} B");

    // 1. Under the writer.
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, busy) = (stop.clone(), commits.clone(), busy.clone());
        let db = app.db.clone();
        thread::spawn(move || -> Result<(), String> {
            let mut conn = Connection::open(&db).map_err(|e| e.to_string())?;
            conn.busy_timeout(Duration::from_millis(200))
                .map_err(|e| e.to_string())?;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                match app_write(&mut conn, i + 1) {
                    Ok(()) => {
                        i += 1;
                        commits.store(i, Ordering::SeqCst);
                    }
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err(format!("writer failed after {i} commits: {e}")),
                }
            }
            Ok(())
        })
    };
    poll_until(Duration::from_secs(60), "the writer to commit", || {
        commits.load(Ordering::SeqCst) >= 20 || writer.is_finished()
    });
    assert!(!writer.is_finished(), "the writer stopped early");
    let before = commits.load(Ordering::SeqCst) as i64;
    let run = app.run(["create", "--type", "database", "--json"]);
    let after = commits.load(Ordering::SeqCst) as i64;
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread").expect("writer");
    run.assert_code(0);
    assert_eq!(
        busy.load(Ordering::SeqCst),
        0,
        "the app's writer got SQLITE_BUSY while the snapshot ran"
    );
    let first = run.json();
    assert_eq!(first["format"]["kind"], "snapshot", "{first:#}");
    assert_eq!(first["integrity_check"], "ok", "{first:#}");
    assert!(name_of(&first).starts_with("db_snapshot_"), "{first:#}");
    // No copy of the database is left beside the snapshot: its pages are in packs.
    let left: Vec<PathBuf> = files_under(&app.kind_dir("database"))
        .into_iter()
        .filter(|p| {
            !p.to_string_lossy().ends_with(".json") && !p.to_string_lossy().ends_with(".tree.zst")
        })
        .collect();
    assert!(left.is_empty(), "left beside the snapshot: {left:#?}");

    // Restored, it is one state the writer's commits passed through, during the run.
    let out = tempfile::tempdir_in(&app.root).unwrap();
    let restored_1 = out.path().join("first.db");
    restore_to(&app, &tree_of(&first), &restored_1, &[]);
    let k = {
        let conn = Connection::open(&restored_1).unwrap();
        let k = count(&conn, "SELECT value FROM counters WHERE name = 'events'");
        assert_eq!(
            (
                count(&conn, "SELECT count(*) FROM events"),
                count(&conn, "SELECT coalesce(max(id), 0) FROM events")
            ),
            (k, k),
            "the snapshot is not transaction-consistent: the counter says {k}"
        );
        k
    };
    assert!(
        before <= k && k <= after + 1,
        "the snapshot holds {k} commits; {before} were committed when it started and {after} when it ended"
    );
    let live_after_writer = {
        let conn = app.open_db();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(conn);
        app.db.clone()
    };
    assert_eq!(
        dump_db_file(&restored_1),
        dump_after_commits(&live_after_writer, k),
        "the first snapshot does not hold the data of its time"
    );

    // 2. A change of 100 rows across the table.
    {
        let conn = app.open_db();
        let n = count(&conn, "SELECT count(*) FROM clients");
        let step = n / 100;
        let changed = conn
            .execute(
                "UPDATE clients SET name = 'renamed ' || id WHERE id % ?1 = 0 AND id <= ?1 * 100",
                [step],
            )
            .unwrap();
        assert_eq!(changed, 100);
    }
    let dump_2 = dump_db_file(&{
        let conn = app.open_db();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(conn);
        app.db.clone()
    });
    let second = app.create("database");
    let s = snap(&second);
    assert_eq!(
        s["parent"],
        name_of(&first).strip_suffix(".tree.zst").unwrap(),
        "{second:#}"
    );
    let added = ju64(s, "added_bytes");
    assert!(
        added < db_size / 4,
        "the second snapshot stored {added} B for 100 changed rows of a {db_size} B database\n{second:#}"
    );
    assert!(
        ju64(s, "added_chunks") < ju64(s, "chunks") / 4,
        "{second:#}"
    );

    let restored_2 = out.path().join("second.db");
    restore_to(&app, &tree_of(&second), &restored_2, &[]);
    assert_eq!(dump_db_file(&restored_2), dump_2);
    // The first still restores to its own time (the packs it shares were kept).
    let again = out.path().join("first-again.db");
    restore_to(&app, &tree_of(&first), &again, &[]);
    assert_eq!(dump_db_file(&again), dump_db_file(&restored_1));

    assert_verifies_with_integrity_check(&app, &name_of(&first));
    assert_verifies_with_integrity_check(&app, &name_of(&second));
    assert_store_exact(&app, "after two database snapshots");
}

#[test]
fn a_database_snapshot_restores_in_place_over_the_live_database() {
    let app = snapshot_app();
    let before = dump_db_file(&app.db);
    app.create("database");
    app.open_db()
        .execute("UPDATE clients SET name = 'changed'", [])
        .expect("damage the live database");
    assert_ne!(dump_db_file(&app.db), before);
    // The safety copy of the live database cleans leftovers first; the snapshot's
    // reassembled copy must survive that.
    app.run(["restore", "--latest", "database", "--yes"])
        .assert_code(0);
    assert_eq!(dump_db_file(&app.db), before);
}
