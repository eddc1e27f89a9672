//! A real OpenSSH server for the SFTP target tests: Debian's `sshd` on a free loopback
//! port, with a host key and a client key made for the test, `internal-sftp`, and the
//! files a target's config needs (`ssh_key`, `known_hosts`). One server per test, stopped
//! by PID when dropped; it can be killed (every connection with it) and started again on
//! the same port, as a backup server that reboots.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{poll_for, require, runs_ok};

const SSHD: &str = "/usr/sbin/sshd";

pub struct SshServer {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

/// A started server, or `None` when this machine has no OpenSSH server (a skip; under CI
/// a failure, as `require` decides).
pub fn ssh_server() -> Option<SshServer> {
    let available = if Path::new(SSHD).exists() {
        runs_ok("ssh", &["-V"])
    } else {
        Err(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ))
    };
    if !require("an OpenSSH server (sshd) and client", available) {
        return None;
    }
    Some(SshServer::start())
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "vertex-backup-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl SshServer {
    fn start() -> SshServer {
        let dir = tempfile::tempdir().expect("the server's directory");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        // Debian's sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut server = SshServer {
            dir,
            port: 0,
            user: current_user(),
            child: None,
        };
        server.port = free_port();
        server.write_known_hosts();
        server.launch();
        server
    }

    fn write_known_hosts(&self) {
        let host_pub =
            std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key");
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {kind} {key}\n", self.port),
        )
        .expect("known_hosts");
    }

    fn config(&self) -> PathBuf {
        let d = self.dir.path();
        let path = d.join("sshd_config");
        let text = format!(
            "Port {}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
            self.port,
            d.join("host_key").display(),
            d.join("authorized_keys").display(),
        );
        std::fs::write(&path, text).expect("sshd_config");
        path
    }

    /// Start `sshd` on the port and wait until it accepts connections.
    fn launch(&mut self) {
        let config = self.config();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let port = self.port;
        poll_for(
            Duration::from_secs(20),
            "sshd to accept connections",
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("sshd exited at start ({status}); is port {port} taken?");
                }
                TcpStream::connect(("127.0.0.1", port)).ok()
            },
        );
    }

    /// The directory on the server for a target, made empty.
    pub fn directory(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("srv").join(name);
        std::fs::create_dir_all(&path).expect("the target's directory");
        path
    }

    pub fn url(&self, dir: &Path) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            dir.display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// An `[[offsite]]` table for `dir` on this server.
    pub fn table(&self, name: &str, dir: &Path, extra: &str) -> String {
        format!(
            "[[offsite]]\nname = \"{name}\"\nurl = \"{}\"\nssh_key = \"{}\"\nknown_hosts = \"{}\"\nretry_backoff = \"200ms\"\ntimeout = \"20s\"\n{extra}",
            self.url(dir),
            self.ssh_key().display(),
            self.known_hosts().display(),
        )
    }

    /// Kill the server and every connection it serves (a crash, a reboot).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, with the same keys.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The number of connections the server serves now (its per-connection children).
    pub fn connections(&self) -> usize {
        let Some(child) = &self.child else { return 0 };
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .expect("run pgrep");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port the OS says is free now (bound and released: `sshd` cannot be given port 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}
