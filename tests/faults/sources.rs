//! Sources the backup cannot take: unreadable files, a database locked past
//! `busy_timeout`, replaced by junk, truncated or emptied.

use super::*;

// ---------------------------------------------------------------------------------------
// 4. Sources: unreadable, locked, not SQLite, truncated

/// The uid/gid the binary runs as when root must be denied by file modes.
const NOBODY: u32 = 65534;

/// Run the binary as `nobody` when we are root (root reads anything), as ourselves
/// otherwise.
fn run_unprivileged(app: &TestApp, args: &[&str]) -> Run {
    let mut cmd = app.command(args);
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    run(cmd)
}

/// Give the whole app to `nobody` (root only), parents included up to the temp dir.
fn chown_app_to_nobody(app: &TestApp) -> Result<(), String> {
    let who = format!("{NOBODY}:{NOBODY}");
    system(
        "chown",
        &["-R".as_ref(), who.as_ref(), app.path().as_os_str()],
    )?;
    // Every parent of the temporary directory must be traversable for `nobody`.
    for dir in app.path().ancestors().skip(1) {
        let mode = fs::metadata(dir)
            .map_err(|e| format!("stat {}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!("{} is not traversable by others", dir.display()));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[test]
fn unreadable_source_files_fail_naming_the_file_and_keep_older_backups() {
    let app = TestApp::new();
    if is_root()
        && !require(
            &format!("an app directory uid {NOBODY} can reach"),
            chown_app_to_nobody(&app),
        )
    {
        return;
    }
    run_unprivileged(&app, &["create", "--type", "full"]).assert_code(0);
    let older = backup_hashes(&app);

    // A media file nobody may read.
    let video = app.storage.join("client_1/videos/video_1.mp4");
    let video_sum = sha256_file(&video);
    set_mode(&video, 0o000);
    for kind in ["storage", "full"] {
        let ctx = format!("{kind} backup with an unreadable media file");
        let r = run_unprivileged(&app, &["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&video), "Permission denied"], &ctx);
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    set_mode(&video, 0o644);
    assert_eq!(sha256_file(&video), video_sum, "the media file changed");

    // The database file itself unreadable.
    let db_sum = sha256_file(&app.db);
    set_mode(&app.db, 0o000);
    for kind in ["database", "full"] {
        let ctx = format!("{kind} backup with an unreadable database");
        let r = run_unprivileged(&app, &["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.db), "Permission denied"], &ctx);
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    set_mode(&app.db, 0o644);
    assert_eq!(sha256_file(&app.db), db_sum, "the database changed");

    // A database directory the service cannot enter: an I/O error naming the cause
    // (exit 1), not a config error claiming the file does not exist.
    let db_dir = app.db.parent().expect("db dir").to_path_buf();
    set_mode(&db_dir, 0o000);
    let r = run_unprivileged(&app, &["create", "--type", "database"]);
    set_mode(&db_dir, 0o755);
    assert_fails_naming(
        &r,
        &[s(&app.db), "Permission denied"],
        "database dir not enterable",
    );
    assert!(
        !r.stderr.contains("does not exist"),
        "a permission problem reported as a missing file\n{}",
        r.describe()
    );
    assert_backups_unchanged(&app, &older, "database dir not enterable");

    let r = run_unprivileged(&app, &["verify", "--all"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    run_unprivileged(&app, &["create", "--type", "full"]).assert_code(0);
}

#[test]
fn a_database_locked_by_an_exclusive_writer_past_busy_timeout_fails_naming_the_path() {
    let app = TestApp::new();
    app.write_config("busy_timeout = \"1s\"");
    app.create("database");
    let older = backup_hashes(&app);

    // The app holds an exclusive lock: in WAL mode only `locking_mode = EXCLUSIVE` keeps
    // readers out, and the lock is taken by the first write.
    let writer = Connection::open(&app.db).expect("open the live database");
    writer
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))
        .expect("locking_mode");
    writer
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("begin exclusive");
    writer
        .execute(
            "INSERT INTO clients (phone, name, created_at) VALUES ('+70000000001', 'held', '2026-11-27')",
            [],
        )
        .expect("write under the lock");

    for kind in ["database", "full"] {
        let ctx = format!("{kind} backup while the database is locked");
        let t0 = Instant::now();
        let r = app.spawn(["create", "--type", kind]).wait(RUN_DEADLINE);
        let took = t0.elapsed();
        assert_fails_naming(&r, &[s(&app.db), "locked"], &ctx);
        assert!(
            took >= Duration::from_millis(900),
            "{ctx}: gave up after {took:?}, before busy_timeout (1 s)\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
    }
    // The writer was not disturbed: it commits.
    writer
        .execute_batch("COMMIT")
        .expect("commit after the failed backups");
    drop(writer);

    let meta = app.create("database");
    let copy = dump_db_file(Path::new(jstr(&meta, "backup_path")));
    assert!(
        copy.iter()
            .any(|row| row.contains("'held'") || row.contains("\"held\"")),
        "the writer's row is not in the next backup"
    );
    assert_only_listed_backups(&app, "after the lock was released");
    assert_all_verify(&app, "after the lock was released");
}

#[test]
fn a_database_replaced_by_junk_or_truncated_fails_naming_the_cause_and_keeps_older_backups() {
    // tests/backup.rs covers junk with no older backups; here every variant of a broken
    // database file, with older backups that must survive and the cause in the message.
    let app = TestApp::new();
    grow_database(&app, 300, 300);
    app.create("database");
    app.create("full");
    let older = backup_hashes(&app);
    let listed = app.list().len();
    let good = fs::read(&app.db).expect("read the database");
    assert!(
        good.len() > 16 * 4096,
        "the database is too small to truncate meaningfully"
    );

    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "junk",
            "this is not a database\n".repeat(200).into_bytes(),
            &["not a database"],
        ),
        (
            "truncated to half",
            good[..good.len() / 2].to_vec(),
            &["malformed"],
        ),
        (
            "truncated to one page",
            good[..4096].to_vec(),
            &["malformed"],
        ),
        ("truncated to 0 bytes", Vec::new(), &["empty"]),
    ];
    for (what, bytes, causes) in cases {
        remove_db_side_files(&app.db);
        fs::write(&app.db, &bytes).expect("replace the database");
        for kind in ["database", "full"] {
            let ctx = format!("{kind} backup of a database {what}");
            let r = app.run(["create", "--type", kind]);
            assert_fails_naming(&r, &[s(&app.db)], &ctx);
            assert!(
                mentions_any(&r, causes),
                "{ctx}: the cause ({causes:?}) is not named\n{}",
                r.describe()
            );
            assert_eq!(
                fs::read(&app.db).expect("read the database"),
                bytes,
                "{ctx}: the live file was modified"
            );
            assert_backups_unchanged(&app, &older, &ctx);
            assert_no_partials(&app.root, &ctx);
        }
    }
    assert_eq!(app.list().len(), listed);
    assert_all_verify(&app, "after the broken databases");

    remove_db_side_files(&app.db);
    fs::write(&app.db, &good).expect("put the database back");
    app.create("database");
    assert_only_listed_backups(&app, "after the database was repaired");
}

/// An app that crashed mid-transaction on a rollback-journal database leaves a hot
/// journal; a read-only connection cannot roll it back. The backup still succeeds (the
/// source is reopened read-write for exactly this case, as the app's next open would do)
/// and holds the data as it was before the interrupted transaction.
#[test]
fn a_database_left_with_a_hot_journal_by_a_crashed_app_is_backed_up() {
    let app = TestApp::new();
    tool(
        "sqlite3",
        [app.db.as_os_str(), "PRAGMA journal_mode=DELETE;".as_ref()],
    )
    .assert_code(0);
    let before = dump_db_file(&app.db);
    // The sqlite3 shell kills itself (`$PPID` of its `.shell` is the shell) in the middle
    // of a transaction big enough to spill pages into the database file.
    let crashed = tool(
        "sqlite3",
        [
            app.db.as_os_str(),
            "PRAGMA cache_size=5;".as_ref(),
            "BEGIN;".as_ref(),
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<3000) \
             INSERT INTO clients (phone, name, created_at) SELECT 'p'||i, hex(randomblob(200)), '2026-11-27' FROM c;"
                .as_ref(),
            ".shell kill -9 $PPID".as_ref(),
        ],
    );
    assert_eq!(
        crashed.signal(),
        Some(libc::SIGKILL),
        "{}",
        crashed.describe()
    );
    let journal = app.db.with_file_name("app_data.db-journal");
    assert!(
        journal.exists(),
        "no hot journal was left: {}",
        crashed.describe()
    );

    let meta = app.create("database");
    let copy = PathBuf::from(jstr(&meta, "backup_path"));
    assert_eq!(
        dump_db_file(&copy),
        before,
        "the backup does not hold the data from before the interrupted transaction"
    );
    assert_eq!(
        dump_db_file(&app.db),
        before,
        "the live data after rollback"
    );
}

/// The tracee's pid in a strace log (`PID syscall(…)` lines), once it stopped on
/// `SIGSTOP` (strace writes "--- stopped by SIGSTOP ---" once the group stopped).
fn stopped_tracee(log: &Path) -> Option<libc::pid_t> {
    let text = fs::read_to_string(log).ok()?;
    if !text.contains("stopped by SIGSTOP") {
        return None;
    }
    text.split_whitespace().next()?.parse().ok()
}

/// The walk has listed `swap/` and stored `swap/a`; then (the process stopped by strace
/// right after opening `a`, so the interleaving is exact) `swap/b` becomes a FIFO. The
/// backup must finish with the changed-while-read warning, not wait forever in open(2)
/// for a writer while holding the lock.
#[test]
fn a_fifo_swapped_in_during_a_storage_backup_is_skipped_with_a_warning() {
    if !require("strace, able to trace", super::crash::strace_usable()) {
        return;
    }
    let app = TestApp::new();
    let first = app.write_storage_file("swap/a", b"stored before the swap");
    let victim = app.write_storage_file("swap/b", b"becomes a FIFO");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("strace.log");
    let inner = app.command(["create", "--type", "storage"]);
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=openat",
        "-e",
        "inject=openat:signal=STOP",
        "-P",
    ])
    .arg(&first)
    .arg("-o")
    .arg(&log)
    .arg(inner.get_program())
    .args(inner.get_args())
    .current_dir(&app.root)
    .env_remove("VERTEX_BACKUP_CONFIG")
    .env_remove("RUST_LOG");
    let mut strace = spawn(cmd);
    let tracee = poll_for(
        Duration::from_secs(60),
        "the backup to stop after opening swap/a",
        || stopped_tracee(&log),
    );
    fs::remove_file(&victim).expect("remove swap/b");
    let c = std::ffi::CString::new(victim.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path and a plain mode; kill(2) with the tracee's pid.
    unsafe {
        assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0);
        assert_eq!(libc::kill(tracee, libc::SIGCONT), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while strace.is_running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if strace.is_running() {
        // Blocked in open(2) on the FIFO: end the tracee too, not only strace.
        // SAFETY: kill(2) with the tracee's pid.
        unsafe { libc::kill(tracee, libc::SIGKILL) };
        panic!("the backup still runs a minute after a FIFO was swapped in (blocked opening it?)");
    }
    let r = strace.wait(Duration::from_secs(5));
    // Exit 3: done, with a warning.
    r.assert_code(3);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("swap/b changed while being backed up (now a FIFO); skipped"),
        "no warning naming the swapped file\n{}",
        r.describe()
    );
    let r = app.run(["verify", "--all"]);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
}

/// A WAL database the app closed cleanly (no `-wal`, no `-shm`) in a directory the
/// service user may only read: SQLite must create the `-shm` to read it. The backup fails
/// saying so and naming the directory to grant write access on, not "attempt to write a
/// readonly database". Runs as `nobody` (root may write anywhere).
#[test]
fn a_clean_wal_database_in_a_read_only_directory_fails_naming_the_permission() {
    let app = TestApp::new();
    {
        let conn = app.open_db();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("WAL");
        assert_eq!(mode, "wal");
    }
    for sfx in ["-wal", "-shm"] {
        let mut side = app.db.as_os_str().to_owned();
        side.push(sfx);
        assert!(!Path::new(&side).exists(), "the app's close left {sfx}");
    }
    if is_root() {
        chown_app_to_nobody(&app).expect("run the binary as nobody");
    }
    let dir = app.db.parent().expect("database directory").to_path_buf();
    set_mode(&dir, 0o555);
    let r = run_unprivileged(&app, &["create", "--type", "database"]);
    set_mode(&dir, 0o755);
    assert_fails_naming(
        &r,
        &[s(&dir), "write access", "-shm"],
        "read-only directory",
    );
    assert!(
        !r.stderr.contains("attempt to write a readonly database"),
        "{}",
        r.describe()
    );
}
