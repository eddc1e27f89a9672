//! SFTP targets against a real OpenSSH server on loopback (`SshServer`: Debian's `sshd`
//! with `internal-sftp`, a host key and a client key made per test): the server killed
//! mid-upload and started again (the push retries and completes, the copy restores on a
//! fresh server), host keys that are unknown or changed (refused before anything is
//! sent, with the fingerprint to check), a key the server does not accept, and a server
//! whose disk fills up — each a clear error naming the target, nothing local touched.
//! Every format and encryption combination also runs through `matrix` (`*_sftp` cells).

use std::path::PathBuf;
use std::time::Duration;

use crate::faults::Mount;
use crate::offsite::setup::{
    configure, push_fails_untouched, remote_backups, restore_latest_from_remote,
};
use crate::util::{
    RUN_TIMEOUT, TestApp, assert_same_tree, dump_db_file, files_under, poll_until, random_bytes,
    require, root, sha256_file, ssh_server,
};

/// No `.partial` file is left on the server: every upload was renamed into place or
/// cleaned up.
fn assert_no_partials(dir: &std::path::Path) {
    let left = partials_under(dir);
    assert!(left.is_empty(), "{left:?}");
}

fn partials_under(dir: &std::path::Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect()
}

#[test]
fn a_server_killed_mid_upload_is_retried_and_the_copy_restores_on_a_fresh_server() {
    let Some(mut server) = ssh_server() else {
        return;
    };
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 6, 2 << 20);
    let dir = server.directory("vertex-ar");
    // Paced so the upload is still running when the server dies.
    let table = server.table(
        "remote",
        &dir,
        "retries = 6\nbandwidth_limit = \"4 MiB/s\"\n",
    );
    configure(&app, std::slice::from_ref(&table));
    app.run(["create", "--type", "full", "--no-offsite"])
        .assert_code(0);
    let push = app.spawn(["offsite", "push"]);
    poll_until(
        Duration::from_secs(60),
        "an upload in progress on the server",
        || !partials_under(&dir).is_empty(),
    );
    server.restart();
    let run = push.wait(RUN_TIMEOUT);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_no_partials(&dir);
    let listed = remote_backups(&app, "remote");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(listed[0]["problem"].is_null(), "{listed:#?}");
    assert!(
        run.stderr.contains("retry 1 of 6"),
        "the cut upload was not retried: {}",
        run.describe()
    );
    app.run(["offsite", "verify"]).assert_code(0);

    // Disaster recovery from the backup server alone.
    let fresh = TestApp::new();
    configure(&fresh, &[table]);
    let restored = restore_latest_from_remote(&fresh, "full", false);
    assert_eq!(restored.code(), Some(0), "{}", restored.describe());
    assert_same_tree(&app.storage, &fresh.storage);
    assert_eq!(dump_db_file(&app.db), dump_db_file(&fresh.db));
}

#[test]
fn an_unknown_or_changed_host_key_is_refused_with_its_fingerprint_before_anything_is_sent() {
    let Some(server) = ssh_server() else { return };
    let dir = server.directory("vertex-ar");
    let keys = tempfile::tempdir().expect("tempdir");
    // The fingerprint the server offers, as the operator would check it.
    let offered = {
        let out = std::process::Command::new("ssh-keyscan")
            .args(["-p", &server.port().to_string(), "127.0.0.1"])
            .output()
            .expect("ssh-keyscan");
        let file = keys.path().join("scanned");
        std::fs::write(&file, out.stdout).expect("write");
        let out = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&file)
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_string()
    };
    assert!(offered.starts_with("SHA256:"), "{offered}");

    // Changed: known_hosts holds another key for the server's name.
    let other = keys.path().join("other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let mut fields = other_pub.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        server.port(),
        fields.next().expect("kind"),
        fields.next().expect("key")
    );
    for (case, known) in [("changed", line.as_str()), ("unknown", "")] {
        let app = TestApp::new();
        let known_hosts = keys.path().join(format!("known_hosts_{case}"));
        std::fs::write(&known_hosts, known).expect("known_hosts");
        let table = server.table("remote", &dir, "retries = 0\n").replace(
            &server.known_hosts().display().to_string(),
            &known_hosts.display().to_string(),
        );
        configure(&app, &[table]);
        let run = push_fails_untouched(&app, &["host key", &offered, "ssh-keyscan"]);
        assert!(
            run.stderr.contains("could not prove it is the one"),
            "{case}: {}",
            run.describe()
        );
        assert!(
            files_under(&dir).is_empty(),
            "{case}: sent {:?}",
            files_under(&dir)
        );
    }
}

#[test]
fn a_key_the_server_does_not_accept_fails_the_push_with_the_login_named() {
    let Some(server) = ssh_server() else { return };
    let dir = server.directory("vertex-ar");
    let keys = tempfile::tempdir().expect("tempdir");
    let stranger = keys.path().join("stranger");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let app = TestApp::new();
    let table = server.table("remote", &dir, "retries = 0\n").replace(
        &server.ssh_key().display().to_string(),
        &stranger.display().to_string(),
    );
    configure(&app, &[table]);
    push_fails_untouched(
        &app,
        &[
            "refused the login",
            "authorized_keys",
            "check the credentials",
        ],
    );
    assert!(files_under(&dir).is_empty());
}

#[test]
fn a_full_disk_on_the_server_fails_the_push_with_the_full_hint_and_leaves_no_partial_file() {
    let Some(server) = ssh_server() else { return };
    let dir = server.directory("vertex-ar");
    let mounted = root("mount tmpfs").and_then(|()| Mount::tmpfs(&dir, "2m"));
    let _mount = match mounted {
        Ok(m) => m,
        Err(why) => {
            require("root and mount(8), for a 2 MiB tmpfs", Err(why));
            return;
        }
    };
    let app = TestApp::new();
    app.write_random_files("big", 3, 1024 * 1024);
    configure(&app, &[server.table("remote", &dir, "retries = 0\n")]);
    push_fails_untouched(&app, &["is full", "free on"]);
    assert_no_partials(&dir);
}

#[test]
fn a_missing_server_directory_is_named_and_not_created() {
    let Some(server) = ssh_server() else { return };
    let parent = server.directory("srv");
    let missing = parent.join("not-there");
    let app = TestApp::new();
    configure(&app, &[server.table("remote", &missing, "retries = 0\n")]);
    push_fails_untouched(&app, &["does not exist", "mkdir -p"]);
    assert!(!missing.exists(), "the push made the target's directory");
}

#[test]
fn a_large_upload_flushed_as_it_goes_from_a_second_connection_lands_whole() {
    let Some(server) = ssh_server() else { return };
    let app = TestApp::new();
    // Past two early flushes (every 64 MiB), from the second connection.
    app.write_storage_file("client_1/videos/long.mp4", &random_bytes(77, 150 << 20));
    let dir = server.directory("vertex-ar");
    let table = server.table("remote", &dir, "");
    configure(&app, std::slice::from_ref(&table));
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    let push = app.run(["offsite", "push"]);
    push.assert_code(0);
    assert_no_partials(&dir);
    let listed = remote_backups(&app, "remote");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    app.run(["offsite", "verify"]).assert_code(0);
    let fresh = TestApp::new();
    configure(&fresh, &[table]);
    let restored = restore_latest_from_remote(&fresh, "storage", false);
    assert_eq!(restored.code(), Some(0), "{}", restored.describe());
    assert_same_tree(&app.storage, &fresh.storage);
}

/// The overlap itself, not only its result: an upload past two flush points is flushed
/// by the second connection while it is sent (a flush the server refuses is silent by
/// design, so only this count shows it happening; it once failed on every upload).
#[test]
fn a_large_upload_is_flushed_from_the_second_connection_while_it_is_sent() {
    use vertex_backup::config::{Config, ConfigSource};
    use vertex_backup::offsite::Target;
    use vertex_backup::offsite::sftp::SftpTarget;

    let Some(server) = ssh_server() else { return };
    let app = TestApp::new();
    let dir = server.directory("vertex-ar");
    configure(&app, &[server.table("remote", &dir, "")]);
    let config = Config::discover(
        &ConfigSource::Explicit(app.config.clone()),
        &app.root,
        &|_| None,
    )
    .expect("the test config loads");
    let target = SftpTarget::open(&config.offsite[0], 0o600, 0o700).expect("the target opens");
    let data = random_bytes(78, 150 << 20);
    let local = app.root.join("big.bin");
    std::fs::write(&local, &data).expect("write the payload");
    let sha = sha256_file(&local);
    let stored = target
        .put("storage/big.tar.zst", &mut data.as_slice(), Some(&sha))
        .expect("the upload succeeds");
    assert_eq!(
        (stored.size, stored.sha256.as_str()),
        (150 << 20, sha.as_str())
    );
    assert!(
        target.early_flushes() >= 1,
        "no early flush was confirmed during a 150 MiB upload"
    );
    assert_eq!(
        std::fs::read(dir.join("storage/big.tar.zst")).ok(),
        Some(data)
    );
    assert_no_partials(&dir);
}
