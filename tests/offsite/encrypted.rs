//! Encrypted offsite copies (issue 15, `encrypt = "offsite"`): with recipients (the
//! operator's key and an escrow key) every object a target receives is age ciphertext or
//! metadata that says nothing of the content. Checked behind the code's back: only `.age`
//! data objects; a marker written into the app's database and into a media file's name
//! and bytes appears in no object; the clear metadata has no paths, host or file counts,
//! carries `sealed`, and its checksum is the stored object's; the stock `age` CLI opens a
//! data object with either key (to the local plaintext backup's bytes) and not with a
//! stranger's. `offsite verify` passes on such copies and still finds a damaged one; a
//! fresh server fetches one into its backup directory as a listed encrypted backup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::offsite::corruption::corrupt;
use crate::offsite::setup::{
    PREFIX, bucket_objects, data_objects, path_table, remote_backups, s3_table,
};
use crate::util::{S3Server, TestApp, require, runs_ok, s3_server, sha256_file};

/// Written into the database and into a media file's name and bytes.
const MARKER: &str = "MARKERq7Zx0vertexPLAINTEXT";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/age")
        .join(name)
}

fn age_cli() -> bool {
    require("the age CLI", runs_ok("age", &["--version"]))
}

/// `[encryption]` with the operator's and the escrow key as recipients (encrypt defaults
/// to "offsite").
pub(super) fn encryption_section() -> String {
    let key = |n: &str| {
        fs::read_to_string(fixture(n))
            .expect("a test public key")
            .trim()
            .to_string()
    };
    format!(
        "[encryption]\nrecipients = [\"{}\", \"{}\"]\n",
        key("operator.pub"),
        key("escrow.pub")
    )
}

/// An installation whose content carries [`MARKER`], archives uncompressed (so the local
/// plaintext shows the marker, and a target that got plaintext would show it too),
/// configured with `table` and encryption.
fn marked_app(table: impl Fn(&TestApp) -> String) -> TestApp {
    let app = TestApp::new();
    let conn = app.open_db();
    conn.execute_batch(&format!(
        "CREATE TABLE notes(body TEXT); INSERT INTO notes VALUES ('{MARKER} in a row');"
    ))
    .expect("write the marker into the database");
    drop(conn);
    app.write_storage_file(
        &format!("client_1/docs/{MARKER}.txt"),
        format!("{MARKER} in a file\n").as_bytes(),
    );
    configure_encrypted(&app, &table(&app));
    app
}

fn configure_encrypted(app: &TestApp, table: &str) {
    let rest = format!("{}\n{table}", encryption_section());
    app.write_config_raw(&app.config_text("compression = \"none\"", &rest));
}

/// A copy of a test identity with mode 0600 in `dir` (git does not keep modes).
pub(super) fn identity(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    fs::copy(fixture(name), &to).expect("copy the identity");
    fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).expect("chmod the identity");
    to
}

/// `age -d -i KEY FILE`: the plaintext, or why it did not open.
fn age_decrypt(key: &Path, file: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(file)
        .output()
        .expect("run age");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The clear metadata object `json` (of the stored data `data`, when not a manifest) says
/// nothing of the content and records the stored bytes.
#[track_caller]
fn assert_clear_metadata(key: &str, json: &[u8], data: Option<&[u8]>, app: &TestApp) {
    let meta: Value = serde_json::from_slice(json).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(meta["original_path"], "", "{key}: {meta:#}");
    assert_eq!(meta["hostname"], "", "{key}: {meta:#}");
    assert_eq!(meta["file_count"], 0, "{key}: {meta:#}");
    assert!(
        meta["sealed"].as_str().is_some_and(|s| s.len() > 100),
        "{key}: {meta:#}"
    );
    let backup_path = meta["backup_path"].as_str().expect("backup_path");
    assert!(!backup_path.contains('/'), "{key}: {backup_path}");
    let text = String::from_utf8_lossy(json);
    assert!(
        !text.contains(&*app.root.to_string_lossy()),
        "{key} names a local path: {text}"
    );
    if let Some(data) = data {
        assert!(backup_path.ends_with(".age"), "{key}: {backup_path}");
        assert_eq!(meta["checksum"], sha256(data), "{key}");
        assert_eq!(meta["file_size"], data.len() as u64, "{key}");
        let recipients = meta["format"]["encryption"]["recipients"]
            .as_array()
            .unwrap_or_else(|| panic!("{key} names no recipients: {meta:#}"));
        assert_eq!(recipients.len(), 2, "{key}: {meta:#}");
        assert_eq!(meta["format"]["encryption"]["scheme"], "age", "{key}");
    }
}

/// Every object on the target: a data object is `.age` and not the marker's carrier, a
/// metadata object is clear of content. `get`: an object's bytes by key.
fn assert_target_holds_only_ciphertext(
    keys: &[String],
    get: impl Fn(&str) -> Vec<u8>,
    app: &TestApp,
) {
    assert!(!keys.is_empty());
    for key in keys {
        let bytes = get(key);
        assert!(
            !contains(&bytes, MARKER),
            "{key} shows the plaintext marker"
        );
        if key.ends_with(".json") {
            let meta: Value = serde_json::from_slice(&bytes).expect("metadata");
            let data = (meta["type"] != "full").then(|| {
                let name = meta["backup_path"].as_str().expect("backup_path");
                get(&format!("{}/{name}", meta["type"].as_str().expect("type")))
            });
            assert_clear_metadata(key, &bytes, data.as_deref(), app);
        } else {
            assert!(key.ends_with(".age"), "a data object in clear: {key}");
        }
    }
}

/// The local plaintext data file of `key` (`database/db_backup_X.db.age` → the local
/// `database/db_backup_X.db`), which must show the marker (the check above means
/// something only if the plaintext has it).
fn local_plaintext(app: &TestApp, key: &str) -> PathBuf {
    let local = app
        .backups
        .join(key.strip_suffix(".age").expect("an .age key"));
    let bytes = fs::read(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
    assert!(
        contains(&bytes, MARKER),
        "{} lacks the marker",
        local.display()
    );
    local
}

#[test]
fn every_type_goes_to_s3_as_ciphertext_that_opens_with_either_key_and_only_with_them() {
    if !age_cli() {
        return;
    }
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = marked_app(|a| s3_table(a, "remote", s3.endpoint(), &bucket, ""));
    for kind in ["full", "database", "storage"] {
        app.run(["create", "--type", kind]).assert_code(0);
    }
    let backups = remote_backups(&app, "remote");
    assert_eq!(backups.len(), 3, "{backups:#?}");
    for b in &backups {
        assert!(b["problem"].is_null(), "{b:#}");
    }
    let get = |key: &str| {
        s3.get(&bucket, &format!("{PREFIX}/{key}"))
            .unwrap_or_else(|| panic!("{key} is not in the bucket"))
    };
    let keys: Vec<String> = bucket_objects(&s3, &bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // full (2 data + 3 metadata), database and storage (1 + 1 each).
    assert_eq!(keys.len(), 9, "{keys:?}");
    assert_target_holds_only_ciphertext(&keys, get, &app);

    let keys_dir = tempfile::tempdir().expect("key dir");
    let operator = identity(keys_dir.path(), "operator.key");
    let escrow = identity(keys_dir.path(), "escrow.key");
    let stranger = identity(keys_dir.path(), "stranger.key");
    for (key, _, _) in backups.iter().flat_map(data_objects) {
        let local = local_plaintext(&app, &key);
        let stored = keys_dir.path().join("object.age");
        fs::write(&stored, get(&key)).expect("write the object");
        for id in [&operator, &escrow] {
            let plain = age_decrypt(id, &stored).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(
                sha256(&plain),
                sha256_file(&local),
                "{key} with {}",
                id.display()
            );
        }
        assert!(
            age_decrypt(&stranger, &stored).is_err(),
            "a stranger's key opened {key}"
        );
    }

    let verify = app.run(["offsite", "verify"]);
    verify.assert_code(0);
    assert!(!verify.stdout.contains("BAD"), "{}", verify.describe());

    // A second push sends nothing: the encrypted copies are the local backups.
    let push = app.run(["offsite", "push", "--json"]);
    push.assert_code(0);
    let uploaded = push.json();
    let sent: usize = uploaded
        .as_array()
        .expect("push --json is an array")
        .iter()
        .map(|t| {
            assert_eq!(t["ok"], true, "{t:#}");
            t["push"]["uploaded"].as_array().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(sent, 0, "{uploaded:#}");

    // A fresh server fetches the full backup: listed, encrypted, its checksums the stored
    // bytes'.
    let fresh = TestApp::new();
    configure_encrypted(
        &fresh,
        &s3_table(&fresh, "remote", s3.endpoint(), &bucket, ""),
    );
    assert_fetched(&fresh, "full", &get);
}

/// `restore --from remote --latest KIND --dry-run` (with the identity) on `fresh` brought the backup home:
/// `list` shows it complete and encrypted, each data file is the remote object's bytes.
#[track_caller]
fn assert_fetched(fresh: &TestApp, kind: &str, get: &dyn Fn(&str) -> Vec<u8>) {
    // A restore of an encrypted backup needs the identity, even to plan it.
    let keys = tempfile::tempdir().expect("key dir");
    let operator = identity(keys.path(), "operator.key");
    let run = fresh.run([
        "--identity".as_ref(),
        operator.as_os_str(),
        "restore".as_ref(),
        "--from".as_ref(),
        "remote".as_ref(),
        "--latest".as_ref(),
        kind.as_ref(),
        "--dry-run".as_ref(),
    ]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("downloaded and checked"),
        "{}",
        run.describe()
    );
    let listed = fresh.list();
    let top: Vec<&Value> = listed.iter().filter(|b| b["part_of"].is_null()).collect();
    assert_eq!(top.len(), 1, "{listed:#?}");
    assert_eq!(top[0]["type"], kind, "{listed:#?}");
    for row in &listed {
        assert_eq!(row["complete"], true, "{row:#}");
        assert!(row["sealed"].is_string(), "{row:#}");
        if row["type"] == "full" {
            continue;
        }
        let name = row["name"].as_str().expect("name");
        assert!(name.ends_with(".age"), "{row:#}");
        assert!(row["format"]["encryption"]["scheme"] == "age", "{row:#}");
        let path = PathBuf::from(row["path"].as_str().expect("path"));
        assert_eq!(
            sha256_file(&path),
            row["checksum"].as_str().expect("checksum")
        );
        let key = format!("{}/{name}", row["type"].as_str().expect("type"));
        assert_eq!(
            fs::read(&path).expect("the fetched file"),
            get(&key),
            "{key}"
        );
    }
}

#[test]
fn verify_passes_on_encrypted_copies_and_still_finds_a_damaged_one() {
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = marked_app(|a| s3_table(a, "remote", s3.endpoint(), &bucket, ""));
    app.run(["create", "--type", "database"]).assert_code(0);
    app.run(["offsite", "verify"]).assert_code(0);
    let backup = remote_backups(&app, "remote").remove(0);
    let (key, sha, _) = data_objects(&backup).remove(0);
    assert!(key.ends_with(".db.age"), "{key}");
    check_damage_found(&s3, &bucket, &app, &key, &sha, false);
    // Again, the checksum header forged: only the read-back tells.
    let backup = remote_backups(&app, "remote").remove(0);
    let (key, sha, _) = data_objects(&backup).remove(0);
    check_damage_found(&s3, &bucket, &app, &key, &sha, true);
}

/// Damage `key` on the server; `offsite verify` names it and sends a new encrypted copy
/// (new ciphertext, so a new checksum), which verifies and holds the local plaintext.
fn check_damage_found(
    s3: &S3Server,
    bucket: &str,
    app: &TestApp,
    key: &str,
    sha: &str,
    forge: bool,
) {
    corrupt(s3, bucket, key, sha, forge);
    let run = app.run(["offsite", "verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("REPAIRED"), "{}", run.describe());
    assert!(run.stdout.contains(key), "{}", run.describe());
    let again = remote_backups(app, "remote").remove(0);
    let (after, new_sha, _) = data_objects(&again).remove(0);
    assert_eq!(after, key);
    assert_ne!(new_sha, sha, "the damaged copy is still listed");
    let bytes = s3
        .get(bucket, &format!("{PREFIX}/{key}"))
        .expect("the new copy");
    assert_eq!(sha256(&bytes), new_sha);
    app.run(["offsite", "verify"]).assert_code(0);
}

#[test]
fn a_path_target_gets_only_ciphertext_and_a_fresh_server_fetches_it_as_an_encrypted_backup() {
    if !age_cli() {
        return;
    }
    let nas = tempfile::tempdir().expect("target dir");
    let app = marked_app(|_| path_table("remote", nas.path(), ""));
    for kind in ["database", "storage"] {
        app.run(["create", "--type", kind]).assert_code(0);
    }
    let keys: Vec<String> = crate::util::files_under(nas.path())
        .iter()
        .map(|p| {
            p.strip_prefix(nas.path())
                .expect("under the target")
                .to_string_lossy()
                .into_owned()
        })
        // The owner marker is no backup's (and says nothing of content).
        .filter(|k| !k.starts_with(crate::offsite::setup::WRITERS_DIR))
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let get = |key: &str| fs::read(nas.path().join(key)).expect("an object");
    assert_target_holds_only_ciphertext(&keys, get, &app);
    let keys_dir = tempfile::tempdir().expect("key dir");
    let operator = identity(keys_dir.path(), "operator.key");
    for key in keys.iter().filter(|k| k.ends_with(".age")) {
        let local = local_plaintext(&app, key);
        let plain = age_decrypt(&operator, &nas.path().join(key)).expect("opens with the key");
        assert_eq!(sha256(&plain), sha256_file(&local), "{key}");
    }
    app.run(["offsite", "verify"]).assert_code(0);

    let fresh = TestApp::new();
    configure_encrypted(&fresh, &path_table("remote", nas.path(), ""));
    assert_fetched(&fresh, "database", &get);
}

#[test]
fn a_large_object_is_encrypted_while_sent_in_parts_and_verifies_without_a_carried_checksum() {
    if !age_cli() {
        return;
    }
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app =
        marked_app(|a| s3_table(a, "remote", s3.endpoint(), &bucket, "part_size = \"5 MiB\""));
    // Incompressible media, stored uncompressed: the ciphertext spans three parts.
    app.write_storage_file(
        "client_2/videos/long.mp4",
        &crate::util::random_bytes(7, 12 << 20),
    );
    app.run(["create", "--type", "storage"]).assert_code(0);
    let backup = remote_backups(&app, "remote").remove(0);
    let (key, sha, size) = data_objects(&backup).remove(0);
    assert!(size > 10 << 20, "{backup:#}");
    let head = s3
        .head(&bucket, &format!("{PREFIX}/{key}"))
        .expect("the object");
    // Its checksum was known only once it was sent: the object carries none, the
    // metadata has it.
    assert_eq!(head.get("x-amz-meta-sha256"), None, "{head:?}");
    let bytes = s3
        .get(&bucket, &format!("{PREFIX}/{key}"))
        .expect("the object");
    assert_eq!(sha256(&bytes), sha);
    let keys_dir = tempfile::tempdir().expect("key dir");
    let stored = keys_dir.path().join("object.age");
    fs::write(&stored, &bytes).expect("write the object");
    let plain = age_decrypt(&identity(keys_dir.path(), "escrow.key"), &stored).expect("opens");
    assert_eq!(sha256(&plain), sha256_file(&local_plaintext(&app, &key)));
    let verify = app.run(["offsite", "verify", "--json"]);
    verify.assert_code(0);
    let report = verify.json();
    assert_eq!(
        report[0]["report"]["problems"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert_eq!(
        report[0]["report"]["sampled"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    // Damage is still found, by reading it back.
    corrupt(&s3, &bucket, &key, &sha, false);
    let run = app.run(["offsite", "verify"]);
    assert!(run.stdout.contains("REPAIRED"), "{}", run.describe());
}

/// The disaster with encryption: the server is gone; a new one has the config (recipients,
/// target) but no identity, and the operator brings the identity for the restore. Without
/// it the restore is refused before anything live changes; with it the app comes back.
#[test]
fn an_encrypted_full_backup_restores_on_a_fresh_server_only_with_the_identity() {
    if !age_cli() {
        return;
    }
    let Some(s3) = s3_server() else { return };
    let bucket = s3.new_bucket();
    let app = marked_app(|a| s3_table(a, "remote", s3.endpoint(), &bucket, ""));
    crate::util::add_clients(&mut app.open_db(), 5, 100);
    app.run(["create", "--type", "full"]).assert_code(0);

    let fresh = TestApp::new();
    configure_encrypted(
        &fresh,
        &s3_table(&fresh, "remote", s3.endpoint(), &bucket, ""),
    );
    let before_db = crate::util::dump_db(&fresh.open_db());
    let before_media = crate::util::snapshot_tree(&fresh.storage);
    let refused = fresh.run(["restore", "--from", "remote", "--latest", "full", "--yes"]);
    assert_ne!(refused.code(), Some(0), "{}", refused.describe());
    assert!(
        refused.stderr.contains("no identity"),
        "{}",
        refused.describe()
    );
    assert_eq!(crate::util::dump_db(&fresh.open_db()), before_db);
    crate::util::assert_tree_matches(&before_media, &fresh.storage);

    let keys = tempfile::tempdir().expect("key dir");
    let escrow = identity(keys.path(), "escrow.key");
    let restored = fresh.run([
        "--identity".as_ref(),
        escrow.as_os_str(),
        "restore".as_ref(),
        "--from".as_ref(),
        "remote".as_ref(),
        "--latest".as_ref(),
        "full".as_ref(),
        "--yes".as_ref(),
    ]);
    restored.assert_code(0);
    assert_eq!(
        crate::util::dump_db(&fresh.open_db()),
        crate::util::dump_db(&app.open_db()),
        "the database came back different"
    );
    crate::util::assert_same_tree(&app.storage, &fresh.storage);
}

#[test]
fn a_copy_fetched_sealed_shows_its_count_and_size_once_an_identity_opens_it_never_zero() {
    let nas = tempfile::tempdir().expect("target dir");
    let app = TestApp::new();
    app.write_storage_file(
        "client_1/videos/v.mp4",
        &crate::util::random_bytes(3, 1 << 20),
    );
    let table = path_table("remote", nas.path(), "");
    let snapshots = "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"";
    app.write_config_raw(
        &app.config_text(snapshots, &format!("{}\n{table}", encryption_section())),
    );
    app.run(["create", "--type", "storage"]).assert_code(0);
    let local = app.list_of("storage").remove(0);
    let files = local["file_count"].as_u64().unwrap();
    assert!(files > 1, "{local:#}");

    let fresh = TestApp::new();
    fresh.write_config_raw(&fresh.config_text(
        snapshots,
        &format!(
            "{}\n{}",
            encryption_section(),
            path_table("remote", nas.path(), "")
        ),
    ));
    let keys = tempfile::tempdir().expect("key dir");
    let operator = identity(keys.path(), "operator.key");
    let out = tempfile::tempdir().expect("restore target");
    let target = out.path().join("storage");
    let restored = fresh.run([
        "--identity".as_ref(),
        operator.as_os_str(),
        "restore".as_ref(),
        "--from".as_ref(),
        "remote".as_ref(),
        "--latest".as_ref(),
        "storage".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    restored.assert_code(0);
    // The plan, made with the identity, names what the backup holds.
    assert!(
        restored
            .stdout
            .contains(&format!("({files} files and links, ")),
        "{}",
        restored.describe()
    );

    let row = |r: &crate::util::Run| -> String {
        r.stdout
            .lines()
            .find(|l| l.starts_with("storage "))
            .unwrap_or_else(|| panic!("{}", r.describe()))
            .to_string()
    };
    // Without a key the count is sealed: said so, never a false 0.
    let sealed = row(&fresh.run(["list", "--type", "storage"]));
    assert!(sealed.contains("sealed"), "{sealed}");
    let columns: Vec<&str> = sealed.split_whitespace().collect();
    assert_ne!(columns[3], "0", "{sealed}");
    // With the identity, the count and size the backup recorded.
    let opened = row(&fresh.run([
        "--identity".as_ref(),
        operator.as_os_str(),
        "list".as_ref(),
        "--type".as_ref(),
        "storage".as_ref(),
    ]));
    let columns: Vec<&str> = opened.split_whitespace().collect();
    assert_eq!(columns[4], files.to_string(), "{opened}");
    assert!(!opened.contains("sealed"), "{opened}");
}
