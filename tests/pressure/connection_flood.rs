//! More idle and half-sent connections than the API holds, against a daemon with a small
//! open-file limit: the daemon takes only its bound (a quarter of the limit), its
//! scheduled backups keep succeeding, idle connections are closed at the header-read
//! deadline, and `/health` answers a fresh connection.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;

use super::*;

/// The open-file limit the daemon is started with: soft below hard, which it raises.
const SOFT_NOFILE: libc::rlim_t = 128;
const HARD_NOFILE: libc::rlim_t = 256;
/// Connections opened: more than the hard limit, so holding all of them would exhaust it.
const FLOOD: usize = 300;
/// Generous deadline for the server's header-read timeout (10 s) to close a connection.
const HEADER_DEADLINE: Duration = Duration::from_secs(60);

/// `(soft, hard)` "Max open files" of a process, from /proc/PID/limits.
fn open_file_limits(pid: u32) -> (libc::rlim_t, libc::rlim_t) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no Max open files in\n{limits}"));
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

/// How many of the process's descriptors are sockets.
fn sockets_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(Result::ok)
        .filter(|e| {
            fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Whether the server closed `conn` (read gives end of file or a reset); reads what
/// it sent before (a 408 to a half-sent head).
fn closed_by_server(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_sent_connections_beyond_the_bound_starve_neither_backups_nor_health() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(
        &app,
        "",
        &[("database", "*/2 * * * * *")],
        &format!("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    ));
    let mut d = Daemon::start_with(&app, |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: SOFT_NOFILE,
                    rlim_max: HARD_NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = d.pid();
    assert_eq!(
        open_file_limits(pid),
        (HARD_NOFILE, HARD_NOFILE),
        "the daemon raises its soft open-file limit to the hard one"
    );
    let base = api_base(&mut d);
    let bound: usize = d.poll_for(Duration::from_secs(5), "the connection bound", |d| {
        let err = d.stderr();
        let at = err.find(" (at most ")?;
        err[at + " (at most ".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    assert_eq!(bound, HARD_NOFILE as usize / 4, "a quarter of the limit");
    let addr = base.trim_start_matches("http://").to_string();
    let sockets_before = sockets_of(pid);

    // The flood: two in three idle, one in three a request head cut short.
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| {
            let mut conn = TcpStream::connect(&addr).expect("connect");
            if i % 3 == 0 {
                conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .expect("half a head");
            }
            conn
        })
        .collect();
    let held = |d: &Daemon| {
        let extra = sockets_of(d.pid()).saturating_sub(sockets_before);
        // A transient notify socket may come and go beside the API's.
        assert!(
            extra <= bound + 2,
            "the daemon holds {extra} sockets more than before the flood (bound {bound})\n{}",
            d.describe()
        );
        extra
    };
    d.poll(Duration::from_secs(20), "the API to fill its bound", |d| {
        held(d) >= bound
    });

    // Scheduled backups still succeed: one that started while the bound was held.
    let successes =
        |d: &Daemon| lines_with(&d.app.backup_log(), "Backup completed successfully").len();
    let before = successes(&d);
    d.poll(JOB_TIMEOUT, "two more scheduled backups", |d| {
        held(d);
        let logs = d.logs();
        assert!(
            !logs.contains("Too many open files") && !logs.contains("FAILED"),
            "{}",
            d.describe()
        );
        successes(d) >= before + 2
    });

    // The header-read deadline closes the connections that never sent a whole head.
    for conn in &flood {
        conn.set_nonblocking(true).expect("nonblocking");
    }
    let mut closed = vec![false; FLOOD];
    d.poll(
        HEADER_DEADLINE,
        "the server to close idle connections",
        |d| {
            held(d);
            for (conn, closed) in flood.iter_mut().zip(closed.iter_mut()) {
                *closed = *closed || closed_by_server(conn);
            }
            closed.iter().filter(|c| **c).count() >= bound
        },
    );

    // Once the flood is gone, a fresh connection gets its answer.
    drop(flood);
    let http = http_client();
    d.poll(Duration::from_secs(30), "/health to answer", |_| {
        http.get(format!("{base}/health"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert_no_panic(&d);
    d.stop();
}
