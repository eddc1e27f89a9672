//! A real container engine for the Docker tests: Podman's Docker-compatible API service
//! (`podman system service`) on a private unix socket, with its own storage, run root and
//! `containers.conf` in a temporary directory, so tests never share containers or touch
//! the machine's. Containers run a busybox image made offline (`podman import` of a tar
//! holding `/bin/busybox` and its links), with `--network none`. One engine per test; the
//! service can be killed and started again (an engine that goes away mid-job), and its
//! containers survive that as they do under Docker (conmon keeps them). Dropping it
//! removes every container and stops the service by PID.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{poll_for, require, runs_ok};

const BUSYBOX: &str = "/bin/busybox";
pub const IMAGE: &str = "localhost/vertex-test-busybox:latest";
/// A container's main process: runs until stopped; `$TERM_ACTION` decides how SIGTERM is
/// taken ("exit 0": at once; "": ignored, so only the engine's SIGKILL ends it).
const LOOP: &str = "trap \"$TERM_ACTION\" TERM; while true; do sleep 0.2; done";

pub struct Podman {
    dir: tempfile::TempDir,
    service: Option<Child>,
}

/// A started engine, or `None` when this machine has no Podman (a skip; under CI a
/// failure, as `require` decides).
pub fn podman_engine() -> Option<Podman> {
    let available = runs_ok("podman", &["--version"]).and_then(|()| {
        runs_ok("runc", &["--version"])?;
        match Path::new(BUSYBOX).exists() {
            true => Ok(()),
            false => Err(format!(
                "{BUSYBOX} is missing (apt-get install busybox-static)"
            )),
        }
    });
    let available = available.and_then(|()| match super::is_root() {
        true => Ok(()),
        false => Err("the container tests run as root (rootless Podman needs subuids)".into()),
    });
    if !require("Podman with runc and busybox-static, as root", available) {
        return None;
    }
    Some(Podman::start())
}

impl Podman {
    fn start() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("vertex-podman-")
            .tempdir()
            .expect("the engine's directory");
        // crun refuses this VM's hybrid cgroups and setrlimit(RLIMIT_NOFILE) is denied:
        // runc, no default ulimits, cgroupfs (no systemd), events in a file.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\nnetns = \"none\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        let mut engine = Podman { dir, service: None };
        engine.import_image();
        engine.start_service();
        engine
    }

    /// `podman` with this engine's storage and configuration.
    pub fn podman(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        cmd
    }

    /// Run `podman args…`; its stdout, trimmed. Panics with its stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.podman().args(args).output().expect("run podman");
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn import_image(&self) {
        let image = self.dir.path().join("image");
        std::fs::create_dir_all(image.join("bin")).expect("image dir");
        std::fs::copy(BUSYBOX, image.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep", "cat", "ls", "true", "echo"] {
            std::os::unix::fs::symlink("busybox", image.join("bin").join(applet))
                .expect("busybox link");
        }
        let tar = self.dir.path().join("busybox.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&image)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of the image");
        self.run(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// `unix:///…` for `[docker] host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A `[docker]` table for this engine.
    pub fn table(&self, extra: &str) -> String {
        format!("[docker]\nhost = \"{}\"\n{extra}", self.host())
    }

    /// Start the API service and wait until its socket answers.
    pub fn start_service(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = self
            .podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", self.socket().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman system service");
        self.service = Some(child);
        let socket = self.socket();
        poll_for(Duration::from_secs(30), "the Podman API socket", || {
            UnixStream::connect(&socket).ok()
        });
    }

    /// Kill the API service (the engine going away); containers keep running.
    pub fn kill_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Make volume `name`; its mountpoint.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.run(&["volume", "create", name]);
        PathBuf::from(self.run(&["volume", "inspect", "--format", "{{.Mountpoint}}", name]))
    }

    /// Start container `name` mounting volume `volume` at /data, with `labels`
    /// (`key=value`); `stubborn` ignores SIGTERM and has a grace period of `grace` s.
    pub fn container(&self, name: &str, volume: &str, labels: &[&str], stubborn: Option<u32>) {
        let mount = format!("{volume}:/data");
        let action = if stubborn.is_some() {
            "TERM_ACTION="
        } else {
            "TERM_ACTION=exit 0"
        };
        let grace = stubborn.unwrap_or(10).to_string();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--stop-timeout",
            &grace,
            "-e",
            action,
            "-v",
            &mount,
        ];
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        args.extend([IMAGE, "sh", "-c", LOOP]);
        self.run(&args);
    }

    /// `{{.State.StartedAt}}` of container `name`.
    pub fn started_at(&self, name: &str) -> String {
        self.run(&["inspect", "--format", "{{.State.StartedAt}}", name])
    }

    pub fn running(&self, name: &str) -> bool {
        self.run(&["inspect", "--format", "{{.State.Running}}", name]) == "true"
    }

    /// `{{.State.Status}}` of container `name` (`running`, `exited`, `stopping`…).
    pub fn status(&self, name: &str) -> String {
        self.run(&["inspect", "--format", "{{.State.Status}}", name])
    }

    /// The SHA-256 (hex) of the file container `name` sees at `path`, hashed inside it.
    pub fn sha256_inside(&self, name: &str, path: &str) -> String {
        let out = self.run(&["exec", name, "/bin/busybox", "sha256sum", path]);
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // The service first: a stop it is still running (a container that ignores its
        // signal) holds that container's lock, and `rm` would fail on it.
        self.kill_service();
        let remove = || {
            let _ = self
                .podman()
                .args(["rm", "--all", "--force", "--time", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        remove();
        // Whatever still runs is killed by its PID before the directory it runs from
        // goes: a container outliving its test would spin on a vanished root.
        let left = self
            .podman()
            .args(["ps", "--all", "--quiet"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !left.is_empty() {
            for id in left.lines() {
                let pid = self
                    .podman()
                    .args(["inspect", "--format", "{{.State.Pid}}", id])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default();
                if let Ok(pid) = pid.parse::<i32>()
                    && pid > 0
                {
                    // SAFETY: kill(2) on a PID the engine names as this test's container.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            remove();
        }
        // Last resort, whatever podman says: the engine's monitors (conmon) name this
        // directory in their arguments, and their children are the containers.
        let dir = self.dir.path().to_string_lossy().into_owned();
        if let Ok(out) = Command::new("pgrep").args(["-f", &dir]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("pkill").args(["-KILL", "-P", pid]).status();
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}
