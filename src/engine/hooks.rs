//! Operator hooks around a backup (docs/design.md §3): `before` (a failure stops the backup),
//! `after` (on success), `on_error` (on failure) — each a `sh -c` command with a timeout.
//! A hook runs in its own process group so a timeout kills everything it started. Its
//! stdout and stderr are read at the same time (a hook that fills one pipe while we wait
//! on the other would block until its timeout) and kept as bytes (shown escaped), so
//! output that is not UTF-8 still reaches the log. A failing hook is an operation failure
//! (exit 1), never a usage error.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The most of a hook's output kept for the log and the error message.
const OUTPUT_LIMIT: usize = 64 * 1024;

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
    let hook_error = |detail: String| Error::Hook {
        hook: name,
        command: command.to_string(),
        detail,
    };
    let child = cmd
        .spawn()
        .map_err(|e| hook_error(format!("could not start: {e}")))?;
    let Some((status, output)) = wait_with_output(child, timeout) else {
        return Err(hook_error(format!(
            "did not finish within {} s and was killed",
            timeout.as_secs()
        )));
    };
    let output = shown_output(&output);
    if !output.is_empty() {
        tracing::info!("{name} hook output: {output}");
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(hook_error(format!(
            "failed ({s}){}",
            match output.lines().last() {
                Some(last) => format!(": {last}"),
                None => String::new(),
            }
        ))),
        Err(e) => Err(hook_error(format!("could not be waited for: {e}"))),
    }
}

/// Wait for the hook to exit and both its pipes to close, all within `timeout`; past it
/// the hook's process group is killed and `None` returned. Both pipes and the exit status
/// arrive on one channel, so one deadline bounds them all (a process the hook left in the
/// background may hold the pipes open).
fn wait_with_output(
    mut child: std::process::Child,
    timeout: Duration,
) -> Option<(std::io::Result<std::process::ExitStatus>, Vec<u8>)> {
    let pid = child.id() as libc::pid_t;
    let deadline = std::time::Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut readers = 0;
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        if let Some(pipe) = pipe {
            drain(i, pipe, tx.clone());
            readers += 1;
        }
    }
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(Piece::Exited(status));
    });
    let mut status = None;
    let mut outputs: [Vec<u8>; 2] = Default::default();
    while status.is_none() || readers > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Piece::Exited(s)) => status = Some(s),
            Ok(Piece::Output(i, bytes)) => {
                outputs[i] = bytes;
                readers -= 1;
            }
            Err(_) => {
                // SAFETY: kill(2) on the hook's own process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = waiter.join();
                return None;
            }
        }
    }
    let _ = waiter.join();
    let status = status.unwrap_or_else(|| Err(std::io::Error::other("no exit status")));
    Some((status, outputs.concat()))
}

/// What the hook's threads report: one pipe's output (0 stdout, 1 stderr), or its exit.
enum Piece {
    Output(usize, Vec<u8>),
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// Read a pipe to its end on a thread of its own, keeping the first [`OUTPUT_LIMIT`] bytes
/// (the rest is read and dropped, so the hook never blocks on a full pipe).
fn drain(index: usize, mut pipe: Box<dyn Read + Send>, tx: mpsc::Sender<Piece>) {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Piece::Output(index, kept));
    });
}

/// Output bytes as text for the log: trimmed, invalid UTF-8 and control characters
/// (other than newlines and tabs) escaped, so a hook cannot forge log lines.
fn shown_output(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn a_hook_filling_stderr_first_does_not_block() {
        // 256 KiB on stderr before anything on stdout: reading stdout to its end first
        // would leave the hook blocked on a full stderr pipe until the timeout.
        let e = run_hook(
            "before",
            "head -c 262144 /dev/zero | tr '\\0' x >&2; echo done-on-stdout; exit 4",
            &[],
            Duration::from_secs(20),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("exit status: 4"), "{text}");
        assert!(!text.contains("killed"), "{text}");
    }

    #[test]
    fn a_hook_leaving_a_child_on_its_pipes_is_killed_at_the_timeout() {
        let started = std::time::Instant::now();
        let e = run_hook(
            "after",
            "sleep 30 & echo started",
            &[],
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_that_is_not_utf8_is_kept_and_escaped() {
        let e = run_hook(
            "before",
            "printf 'bad \\377 byte\\033[2J\\n' >&2; exit 1",
            &[],
            Duration::from_secs(5),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bad \u{fffd} byte\\u{1b}[2J"), "{text}");
    }

    #[test]
    fn a_failing_hook_is_an_operation_failure_not_a_usage_error() {
        let e = run_hook("before", "exit 1", &[], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, Error::Hook { hook: "before", .. }), "{e:?}");
        assert!(!e.is_usage());
        assert!(e.hint().is_some_and(|h| h.contains("[hooks]")));
    }
}
