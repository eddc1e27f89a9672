//! The database snapshot under a live WAL writer.

use super::*;

// ---------------------------------------------------------------------------------------
// 1. The database under a live writer

/// One transaction of the "app": a client with a portrait, the client counter bumped in
/// the same transaction, and one view moved from portrait 1 to portrait 2.
fn app_write(conn: &mut Connection, i: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO clients (phone, name, created_at) VALUES (?1, 'live client', datetime('now'))",
        [format!("+7000{i:07}")],
    )?;
    let cid = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO portraits (client_id, image_path, permanent_link, view_count, created_at)
         VALUES (?1, 'storage/live.jpg', ?2, 0, datetime('now'))",
        rusqlite::params![cid, format!("live-{i}")],
    )?;
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'clients'",
        [],
    )?;
    tx.execute(
        "UPDATE portraits SET view_count = view_count - 1 WHERE id = 1",
        [],
    )?;
    tx.execute(
        "UPDATE portraits SET view_count = view_count + 1 WHERE id = 2",
        [],
    )?;
    tx.commit()
}

#[test]
fn database_backup_is_consistent_while_the_app_keeps_writing() {
    let app = TestApp::new();
    {
        let mut conn = app.open_db();
        // ~15 MB, so the copy is not instantaneous.
        add_clients(&mut conn, 20_000, 400);
        conn.execute_batch(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters SELECT 'clients', count(*) FROM clients;",
        )
        .expect("counters");
    }
    let base_clients = count(&app.open_db(), "SELECT count(*) FROM clients");
    let views = count(&app.open_db(), "SELECT sum(view_count) FROM portraits");

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, busy) = (stop.clone(), commits.clone(), busy.clone());
        let db = app.db.clone();
        thread::spawn(move || -> Result<(), String> {
            // The app's own connection: a short busy timeout, so that a backup holding a
            // lock for more than a moment shows up as SQLITE_BUSY here.
            let mut conn = Connection::open(&db).map_err(|e| e.to_string())?;
            conn.busy_timeout(Duration::from_millis(200))
                .map_err(|e| e.to_string())?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| e.to_string())?;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match app_write(&mut conn, i) {
                    Ok(()) => {
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err(format!("writer failed after {i} transactions: {e}")),
                }
            }
            Ok(())
        })
    };
    poll_until(Duration::from_secs(60), "the writer to commit", || {
        commits.load(Ordering::SeqCst) >= 20 || writer.is_finished()
    });
    assert!(!writer.is_finished(), "the writer stopped early");

    let before = commits.load(Ordering::SeqCst);
    let run = app.run(["create", "--type", "database", "--json"]);
    let after = commits.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread").expect("writer");
    run.assert_code(0);
    eprintln!(
        "writer: {before} commits before the backup, {} during it, {} busy",
        after - before,
        busy.load(Ordering::SeqCst)
    );

    assert!(
        after > before,
        "the app committed nothing while the backup ran ({before} commits before, {after} after): its writes were blocked"
    );
    assert_eq!(
        busy.load(Ordering::SeqCst),
        0,
        "the app's writer got SQLITE_BUSY while the backup ran"
    );

    let meta = run.json();
    let copy = data_path(&meta);
    assert_eq!(copy.parent(), Some(app.kind_dir("database").as_path()));
    // The copy is one self-contained file: no WAL beside it holds part of it.
    for sfx in ["-wal", "-shm", "-journal"] {
        let mut side = copy.as_os_str().to_owned();
        side.push(sfx);
        assert!(
            !Path::new(&side).exists(),
            "{} exists beside the copy",
            Path::new(&side).display()
        );
    }
    let conn = open_ro(&copy);
    assert_eq!(integrity(&conn), vec!["ok".to_string()]);
    let clients = count(&conn, "SELECT count(*) FROM clients");
    let counter = count(&conn, "SELECT value FROM counters WHERE name = 'clients'");
    assert_eq!(
        clients, counter,
        "the copy is not a transaction-consistent snapshot: {clients} clients but the counter says {counter}"
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM portraits"),
        clients,
        "each client has exactly one portrait in a consistent snapshot"
    );
    assert_eq!(
        count(&conn, "SELECT sum(view_count) FROM portraits"),
        views,
        "views moved between portraits must sum to a constant"
    );
    // The snapshot was taken while the backup ran, not before or after.
    let in_copy = (clients - base_clients) as u64;
    assert!(
        before <= in_copy && in_copy <= after + 1,
        "the copy holds {in_copy} app transactions; {before} were committed when the backup started and {after} when it ended"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM users"), 1);
    assert_eq!(app.list_of("database").len(), 1);
}
