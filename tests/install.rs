//! The install procedure README gives (`scripts/install.sh`), run into a scratch root:
//! the installed unit passes `systemd-analyze verify`, names the environment file the
//! script wrote and only optional `ReadWritePaths=`, and the service user can read its
//! config while other users cannot; the shell completions and the man page are in place.
//! Also the `systemd-analyze verify` check both this and the repository unit's test use.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The service user and group of the scratch install (`nobody`/`nogroup` by number: the
/// script's `vertex-backup` user is only created on a real root).
const SERVICE_ID: u32 = 65534;
/// Another unprivileged user, who must not read the service's config.
const OTHER_ID: u32 = 65533;

/// `systemd-analyze verify` of `unit` (its text) with `ExecStart=`'s program replaced by
/// `exec` (verify checks that the program exists): exit 0 and not one complaint.
#[track_caller]
pub fn assert_unit_verifies(unit: &str, exec: &Path) {
    let exec_start: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(exec_start.len(), 1, "{unit}");
    let (_, args) = exec_start[0]
        .trim_start_matches("ExecStart=")
        .split_once(' ')
        .expect("ExecStart= has arguments");
    let rewritten = unit.replace(
        exec_start[0],
        &format!("ExecStart={} {args}", exec.display()),
    );
    assert!(
        rewritten.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{rewritten}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vertex-backup.service");
    fs::write(&path, &rewritten).unwrap();

    let r = tool("systemd-analyze", ["verify".as_ref(), path.as_os_str()]);
    let output = format!("{}{}", r.stdout, r.stderr);
    let complaints: Vec<&str> = output
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("vertex-backup")
                || [
                    "error", "warn", "unknown", "invalid", "ignoring", "failed", "not ",
                ]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        r.code() == Some(0) && complaints.is_empty(),
        "systemd-analyze verify complains about the unit:\n{complaints:#?}\n{}",
        r.describe()
    );
}

/// The values of every `KEY=` line of the unit, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// (mode bits, uid, gid) of `path`.
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// `head -c1 FILE` as `uid`:`uid` with no supplementary groups.
fn read_as(uid: u32, file: &Path) -> Run {
    let mut cmd = Command::new("head");
    cmd.arg("-c1").arg(file).uid(uid).gid(uid);
    run(cmd)
}

/// The completions where bash-completion, zsh and fish look, and the man page where man
/// does: root's, 0644, naming the commands; the bash one parses, and `man -l` renders the
/// page with every command (when man is installed).
#[track_caller]
fn assert_completions_and_man_page_installed(root: &Path) {
    let files = [
        "usr/share/bash-completion/completions/vertex-backup",
        "usr/share/zsh/site-functions/_vertex-backup",
        "usr/share/fish/vendor_completions.d/vertex-backup.fish",
        "usr/share/man/man1/vertex-backup.1",
    ];
    let commands = [
        "create",
        "restore",
        "check-config",
        "notify-test",
        "completions",
    ];
    for file in files {
        let path = root.join(file);
        assert_eq!(owner_and_mode(&path), (0o644, 0, 0), "{file}");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for command in commands {
            // The man page writes a command's `-` as roff's `\-`.
            let shown = command.replace('-', "\\-");
            assert!(
                text.contains(command) || text.contains(&shown),
                "{file} does not mention `{command}`:\n{text}"
            );
        }
    }
    let bash = tool("bash", ["-n".as_ref(), root.join(files[0]).as_os_str()]);
    assert!(
        bash.code() == Some(0),
        "the bash completion does not parse\n{}",
        bash.describe()
    );
    if runs_ok("man", &["--version"]).is_ok() {
        let man = tool("man", ["-l".as_ref(), root.join(files[3]).as_os_str()]);
        assert!(man.code() == Some(0), "{}", man.describe());
        for command in commands {
            assert!(
                man.stdout.contains(command),
                "man page lacks `{command}`:\n{}",
                man.stdout
            );
        }
    }
}

/// A package's staging root on a build host without the service user: the install
/// completes, the service's files stay root's, and the ownership they need on the target
/// is recorded by name. A binary that cannot run fails the install before anything is
/// written: the root stays empty.
#[test]
fn a_staging_root_needs_no_service_user_and_a_failing_install_writes_nothing() {
    if !require("root", root("install files owned by root")) {
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let install = |root: &Path, bin: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("--root").arg(root).args([
            "--bin",
            bin,
            "--owner",
            "vb-no-such-user:vb-no-such-group",
        ]);
        run(cmd)
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let done = install(scratch.path(), BIN);
    done.assert_code(0);
    assert!(
        done.stdout.contains("does not exist on this host"),
        "{}",
        done.describe()
    );
    let at = |p: &str| scratch.path().join(p.trim_start_matches('/'));
    assert_eq!(owner_and_mode(&at("/etc/vertex-backup/env")), (0o640, 0, 0));
    assert_eq!(owner_and_mode(&at("/var/backups/vertex-ar")), (0o700, 0, 0));
    assert_completions_and_man_page_installed(scratch.path());
    let ownership = fs::read_to_string(at("/usr/share/doc/vertex-backup/ownership")).unwrap();
    for line in [
        "/etc/vertex-backup root:vb-no-such-group 0750",
        "/etc/vertex-backup/env root:vb-no-such-group 0640",
        "/var/backups/vertex-ar vb-no-such-user:vb-no-such-group 0700",
    ] {
        assert!(ownership.contains(line), "{line:?} missing:\n{ownership}");
    }

    let empty = tempfile::tempdir().expect("tempdir");
    let failed = install(empty.path(), "/bin/false");
    assert_ne!(failed.code(), Some(0), "{}", failed.describe());
    assert!(
        failed.stderr.contains("cannot generate"),
        "{}",
        failed.describe()
    );
    let left: Vec<_> = fs::read_dir(empty.path()).unwrap().collect();
    assert!(left.is_empty(), "a failed install wrote {left:?}");
}

#[test]
fn the_scripted_install_gives_a_unit_that_verifies_and_a_config_the_service_user_can_read() {
    let root_ok = root("chown the installed files to the service user");
    if !require("root", root_ok)
        || !require(
            "systemd-analyze",
            runs_ok("systemd-analyze", &["--version"]),
        )
    {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    // The scratch root stands for "/": others may traverse it, as they may "/".
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let owner = format!("{SERVICE_ID}:{SERVICE_ID}");
    let install = || {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("--root")
            .arg(root)
            .args(["--bin", BIN, "--owner", &owner]);
        run(cmd)
    };
    install().assert_code(0);

    // What was installed, with which owner and mode.
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let expected: [(&str, (u32, u32, u32)); 6] = [
        ("/usr/local/bin/vertex-backup", (0o755, 0, 0)),
        ("/etc/systemd/system/vertex-backup.service", (0o644, 0, 0)),
        ("/etc/vertex-backup", (0o750, 0, SERVICE_ID)),
        ("/etc/vertex-backup/config.toml", (0o640, 0, SERVICE_ID)),
        ("/etc/vertex-backup/env", (0o640, 0, SERVICE_ID)),
        ("/var/backups/vertex-ar", (0o700, SERVICE_ID, SERVICE_ID)),
    ];
    for (path, want) in expected {
        assert_eq!(
            owner_and_mode(&at(path)),
            want,
            "{path}: (mode, uid, gid) installed"
        );
    }
    assert_completions_and_man_page_installed(root);
    // The service user reads its config and environment; another user reads neither.
    for file in ["/etc/vertex-backup/config.toml", "/etc/vertex-backup/env"] {
        read_as(SERVICE_ID, &at(file)).assert_code(0);
        let other = read_as(OTHER_ID, &at(file));
        assert!(
            other.code() != Some(0) && other.stderr.contains("Permission denied"),
            "{file} is readable by an unrelated user\n{}",
            other.describe()
        );
    }
    let env = fs::read_to_string(at("/etc/vertex-backup/env")).unwrap();
    let api_token = env
        .lines()
        .find_map(|l| l.strip_prefix("VERTEX_BACKUP_API_TOKEN="))
        .unwrap_or_else(|| panic!("no API token in the env file:\n{env}"));
    assert!(api_token.len() >= 32, "a short API token: {api_token:?}");

    // The installed unit: it loads that env file, its ReadWritePaths= cannot fail the
    // start, the config's backup_dir is one of them, and systemd accepts it.
    let unit = fs::read_to_string(at("/etc/systemd/system/vertex-backup.service")).unwrap();
    assert_eq!(
        unit_values(&unit, "EnvironmentFile"),
        ["-/etc/vertex-backup/env"],
        "{unit}"
    );
    let writable: Vec<&str> = unit_values(&unit, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    for path in &writable {
        assert!(
            path.starts_with('-') || at(path).is_dir(),
            "ReadWritePaths={path} does not exist after the install and is not optional (\"-\"): the unit would fail to start"
        );
    }
    let config = fs::read_to_string(at("/etc/vertex-backup/config.toml")).unwrap();
    assert!(
        config.contains("\nbackup_dir = \"/var/backups/vertex-ar\""),
        "{config}"
    );
    assert!(
        writable.contains(&"-/var/backups/vertex-ar"),
        "the installed config's backup_dir is not writable under the unit: {writable:?}"
    );
    let exec = unit_values(&unit, "ExecStart")[0]
        .split(' ')
        .next()
        .expect("ExecStart= program");
    assert_eq!(exec, "/usr/local/bin/vertex-backup");
    assert_unit_verifies(&unit, &at(exec));

    // A second run keeps what the operator edited.
    fs::write(at("/etc/vertex-backup/env"), "TELEGRAM_CHAT_ID=42\n").unwrap();
    install().assert_code(0);
    assert_eq!(
        fs::read_to_string(at("/etc/vertex-backup/env")).unwrap(),
        "TELEGRAM_CHAT_ID=42\n"
    );
    assert_eq!(
        fs::read_to_string(at("/etc/vertex-backup/config.toml")).unwrap(),
        config
    );
}
