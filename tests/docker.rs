//! The app under a real container engine (Podman's Docker-compatible API service, one per
//! test: `util::podman`): live paths in volumes resolved at each job, the containers
//! carrying the stop label stopped while the storage is read or live data replaced and
//! started again (their `StartedAt` changes, they run afterwards and see the restored
//! files), a container that will not stop, the engine going away mid-job, and a backup
//! killed while the app is stopped (journaled first: the daemon starts them again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{
    Daemon, Podman, RUN_TIMEOUT, TestApp, assert_same_tree, podman_engine, poll_until,
    random_bytes, sha256_file,
};

const LABEL: &str = "vertex-backup.stop-during-backup";

/// An app whose storage is volume `media` and whose database is `app_data.db` in volume
/// `appdb` (copied from the test app's own), with `extra` config lines.
fn app_in_volumes(engine: &Podman, docker_lines: &str) -> (TestApp, PathBuf, PathBuf) {
    let app = TestApp::new();
    let media = engine.volume("media");
    copy_tree(&app.storage, &media);
    let appdb = engine.volume("appdb");
    std::fs::copy(&app.db, appdb.join("app_data.db")).expect("the database into its volume");
    let text = format!(
        "[paths]\ndatabase = \"volume:appdb/app_data.db\"\nstorage = \"volume:media\"\n\
         backup_dir = \"backups\"\n\n[backup]\nmin_free_space = \"1 MiB\"\n\n\
         [schedule]\ntimezone = \"UTC\"\nshutdown_grace = \"1s\"\nfull = \"off\"\n\
         database = \"off\"\nstorage = \"off\"\nrotate = \"off\"\nverify = \"off\"\n\n{}",
        engine.table(docker_lines)
    );
    app.write_config_raw(&text);
    (app, media, appdb.join("app_data.db"))
}

/// The tree `from` copied into `to` (a volume's mountpoint): directories and files, with
/// their mtimes (a copy made across a second's boundary would otherwise differ from the
/// original by its mtimes alone).
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read the tree") {
        let entry = entry.expect("an entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("its type").is_dir() {
            std::fs::create_dir_all(&dest).expect("a directory");
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("a file");
        }
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .expect("the mtime");
        std::fs::File::open(&dest)
            .and_then(|f| f.set_modified(mtime))
            .expect("keep the mtime");
    }
}

fn label(value: &str) -> String {
    format!("{LABEL}={value}")
}

fn journal(app: &TestApp) -> PathBuf {
    app.backups.join("containers-stopped.json")
}

#[test]
fn a_volume_is_backed_up_with_its_labelled_container_stopped_and_restored_in_place() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, media, _db) = app_in_volumes(&engine, "");
    engine.container("app", "media", &[&label("true")], None);
    engine.container("worker", "media", &[], None);
    engine.container("restorer", "media", &[&label("restore")], None);
    let started = |name: &str| engine.started_at(name);
    let (app0, worker0, restorer0) = (started("app"), started("worker"), started("restorer"));

    // check-config resolves the volumes and lists who stops for what.
    let checked = app.run(["check-config"]);
    checked.assert_code(0);
    assert!(
        checked
            .stdout
            .contains(&format!("volume:media → {}", media.display())),
        "{}",
        checked.describe()
    );
    assert!(
        checked
            .stdout
            .contains("stopped for: storage, full, restore"),
        "{}",
        checked.describe()
    );
    assert!(
        checked.stdout.contains("stopped for: restore"),
        "{}",
        checked.describe()
    );

    // A storage backup stops the labelled container while it reads, then starts it.
    let run = app.run(["create", "--type", "storage"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("started again: app"),
        "{}",
        run.describe()
    );
    assert!(engine.running("app"));
    let app1 = started("app");
    assert_ne!(
        app1, app0,
        "the labelled container was not stopped and started"
    );
    assert_eq!(
        started("worker"),
        worker0,
        "an unlabelled container was touched"
    );
    assert_eq!(
        started("restorer"),
        restorer0,
        "a restore-only container stopped for a backup"
    );
    assert!(!journal(&app).exists());

    // The database never stops anything.
    app.run(["create", "--type", "database"]).assert_code(0);
    assert_eq!(started("app"), app1, "a database backup stopped the app");

    // Damage the live files; the in-place restore names the containers in its plan,
    // stops both that apply, swaps, and starts them: they see the restored files.
    let portrait = "client_1/images/portrait_1.jpg";
    let original = std::fs::read(media.join(portrait)).expect("the portrait");
    std::fs::write(media.join(portrait), b"damaged").expect("damage");
    std::fs::write(media.join("client_1/stray.txt"), b"new since").expect("stray");
    let plan = app.run(["restore", "--latest", "storage", "--dry-run"]);
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("stop the containers app, restorer"),
        "{}",
        plan.describe()
    );
    let restored = app.run(["restore", "--latest", "storage", "--yes"]);
    restored.assert_code(0);
    assert!(
        restored.stdout.contains("started again: app, restorer"),
        "{}",
        restored.describe()
    );
    assert!(engine.running("app") && engine.running("restorer"));
    assert_ne!(started("app"), app1);
    assert_ne!(started("restorer"), restorer0);
    assert_eq!(started("worker"), worker0);
    assert_eq!(
        std::fs::read(media.join(portrait)).expect("restored"),
        original
    );
    assert!(!media.join("client_1/stray.txt").exists());
    // A running container sees the restored tree through its mount.
    assert_eq!(
        engine.sha256_inside("app", &format!("/data/{portrait}")),
        sha256_file(&media.join(portrait))
    );
    assert!(!journal(&app).exists());
}

#[test]
fn a_missing_volume_fails_the_backup_naming_it_and_nothing_is_stopped() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, _media, _db) = app_in_volumes(&engine, "");
    engine.container("app", "media", &[&label("true")], None);
    let before = engine.started_at("app");
    let text = std::fs::read_to_string(&app.config)
        .expect("config")
        .replace("volume:media", "volume:medai");
    app.write_config_raw(&text);
    let run = app.run(["create", "--type", "storage"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("volume `medai`") && run.stderr.contains("no such volume"),
        "{}",
        run.describe()
    );
    assert_eq!(engine.started_at("app"), before);
    assert!(app.backup_files().is_empty(), "{:?}", app.backup_files());
    assert!(
        app.backup_log().contains("resolve volumes"),
        "{}",
        app.backup_log()
    );
}

#[test]
fn a_container_that_will_not_stop_fails_the_backup_naming_it_and_the_others_start_again() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, _media, _db) = app_in_volumes(&engine, "stop_timeout = \"2s\"\n");
    engine.container("a-app", "media", &[&label("true")], None);
    // Ignores SIGTERM and asks for ten minutes of grace: the engine would wait that long.
    engine.container("b-stubborn", "media", &[&label("true")], Some(600));
    let before = engine.started_at("a-app");
    let run = app.run(["create", "--type", "storage"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("stop the container `b-stubborn`")
            && run.stderr.contains("stop_timeout"),
        "{}",
        run.describe()
    );
    assert!(app.backup_files().is_empty(), "{:?}", app.backup_files());
    // The one that did stop runs again.
    assert!(engine.running("a-app"));
    assert_ne!(engine.started_at("a-app"), before);
    assert!(
        app.backup_log().contains("stop containers"),
        "{}",
        app.backup_log()
    );
}

#[test]
fn the_engine_going_away_mid_job_is_alerted_and_the_next_run_starts_the_containers() {
    let Some(mut engine) = podman_engine() else {
        return;
    };
    let (app, _media, _db) = app_in_volumes(&engine, "stop_timeout = \"60s\"\n");
    engine.container("a-app", "media", &[&label("true")], None);
    // Its stop takes its 8 s grace: the engine goes away meanwhile.
    engine.container("b-slow", "media", &[&label("true")], Some(8));
    let create = app.spawn(["create", "--type", "storage"]);
    poll_until(Duration::from_secs(60), "a-app stopped", || {
        !engine.running("a-app")
    });
    engine.kill_service();
    let run = create.wait(RUN_TIMEOUT);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("could NOT be started again") && run.stderr.contains("a-app"),
        "{}",
        run.describe()
    );
    assert!(!engine.running("a-app"));
    assert!(
        journal(&app).exists(),
        "the containers left down are not journaled"
    );

    // The engine is back: the next run (any type) starts what was left down, first.
    engine.start_service();
    poll_until(Duration::from_secs(30), "b-slow to be down", || {
        engine.status("b-slow") != "stopping"
    });
    let next = app.run(["create", "--type", "database"]);
    assert_eq!(next.code(), Some(3), "{}", next.describe());
    assert!(next.stderr.contains("running again"), "{}", next.describe());
    assert!(engine.running("a-app") && engine.running("b-slow"));
    assert!(!journal(&app).exists());
}

#[test]
fn a_backup_killed_while_the_app_is_stopped_is_made_good_by_the_daemon_at_start() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, _media, _db) = app_in_volumes(&engine, "");
    engine.container("a-app", "media", &[&label("storage")], None);
    engine.container("b-slow", "media", &[&label("storage")], Some(4));
    let create = app.spawn(["create", "--type", "storage"]);
    poll_until(
        Duration::from_secs(60),
        "a-app stopped, b-slow stopping",
        || !engine.running("a-app") && engine.status("b-slow") == "stopping",
    );
    // Killed while b-slow is still stopping: only the journal knows.
    create.signal(libc::SIGKILL);
    let killed = create.wait(RUN_TIMEOUT);
    assert_eq!(
        killed.signal(),
        Some(libc::SIGKILL),
        "{}",
        killed.describe()
    );
    assert!(journal(&app).exists());
    poll_until(Duration::from_secs(30), "b-slow to be down", || {
        engine.status("b-slow") == "exited"
    });
    assert!(!engine.running("a-app"));
    let daemon = Daemon::start(&app);
    poll_until(Duration::from_secs(60), "both containers running", || {
        engine.running("a-app") && engine.running("b-slow")
    });
    poll_until(Duration::from_secs(30), "the journal removed", || {
        !journal(&app).exists()
    });
    drop(daemon);
    assert!(
        app.backup_log()
            .contains("started the container `a-app` again"),
        "{}",
        app.backup_log()
    );
}

/// The age test key `name` (tests/fixtures/age): its public line, or a 0600 copy of its
/// identity in `dir`.
fn age_key(name: &str, dir: Option<&Path>) -> String {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/age");
    match dir {
        None => std::fs::read_to_string(fixtures.join(format!("{name}.pub")))
            .expect("a test public key")
            .trim()
            .to_string(),
        Some(dir) => {
            use std::os::unix::fs::PermissionsExt;
            let to = dir.join(format!("{name}.key"));
            std::fs::copy(fixtures.join(format!("{name}.key")), &to).expect("the identity");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the identity");
            to.display().to_string()
        }
    }
}

/// Volumes compose with every format and encryption: a full backup of an app in volumes
/// (archive; snapshots; snapshots encrypted to a key the server does not hold), the live
/// data damaged, then restored in place with the labelled container stopped and started:
/// the volume holds exactly what was backed up and the container sees it.
#[test]
fn a_full_backup_of_volumes_restores_in_place_in_every_format_and_encryption() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let cases = [
        ("archive", "", false),
        (
            "snapshot",
            "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"\n",
            false,
        ),
        (
            "snapshot, encrypt all",
            "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"\n",
            true,
        ),
    ];
    for (i, (case, formats, encrypted)) in cases.into_iter().enumerate() {
        let (app, media, db) = app_in_volumes(&engine, "");
        let name = format!("app-{i}");
        engine.container(&name, "media", &[&label("true")], None);
        let mut text = std::fs::read_to_string(&app.config)
            .expect("config")
            .replace(
                "min_free_space = \"1 MiB\"\n",
                &format!("min_free_space = \"1 MiB\"\n{formats}"),
            );
        if encrypted {
            text.push_str(&format!(
                "\n[encryption]\nrecipients = [\"{}\"]\nencrypt = \"all\"\n",
                age_key("operator", None)
            ));
        }
        app.write_config_raw(&text);
        std::fs::write(media.join("big.bin"), random_bytes(7 + i as u64, 3 << 20)).expect("a file");
        let expected = app.root.join("expected");
        copy_tree(&media, &expected);
        let db_before = crate::util::dump_db_file(&db);
        app.create("full");

        std::fs::write(media.join("big.bin"), b"damaged").expect("damage");
        std::fs::write(media.join("stray.txt"), b"new").expect("stray");
        let mut args = vec![
            "restore".to_string(),
            "--latest".into(),
            "full".into(),
            "--yes".into(),
        ];
        let keys = tempfile::tempdir().expect("key dir");
        if encrypted {
            args.extend(["--identity".into(), age_key("operator", Some(keys.path()))]);
        }
        let restored = app.run(&args);
        assert_eq!(restored.code(), Some(0), "{case}: {}", restored.describe());
        assert!(
            restored.stdout.contains(&format!("started again: {name}")),
            "{case}: {}",
            restored.describe()
        );
        assert!(engine.running(&name), "{case}");
        assert_same_tree(&expected, &media);
        assert_eq!(crate::util::dump_db_file(&db), db_before, "{case}");
        assert_eq!(
            engine.sha256_inside(&name, "/data/big.bin"),
            sha256_file(&expected.join("big.bin")),
            "{case}"
        );
        engine.run(&["rm", "--force", "--time", "0", &name]);
        engine.run(&["volume", "rm", "--force", "media", "appdb"]);
    }
}

#[test]
fn a_sigterm_of_the_daemon_while_the_app_is_stopped_starts_it_again_before_it_exits() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, _media, _db) = app_in_volumes(&engine, "");
    let text = std::fs::read_to_string(&app.config)
        .expect("config")
        .replace("storage = \"off\"", "storage = \"*/2 * * * * *\"");
    app.write_config_raw(&text);
    engine.container("a-app", "media", &[&label("true")], None);
    // Its stop takes its 4 s grace: the SIGTERM lands while a-app is down.
    engine.container("b-slow", "media", &[&label("true")], Some(4));
    let (a0, b0) = (engine.started_at("a-app"), engine.started_at("b-slow"));
    let daemon = Daemon::start(&app);
    poll_until(
        Duration::from_secs(60),
        "a-app stopped by a scheduled backup",
        || !engine.running("a-app"),
    );
    let stopped = daemon.stop();
    assert!(
        engine.running("a-app") && engine.running("b-slow"),
        "the daemon exited with the app down\n{}",
        stopped.describe()
    );
    assert_ne!(engine.started_at("a-app"), a0);
    assert_ne!(engine.started_at("b-slow"), b0);
    assert!(!journal(&app).exists());
}

#[test]
fn a_backup_dir_inside_the_storage_volume_is_refused_once_the_volume_is_resolved() {
    let Some(engine) = podman_engine() else {
        return;
    };
    let (app, media, _db) = app_in_volumes(&engine, "");
    let inside = media.join("backups");
    let text = std::fs::read_to_string(&app.config)
        .expect("config")
        .replace(
            "backup_dir = \"backups\"",
            &format!("backup_dir = \"{}\"", inside.display()),
        );
    app.write_config_raw(&text);
    for args in [vec!["check-config"], vec!["create", "--type", "storage"]] {
        let run = app.run(&args);
        assert_ne!(run.code(), Some(0), "{}", run.describe());
        assert!(
            run.stderr.contains("paths.backup_dir") && run.stderr.contains("inside the storage"),
            "{}",
            run.describe()
        );
    }
    assert!(
        !inside.join("storage").exists(),
        "a backup was written into the volume"
    );
}
