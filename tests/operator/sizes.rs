//! Sizes and counts that mean what they say (issue 26, item 5): a snapshot shows what it
//! holds and, apart, what it added to the store — in `create`, `list` (the API's rows
//! are the same), `stats` and the event messages; the restore plan and result name the
//! same bytes; a push reports the bytes that reached the target.

use super::*;
use vertex_backup::units::format_bytes;

/// The storage tree's regular files: how many, and their bytes.
fn tree_files(app: &TestApp) -> (usize, u64) {
    let files = files_under(&app.storage);
    let bytes = files.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    (files.len(), bytes)
}

/// 3 MiB of random data in one file, and a small one.
fn fill(app: &TestApp) {
    app.write_storage_file("client_1/videos/v.mp4", &random_bytes(7, 3 << 20));
    app.write_storage_file("client_1/notes.txt", b"a small file\n");
}

#[test]
fn a_snapshot_shows_what_it_holds_and_apart_what_it_added_to_the_store() {
    let app = TestApp::new();
    fill(&app);
    app.write_config("storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"");
    let (_, bytes) = tree_files(&app);
    let created = app.run(["create", "--type", "full"]);
    created.assert_code(0);
    // Over 3 MiB of files: not the entry lists' few hundred bytes.
    let storage_part = created
        .stdout
        .lines()
        .find(|l| l.contains("part:") && l.contains("storage_snapshot"))
        .unwrap_or_else(|| panic!("{}", created.describe()));
    assert!(
        storage_part.contains(&format!("({} of data, entry list", format_bytes(bytes))),
        "{}",
        created.describe()
    );
    let first = created.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains("MiB added to the store"),
        "{}",
        created.describe()
    );

    // Nothing changed: the next one holds as much and adds almost nothing.
    let again = app.run(["create", "--type", "storage"]);
    again.assert_code(0);
    assert!(
        again.stdout.contains(&format!(
            "{} of data, 0 B added to the store",
            format_bytes(bytes)
        )),
        "{}",
        again.describe()
    );

    let rows = app.list_of("storage");
    let newest = &rows[0];
    assert_eq!(newest["size"], newest["uncompressed_size"], "{newest:#}");
    assert!(newest["size"].as_u64().unwrap() > 3 << 20, "{newest:#}");
    assert_eq!(newest["added_to_store"], 0, "{newest:#}");
    assert!(
        newest["file_size"].as_u64().unwrap() < 64 << 10,
        "{newest:#}"
    );
    let full = &app.list_of("full")[0];
    assert!(
        full["added_to_store"].as_u64().unwrap() > 3 << 20,
        "{full:#}"
    );

    let table = app.run(["list", "--type", "storage"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains(newest["name"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{}", table.describe()));
    assert!(
        line.contains(&format_bytes(bytes)) && line.contains("snapshot: 0 B added to the store"),
        "{line}"
    );

    let stats = app.stats();
    let storage = &stats["by_type"]["storage"];
    assert!(
        storage["snapshot_data"].as_u64().unwrap() > 6 << 20,
        "{stats:#}"
    );
    assert!(
        storage["newest"]["size"].as_u64().unwrap() > 3 << 20,
        "{stats:#}"
    );
    let added = storage["snapshot_added"].as_u64().unwrap();
    assert!(added > 3 << 20 && added < 4 << 20, "{stats:#}");
    let text = app.run(["stats"]);
    assert!(
        text.stdout.contains(&format!(
            "snapshots: {} of data, {} added to the store",
            format_bytes(2 * bytes),
            format_bytes(added)
        )),
        "{}",
        text.describe()
    );
}

#[test]
fn the_restore_plan_and_its_result_name_the_same_bytes() {
    for snapshot in [false, true] {
        let app = TestApp::new();
        fill(&app);
        if snapshot {
            app.write_config("storage_format = \"snapshot\"");
        }
        app.create("storage");
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("restored");
        let r = app.run([
            "restore".as_ref(),
            "--latest".as_ref(),
            "storage".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        r.assert_code(0);
        let (files, bytes) = tree_files(&app);
        let bytes = format!("{} of file data", format_bytes(bytes));
        let plan = r
            .stdout
            .lines()
            .find(|l| l.contains("extract "))
            .unwrap_or_else(|| panic!("no extract step:\n{}", r.describe()));
        let result = r
            .stdout
            .lines()
            .find(|l| l.starts_with("storage restored into"))
            .unwrap_or_else(|| panic!("no result:\n{}", r.describe()));
        assert!(
            plan.contains(&format!("{files} files and links")) && plan.contains(&bytes),
            "snapshot={snapshot}: {plan}"
        );
        assert!(
            result.contains(&format!("{files} of them files")) && result.contains(&bytes),
            "snapshot={snapshot}: {result}"
        );
    }
}

#[test]
fn a_push_reports_the_bytes_that_reached_the_target() {
    let app = TestApp::new();
    fill(&app);
    let nas = tempfile::tempdir().unwrap();
    app.write_config_raw(&app.config_text(
        "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"",
        &format!(
            "[[offsite]]\nname = \"nas\"\nurl = \"{}\"\n",
            nas.path().display()
        ),
    ));
    let on_target = || -> u64 {
        files_under(nas.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let mut before = on_target();
    for round in 0..3u64 {
        app.write_storage_file(
            &format!("client_2/new_{round}.bin"),
            &random_bytes(round + 50, 1 << 20),
        );
        app.run(["create", "--type", "full", "--no-offsite"])
            .assert_code(0);
        let pushed: Value = app.run(["offsite", "push", "--json"]).json();
        let sent: u64 = pushed[0]["push"]["uploaded"]
            .as_array()
            .unwrap_or_else(|| panic!("{pushed:#}"))
            .iter()
            .map(|u| u["bytes"].as_u64().unwrap())
            .sum();
        let after = on_target();
        // Locks and the owner marker come and go; the rest is what was sent.
        let markers: u64 = files_under(&nas.path().join("vertex-backup"))
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(
            sent,
            after - before - if round == 0 { markers } else { 0 },
            "round {round}: {pushed:#}"
        );
        before = after;
    }
}
