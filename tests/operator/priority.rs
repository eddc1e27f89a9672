//! `[backup] nice` and `io_class`: the backup runs (and its hooks, which inherit the
//! spawning thread's values, report) at the configured priority — from the CLI for the
//! process, from the daemon for the job's thread only.

use super::*;

/// A before hook writing its own `nice` and `ionice` output to `report`, atomically.
fn reporting_hook(report: &Path) -> String {
    let tmp = report.with_extension("tmp");
    format!(
        "[hooks]\nbefore = \"nice > '{t}' && ionice >> '{t}' && mv '{t}' '{r}'\"\n",
        t = tmp.display(),
        r = report.display()
    )
}

fn tools_present() -> bool {
    require(
        "the ionice and nice tools (util-linux, coreutils)",
        tool("sh", ["-c", "command -v ionice && command -v nice"])
            .code()
            .filter(|c| *c == 0)
            .map(|_| ())
            .ok_or_else(|| "not on PATH".to_string()),
    )
}

const PRIORITY: &str = "nice = 13\nio_class = \"idle\"";

#[test]
fn cli_backup_runs_at_the_configured_priority() {
    if !tools_present() {
        return;
    }
    let app = TestApp::new();
    let report = app.root.join("priority.txt");
    app.write_config_raw(&app.config_text(PRIORITY, &reporting_hook(&report)));
    app.create("database");
    assert_eq!(fs::read_to_string(&report).unwrap(), "13\nidle\n");

    // Without the keys, the defaults: nothing changed.
    app.write_config_raw(&app.config_text("", &reporting_hook(&report)));
    fs::remove_file(&report).unwrap();
    app.create("database");
    let normal = fs::read_to_string(&report).unwrap();
    assert!(
        normal.starts_with("0\n") && !normal.contains("idle"),
        "{normal}"
    );
}

#[test]
fn daemon_runs_its_jobs_at_the_configured_priority_and_nothing_else() {
    if !tools_present() {
        return;
    }
    let app = TestApp::new();
    let report = app.root.join("priority.txt");
    let text = crate::util::schedule_config(
        &app,
        "nice = 11\nio_class = \"best-effort\"",
        &[("database", "*/1 * * * * *")],
        &reporting_hook(&report),
    );
    app.write_config_raw(&text);
    let mut d = Daemon::start(&app);
    d.poll(WAIT_LIMIT, "a scheduled backup's before hook", |d| {
        d.app.root.join("priority.txt").exists()
    });
    assert_eq!(
        fs::read_to_string(&report).unwrap(),
        "11\nbest-effort: prio 7\n",
        "{}",
        d.describe()
    );
    // The daemon's main thread keeps its normal niceness (field 19 of /proc/PID/stat).
    let stat = fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let nice: i32 = after_comm.split(' ').nth(16).unwrap().parse().unwrap();
    assert_eq!(nice, 0, "the daemon itself was reniced: {stat}");
    d.stop();
}

#[test]
fn nice_out_of_range_is_a_config_error() {
    let app = TestApp::new();
    app.write_config("nice = 20");
    let r = app.run(["check-config"]);
    r.assert_code(2);
    assert!(r.stderr.contains("backup.nice"), "{}", r.describe());
    app.write_config("io_class = \"realtime\"");
    app.run(["check-config"]).assert_code(2);
}
