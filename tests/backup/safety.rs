//! Private modes whatever the umask, two backups in one second, a kill mid-backup, the
//! lock.

use super::*;

// ---------------------------------------------------------------------------------------
// 4. Permissions

#[test]
fn backups_are_private_even_with_umask_000() {
    // The umask really reaches the child.
    let mut probe = Command::new("sh");
    probe.args(["-c", "umask"]);
    with_umask(&mut probe, 0);
    assert_eq!(run(probe).stdout.trim(), "0000");

    let app = TestApp::new();
    fs::remove_dir(&app.backups).unwrap();
    for kind in ["full", "database", "storage"] {
        let mut cmd = app.command(["create", "--type", kind]);
        with_umask(&mut cmd, 0);
        run(cmd).assert_code(0);
    }
    let dirs = dirs_under(&app.backups);
    for kind in ["full", "database", "storage"] {
        assert!(dirs.contains(&app.kind_dir(kind)), "{dirs:#?}");
    }
    for d in dirs {
        let mode = fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    let files = files_under(&app.backups);
    let backups = app.backup_files();
    assert!(backups.len() >= 9, "{backups:#?}");
    for f in files {
        let m = fs::symlink_metadata(&f).unwrap();
        assert!(m.file_type().is_file(), "{} is not a file", f.display());
        let mode = m.mode() & 0o7777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

// ---------------------------------------------------------------------------------------
// 5. Two backups in one second

#[test]
fn two_backups_in_the_same_second_do_not_collide() {
    let app = TestApp::new();
    let mut made: Vec<Value> = Vec::new();
    let mut collided = false;
    for _ in 0..5 {
        // Start right after a second boundary, so both runs very likely share it.
        poll_until(Duration::from_secs(5), "a fresh second", || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_millis()
                < 100
        });
        let a = app.create("database");
        let b = app.create("database");
        collided = jstr(&a, "timestamp")[..15] == jstr(&b, "timestamp")[..15];
        made.push(a);
        made.push(b);
        if collided {
            break;
        }
    }
    assert!(collided, "never managed two backups within one second");
    let mut paths: Vec<PathBuf> = made.iter().map(data_path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), made.len(), "two backups share a file name");
    for m in &made {
        // Neither overwrote the other: each still matches its own metadata.
        assert_eq!(sha256_file(&data_path(m)), jstr(m, "checksum"));
    }
    let rows = app.list_of("database");
    assert_eq!(rows.len(), made.len(), "{rows:#?}");
    let mut names: Vec<&str> = rows.iter().map(|r| jstr(r, "name")).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), made.len());
    assert!(rows.iter().all(|r| r["complete"] == true), "{rows:#?}");
}

// ---------------------------------------------------------------------------------------
// 6 + 7. A crash mid-backup, and the lock

#[test]
fn killed_storage_backup_leaves_no_backup_and_the_next_run_cleans_up() {
    let app = TestApp::new();
    // ~150 MB of incompressible data: several seconds of work for a debug build.
    app.write_random_files("media", 15, 10 << 20);
    let storage_dir = app.kind_dir("storage");
    let mut child = app.spawn(["create", "--type", "storage"]);
    let partial = poll_for(
        Duration::from_secs(120),
        "a growing .partial archive",
        || {
            files_under(&storage_dir).into_iter().find(|p| {
                p.to_string_lossy().ends_with(".partial")
                    && fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
            })
        },
    );
    assert!(
        child.is_running(),
        "the backup finished before it could be killed"
    );

    // While it runs, a second mutating operation is refused, naming the holder.
    let second = app.run(["create", "--type", "database"]);
    second.assert_code(1);
    assert!(
        second.stderr.contains(&format!("pid {}", child.pid())),
        "the refusal does not name the running process:\n{}",
        second.describe()
    );
    assert!(files_under(&app.kind_dir("database")).is_empty());

    assert!(
        child.is_running(),
        "the backup finished before it could be killed"
    );
    child.signal(libc::SIGKILL);
    let killed = child.wait(Duration::from_secs(30));
    assert_eq!(
        killed.signal(),
        Some(libc::SIGKILL),
        "{}",
        killed.describe()
    );

    assert!(
        app.list_of("storage").is_empty(),
        "a killed backup is listed"
    );
    assert!(app.list().is_empty());
    assert!(
        partial.exists(),
        "the temporary file vanished without a run to clean it"
    );

    let meta = app.create("storage");
    let leftovers = app.partial_files();
    assert!(
        leftovers.is_empty(),
        "left after the next run: {leftovers:#?}"
    );
    let rows = app.list_of("storage");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["complete"], true);
    assert_eq!(jstr(&rows[0], "checksum"), jstr(&meta, "checksum"));
    let archive = data_path(&meta);
    assert_eq!(sha256_file(&archive), jstr(&meta, "checksum"));
    tool("zstd", ["-q".as_ref(), "-t".as_ref(), archive.as_os_str()]).assert_code(0);
    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
}

#[test]
fn create_while_the_lock_is_held_fails_naming_the_holder() {
    let app = TestApp::new();
    let lock_path = app.backups.join(".vertex-backup.lock");
    let holder = "pid 12345 running `create full` since 2026-11-27 03:00:00";
    let held = hold_flock(&lock_path, holder);

    let r = app.run(["create", "--type", "database"]);
    r.assert_code(1);
    assert!(r.stderr.contains("pid 12345"), "{}", r.describe());
    assert!(r.stderr.contains("create full"), "{}", r.describe());
    assert_nothing_written(&app);
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), holder);
    // Reads never wait for the lock.
    assert!(app.list().is_empty());
    app.stats();

    drop(held);
    app.create("database");
    assert_eq!(app.list().len(), 1);
}

/// Issue 13, item 16: Ctrl-C killed `create` at once, leaving its `.partial` and no log
/// line. Now SIGINT cancels like the daemon's SIGTERM: nothing kept, a "cancelled"
/// failure in `backup.log` and the state file, exit 130. The `before` hook holds the
/// backup until the signal is in, so the interruption is deterministic.
#[test]
fn sigint_cancels_create_cleanly_logs_it_and_exits_130() {
    let app = TestApp::new();
    let started = app.root.join("hook.started");
    let go = app.root.join("hook.go");
    app.write_config_raw(&app.config_text(
        "",
        &format!(
            "[hooks]\nbefore = \"touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done\"\n",
            started.display(),
            go.display()
        ),
    ));
    let child = app.spawn(["create", "--type", "full"]);
    poll_until(Duration::from_secs(30), "the before hook to start", || {
        started.exists()
    });
    child.signal(libc::SIGINT);
    // The signal reached only the binary (a terminal would signal the hook too); let the
    // hook end so the engine reaches its next cancellation check.
    fs::write(&go, b"").unwrap();
    let r = child.wait(Duration::from_secs(60));
    assert_eq!(r.code(), Some(130), "{}", r.describe());
    assert!(r.stderr.contains("cancelled"), "{}", r.describe());
    assert_nothing_written(&app);
    assert!(app.list().is_empty(), "a cancelled backup is listed");
    let log = app.backup_log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("create full") && l.contains("cancelled")),
        "no cancelled line in backup.log:\n{log}"
    );
    let state = read_json(&app.backups.join("vertex-backup.state.json"));
    let error = state["runs"]["full"]["last_failure"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("cancelled"), "state: {state:#}");
}

/// A pipe whose read end is already closed: every write to the other end gets EPIPE,
/// the way `create … | head -1` looks once `head` has exited.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors that we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fds[0] and fds[1] are open and owned by nobody else.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) });
    std::process::Stdio::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) })
}

/// Issue 13, item 10: `create … --max-backups 1 | head -1` panicked (exit 101) on the
/// closed stdout after writing the backup, and skipped the rotation it was asked for.
#[test]
fn a_closed_stdout_does_not_fail_create_nor_skip_its_rotation() {
    let app = TestApp::new();
    app.create("database");
    app.create("database");
    for json in [false, true] {
        let mut cmd = app.command(["create", "--type", "database", "--max-backups", "1"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "json {json}: {stderr}");
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
        assert_eq!(
            app.list_of("database").len(),
            1,
            "json {json}: the rotation was skipped"
        );
    }
    let list = app
        .command(["list"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(
        list.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
}
