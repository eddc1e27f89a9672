//! Replication to a target with `[encryption]`: every object goes up as age ciphertext
//! (the age CLI opens a segment with the identity, and it is one of ours), a rebuilt
//! server without the identity is refused naming what it needs, and with it restores
//! the newest state.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/age")
        .join(name)
}

#[test]
fn sealed_replication_opens_only_with_the_identity() {
    let Some(s3) = s3_server() else { return };
    if !require("the age CLI", runs_ok("age", &["--version"])) {
        return;
    }
    let recipient = fs::read_to_string(fixture("operator.pub")).unwrap();
    let (app, text, bucket) = replicated_app(
        &s3,
        &format!(
            "[encryption]\nrecipients = [\"{}\"]\nencrypt = \"offsite\"\n",
            recipient.trim()
        ),
    );
    let key = app.root.join("operator.key");
    fs::copy(fixture("operator.key"), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut daemon = start_daemon(&app);
    insert_rows(&app, 1, 50);
    wait_caught_up(&mut daemon, "s3");
    daemon.stop();

    let keys: Vec<String> = s3
        .list(&bucket, "vb/replication/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.ends_with(".age")),
        "{keys:?}"
    );
    let segment = keys
        .iter()
        .find(|k| k.contains("/segments/"))
        .expect("a segment");
    let sealed = app.root.join("segment.age");
    fs::write(&sealed, s3.get(&bucket, segment).unwrap()).unwrap();
    let opened = app.root.join("segment.seg");
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&key)
        .arg("-o")
        .arg(&opened)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(&opened).unwrap().starts_with(b"VBWALSEG"));

    let fresh = FreshServer::new(&text);
    let (refused, _) = fresh.restore(&["--latest", "database", "--from", "s3"], &[]);
    assert_ne!(refused.code(), Some(0), "{}", refused.describe());
    assert!(
        refused.stderr.contains("identity"),
        "{}",
        refused.describe()
    );
    let (run, out) = fresh.restore(
        &["--latest", "database", "--from", "s3"],
        &[("VERTEX_BACKUP_IDENTITY", key.to_str().unwrap())],
    );
    run.assert_code(0);
    assert_eq!(ledger(&out), ledger(&app.db));
}
