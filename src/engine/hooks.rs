//! Operator hooks around a backup (SPEC §4): `before` (a failure stops the backup),
//! `after` (on success), `on_error` (on failure) — each a `sh -c` command with a timeout.
//! A hook runs in its own process group so a timeout kills everything it started.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// Run `command` with `env`, killing it after `timeout`. Its output goes to the log.
pub fn run_hook(
    name: &'static str,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<()> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own process group, so a timeout kills the hook and everything it started.
    cmd.process_group(0);
    let hook_error =
        |detail: String| Error::Refused(format!("the {name} hook `{command}` {detail}"));
    let mut child = cmd
        .spawn()
        .map_err(|e| hook_error(format!("could not start: {e}")))?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        let status = child.wait();
        let _ = tx.send((status, out));
    });
    let (status, output) = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: kill(2) on the hook's own process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = waiter.join();
            return Err(hook_error(format!(
                "did not finish within {} s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let _ = waiter.join();
    let output = output.trim();
    if !output.is_empty() {
        tracing::info!(
            "{name} hook output: {}",
            output.chars().take(2000).collect::<String>()
        );
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(hook_error(format!(
            "failed ({s}){}",
            if output.is_empty() {
                String::new()
            } else {
                format!(": {}", output.lines().last().unwrap_or_default())
            }
        ))),
        Err(e) => Err(hook_error(format!("could not be waited for: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_failure_and_timeout() {
        let env = [("VERTEX_BACKUP_TYPE", "database".to_string())];
        run_hook(
            "before",
            "test \"$VERTEX_BACKUP_TYPE\" = database",
            &env,
            Duration::from_secs(5),
        )
        .unwrap();
        let e = run_hook(
            "before",
            "echo nope >&2; exit 3",
            &env,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let started = std::time::Instant::now();
        let e = run_hook("after", "sleep 30", &env, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
