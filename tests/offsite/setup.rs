//! What the offsite tests share: an installation configured with `[[offsite]]` tables (an
//! S3 bucket on the test server or a FaultProxy in front of it, a directory), its
//! credentials in a `credentials_file` (so every run of the binary finds them without
//! touching the test's environment), and reading back what a target holds — through the
//! binary (`offsite list --json`) and behind its back (the bucket listing, the directory).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Run, S3Server, TestApp, sha256_file};

/// The key prefix every S3 table here uses (objects live under `PREFIX/<type>/…`).
pub const PREFIX: &str = "vx";

/// An `[[offsite]]` table for `bucket` at `endpoint` (the server, or a proxy in front of
/// it) named `name`, with `extra` lines (e.g. `part_size = "5 MiB"`).
pub fn s3_table(app: &TestApp, name: &str, endpoint: &str, bucket: &str, extra: &str) -> String {
    let credentials = write_credentials(app, "vertex-test-key", "vertex-test-secret");
    format!(
        "[[offsite]]\n\
         name = \"{name}\"\n\
         url = \"s3://{bucket}/{PREFIX}\"\n\
         endpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\n\
         path_style = true\n\
         credentials_file = \"{}\"\n\
         retry_backoff = \"100ms\"\n\
         {extra}\n",
        credentials.display()
    )
}

/// An `[[offsite]]` table for the directory `dir`, named `name`.
pub fn path_table(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[[offsite]]\nname = \"{name}\"\nurl = \"{}\"\nretry_backoff = \"100ms\"\n{extra}\n",
        dir.display()
    )
}

/// Write the app's standard config with `tables` appended.
pub fn configure(app: &TestApp, tables: &[String]) {
    app.write_config_raw(&app.config_text("", &tables.join("\n")));
}

/// A shared-credentials file in the app root (0600: a readable one draws a warning).
pub fn write_credentials(app: &TestApp, key: &str, secret: &str) -> PathBuf {
    let path = app.root.join(format!("aws-credentials-{key}"));
    fs::write(
        &path,
        format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .expect("write the credentials file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod credentials");
    path
}

/// `offsite list --target NAME --json`: the target's backups (newest first).
#[track_caller]
pub fn remote_backups(app: &TestApp, target: &str) -> Vec<Value> {
    let json = app
        .run(["offsite", "list", "--target", target, "--json"])
        .assert_code(0)
        .json();
    let rows = json.as_array().expect("offsite list --json is an array");
    assert_eq!(rows.len(), 1, "{json:#}");
    rows[0]["backups"]
        .as_array()
        .expect("backups is an array")
        .clone()
}

/// The data objects (key relative to the target, sha256, size) of one remote backup as
/// `offsite list --json` shows it.
pub fn data_objects(backup: &Value) -> Vec<(String, String, u64)> {
    let objects = backup["objects"].as_array().expect("objects");
    objects
        .iter()
        .filter(|o| o["role"] == "data")
        .map(|o| {
            let key = o["key"].as_str().expect("key").to_string();
            let sha = o["sha256"].as_str().expect("sha256").to_string();
            (key, sha, o["size"].as_u64().expect("size"))
        })
        .collect()
}

/// Every backup object of the bucket under the tests' prefix as (key relative to it,
/// size): the owner marker and lock objects under `vertex-backup/` left out.
pub fn bucket_objects(s3: &S3Server, bucket: &str) -> Vec<(String, u64)> {
    let prefix = format!("{PREFIX}/");
    s3.list(bucket, &prefix)
        .into_iter()
        .map(|(k, size)| (k[prefix.len()..].to_string(), size))
        .filter(|(k, _)| !k.starts_with(WRITERS_DIR))
        .collect()
}

/// Where a target keeps its owner marker and lock objects.
pub const WRITERS_DIR: &str = "vertex-backup/";

/// Each data object of `backup` is in the bucket with its size, its `x-amz-meta-sha256`
/// equal to the listed checksum and to the local file's (when `local` is given).
#[track_caller]
pub fn assert_s3_objects_match(s3: &S3Server, bucket: &str, backup: &Value, local: Option<&Path>) {
    let objects = data_objects(backup);
    assert!(!objects.is_empty(), "no data objects in {backup:#}");
    for (key, sha, size) in objects {
        let head = s3
            .head(bucket, &format!("{PREFIX}/{key}"))
            .unwrap_or_else(|| panic!("{key} is not in the bucket"));
        assert_eq!(head.get("x-amz-meta-sha256"), Some(&sha), "{key}: {head:?}");
        assert_eq!(head.get("content-length"), Some(&size.to_string()), "{key}");
        if let Some(backups) = local {
            assert_eq!(
                sha256_file(&backups.join(&key)),
                sha,
                "{key} differs locally"
            );
        }
    }
}

/// After a push that recovered from a fault: the one backup `offsite list` shows is whole
/// (no problem, every object there with our checksum), nothing half-done lists, and no
/// multipart upload was left open (`why`: what would have left one).
#[track_caller]
pub fn assert_one_clean_remote_backup(app: &TestApp, s3: &S3Server, bucket: &str, why: &str) {
    let backups = remote_backups(app, "remote");
    assert_eq!(backups.len(), 1, "{backups:#?}");
    assert!(backups[0]["problem"].is_null(), "{:#}", backups[0]);
    assert_s3_objects_match(s3, bucket, &backups[0], Some(&app.backups));
    assert_eq!(assert_no_half_listed(s3, bucket).len(), 1);
    assert_eq!(s3.multipart_uploads(bucket), vec![], "{why}");
}

/// The bucket's invariant, read behind the code's back: a backup's metadata object
/// (`<type>/<stem>.json`) is there only when every data object it names is there with
/// the size it records. Returns the stems that list as backups.
#[track_caller]
pub fn assert_no_half_listed(s3: &S3Server, bucket: &str) -> Vec<String> {
    let objects = bucket_objects(s3, bucket);
    let mut listed = Vec::new();
    for (key, _) in objects.iter().filter(|(k, _)| k.ends_with(".json")) {
        let body = s3
            .get(bucket, &format!("{PREFIX}/{key}"))
            .unwrap_or_else(|| panic!("{key} vanished"));
        let meta: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{key} is not a metadata object: {e}"));
        if meta["type"] == "full" {
            continue;
        }
        let file = meta["backup_path"].as_str().expect("backup_path");
        let name = Path::new(file).file_name().expect("file name");
        let data_key = format!(
            "{}/{}",
            meta["type"].as_str().expect("type"),
            name.display()
        );
        let size = meta["file_size"].as_u64().expect("file_size");
        assert!(
            objects.contains(&(data_key.clone(), size)),
            "{key} lists a backup whose data object {data_key} ({size} bytes) is not complete: {objects:?}"
        );
        listed.push(key.trim_end_matches(".json").to_string());
    }
    listed
}

/// `[--identity ESCROW] restore --from remote --latest KIND --yes` on `app`: a disaster
/// recovery from the target `remote`, with the escrow identity when `encrypted`.
pub fn restore_latest_from_remote(app: &TestApp, kind: &str, encrypted: bool) -> crate::util::Run {
    let keys = tempfile::tempdir().expect("key dir");
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if encrypted {
        let key = crate::offsite::encrypted::identity(keys.path(), "escrow.key");
        args.extend(["--identity".into(), key.into_os_string()]);
    }
    args.extend(["restore", "--from", "remote", "--latest", kind, "--yes"].map(Into::into));
    app.run(&args)
}

/// Every file of the per-type backup directories with its checksum.
pub fn local_backups(app: &TestApp) -> BTreeMap<PathBuf, String> {
    app.backup_files()
        .into_iter()
        .map(|p| {
            let sha = sha256_file(&p);
            (p, sha)
        })
        .collect()
}

/// A local storage backup, then `offsite push`, which must fail (exit 1) naming the
/// target `remote` and saying each of `says`, leaving the local backups as they were and
/// no `.partial` file locally.
#[track_caller]
pub fn push_fails_untouched(app: &TestApp, says: &[&str]) -> Run {
    app.run(["create", "--type", "storage", "--no-offsite"])
        .assert_code(0);
    let before = local_backups(app);
    assert!(!before.is_empty());
    let run = app.run(["offsite", "push"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("offsite target `remote`"),
        "the error does not name the target: {}",
        run.describe()
    );
    for s in says {
        assert!(run.stderr.contains(s), "no {s:?}: {}", run.describe());
    }
    assert_eq!(
        local_backups(app),
        before,
        "the failed push changed local backups"
    );
    assert!(app.partial_files().is_empty(), "{:?}", app.partial_files());
    run
}
