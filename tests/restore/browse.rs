//! `ls`: the entries of a storage backup and of a full backup's storage part, as text and
//! as JSON, with a PATH prefix filter; a database backup shows its tables instead.

use super::*;

/// The `entries` of an `ls --json` document.
fn entries(doc: &Value) -> Vec<Value> {
    doc["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array in {doc:#}"))
        .clone()
}

#[test]
fn ls_of_a_storage_backup_text_json_and_prefix() {
    let app = TestApp::new();
    let name = listed_name(&app.create("storage"));

    let r = app.run(["ls", name.as_str()]);
    r.assert_code(0);
    for file in [
        "client_1/images/portrait_1.jpg",
        "client_2/videos/video_2.mp4",
    ] {
        assert!(
            r.stdout.contains(file),
            "{file} not listed\n{}",
            r.describe()
        );
    }
    assert!(
        r.stdout.contains("client_1/images/"),
        "dirs end in /\n{}",
        r.describe()
    );

    let r = app.run(["ls", name.as_str(), "--json"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(jstr(&doc, "backup"), name);
    assert_eq!(jstr(&doc, "type"), "storage");
    let all = entries(&doc);
    let portrait = all
        .iter()
        .find(|e| e["path"] == "client_1/images/portrait_1.jpg")
        .unwrap_or_else(|| panic!("portrait_1 missing\n{}", r.describe()));
    assert_eq!(portrait["type"], "file");
    assert_eq!(portrait["size"], 20_000);
    let on_disk = fs::metadata(app.storage.join("client_1/images/portrait_1.jpg")).unwrap();
    assert_eq!(
        jstr(portrait, "mode"),
        format!("{:04o}", on_disk.permissions().mode() & 0o7777)
    );
    assert_eq!(portrait["mtime"], on_disk.mtime());
    assert!(
        all.iter()
            .any(|e| e["path"] == "client_2/images" && e["type"] == "dir")
    );

    // The prefix: client_1 and what is under it, nothing of client_2.
    let r = app.run(["ls", name.as_str(), "client_1/", "--json"]);
    r.assert_code(0);
    let some = entries(&r.json());
    assert!(
        !some.is_empty() && some.len() < all.len(),
        "{}",
        r.describe()
    );
    assert!(
        some.iter()
            .all(|e| e["path"].as_str().unwrap().starts_with("client_1")),
        "{}",
        r.describe()
    );
    let r = app.run(["ls", name.as_str(), "client_9"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("nothing under client_9"),
        "{}",
        r.describe()
    );
}

#[test]
fn ls_of_a_full_backup_lists_its_storage_part() {
    let app = TestApp::new();
    let name = listed_name(&app.create("full"));
    assert!(
        name.starts_with("full_backup_") && name.ends_with(".json"),
        "{name}"
    );

    let r = app.run(["ls", name.as_str(), "client_2", "--json"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(jstr(&doc, "type"), "full");
    assert!(jstr(&doc, "archive").contains("storage_backup_"), "{doc:#}");
    let paths: Vec<String> = entries(&doc)
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "client_2/nft_markers/portrait_2.fset"),
        "{paths:?}"
    );
    assert!(paths.iter().all(|p| p.starts_with("client_2")), "{paths:?}");

    // --latest (full by default) with the one positional as PATH.
    let r = app.run(["ls", "--latest", "full", "client_1/videos"]);
    r.assert_code(0);
    assert!(
        r.stdout.contains("client_1/videos/video_1.mp4"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("client_2"), "{}", r.describe());
}

#[test]
fn ls_of_a_database_backup_shows_its_tables() {
    let app = TestApp::new();
    let name = listed_name(&app.create("database"));
    let r = app.run(["ls", name.as_str()]);
    r.assert_code(0);
    assert!(
        r.stdout.contains("is a database backup"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("clients") && r.stdout.contains("3 rows"),
        "{}",
        r.describe()
    );
    let r = app.run(["ls", name.as_str(), "--json"]);
    r.assert_code(0);
    let doc = r.json();
    assert_eq!(jstr(&doc, "type"), "database");
    let clients = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "clients")
        .cloned()
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(clients["rows"], 3);
}
