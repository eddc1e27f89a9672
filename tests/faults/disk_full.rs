//! A full disk (a size-limited tmpfs) for the one-shot command and for the daemon.

use super::*;

// ---------------------------------------------------------------------------------------
// 2. Disk full

/// Files of 100 bytes: each takes 1 KiB in a tar stream (header + padded block) but counts
/// 100 bytes in the free-space estimate, so with `compression = "none"` the pre-flight
/// check passes and the write runs out of space.
fn add_tiny_files(app: &TestApp, count: usize) {
    for i in 0..count {
        app.write_storage_file(
            &format!("tiny/{:02}/t{i:05}.bin", i % 40),
            &random_bytes(50_000 + i as u64, 100),
        );
    }
}

/// A tmpfs of 8 MiB over `app.backups`; `None` when the test cannot mount one (skipped,
/// or failed under CI).
fn backup_tmpfs(app: &TestApp) -> Option<Mount> {
    let mounted = root("mount a size-limited tmpfs")
        .and_then(|()| Mount::tmpfs(&app.backups, "8m"))
        .map_err(|e| format!("cannot mount a tmpfs: {e}"));
    match mounted {
        Ok(m) => Some(m),
        Err(why) => {
            require("root and mount(8), for a size-limited tmpfs", Err(why));
            None
        }
    }
}

#[test]
fn a_full_disk_fails_the_write_naming_the_path_and_keeps_older_backups() {
    let fake = FakeBotApi::start(&[], Some(Reply::Ok));
    let app = TestApp::new();
    let Some(_mount) = backup_tmpfs(&app) else {
        return;
    };
    app.write_config_raw(&app.config_text(
        "compression = \"none\"",
        &telegram_section(&fake.base, "42", "\"failure\"", "10s"),
    ));
    app.create("database");
    app.create("storage");
    let older = backup_hashes(&app);
    add_tiny_files(&app, 4_000);
    let filler = fill_leaving(&app.backups, 5 << 19);

    for kind in ["storage", "full"] {
        let ctx = format!("{kind} backup on a full disk");
        let r = app.run(["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.kind_dir("storage"))], &ctx);
        assert!(
            mentions_any(&r, &["No space left on device", "ENOSPC"]),
            "{ctx}: the error does not say the disk is full\n{}",
            r.describe()
        );
        assert!(
            r.stderr.contains("write archive"),
            "{ctx}: the failing step is not named\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
        assert_no_partials(&app.backups, &ctx);
        let log = app.backup_log();
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("create {kind}: failed"))
                    && l.contains("No space left on device")),
            "{ctx}: no failure line in backup.log:\n{log}"
        );
        let told =
            fake.messages().iter().map(text_of).any(|t| {
                t.contains(&format!("{kind} backup FAILED")) && t.contains("No space left")
            });
        assert!(
            told,
            "{ctx}: no failure message reached Telegram: {:#?}",
            fake.messages().iter().map(text_of).collect::<Vec<_>>()
        );
    }

    // When the estimate already shows there is no room, nothing is even started.
    let leave = available_bytes(&app.backups);
    fs::write(
        app.backups.join("filler2"),
        vec![0u8; (leave - (256 << 10)) as usize],
    )
    .expect("fill the rest");
    let r = app.run(["create", "--type", "database"]);
    assert_fails_naming(
        &r,
        &[s(&app.backups), "free space"],
        "database backup, no room",
    );
    assert_backups_unchanged(&app, &older, "database backup, no room");
    fs::remove_file(app.backups.join("filler2")).expect("remove filler2");

    assert_all_verify(&app, "after the failures");
    assert_backups_unchanged(&app, &older, "after verify");

    // Space freed: the same backup succeeds.
    fs::remove_file(&filler).expect("remove the filler");
    let meta = app.create("storage");
    assert_eq!(
        ju64(&meta, "file_count"),
        files_under(&app.storage).len() as u64
    );
    assert_only_listed_backups(&app, "after space was freed");
    assert_all_verify(&app, "after space was freed");
}

#[test]
fn the_daemon_survives_a_full_disk_and_the_next_job_succeeds_once_space_is_freed() {
    let app = TestApp::new();
    let Some(_mount) = backup_tmpfs(&app) else {
        return;
    };
    app.create("database");
    let older = backup_hashes(&app);
    add_tiny_files(&app, 4_000);
    app.write_config_raw(&schedule_config(
        &app,
        "compression = \"none\"",
        &[("storage", "*/2 * * * * *")],
        "catch_up = false\n",
    ));
    let filler = fill_leaving(&app.backups, 5 << 19);

    let mut d = Daemon::start(&app);
    d.poll(
        Duration::from_secs(60),
        "a scheduled storage backup to fail for lack of space",
        |d| {
            d.app.backup_log().lines().any(|l| {
                l.contains("create storage: failed at \"write archive\"")
                    && l.contains("No space left on device")
            })
        },
    );
    assert!(
        app.list_of("storage").is_empty(),
        "a storage backup landed on a full disk\n{}",
        d.describe()
    );
    assert_backups_unchanged(&app, &older, "while the daemon fails");
    // It keeps running and keeps trying (a second failure proves the loop survived).
    d.poll(Duration::from_secs(60), "a second failed attempt", |d| {
        d.app
            .backup_log()
            .lines()
            .filter(|l| l.contains("create storage: failed"))
            .count()
            >= 2
    });

    fs::remove_file(&filler).expect("remove the filler");
    d.poll(
        Duration::from_secs(60),
        "a scheduled storage backup to succeed once space was freed",
        |d| {
            d.app
                .backup_log()
                .contains("create storage: Backup completed successfully")
        },
    );
    d.stop();
    assert!(
        !app.list_of("storage").is_empty(),
        "the success is not listed"
    );
    assert_only_listed_backups(&app, "after the daemon stopped");
    assert_all_verify(&app, "after the daemon stopped");
}

/// A restore target too small for the restored tree: refused before anything is written,
/// and the hint points at the target's filesystem (not at the backup filesystem and its
/// retention, which would not help); the live tree is untouched.
#[test]
fn a_restore_target_without_room_is_refused_with_a_hint_about_that_filesystem() {
    let app = TestApp::new();
    app.write_random_files("media", 8, 512 << 10);
    let meta = app.create("storage");
    let live = snapshot_tree(&app.storage);
    let target_fs = app.root.join("small-disk");
    fs::create_dir(&target_fs).expect("mkdir");
    let mounted = root("mount a size-limited tmpfs")
        .and_then(|()| Mount::tmpfs(&target_fs, "1m"))
        .map_err(|e| format!("cannot mount a tmpfs: {e}"));
    let _mount = match mounted {
        Ok(m) => m,
        Err(why) => {
            require("root and mount(8), for a size-limited tmpfs", Err(why));
            return;
        }
    };
    let target = target_fs.join("restored");
    let r = app.run([
        "restore",
        jstr(&meta, "backup_path"),
        "--target",
        target.to_str().expect("utf-8 path"),
        "--yes",
    ]);
    assert_fails_naming(
        &r,
        &[s(&target_fs), "hint:", "--target"],
        "restore, no room",
    );
    assert!(
        !r.stderr.contains("backup filesystem") && !r.stderr.contains("keep_last"),
        "the hint points at the backup filesystem\n{}",
        r.describe()
    );
    assert!(!target.exists(), "the target was created");
    assert_eq!(snapshot_tree(&app.storage), live, "the live tree changed");
}
