//! Encrypted local backups (`[encryption] encrypt = "all"`, docs/design.md §5) against the real
//! binary: round trips of every type with `--identity`, interop with the stock `age` CLI
//! both ways, refusals (no identity, a stranger's key, a truncated file, a flipped byte
//! in the header or the body) before anything live is touched, `verify` without a key,
//! and `list` / `check-config` naming the keys. The fixture keys are copied into the
//! test's directory with mode 0600; their secrets are in TEST_SECRETS, so no output of
//! any run may contain them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::restore::{
    assert_live_unchanged, build_tree, change_db, change_tree, data_path, live, live_dump,
};
use crate::util::*;

mod refusals;
mod snapshots;

/// The fixture keys, copied into the app's directory (mode 0600, as `age-keygen` makes
/// them): what `--identity` is given.
struct Keys {
    operator: PathBuf,
    escrow: PathBuf,
    stranger: PathBuf,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/age")
        .join(name)
}

fn public_key(name: &str) -> String {
    fs::read_to_string(fixture(&format!("{name}.pub")))
        .expect("fixture public key")
        .trim()
        .to_string()
}

/// `sha256:` and 16 hex digits of the public key's text, as metadata records it.
fn fingerprint(name: &str) -> String {
    let digest = Sha256::digest(public_key(name).as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

/// A test app whose backups are all encrypted to the operator's and the escrow key.
fn encrypted_app() -> (TestApp, Keys) {
    let app = TestApp::new();
    let dir = app.root.join("keys");
    fs::create_dir(&dir).unwrap();
    let copy = |name: &str| {
        let to = dir.join(format!("{name}.key"));
        fs::copy(fixture(&format!("{name}.key")), &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
        to
    };
    let keys = Keys {
        operator: copy("operator"),
        escrow: copy("escrow"),
        stranger: copy("stranger"),
    };
    let section = format!(
        "[encryption]\nrecipients = [\"{}\", \"{}\"]\nencrypt = \"all\"\n",
        public_key("operator"),
        public_key("escrow")
    );
    app.write_config_raw(&app.config_text("", &section));
    (app, keys)
}

/// `restore BACKUP --yes` (plus `args`) with `identity`, if any.
fn restore_with(app: &TestApp, identity: Option<&Path>, backup: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(id) = identity {
        all.extend(["--identity".as_ref(), id.as_os_str()]);
    }
    all.extend(["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()]);
    all.extend(args.iter().map(std::ffi::OsStr::new));
    app.run(all)
}

fn has_age_cli() -> bool {
    require("the age CLI", runs_ok("age", &["--version"]))
}

/// The stock `age` CLI run to decrypt `file` with `key` into `out`.
fn age_cli_decrypt(key: &Path, file: &Path, out: &Path) -> std::process::Output {
    Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(out)
        .arg(file)
        .output()
        .expect("run age")
}

/// The stock `age` CLI's decryption of `file` with `key`, which must succeed.
fn age_decrypt(key: &Path, file: &Path, out: &Path) {
    let o = age_cli_decrypt(key, file, out);
    assert!(
        o.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The data file of a database or storage backup's metadata, checked to be an age file
/// named `….age` whose metadata names both recipients.
#[track_caller]
fn assert_encrypted(meta: &Value) -> PathBuf {
    let path = data_path(meta);
    assert!(
        path.to_string_lossy().ends_with(".age"),
        "not an .age file: {}",
        path.display()
    );
    let head = fs::read(&path).unwrap();
    assert!(
        head.starts_with(b"age-encryption.org/v1\n"),
        "not an age file"
    );
    assert_eq!(
        meta["format"]["encryption"],
        serde_json::json!({"scheme": "age", "recipients": [fingerprint("operator"), fingerprint("escrow")]})
    );
    assert_eq!(ju64(meta, "file_size"), fs::metadata(&path).unwrap().len());
    assert_eq!(jstr(meta, "checksum"), sha256_file(&path));
    path
}

/// Every `.db` or `.tar…` file in the backup directory that is not an age file: a
/// plaintext copy an encrypted backup must not leave behind.
fn plaintext_files(app: &TestApp) -> Vec<PathBuf> {
    app.backup_files()
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.ends_with(".age") && !name.ends_with(".json") && !name.ends_with(".log")
        })
        .filter(|p| p.parent().is_some_and(|d| d != app.backups))
        .collect()
}

#[test]
fn encrypted_backups_of_every_type_round_trip_with_either_key() {
    for (kind, key) in [("database", 0), ("storage", 1), ("full", 0)] {
        let (app, keys) = encrypted_app();
        build_tree(&app);
        let db_at_backup = live_dump(&app);
        let tree_at_backup = snapshot_tree(&app.storage);
        let meta = app.create(kind);
        if kind == "full" {
            let members: Vec<Value> = app
                .list()
                .into_iter()
                .filter(|r| r.get("part_of").and_then(Value::as_str).is_some())
                .collect();
            assert_eq!(members.len(), 2, "{members:?}");
            members.iter().for_each(|m| drop(assert_encrypted(m)));
            // The manifest stays clear; its parts' checksums are of the stored bytes.
            let manifest = read_json(&data_path(&meta));
            for part in manifest["parts"].as_array().unwrap() {
                let path = PathBuf::from(jstr(part, "backup_path"));
                assert_eq!(jstr(part, "checksum"), sha256_file(&path));
            }
        } else {
            assert_encrypted(&meta);
        }
        assert!(
            plaintext_files(&app).is_empty(),
            "{:?}",
            plaintext_files(&app)
        );
        change_db(&app);
        change_tree(&app);
        let key = [&keys.operator, &keys.escrow][key];
        let r = restore_with(&app, Some(key), &data_path(&meta), &[]);
        r.assert_code(0);
        if kind != "storage" {
            assert_eq!(live_dump(&app), db_at_backup, "{kind}: {}", r.describe());
        }
        if kind != "database" {
            assert_tree_matches(&tree_at_backup, &app.storage);
        }
        // The decrypted private copy of the database is gone again.
        assert!(
            plaintext_files(&app).is_empty(),
            "{:?}",
            plaintext_files(&app)
        );
    }
}

#[test]
fn our_age_files_open_with_the_age_cli() {
    if !has_age_cli() {
        return;
    }
    let (app, keys) = encrypted_app();
    app.create("full");
    let out = app.root.join("plain");
    let rows = app.list();
    let member = |kind: &str| {
        rows.iter()
            .find(|r| jstr(r, "type") == kind && r.get("part_of").is_some_and(|p| !p.is_null()))
            .map(data_path)
            .expect("member")
    };
    age_decrypt(&keys.escrow, &member("storage"), &out);
    let listed = Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        names.contains("storage/client_1/images/portrait_1.jpg"),
        "{names}"
    );
    age_decrypt(&keys.operator, &member("database"), &out);
    let check = Command::new("sqlite3")
        .arg(&out)
        .arg("PRAGMA integrity_check")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
}

/// Replace `meta`'s data with the `age` CLI's encryption of its plaintext to the
/// operator's key, and fix the metadata's checksum and size to the new bytes.
fn reencrypt_with_the_cli(app: &TestApp, keys: &Keys, meta: &Value) {
    let path = data_path(meta);
    let plain = app.root.join("plain.tmp");
    age_decrypt(&keys.operator, &path, &plain);
    fs::remove_file(&path).unwrap();
    let o = Command::new("age")
        .arg("-r")
        .arg(public_key("operator"))
        .arg("-o")
        .arg(&path)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(&plain).unwrap();
    refresh_checksum(app, meta);
}

/// Make `meta`'s recorded checksum and size those of its data file as it now is: the
/// damage tests then reach the age layer instead of stopping at the checksum.
fn refresh_checksum(app: &TestApp, meta: &Value) {
    let _ = app;
    let path = data_path(meta);
    let stem = path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let meta_path = path.with_file_name(format!("{stem}.json"));
    let mut m = read_json(&meta_path);
    m["checksum"] = Value::String(sha256_file(&path));
    m["file_size"] = Value::from(fs::metadata(&path).unwrap().len());
    write_json(&meta_path, &m);
}

#[test]
fn files_the_age_cli_encrypted_are_read_by_us() {
    if !has_age_cli() {
        return;
    }
    for kind in ["database", "storage"] {
        let (app, keys) = encrypted_app();
        build_tree(&app);
        let db_at_backup = live_dump(&app);
        let tree_at_backup = snapshot_tree(&app.storage);
        let meta = app.create(kind);
        reencrypt_with_the_cli(&app, &keys, &meta);
        let key = keys.operator.as_os_str();
        let v = app.run([
            "--identity".as_ref(),
            key,
            "verify".as_ref(),
            data_path(&meta).as_os_str(),
        ]);
        v.assert_code(0);
        change_db(&app);
        change_tree(&app);
        restore_with(&app, Some(&keys.operator), &data_path(&meta), &[]).assert_code(0);
        if kind == "database" {
            assert_eq!(live_dump(&app), db_at_backup);
        } else {
            assert_tree_matches(&tree_at_backup, &app.storage);
        }
    }
}

/// Without a key `verify` checks the ciphertext and says the contents were not checked
/// (exit 3, no verdict: "could not check" is neither failed nor good); with one, in full.
#[test]
fn verify_without_a_key_checks_the_ciphertext_and_says_the_contents_were_not_checked() {
    let (app, keys) = encrypted_app();
    let meta = app.create("full");
    let backup = data_path(&meta);
    let v = app.run(["verify".as_ref(), backup.as_os_str()]);
    v.assert_code(3);
    assert!(v.stdout.starts_with("PART"), "{}", v.describe());
    assert!(
        v.stdout
            .contains("no identity here: only the stored bytes were checked"),
        "{}",
        v.describe()
    );
    assert!(
        !app.backups.join("vertex-backup.verify.json").exists()
            || !fs::read_to_string(app.backups.join("vertex-backup.verify.json"))
                .unwrap()
                .contains("\"ok\": false"),
        "a partial check recorded a failure"
    );
    let key = keys.operator.as_os_str();
    let v = app.run([
        "--identity".as_ref(),
        key,
        "verify".as_ref(),
        backup.as_os_str(),
    ]);
    v.assert_code(0);
    assert!(v.stdout.contains("integrity_check"), "{}", v.describe());
    // The drill's judgement on a server without the key: the stored bytes only.
    let verdicts = drill_verdicts(&app);
    assert!(verdicts.iter().all(|(ok, _)| *ok), "{verdicts:?}");
    let storage = app
        .list_of("storage")
        .into_iter()
        .map(|r| data_path(&r))
        .next()
        .unwrap();
    flip_byte(&storage, fs::metadata(&storage).unwrap().len() / 2);
    let verdicts = drill_verdicts(&app);
    let failed: Vec<&String> = verdicts
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, f)| f)
        .collect();
    assert!(!failed.is_empty(), "{verdicts:?}");
    assert!(failed.iter().all(|f| f.contains("checksum")), "{failed:?}");
}

/// The drill's verification of the newest backups without an identity, as the daemon
/// runs it on the production server: (ok, failure) of each.
fn drill_verdicts(app: &TestApp) -> Vec<(bool, String)> {
    use vertex_backup::engine::verify::{Keys as VerifyKeys, Selection, select, verify_entry};
    use vertex_backup::engine::{Cancel, Silent};
    let catalog = vertex_backup::catalog::Catalog::new(&app.backups, 0o600, 0o700);
    let listing = catalog.list().unwrap();
    let chosen = select(&listing, Selection::Latest);
    assert!(!chosen.is_empty());
    chosen
        .into_iter()
        .map(|e| {
            let r = verify_entry(
                e,
                &listing,
                VerifyKeys::drill(None),
                &Silent,
                &Cancel::new(),
            );
            (r.ok, r.failure().unwrap_or_default())
        })
        .collect()
}

#[test]
fn list_and_check_config_name_the_keys_that_open_each_backup() {
    let (app, keys) = encrypted_app();
    app.create("full");
    let both = [fingerprint("operator"), fingerprint("escrow")];
    for row in app.list() {
        assert_eq!(row["encrypted_to"], serde_json::json!(both), "{row}");
    }
    let human = app.run(["list"]);
    human.assert_code(0);
    assert!(
        human
            .stdout
            .contains(&format!("🔒 {}, {}", both[0], both[1])),
        "{}",
        human.describe()
    );
    let cc = app.run(["check-config"]);
    assert!(
        cc.stdout.contains(&format!(
            "{}  {}",
            fingerprint("escrow"),
            public_key("escrow")
        )),
        "{}",
        cc.describe()
    );
    // `ls` of an encrypted archive decrypts with the identity, and says why without one.
    let ls = app.run([
        "--identity".as_ref(),
        keys.operator.as_os_str(),
        "ls".as_ref(),
        "--latest".as_ref(),
    ]);
    ls.assert_code(0);
    assert!(ls.stdout.contains("portrait_1.jpg"), "{}", ls.describe());
    let ls = app.run(["ls", "--latest"]);
    assert_ne!(ls.code(), Some(0));
    assert!(
        ls.stderr.contains("no identity was given"),
        "{}",
        ls.describe()
    );
}
