//! The .deb (`scripts/deb.sh`: `scripts/install.sh --package` stages, `cargo deb`
//! packages): its contents and modes (`dpkg-deb -c`), its control data (`dpkg-deb -I`: the
//! config a conffile, the postinst and prerm), a unit that names the packaged binary and
//! verifies, and an install into a scratch root with `dpkg --root` whose postinst creates
//! the service user, an env file with a token of its own, the backup directory, and the
//! owners and modes the scripted install gives — kept across an upgrade.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// What the package must hold, with its `dpkg-deb -c` mode.
const CONTENTS: [(&str, &str); 9] = [
    ("./usr/bin/vertex-backup", "-rwxr-xr-x"),
    (
        "./usr/lib/systemd/system/vertex-backup.service",
        "-rw-r--r--",
    ),
    ("./etc/vertex-backup/config.toml", "-rw-r-----"),
    ("./usr/share/doc/vertex-backup/README.md", "-rw-r--r--"),
    ("./usr/share/doc/vertex-backup/ownership", "-rw-r--r--"),
    (
        "./usr/share/bash-completion/completions/vertex-backup",
        "-rw-r--r--",
    ),
    (
        "./usr/share/zsh/site-functions/_vertex-backup",
        "-rw-r--r--",
    ),
    (
        "./usr/share/fish/vendor_completions.d/vertex-backup.fish",
        "-rw-r--r--",
    ),
    ("./usr/share/man/man1/vertex-backup.1.gz", "-rw-r--r--"),
];

/// `scripts/deb.sh` with the test binary, into `out`: the .deb's path.
fn build_deb(out: &Path) -> PathBuf {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deb.sh"));
    cmd.arg("--bin")
        .arg(BIN)
        .arg("--out")
        .arg(out)
        .arg("--fast");
    run(cmd).assert_code(0);
    let debs: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

/// An empty root dpkg can install into: its database, and `root` in passwd and group.
fn scratch_root(dir: &Path) {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        fs::write(dir.join(f), "").unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    for f in ["etc/shadow", "etc/gshadow"] {
        let line = if f == "etc/shadow" {
            "root:*:20000:0:99999:7:::\n"
        } else {
            "root:*::\n"
        };
        fs::write(dir.join(f), line).unwrap();
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o640)).unwrap();
    }
}

/// `dpkg --root ROOT -i DEB`, the maintainer scripts run outside a chroot with DPKG_ROOT
/// (the scratch root has no shell); the libc and passwd it depends on are the host's.
fn dpkg_install(root: &Path, deb: &Path) -> Run {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
            "-i",
        ])
        .arg(deb);
    run(cmd)
}

/// The id `name` has in the scratch root's `etc/DATABASE`.
fn id_in(root: &Path, database: &str, name: &str) -> u32 {
    fs::read_to_string(root.join("etc").join(database))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scratch root's {database}"))
}

fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn the_deb_holds_what_the_script_installs_and_its_postinst_sets_the_owners_and_modes() {
    if !require(
        "root",
        root("stage files owned by root and install a package"),
    ) || !require("cargo-deb", runs_ok("cargo-deb", &["--version"]))
        || !require("dpkg", runs_ok("dpkg", &["--version"]))
        || !require(
            "systemd-analyze",
            runs_ok("systemd-analyze", &["--version"]),
        )
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path());

    let listing = tool("dpkg-deb", ["-c".as_ref(), deb.as_os_str()]);
    listing.assert_code(0);
    for (path, mode) in CONTENTS {
        let line = listing
            .stdout
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("the package lacks {path}:\n{}", listing.stdout));
        assert!(line.starts_with(mode), "{path}: {line}");
        assert!(
            line.contains(" 0/0 ") || line.contains(" root/root "),
            "{line}"
        );
    }
    for absent in ["./etc/vertex-backup/env", "./usr/local/"] {
        assert!(
            !listing.stdout.contains(absent),
            "the package ships {absent} (a per-machine secret, or the admin's tree):\n{}",
            listing.stdout
        );
    }
    let info = tool("dpkg-deb", ["-I".as_ref(), deb.as_os_str()]);
    info.assert_code(0);
    for needed in [
        "conffiles",
        "postinst",
        "prerm",
        "Depends: libc6",
        "Section: admin",
    ] {
        assert!(
            info.stdout.contains(needed),
            "no {needed}:\n{}",
            info.stdout
        );
    }
    let conffiles = tool(
        "dpkg-deb",
        ["-f".as_ref(), deb.as_os_str(), "Package".as_ref()],
    );
    assert_eq!(conffiles.stdout.trim(), "vertex-backup");
    let control = tempfile::tempdir().unwrap();
    tool(
        "dpkg-deb",
        ["-e".as_ref(), deb.as_os_str(), control.path().as_os_str()],
    )
    .assert_code(0);
    assert_eq!(
        fs::read_to_string(control.path().join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/vertex-backup/config.toml"
    );

    // The packaged unit names the packaged binary, and verifies with it.
    let unpacked = tempfile::tempdir().unwrap();
    tool(
        "dpkg-deb",
        ["-x".as_ref(), deb.as_os_str(), unpacked.path().as_os_str()],
    )
    .assert_code(0);
    let unit = fs::read_to_string(
        unpacked
            .path()
            .join("usr/lib/systemd/system/vertex-backup.service"),
    )
    .unwrap();
    assert!(
        unit.contains(
            "\nExecStart=/usr/bin/vertex-backup --config /etc/vertex-backup/config.toml daemon\n"
        ),
        "{unit}"
    );
    crate::install::assert_unit_verifies(&unit, &unpacked.path().join("usr/bin/vertex-backup"));

    // Installed into an empty root: the postinst does what scripts/install.sh does.
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    scratch_root(r);
    let installed = dpkg_install(r, &deb);
    installed.assert_code(0);
    let uid = id_in(r, "passwd", "vertex-backup");
    let gid = id_in(r, "group", "vertex-backup");
    assert!(uid > 0 && uid < 1000, "not a system user: {uid}");
    assert_eq!(mode_owner(&r.join("etc/vertex-backup")), (0o750, 0, gid));
    assert_eq!(
        mode_owner(&r.join("etc/vertex-backup/config.toml")),
        (0o640, 0, gid)
    );
    assert_eq!(
        mode_owner(&r.join("etc/vertex-backup/env")),
        (0o640, 0, gid)
    );
    assert_eq!(
        mode_owner(&r.join("var/backups/vertex-ar")),
        (0o700, uid, gid)
    );
    assert_eq!(mode_owner(&r.join("usr/bin/vertex-backup")), (0o755, 0, 0));
    let env = fs::read_to_string(r.join("etc/vertex-backup/env")).unwrap();
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("VERTEX_BACKUP_API_TOKEN="))
        .unwrap_or_else(|| panic!("no API token in the env file"))
        .to_string();
    assert_eq!(token.len(), 64, "a 32-byte token in hex");
    let version = tool(
        r.join("usr/bin/vertex-backup").to_str().unwrap(),
        ["--version"],
    );
    version.assert_code(0);

    // An upgrade (the same package again) keeps the operator's config, the machine's
    // token and the user.
    let config = r.join("etc/vertex-backup/config.toml");
    let edited = format!(
        "{}\n# edited by the operator\n",
        fs::read_to_string(&config).unwrap()
    );
    fs::write(&config, &edited).unwrap();
    dpkg_install(r, &deb).assert_code(0);
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(
        fs::read_to_string(r.join("etc/vertex-backup/env"))
            .unwrap()
            .contains(&token)
    );
    assert_eq!(id_in(r, "passwd", "vertex-backup"), uid);
    assert_eq!(
        mode_owner(&r.join("etc/vertex-backup/config.toml")),
        (0o640, 0, gid)
    );
}
