//! The daemon's scheduled storage backups with `storage_format = "snapshot"`: snapshots,
//! each after the first taking the unchanged tree from its parent unread.

use std::time::Duration;

use super::*;

/// Deadline for something a 2-second schedule must produce (a generous multiple).
const FEW_CYCLES: Duration = Duration::from_secs(20);

/// Complete storage snapshots `list` shows, oldest first.
fn storage_snapshots(app: &TestApp) -> Vec<Value> {
    let mut rows: Vec<Value> = app
        .list_of("storage")
        .into_iter()
        .filter(|r| r["complete"] == true && r["format"]["kind"] == "snapshot")
        .collect();
    rows.reverse();
    rows
}

#[test]
fn the_daemon_takes_scheduled_storage_snapshots() {
    let app = TestApp::new();
    app.write_config_raw(&schedule_config(
        &app,
        SNAPSHOT_LINES,
        &[("storage", "*/2 * * * * *")],
        "",
    ));
    let files = files_under(&app.storage).len() as u64;
    let mut d = Daemon::start(&app);
    d.poll(FEW_CYCLES, "two scheduled storage snapshots", |_| {
        storage_snapshots(&app).len() >= 2
    });
    d.stop();

    let rows = app.list();
    assert!(
        rows.iter()
            .all(|r| r["format"]["kind"] == "snapshot" && jstr(r, "type") == "storage"),
        "the daemon wrote something else than storage snapshots: {rows:#?}"
    );
    let snaps = storage_snapshots(&app);
    let (first, second) = (&snaps[0], &snaps[1]);
    assert!(
        jstr(first, "name").starts_with("storage_snapshot_"),
        "{first:#}"
    );
    assert_eq!(ju64(snap(first), "read_files"), files, "{first:#}");
    // Nothing changed between the runs: the second read nothing and stored nothing.
    assert_eq!(snap(second)["parent"], stem_of(first), "{second:#}");
    assert_eq!(ju64(snap(second), "read_files"), 0, "{second:#}");
    assert_eq!(ju64(snap(second), "unchanged_files"), files, "{second:#}");
    assert_eq!(ju64(snap(second), "added_bytes"), 0, "{second:#}");
    assert_eq!(packs_of(second), packs_of(first));
    app.run(["verify", "--all", "--read-data"]).assert_code(0);
    // A run the stop cut short may have left a pack; the next run's cleaning sweeps it.
    app.create("storage");
    assert_store_exact(&app, "after the daemon's snapshots and one more");
    let dest = app.root.join("restored");
    restore_to(&app, &PathBuf::from(jstr(second, "path")), &dest, &[]);
    assert_same_tree(&app.storage, &dest);
}
