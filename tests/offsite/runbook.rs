//! README's disaster-recovery runbook, run as written: its ```` ```toml runbook ```` block
//! (the config of the new server) and its ```` ```sh runbook ```` block (the commands) are
//! read from README.md itself, the paths, bucket and endpoint replaced with this test's,
//! and every `vertex-backup` line run through the real binary. Server A (a `TestApp` with
//! data) uploads a full backup to moto; server B is an empty directory with only that
//! config; after the runbook B's database holds A's rows and B's storage is A's, byte for
//! byte. A README edit that breaks the runbook breaks this test.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{BIN, S3Server, TestApp, assert_same_tree, dump_db, run, s3_server};

const README: &str = include_str!("../../README.md");
/// The target name the README's runbook uses (`--from s3`).
const TARGET: &str = "s3";
/// The config path the README's commands name.
const README_CONFIG: &str = "/etc/vertex-backup/config.toml";
/// The identity path the README's commands name.
const README_IDENTITY: &str = "/root/vertex-identity.txt";

/// The body of the README's fenced block opened by exactly `fence` (e.g. "```sh runbook"),
/// its indentation (the block sits in a list item) removed.
fn readme_block(fence: &str) -> Vec<String> {
    let mut lines = README.lines();
    let open = lines
        .by_ref()
        .find(|l| l.trim() == fence)
        .unwrap_or_else(|| panic!("README.md has no `{fence}` block"));
    let indent = open.len() - open.trim_start().len();
    lines
        .take_while(|l| l.trim() != "```")
        .map(|l| l.get(indent..).unwrap_or("").to_string())
        .collect()
}

/// A credentials file only its owner can read (moto accepts any key).
fn write_credentials(path: &Path) {
    fs::write(
        path,
        "[default]\naws_access_key_id = runbook-test\naws_secret_access_key = runbook-secret\n",
    )
    .expect("write credentials");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod credentials");
}

/// The README's config with this test's values: every `key = …` line of `values` replaced
/// by `key = VALUE` (TOML as given; each key must be in the README's block), `path_style`
/// added after `url` (moto on 127.0.0.1 has no bucket subdomains), and a `[backup]`
/// reserve a test machine can meet.
fn runbook_config(values: &[(&str, String)], endpoint: &str) -> String {
    let mut out = Vec::new();
    let mut replaced = Vec::new();
    for line in readme_block("```toml runbook") {
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        match values.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => {
                out.push(format!("{k} = {v}"));
                replaced.push(key.clone());
                if key == "url" {
                    out.push(format!("endpoint = {endpoint:?}"));
                    out.push("path_style = true".into());
                }
            }
            None => out.push(line),
        }
    }
    for (k, _) in values {
        assert!(
            replaced.iter().any(|r| r == k),
            "the README's runbook config has no `{k}` line"
        );
    }
    out.push("\n[backup]\nmin_free_space = \"1 MiB\"\n".into());
    out.join("\n")
}

/// The runbook's command lines as arguments (no quoting in them), `--config` pointed at
/// `config` and `--identity` at `identity`.
fn runbook_commands(config: &Path, identity: &Path) -> Vec<Vec<String>> {
    let commands: Vec<Vec<String>> = readme_block("```sh runbook")
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(
                !l.contains(['"', '\'', '|', '>', '$']),
                "a runbook line this test cannot run without a shell: {l}"
            );
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words[0], "vertex-backup", "not a vertex-backup line: {l}");
            words[1..]
                .iter()
                .map(|w| {
                    if *w == README_CONFIG {
                        config.display().to_string()
                    } else if *w == README_IDENTITY {
                        identity.display().to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let flat: Vec<&String> = commands.iter().flatten().collect();
    for needed in ["offsite", "restore", "--from", TARGET, "--identity"] {
        assert!(
            flat.iter().any(|w| *w == needed),
            "the runbook lost `{needed}`"
        );
    }
    // Wherever a backup's content is read, the identity is named.
    for c in &commands {
        if c.iter().any(|w| w == "restore" || w == "verify") {
            assert!(
                c.iter().any(|w| w == "--identity"),
                "a runbook line reads backups without --identity: {c:?}"
            );
        }
    }
    commands
}

/// Server A: the app with more data than the default, and the target, uploading —
/// encrypted to the fixture keys when `encryption` is given.
fn server_a(s3: &S3Server, bucket: &str, encryption: &str) -> TestApp {
    let a = TestApp::new();
    a.write_random_files("client_3/videos", 3, 300_000);
    let creds = a.root.join("s3-credentials");
    write_credentials(&creds);
    let offsite = format!(
        "[[offsite]]\nname = \"{TARGET}\"\nurl = \"s3://{bucket}/prod\"\nendpoint = \"{}\"\npath_style = true\ncredentials_file = \"{}\"\npart_size = \"5 MiB\"\n",
        s3.endpoint(),
        creds.display()
    );
    a.write_config_raw(&a.config_text("", &format!("{encryption}\n{offsite}")));
    a
}

#[test]
fn the_readme_runbook_restores_a_fresh_server_from_the_bucket() {
    let Some(s3) = s3_server() else { return };
    for encrypted in [true, false] {
        follow_the_runbook(&s3, encrypted);
    }
}

/// The fixture key `name` (`operator.pub`, `operator.key`).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/age")
        .join(name)
}

fn follow_the_runbook(s3: &S3Server, encrypted: bool) {
    let bucket = s3.new_bucket();
    let public = fs::read_to_string(fixture("operator.pub"))
        .expect("the operator's public key")
        .trim()
        .to_string();
    let encryption = if encrypted {
        format!("[encryption]\nrecipients = [\"{public}\"]\n")
    } else {
        String::new()
    };
    let a = server_a(s3, &bucket, &encryption);
    a.run(["create", "--type", "full"]).assert_code(0);
    assert!(
        s3.list(&bucket, "prod/full/").len() == 1,
        "the full backup's manifest is not on the target: {:?}",
        s3.list(&bucket, "")
    );
    if encrypted {
        assert!(
            s3.list(&bucket, "prod/")
                .iter()
                .any(|k| k.0.ends_with(".age")),
            "nothing was encrypted: {:?}",
            s3.list(&bucket, "prod/")
        );
    }

    // Server B: nothing but the config, its credentials and the identity.
    let b = tempfile::tempdir().expect("tempdir");
    let b_root: PathBuf = b.path().to_path_buf();
    let etc = b_root.join("etc");
    fs::create_dir(&etc).expect("etc");
    let creds = etc.join("s3-credentials");
    write_credentials(&creds);
    let identity = b_root.join("vertex-identity.txt");
    fs::copy(fixture("operator.key"), &identity).expect("copy the identity");
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o600)).expect("chmod");
    let data = b_root.join("var-lib-vertex-ar");
    let quoted = |p: PathBuf| format!("{:?}", p.display().to_string());
    let values = [
        ("database", quoted(data.join("app_data/app_data.db"))),
        ("storage", quoted(data.join("storage"))),
        ("backup_dir", quoted(b_root.join("var-backups"))),
        ("url", format!("{:?}", format!("s3://{bucket}/prod"))),
        ("credentials_file", quoted(creds.clone())),
        ("recipients", format!("[{public:?}]")),
    ];
    let config = etc.join("config.toml");
    fs::write(&config, runbook_config(&values, s3.endpoint())).expect("write B's config");

    for args in runbook_commands(&config, &identity) {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .current_dir(&b_root)
            .env_remove("VERTEX_BACKUP_CONFIG")
            .env_remove("VERTEX_BACKUP_IDENTITY")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("VERTEX_BACKUP_API_TOKEN");
        let out = run(cmd);
        assert_eq!(
            out.code(),
            Some(0),
            "runbook step `vertex-backup {}` failed (encrypted: {encrypted}):\n{}",
            args.join(" "),
            out.describe()
        );
        if args.iter().any(|a| a == "offsite") && args.iter().any(|a| a == "list") {
            assert!(
                out.stdout.contains(&format!("{TARGET}:full_backup_")),
                "offsite list does not show the full backup:\n{}",
                out.stdout
            );
        }
    }

    assert_same_tree(&a.storage, &data.join("storage"));
    let b_db = rusqlite::Connection::open(data.join("app_data/app_data.db")).expect("open B");
    let restored = dump_db(&b_db);
    assert!(!restored.is_empty(), "B's database is empty");
    assert_eq!(dump_db(&a.open_db()), restored, "B's rows differ from A's");
}
