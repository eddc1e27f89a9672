//! The replicator against a live SQLite database in WAL mode with the app's own
//! automatic checkpoints on: every pass a point in time that restores exactly, our
//! checkpoints never breaking the chain while a writer commits from another thread, and
//! every gap (a checkpoint while nothing replicated, a replaced file) a new generation,
//! never a restore that silently lacks transactions.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;

use super::*;
use crate::replication::restore::restore_to;
use crate::replication::store::LogPosition;

const BUSY: Duration = Duration::from_secs(10);

struct App {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl App {
    fn new() -> App {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app_data.db");
        let app = App { dir, db };
        app.conn()
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE orders (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            )
            .unwrap();
        app
    }

    /// A connection as the app opens one (automatic checkpoints left on).
    fn conn(&self) -> Connection {
        let c = Connection::open(&self.db).unwrap();
        c.busy_timeout(BUSY).unwrap();
        c
    }

    fn store(&self) -> ReplicaStore {
        ReplicaStore::new(&self.dir.path().join("backups"), 0o600, 0o700)
    }

    fn replicator(&self) -> Replicator {
        Replicator::open(&self.db, self.store(), BUSY).unwrap()
    }

    /// The database file replaced by another (a new inode) holding `rows` orders from
    /// `first`, as a restore or a copy moved in does.
    fn replace_file(&self, first: i64, rows: i64) {
        let other = self.dir.path().join("other.db");
        {
            let c = Connection::open(&other).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE orders (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
            )
            .unwrap();
            insert(&c, first, rows);
        }
        std::fs::rename(&other, &self.db).unwrap();
    }

    fn restore(&self, at: Option<DateTime<Utc>>, name: &str) -> (PathBuf, u64) {
        let out = self.dir.path().join(name);
        let restored = restore_to(&self.store(), at, &out).unwrap();
        (out, restored.transactions)
    }
}

fn insert(conn: &Connection, first: i64, rows: i64) {
    let tx = conn.unchecked_transaction().unwrap();
    for id in first..first + rows {
        tx.execute(
            "INSERT INTO orders (id, body) VALUES (?1, ?2)",
            (id, format!("order {id} ").repeat(30)),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn ids(db: &Path) -> Vec<i64> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM orders ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
}

#[test]
fn every_pass_is_a_point_in_time_that_restores_exactly() {
    let app = App::new();
    let conn = app.conn();
    let mut rep = app.replicator();
    let mut expected = Vec::new();
    for k in 0..30i64 {
        insert(&conn, k * 10, 10);
        if k == 12 {
            conn.execute_batch("DELETE FROM orders WHERE id % 3 = 0; VACUUM;")
                .unwrap();
        }
        let report = if k % 5 == 4 {
            rep.checkpoint(at(k), CheckpointMode::Passive).unwrap();
            None
        } else {
            Some(rep.pass(at(k)).unwrap())
        };
        if let Some(r) = report {
            assert_eq!(r.new_generation.is_some(), k == 0, "pass {k}: {r:?}");
        }
        expected.push(ids(&app.db));
    }
    assert_eq!(app.store().generations().unwrap().len(), 1);
    let (latest, _) = app.restore(None, "latest.db");
    assert_eq!(ids(&latest), ids(&app.db));
    for k in [0, 3, 4, 12, 13, 21, 29] {
        let (out, _) = app.restore(Some(at(k)), &format!("at-{k}.db"));
        assert_eq!(ids(&out), expected[k as usize], "as of pass {k}");
    }
}

#[test]
fn a_writer_on_another_thread_loses_nothing_across_our_checkpoints() {
    let app = App::new();
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicI64::new(-1));
    let writer = {
        let (db, stop, last) = (app.db.clone(), Arc::clone(&stop), Arc::clone(&last));
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(BUSY).unwrap();
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                // Rows larger than a page: each transaction's overflow pages are its own
                // and never written again, so a transaction lost is seen as lost (small
                // rows share leaf pages that later transactions write whole again).
                let tx = conn.unchecked_transaction().unwrap();
                for i in id..id + 1 + id % 3 {
                    tx.execute(
                        "INSERT INTO orders (id, body) VALUES (?1, ?2)",
                        (i, big_body(i)),
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                id += 1 + id % 3;
                last.store(id, Ordering::SeqCst);
            }
        })
    };
    let mut rep = app.replicator();
    let mut k = 0;
    // Until the writer has gone through many of our checkpoints and the app's own.
    while last.load(Ordering::SeqCst) < 3_000 || k < 60 {
        if k % 3 == 2 {
            rep.checkpoint(at(k), CheckpointMode::Passive).unwrap();
        } else {
            rep.pass(at(k)).unwrap();
        }
        k += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    rep.pass(at(k)).unwrap();
    let generations = app.store().generations().unwrap();
    assert_eq!(generations.len(), 1, "{generations:?}");
    let (latest, _) = app.restore(None, "latest.db");
    let want: Vec<i64> = (0..last.load(Ordering::SeqCst)).collect();
    assert_eq!(ids(&latest), want);
    let conn = Connection::open(&latest).unwrap();
    let mut stmt = conn.prepare("SELECT id, body FROM orders").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (id, body) = row.unwrap();
        assert!(
            body == big_body(id),
            "row {id} differs from what was committed"
        );
    }
}

fn big_body(id: i64) -> String {
    format!("{id:08} ").repeat(700)
}

#[test]
fn a_checkpoint_while_nothing_replicates_starts_a_new_generation() {
    let app = App::new();
    let conn = app.conn();
    insert(&conn, 0, 10);
    {
        let mut rep = app.replicator();
        rep.pass(at(0)).unwrap();
        insert(&conn, 10, 10);
        rep.pass(at(1)).unwrap();
    }
    // The daemon is down: the app checkpoints, restarts its log and writes on.
    insert(&conn, 20, 10);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    insert(&conn, 30, 10);
    let mut rep = app.replicator();
    let report = rep.pass(at(10)).unwrap();
    let reason = report.new_generation.expect("a new generation");
    assert!(reason.contains("while nothing replicated"), "{reason}");
    assert_eq!(app.store().generations().unwrap().len(), 2);
    let (latest, _) = app.restore(None, "latest.db");
    assert_eq!(ids(&latest), (0..40).collect::<Vec<_>>());
    // Before the new generation: the old one, as far as it went.
    let (old, _) = app.restore(Some(at(5)), "old.db");
    assert_eq!(ids(&old), (0..20).collect::<Vec<_>>());
}

#[test]
fn a_replaced_database_file_starts_a_new_generation() {
    let app = App::new();
    insert(&app.conn(), 0, 5);
    let mut rep = app.replicator();
    rep.pass(at(0)).unwrap();
    app.replace_file(100, 3);
    let report = rep.pass(at(1)).unwrap();
    assert!(
        report
            .new_generation
            .as_deref()
            .is_some_and(|r| r.contains("replaced")),
        "{report:?}"
    );
    let (latest, _) = app.restore(None, "latest.db");
    assert_eq!(ids(&latest), vec![100, 101, 102]);
}

/// This process's POSIX locks on the file at `path` (`/proc/locks`: "1: POSIX ADVISORY
/// READ PID MAJ:MIN:INODE START END").
fn locks_held_on(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).unwrap().ino().to_string();
    let pid = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() >= 6
                && f[1] == "POSIX"
                && f[4] == pid
                && f[5].rsplit(':').next() == Some(inode.as_str())
        })
        .count()
}

#[test]
fn dropping_a_replicator_leaves_the_locks_of_the_processs_other_connections() {
    let app = App::new();
    insert(&app.conn(), 0, 5);
    // Another connection of this process, as the backup job's reading the same
    // database: its read transaction is a lock on the index.
    let job = app.conn();
    job.execute_batch("BEGIN").unwrap();
    let rows: i64 = job
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 5);
    let shm = app.dir.path().join("app_data.db-shm");
    let held = (locks_held_on(&app.db), locks_held_on(&shm));
    assert!(
        held.1 > 0,
        "the job's read transaction locks the index: {held:?}"
    );
    // Opened and dropped three times, as reloads or errors do: the job's locks stay.
    for second in 0..3 {
        let mut rep = app.replicator();
        rep.pass(at(second)).unwrap();
        drop(rep);
        assert_eq!(
            (locks_held_on(&app.db), locks_held_on(&shm)),
            held,
            "pass {second}"
        );
    }
    job.execute_batch("COMMIT").unwrap();
}

#[test]
fn a_lost_last_segment_of_an_ended_generation_is_named_not_passed_over() {
    let app = App::new();
    insert(&app.conn(), 0, 5);
    let mut rep = app.replicator();
    rep.pass(at(0)).unwrap();
    let ended = rep.position().unwrap().generation.clone();
    insert(&app.conn(), 5, 5);
    rep.pass(at(1)).unwrap();
    let end = rep.position().unwrap().next_tx;
    // A new generation ends the first one (the file replaced).
    app.replace_file(100, 3);
    assert!(rep.pass(at(2)).unwrap().new_generation.is_some());
    let info = app.store().generation(&ended).unwrap().unwrap();
    let segments = app.store().segments(&ended).unwrap();
    let (last_first, last) = segments.last().unwrap().clone();
    assert_eq!(info.end_tx, Some(end), "{info:?}");
    assert!(end > last_first);
    let (whole, _) = app.restore(Some(at(1)), "whole.db");
    assert_eq!(ids(&whole), (0..10).collect::<Vec<_>>());
    std::fs::remove_file(&last).unwrap();
    let out = app.dir.path().join("short.db");
    let err = restore_to(&app.store(), Some(at(1)), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn a_database_not_in_wal_mode_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app_data.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let store = ReplicaStore::new(&dir.path().join("backups"), 0o600, 0o700);
    let err = Replicator::open(&db, store, BUSY)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("journal_mode = WAL"), "{err}");
}

/// Three passes of ten rows each: the generation's three segments.
fn three_segments(app: &App) -> Vec<(u64, PathBuf)> {
    let conn = app.conn();
    let mut rep = app.replicator();
    for k in 0..3 {
        insert(&conn, k * 10, 10);
        rep.pass(at(k)).unwrap();
    }
    let generation = rep.position().unwrap().generation.clone();
    let segments = app.store().segments(&generation).unwrap();
    assert_eq!(segments.len(), 3, "{segments:?}");
    segments
}

#[test]
fn a_damaged_or_missing_segment_stops_the_restore_naming_it() {
    let app = App::new();
    let segments = three_segments(&app);
    let mut bytes = std::fs::read(&segments[1].1).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segments[1].1, &bytes).unwrap();
    let out = app.dir.path().join("damaged.db");
    let err = restore_to(&app.store(), None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&segments[1].1.display().to_string()), "{err}");
    std::fs::remove_file(&segments[1].1).unwrap();
    let out = app.dir.path().join("missing.db");
    let err = restore_to(&app.store(), None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn a_base_that_decompresses_past_its_recorded_size_writes_no_more_and_is_refused() {
    let app = App::new();
    insert(&app.conn(), 0, 5);
    let mut rep = app.replicator();
    rep.pass(at(0)).unwrap();
    let generation = rep.position().unwrap().generation.clone();
    let info = app.store().generation(&generation).unwrap().unwrap();
    let recorded = info.base_bytes.expect("the base's size is recorded");
    assert_eq!(recorded, std::fs::metadata(&app.db).unwrap().len());
    // A few KiB that decompress to 64 MiB of zeros in place of the base.
    let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 1).unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let base = app.store().generation_dir(&generation).join(BASE_FILE);
    std::fs::write(&base, &bomb).unwrap();
    let out = app.dir.path().join("bomb.db");
    let err = crate::error_chain(&restore_to(&app.store(), None, &out).unwrap_err());
    assert!(
        err.contains(&format!("more than the {recorded} bytes recorded")),
        "{err}"
    );
    assert!(!out.exists(), "the private output is removed");
}

/// The daemon comes back to a log the app wrote on and wholly copied into the database
/// file (not yet restarted); its first pass reads only part of it (the bound per pass).
/// A restart that follows must be a gap: the frames not yet read are gone with it.
#[test]
fn a_restart_after_a_partial_first_pass_is_a_gap_not_a_silent_loss() {
    let app = App::new();
    let conn = app.conn();
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    insert(&conn, 0, 5);
    {
        let mut rep = app.replicator();
        rep.pass(at(0)).unwrap();
    }
    for k in 1..6 {
        insert(&conn, k * 5, 5);
    }
    conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);")
        .unwrap();
    let mut rep = app.replicator();
    rep.set_pass_bytes(1);
    let first = rep.pass(at(1)).unwrap();
    assert_eq!((first.transactions, first.complete), (1, false));
    insert(&conn, 30, 5); // restarts the wholly copied log
    let report = rep.pass(at(2)).unwrap();
    assert!(report.new_generation.is_some(), "{report:?}");
    let (latest, _) = app.restore(None, "latest.db");
    assert_eq!(ids(&latest), (0..35).collect::<Vec<_>>());
}

/// An empty log left behind, written on and removed while nothing replicated (the app's
/// last connection closing checkpoints and deletes it): a gap, never "still empty".
#[test]
fn a_log_written_and_removed_while_nothing_replicated_starts_a_new_generation() {
    let app = App::new();
    {
        let mut rep = app.replicator();
        rep.pass(at(0)).unwrap();
        assert_eq!(rep.position().unwrap().log, LogPosition::Empty);
    }
    insert(&app.conn(), 0, 10); // the connection closes: the log is copied and deleted
    let mut rep = app.replicator();
    let report = rep.pass(at(1)).unwrap();
    assert!(report.new_generation.is_some(), "{report:?}");
    let (latest, _) = app.restore(None, "latest.db");
    assert_eq!(ids(&latest), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_missing_last_segment_is_named_not_passed_over() {
    let app = App::new();
    let segments = three_segments(&app);
    let last = &segments.last().unwrap().1;
    std::fs::remove_file(last).unwrap();
    let out = app.dir.path().join("short.db");
    let err = restore_to(&app.store(), None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
    assert!(!out.exists(), "a failed restore leaves nothing behind");
}

#[test]
fn compaction_keeps_every_point_a_restore_reaches_and_leftovers_are_passed_over() {
    let app = App::new();
    let conn = app.conn();
    let mut rep = app.replicator();
    let mut expected = Vec::new();
    // Passes 20 s apart: minutes 0, 1 and 2 of the hour get several segments each.
    for k in 0..9i64 {
        insert(&conn, k * 10, 5);
        insert(&conn, k * 10 + 5, 5);
        if k == 4 {
            conn.execute_batch("DELETE FROM orders WHERE id % 2 = 0; VACUUM;")
                .unwrap();
        }
        rep.pass(at(k * 20)).unwrap();
        expected.push(ids(&app.db));
    }
    let generation = rep.position().unwrap().generation.clone();
    let store = app.store();
    let before = store.segments(&generation).unwrap();
    // A segment as it was, to play an interrupted compaction below.
    let second_segment = std::fs::read(&before[1].1).unwrap();
    let minute_start = |ms: i64| at(0).timestamp_millis() + ms;
    let merged =
        super::super::compact::compact_generation(&store, &generation, minute_start(180_000))
            .unwrap();
    let after = store.segments(&generation).unwrap();
    assert!(
        !merged.is_empty() && after.len() < before.len(),
        "{merged:?}"
    );
    for k in 0..9i64 {
        let (out, _) = app.restore(Some(at(k * 20)), &format!("c-{k}.db"));
        assert_eq!(ids(&out), expected[k as usize], "as of pass {k}");
    }
    // The hour over: one segment for the whole chain, every point still there.
    super::super::compact::compact_generation(&store, &generation, minute_start(3_600_000))
        .unwrap();
    assert_eq!(store.segments(&generation).unwrap().len(), 1);
    for k in [0i64, 3, 4, 5, 8] {
        let (out, _) = app.restore(Some(at(k * 20)), &format!("h-{k}.db"));
        assert_eq!(
            ids(&out),
            expected[k as usize],
            "as of pass {k} after the hour"
        );
    }
    // A segment the merged one covers whole (a kill before the merge removed it) is
    // passed over by the restore and removed by the next compaction.
    let copied = store.segment_path(&generation, before[1].0);
    std::fs::write(&copied, &second_segment).unwrap();
    let (out, _) = app.restore(None, "with-leftover.db");
    assert_eq!(ids(&out), ids(&app.db));
    super::super::compact::compact_generation(&store, &generation, minute_start(3_600_000))
        .unwrap();
    assert!(!copied.exists());
}

#[test]
fn a_truncating_checkpoint_keeps_the_chain_and_empties_the_log() {
    let app = App::new();
    let conn = app.conn();
    let mut rep = app.replicator();
    insert(&conn, 0, 50);
    rep.pass(at(0)).unwrap();
    insert(&conn, 50, 50);
    let done = rep.checkpoint(at(1), CheckpointMode::Truncate).unwrap();
    assert!(matches!(done, CheckpointReport::Done { .. }), "{done:?}");
    let wal = std::fs::metadata(app.db.with_extension("db-wal")).unwrap();
    assert_eq!(wal.len(), 0, "the log was truncated");
    insert(&conn, 100, 50);
    let report = rep.pass(at(2)).unwrap();
    assert_eq!(report.new_generation, None, "{report:?}");
    rep.checkpoint(at(3), CheckpointMode::Truncate).unwrap();
    insert(&conn, 150, 5);
    let report = rep.pass(at(4)).unwrap();
    assert_eq!(report.new_generation, None, "{report:?}");
    assert_eq!(app.store().generations().unwrap().len(), 1);
    let (out, _) = app.restore(None, "after-truncate.db");
    assert_eq!(ids(&out), ids(&app.db));
    let (out, _) = app.restore(Some(at(2)), "at-2.db");
    assert_eq!(ids(&out), (0..150).collect::<Vec<_>>());
}

#[test]
fn a_log_restarted_while_down_with_the_file_untouched_goes_on_and_a_written_file_does_not() {
    let app = App::new();
    let conn = app.conn();
    {
        let mut rep = app.replicator();
        insert(&conn, 0, 20);
        rep.pass(at(0)).unwrap();
        // Everything read and copied into the file under our lock.
        rep.checkpoint(at(1), CheckpointMode::Passive).unwrap();
        // A stamp vouches only once the file's last change is older than a clock tick
        // of the file system (so no later change can share its timestamp): the pass
        // after that takes it. The wait is that precondition, not a synchronisation.
        std::thread::sleep(Duration::from_millis(100));
        rep.pass(at(1)).unwrap();
    }
    // Down: the app's next write restarts the log (all of it was in the file), which
    // writes nothing to the file itself.
    insert(&conn, 20, 5);
    let mut rep = app.replicator();
    let report = rep.pass(at(2)).unwrap();
    assert_eq!(report.new_generation, None, "{report:?}");
    assert_eq!(report.transactions, 1);
    let (out, _) = app.restore(None, "went-on.db");
    assert_eq!(ids(&out), ids(&app.db));
    drop(rep);
    // Down again: the app checkpoints (the file is written) and restarts its log.
    insert(&conn, 25, 5);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    insert(&conn, 30, 5);
    let mut rep = app.replicator();
    let report = rep.pass(at(3)).unwrap();
    assert!(report.new_generation.is_some(), "{report:?}");
    let (out, _) = app.restore(None, "new-generation.db");
    assert_eq!(ids(&out), ids(&app.db));
}

#[test]
fn a_position_older_than_its_segments_starts_a_new_generation() {
    let app = App::new();
    let conn = app.conn();
    let mut rep = app.replicator();
    insert(&conn, 0, 10);
    rep.pass(at(0)).unwrap();
    let older = rep.position().unwrap().clone();
    insert(&conn, 10, 10);
    rep.pass(at(1)).unwrap();
    drop(rep);
    // A power cut kept the segment (flushed) but not the position written after it.
    app.store().save_position(&older).unwrap();
    let mut rep = app.replicator();
    let report = rep.pass(at(2)).unwrap();
    assert!(
        report
            .new_generation
            .as_deref()
            .is_some_and(|r| r.contains("power cut")),
        "{report:?}"
    );
    let (out, _) = app.restore(None, "after-power-cut.db");
    assert_eq!(ids(&out), ids(&app.db));
}

#[test]
fn an_unreadable_position_starts_a_new_generation_and_says_why() {
    let app = App::new();
    let conn = app.conn();
    let mut rep = app.replicator();
    insert(&conn, 0, 10);
    rep.pass(at(0)).unwrap();
    let first = rep.position().unwrap().generation.clone();
    let end = rep.position().unwrap().next_tx;
    drop(rep);
    // What a power cut can leave of a renamed, unflushed file on XFS: nothing in it.
    let position = app.dir.path().join("backups/replication/position.json");
    assert!(position.exists(), "{}", position.display());
    std::fs::write(&position, b"").unwrap();
    insert(&conn, 10, 5);
    let mut rep = app.replicator();
    let report = rep.pass(at(1)).unwrap();
    let reason = report.new_generation.clone().unwrap_or_default();
    assert!(
        reason.contains("position record could not be read"),
        "{report:?}"
    );
    assert_ne!(rep.position().unwrap().generation, first);
    // The new chain goes on, and the first one is still there to restore from.
    insert(&conn, 15, 5);
    rep.pass(at(2)).unwrap();
    let (out, _) = app.restore(None, "after-unreadable-position.db");
    assert_eq!(ids(&out), ids(&app.db));
    // It ends where its segments do: a restore into it still names a lost last one.
    let ended = app.store().generation(&first).unwrap().unwrap();
    assert_eq!(ended.end_tx, Some(end), "{ended:?}");
}
