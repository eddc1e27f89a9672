//! A running `vertex-backup daemon` for the tests (`Daemon`: spawn, wait for READY=1,
//! poll its logs with deadlines, stop it with SIGTERM) and the `NOTIFY_SOCKET` listener
//! that plays systemd's part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

/// From spawn to `READY=1`: the daemon does almost nothing before it.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// From SIGTERM to exit when no slow job runs.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Every job the daemon schedules, in `[schedule]` order.
pub const JOBS: [&str; 5] = ["full", "database", "storage", "rotate", "verify"];

/// The standard test config (with `backup_lines` in `[backup]`) plus a `[schedule]` in
/// UTC with a 1 s shutdown grace: each job in `jobs` with its cron line, every other job
/// "off", then `extra` lines (more `[schedule]` keys or sections).
pub fn schedule_config(
    app: &TestApp,
    backup_lines: &str,
    jobs: &[(&str, &str)],
    extra: &str,
) -> String {
    for (job, _) in jobs {
        assert!(JOBS.contains(job), "unknown job {job}");
    }
    let mut s = String::from("[schedule]\ntimezone = \"UTC\"\nshutdown_grace = \"1s\"\n");
    for job in JOBS {
        let expr = jobs
            .iter()
            .find(|(j, _)| *j == job)
            .map_or("off", |(_, e)| *e);
        s.push_str(&format!("{job} = \"{expr}\"\n"));
    }
    s.push_str(extra);
    app.config_text(backup_lines, &s)
}

/// A running `vertex-backup daemon` with its notify socket.
pub struct Daemon<'a> {
    pub app: &'a TestApp,
    pub proc: Spawned,
    pub notify: NotifyListener,
}

impl<'a> Daemon<'a> {
    /// `vertex-backup --config … daemon` with `NOTIFY_SOCKET` set, not yet waited for.
    pub fn spawn(app: &'a TestApp) -> Daemon<'a> {
        Self::spawn_with(app, |_| {})
    }

    /// [`Daemon::spawn`] with `configure` applied to the command first (environment,
    /// resource limits).
    pub fn spawn_with(app: &'a TestApp, configure: impl FnOnce(&mut Command)) -> Daemon<'a> {
        let notify = NotifyListener::bind();
        let mut cmd = app.command(["daemon"]);
        configure(&mut cmd);
        cmd.env("NOTIFY_SOCKET", notify.path())
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM");
        Daemon {
            app,
            proc: spawn(cmd),
            notify,
        }
    }

    /// Start the daemon and wait for `READY=1`.
    pub fn start(app: &'a TestApp) -> Daemon<'a> {
        Self::start_with(app, |_| {})
    }

    /// [`Daemon::start`] with `configure` applied to the command first.
    pub fn start_with(app: &'a TestApp, configure: impl FnOnce(&mut Command)) -> Daemon<'a> {
        let mut d = Self::spawn_with(app, configure);
        d.poll(START_TIMEOUT, "READY=1 on the notify socket", |d| {
            d.notify.find_line(0, "READY=1").is_some()
        });
        d
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr_so_far()
    }

    /// stderr and backup.log together: what an operator would search.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.stderr(), self.app.backup_log())
    }

    /// Everything observable, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "--- daemon stderr ---\n{}\n--- backup.log ---\n{}\n--- notify datagrams ---\n{:#?}\n--- files under backups/ ---\n{:#?}",
            self.stderr(),
            self.app.backup_log(),
            self.notify.messages(),
            files_under(&self.app.backups)
        )
    }

    /// Poll `probe` until it returns `Some`; panic with everything observable after
    /// `timeout`, or as soon as the daemon exits.
    pub fn poll_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if !self.proc.is_running() {
                panic!(
                    "the daemon exited while waiting for {what}\n{}",
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn poll(&mut self, timeout: Duration, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        self.poll_for(timeout, what, |d| cond(d).then_some(()));
    }

    /// Assert that `cond` stays true (and the daemon keeps running) for `duration`.
    pub fn holds_for(
        &mut self,
        duration: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> bool,
    ) {
        let end = Instant::now() + duration;
        loop {
            if !cond(self) {
                panic!("no longer true: {what}\n{}", self.describe());
            }
            if !self.proc.is_running() {
                panic!("the daemon exited while {what}\n{}", self.describe());
            }
            if Instant::now() >= end {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait at most `timeout` for the process to exit; panic with everything otherwise.
    pub fn wait_exit(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        while self.proc.is_running() {
            if Instant::now() >= deadline {
                panic!(
                    "the daemon still runs {timeout:?} later\n{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.proc.wait(Duration::from_secs(1))
    }

    /// SIGTERM; the daemon must exit 0 within [`STOP_TIMEOUT`].
    pub fn stop(self) -> Run {
        self.signal(libc::SIGTERM);
        let app = self.app;
        let run = self.wait_exit(STOP_TIMEOUT);
        assert_eq!(
            run.code(),
            Some(0),
            "the daemon did not exit 0 on SIGTERM\n{}\n--- backup.log ---\n{}",
            run.describe(),
            app.backup_log()
        );
        run
    }
}

/// A `NOTIFY_SOCKET` for a child, as systemd provides: a unix datagram socket bound to a
/// fresh temporary path, drained by a background thread (a full queue would block the
/// sender), every datagram kept in arrival order.
pub struct NotifyListener {
    path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Default for NotifyListener {
    fn default() -> Self {
        Self::bind()
    }
}

impl NotifyListener {
    pub fn bind() -> NotifyListener {
        use std::sync::atomic::Ordering;
        // A short path: sun_path holds at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("vb-notify-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s) = (messages.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while !s.load(Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    Ok(n) => m
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("recv on the notify socket: {e}"),
                }
            }
        });
        NotifyListener {
            path,
            messages,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram received so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Index of the first datagram at or after `from` with a line equal to `line`.
    pub fn find_line(&self, from: usize, line: &str) -> Option<usize> {
        self.find(from, |m| m.lines().any(|l| l == line))
    }

    /// Index of the first datagram at or after `from` that satisfies `pred`.
    pub fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        let messages = self.messages.lock().unwrap();
        (from..messages.len()).find(|&i| pred(&messages[i]))
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
