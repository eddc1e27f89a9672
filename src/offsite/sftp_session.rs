//! One SSH connection to an SFTP target's server: the system's OpenSSH client (`ssh -s
//! sftp`) run with the target's key and known-hosts file, and the SFTP protocol spoken
//! over its pipes (`openssh-sftp-client`, which pipelines requests). OpenSSH does the
//! cryptography, the host-key check and keep-alives (rustic and OpenDAL drive it the
//! same way); nothing from the operator's or root's `~/.ssh` is read (`-F /dev/null`,
//! no agent), so the target is exactly what the config says.
//!
//! Host keys are checked strictly: an unknown or changed key is refused, and the refusal
//! names the fingerprint the server offers (`ssh-keyscan` | `ssh-keygen -l`) for the
//! operator to compare with the server's before trusting it. When `ssh` fails, what it
//! printed decides the failure's kind: a refused key or host key is not retried, a
//! refused or dropped connection is.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::target::RemoteError;
use crate::config::SftpLocation;
use crate::error::RemoteFailure;

/// Bytes of writes one file keeps in flight.
const WRITES_IN_FLIGHT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(8 << 20).unwrap();
/// The longest TCP connect and handshake (a longer `timeout` bounds requests, not this).
const CONNECT_MAX: Duration = Duration::from_secs(30);

/// The last bytes of `ssh`'s stderr kept for messages.
const STDERR_KEPT: usize = 4096;

/// OpenSSH's default ciphers, in the order that is fastest on this CPU. OpenSSH puts
/// ChaCha20-Poly1305 first because it is fast everywhere; with AES instructions (x86
/// AES-NI, ARMv8 AES) AES-GCM is faster still — a 1 GiB upload to sshd on loopback took
/// 2.5–3.1 s with it against 3.3–4.3 s with ChaCha20 (BENCHMARKS.md) — so it is put first
/// there. Only the order changes: a server that lacks one gets the next.
fn cipher_preference() -> &'static str {
    const AES_FIRST: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
        chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
    const CHACHA_FIRST: &str = "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,\
        aes256-gcm@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
    if has_aes_instructions() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    }
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// What a connection needs.
#[derive(Debug, Clone)]
pub struct SshLogin {
    pub location: SftpLocation,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// Bounds the TCP connect and the SSH handshake.
    pub timeout: Duration,
}

/// A live connection: the `ssh` process and the SFTP session over it.
pub struct Session {
    pub sftp: Sftp,
    /// Killed when the session is dropped (`kill_on_drop`).
    _child: Child,
}

impl SshLogin {
    /// The `ssh` command line: the target's key and known-hosts file only, strict host
    /// key checking, keep-alives that notice a dead server within a minute.
    fn command(&self) -> Command {
        let l = &self.location;
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg("/dev/null");
        for option in [
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "UpdateHostKeys=no".into(),
            "CheckHostIP=no".into(),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "PasswordAuthentication=no".into(),
            "KbdInteractiveAuthentication=no".into(),
            format!(
                "ConnectTimeout={}",
                self.timeout.min(CONNECT_MAX).as_secs().max(1)
            ),
            "ServerAliveInterval=15".into(),
            "ServerAliveCountMax=4".into(),
            "LogLevel=ERROR".into(),
            format!("Ciphers={}", cipher_preference()),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd.arg("-i")
            .arg(&self.key)
            .arg("-p")
            .arg(l.port.to_string())
            .arg("-l")
            .arg(&l.user)
            .arg("-s")
            .arg("--")
            .arg(&l.host)
            .arg("sftp");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// The files `ssh` needs, checked first so a typo gets a message naming the key.
    fn check_files(&self) -> Result<(), RemoteError> {
        for (what, path) in [("ssh_key", &self.key), ("known_hosts", &self.known_hosts)] {
            if let Err(e) = std::fs::File::open(path) {
                return Err(RemoteError::new(
                    RemoteFailure::Credentials,
                    format!("its {what} {} cannot be read: {e}", path.display()),
                ));
            }
        }
        Ok(())
    }

    /// Connect: start `ssh` and open the SFTP session, within the timeout.
    pub async fn connect(&self) -> Result<Session, RemoteError> {
        self.check_files()?;
        let mut child = self.command().spawn().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (install the OpenSSH client: apt-get install openssh-client)"
            } else {
                ""
            };
            RemoteError::new(RemoteFailure::Other, format!("cannot run ssh: {e}{hint}"))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                "ssh started without its pipes",
            ));
        };
        let said = Arc::new(Mutex::new(Vec::new()));
        let reading = tokio::spawn(keep_stderr(stderr, Arc::clone(&said)));
        // Up to 8 MiB of writes in flight (the default, 640 KiB, leaves the pipe idle
        // while replies come back); the server's own write size is kept.
        let options = SftpOptions::new().tokio_compat_file_write_limit(WRITES_IN_FLIGHT);
        let opened = tokio::time::timeout(
            self.timeout.min(CONNECT_MAX) + Duration::from_secs(5),
            Sftp::new(stdin, stdout, options),
        )
        .await;
        match opened {
            Ok(Ok(sftp)) => Ok(Session {
                sftp,
                _child: child,
            }),
            Ok(Err(e)) => {
                // ssh ended (or never spoke SFTP): its exit and its words say why.
                let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                // Its last words may still be in the pipe: read to its end (ssh has
                // exited, so it ends) before judging them; a loaded machine showed the gap.
                let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
                let words = stderr_text(&said);
                Err(self
                    .refusal(&words, exited.ok().and_then(Result::ok), &e)
                    .await)
            }
            Err(_) => Err(RemoteError::new(
                RemoteFailure::Network,
                format!(
                    "no SFTP session within {} s: {}",
                    (self.timeout.min(CONNECT_MAX) + Duration::from_secs(5)).as_secs(),
                    stderr_text(&said)
                ),
            )),
        }
    }

    /// What a failed connection means, from `ssh`'s words.
    async fn refusal(
        &self,
        words: &str,
        exited: Option<std::process::ExitStatus>,
        e: &SftpError,
    ) -> RemoteError {
        let l = &self.location;
        let said = if words.is_empty() {
            format!("ssh exited ({}): {e}", exit_text(exited))
        } else {
            words.to_string()
        };
        let has = |s: &str| words.contains(s);
        if has("Host key verification failed") || has("IDENTIFICATION HAS CHANGED") {
            let offered = host_key_fingerprints(l).await;
            let known = self.known_hosts.display();
            let name = l.known_hosts_name();
            let verb = if has("IDENTIFICATION HAS CHANGED") {
                "is not the one"
            } else {
                "is not in"
            };
            return RemoteError::new(
                RemoteFailure::HostKey,
                format!(
                    "the host key {name} offers {verb} {known}: refused, nothing was sent. The \
                     server offers {offered}; compare with the server's own \
                     (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there) and only then \
                     add it: `ssh-keyscan -p {} {} >> {known}` (ssh said: {said})",
                    l.port, l.host
                ),
            );
        }
        if has("Permission denied") || has("Load key") || has("UNPROTECTED PRIVATE KEY") {
            return RemoteError::new(
                RemoteFailure::Credentials,
                format!(
                    "{} refused the login as {} with {}: its public key must be in ~{}/.ssh/authorized_keys there, and the key file readable by this user only (ssh said: {said})",
                    l.host,
                    l.user,
                    self.key.display(),
                    l.user
                ),
            );
        }
        if has("subsystem request failed") {
            return RemoteError::new(
                RemoteFailure::Other,
                format!(
                    "{} offers no SFTP (`Subsystem sftp internal-sftp` in its sshd_config) ({said})",
                    l.host
                ),
            );
        }
        RemoteError::new(RemoteFailure::Network, format!("ssh to {}: {said}", l.host))
    }
}

/// Collect what `ssh` prints (its last [`STDERR_KEPT`] bytes).
async fn keep_stderr(mut stderr: tokio::process::ChildStderr, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut kept) = into.lock() {
            kept.extend_from_slice(&buf[..n]);
            let extra = kept.len().saturating_sub(STDERR_KEPT);
            kept.drain(..extra);
        }
    }
}

fn stderr_text(said: &Mutex<Vec<u8>>) -> String {
    let bytes = said.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn exit_text(status: Option<std::process::ExitStatus>) -> String {
    status.map_or_else(|| "still running".into(), |s| s.to_string())
}

/// The fingerprints of the host keys `location` offers now (`ssh-keyscan` piped into
/// `ssh-keygen -l`), for the operator to compare; a sentence when they cannot be had.
async fn host_key_fingerprints(location: &SftpLocation) -> String {
    let scanned = Command::new("ssh-keyscan")
        .args(["-T", "10", "-p", &location.port.to_string(), "--"])
        .arg(&location.host)
        .stderr(Stdio::null())
        .output();
    let keys = match tokio::time::timeout(Duration::from_secs(15), scanned).await {
        Ok(Ok(out)) if out.status.success() && !out.stdout.is_empty() => out.stdout,
        _ => return "no key ssh-keyscan could read".into(),
    };
    fingerprints_of(&keys)
        .await
        .unwrap_or_else(|| "keys ssh-keygen could not read".into())
}

/// `ssh-keygen -lf -` of `keys` (known_hosts lines): "ED25519 SHA256:…, …".
async fn fingerprints_of(keys: &[u8]) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(keys).await.ok()?;
    drop(stdin);
    let out = child.wait_with_output().await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "256 SHA256:abc… [127.0.0.1]:2222 (ED25519)" → "ED25519 SHA256:abc…"
    let prints: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let print = fields.get(1)?;
            let kind = fields.last()?.trim_matches(|c| c == '(' || c == ')');
            Some(format!("{kind} {print}"))
        })
        .collect();
    (!prints.is_empty()).then(|| prints.join(", "))
}

/// The kind of an SFTP operation's failure. Anything but the server's own status reply
/// means the connection is gone: [`RemoteFailure::Network`], retried on a new one.
pub fn failure_of(e: &SftpError) -> RemoteFailure {
    match e {
        SftpError::SftpError(kind, _) => match kind {
            SftpErrorKind::NoSuchFile => RemoteFailure::Missing,
            SftpErrorKind::PermDenied => RemoteFailure::Credentials,
            _ => RemoteFailure::Other,
        },
        _ => RemoteFailure::Network,
    }
}

/// Whether `e` leaves the connection unusable (then a new one is opened).
pub fn connection_lost(e: &SftpError) -> bool {
    failure_of(e) == RemoteFailure::Network
}

/// The server's words for a status reply; the error's text otherwise.
pub fn describe(e: &SftpError) -> String {
    match e {
        SftpError::SftpError(kind, msg) => {
            let (text, _) = msg.get();
            format!("{kind:?}: {text}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Ciphers=` value is one comma-separated list (no blanks from the source's line
    /// breaks: ssh would refuse it) holding exactly OpenSSH's default set.
    #[test]
    fn the_cipher_preference_reorders_openssh_defaults_only() {
        let list = cipher_preference();
        assert!(!list.contains(char::is_whitespace), "{list}");
        let mut got: Vec<&str> = list.split(',').collect();
        let first = got[0];
        let expected_first = if has_aes_instructions() {
            "aes128-gcm@openssh.com"
        } else {
            "chacha20-poly1305@openssh.com"
        };
        assert_eq!(first, expected_first);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                "aes128-ctr",
                "aes128-gcm@openssh.com",
                "aes192-ctr",
                "aes256-ctr",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
            ]
        );
    }
}
