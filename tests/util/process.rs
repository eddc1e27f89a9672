//! Running the real binary and other tools: `Run` (a finished process with its output),
//! `Spawned` (a background process whose output can be read while it runs), deadlines,
//! and polling without fixed sleeps.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vertex-backup");

/// How long any single run of the binary may take before the test gives up on it. Far
/// above what any run needs; it only turns a hang (e.g. a blocked read on a FIFO) into a
/// failure instead of a stuck test run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Polling

/// Call `cond` until it returns true; panic naming `what` once `timeout` has passed.
/// The short sleep between calls is only to avoid spinning, never a synchronisation.
pub fn poll_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll_for(timeout, what, || cond().then_some(()))
}

/// Call `probe` until it returns `Some`, and return that value; panic after `timeout`.
pub fn poll_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// The outcome of one run of the binary.
#[derive(Debug, Clone)]
pub struct Run {
    /// The program and its arguments.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code; `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Panic with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// stdout parsed as JSON (panics with the output if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }

    /// Both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// A process of the binary running in the background. Its output goes to anonymous temp
/// files (never pipes, so it can never block on a full pipe). Killed when dropped.
pub struct Spawned {
    pub child: Child,
    args: Vec<String>,
    out: File,
    err: File,
    status: Option<ExitStatus>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(st) => {
                self.status = Some(st);
                false
            }
            None => true,
        }
    }

    /// Send `sig` (e.g. `libc::SIGKILL`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Wait (polling, with a deadline) for the process to exit and collect its output.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let what = format!("`{}` to exit", self.args.join(" "));
        poll_until(timeout, &what, || !self.is_running());
        let status = self.status.expect("exited");
        let run = Run {
            args: self.args.clone(),
            status,
            stdout: read_all(&mut self.out),
            stderr: read_all(&mut self.err),
        };
        assert_no_secret(&run.describe(), &run.stdout);
        assert_no_secret(&run.describe(), &run.stderr);
        run
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A process never waited for (a daemon killed at the end of a test) is checked
        // for leaked secrets too; not while unwinding, where a second panic would abort.
        if !thread::panicking() {
            assert_no_secret(&self.args.join(" "), &read_at_start(&self.out));
            assert_no_secret(&self.args.join(" "), &read_at_start(&self.err));
        }
    }
}

fn read_all(f: &mut File) -> String {
    let mut s = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek output");
    f.read_to_end(&mut s).expect("read output");
    String::from_utf8_lossy(&s).into_owned()
}

/// Start `cmd` in the background with its output captured.
pub fn spawn(mut cmd: Command) -> Spawned {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args[0]));
    Spawned {
        child,
        args,
        out,
        err,
        status: None,
    }
}

/// Run `cmd` to completion (at most [`RUN_TIMEOUT`]).
pub fn run(cmd: Command) -> Run {
    spawn(cmd).wait(RUN_TIMEOUT)
}

/// Make the child start with `mask` as its umask (the test process keeps its own).
pub fn with_umask(cmd: &mut Command, mask: u32) -> &mut Command {
    // SAFETY: umask(2) is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        });
    }
    cmd
}

/// Run an external tool (tar, zstd, sha256sum, sqlite3) and return its output.
pub fn tool<I, S>(program: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = Command::new(program);
    cmd.args(&args);
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    let mut out_r = out.try_clone().expect("clone");
    let mut err_r = err.try_clone().expect("clone");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Run {
        args: std::iter::once(program.to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect(),
        status,
        stdout: read_all(&mut out_r),
        stderr: read_all(&mut err_r),
    }
}

impl Spawned {
    /// Everything the process has written to stderr so far. Reads with `pread`, so the
    /// file offset the child shares with us is never moved (a seek would make the child's
    /// next write land in the middle of the file).
    pub fn stderr_so_far(&self) -> String {
        let text = read_at_start(&self.err);
        assert_no_secret(&self.args.join(" "), &text);
        text
    }

    /// Everything the process has written to stdout so far (see [`Self::stderr_so_far`]).
    pub fn stdout_so_far(&self) -> String {
        let text = read_at_start(&self.out);
        assert_no_secret(&self.args.join(" "), &text);
        text
    }
}

// ---------------------------------------------------------------------------------------
// Secrets

/// The secret parts of every token the tests put into a config (a Telegram bot token's
/// part after the colon, the API token). None may appear in anything the binary writes:
/// its stdout and stderr (checked for every run and every daemon, see [`Spawned`]) and
/// the files of its backup directory (checked when a [`TestApp`] is dropped). Ping URLs
/// (tests/healthchecks.rs) carry a check UUID, a ping key and a push token.
pub const TEST_SECRETS: &[&str] = &[
    "TESTsecretTOKENvalueXYZ",
    "api-token-0123456789abcdef",
    "7e57a5ec-0bad-4bad-8bad-7e57a5ec0001",
    "TESTpingKEYsecret42",
    "TESTkumaPUSHtoken77",
    // tests/fixtures/age: the age test identities.
    "AGE-SECRET-KEY-1VTF3S4FJ4XWPJA9G9HKKWFVWCEHF8JHMHAEXSLLZJVCNLFMTE3LSYQQY3C",
    "AGE-SECRET-KEY-1QY2QEQDLJ0ZLU05KCVDUU7M6EQX2T4VVN9J72L2MR6TT6KUCG4TQ6S76MZ",
    "AGE-SECRET-KEY-1G89RLHA56XSUFJ24K6A7SRJRHLKGCFSW5U82PQUYVSJ0UNJ4MGCQVJY4YD",
];

/// Panic naming the secret and where it leaked, if `text` holds one of [`TEST_SECRETS`].
#[track_caller]
pub fn assert_no_secret(source: &str, text: &str) {
    for secret in TEST_SECRETS {
        assert!(
            !text.contains(secret),
            "a test secret ({secret}) leaked into the output of {source}:\n{text}"
        );
    }
}

fn read_at_start(f: &File) -> String {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64).expect("read output");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Call `cond` repeatedly for `duration`; panic naming `what` as soon as it is false.
/// For "nothing more happens" checks: the window is the assertion, not a synchronisation.
#[track_caller]
pub fn assert_holds_for(duration: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + duration;
    loop {
        assert!(cond(), "no longer true: {what}");
        if Instant::now() >= end {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
