//! Encrypted snapshots (`encrypt = "all"` with `storage_format`/`database_format =
//! "snapshot"`, issue 16): every pack is an age file to the recipients that the stock
//! `age` CLI opens, entry lists are age files too (and carry the keyed chunk ids' key
//! inside); the server compares the next snapshot with its parent without any identity
//! (through the store key, 0600); restore needs an identity and is refused without one
//! before anything live changes; no plaintext pack, entry list or database copy is left.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use super::*;

const SNAPSHOTS: &str = "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"";

fn encrypted_snapshot_app() -> (TestApp, Keys) {
    let (app, keys) = encrypted_app();
    let section = format!(
        "[encryption]\nrecipients = [\"{}\", \"{}\"]\nencrypt = \"all\"\n",
        public_key("operator"),
        public_key("escrow")
    );
    app.write_config_raw(&app.config_text(SNAPSHOTS, &section));
    (app, keys)
}

/// Plaintext files an encrypted backup must not leave (the store key aside: it opens
/// entry lists only, and is the server's own).
fn plaintext(app: &TestApp) -> Vec<PathBuf> {
    let key = app.backups.join("store/key.txt");
    plaintext_files(app)
        .into_iter()
        .filter(|p| *p != key)
        .collect()
}

fn store_files(app: &TestApp, suffix: &str) -> Vec<PathBuf> {
    files_under(&app.backups.join("store"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[test]
fn encrypted_snapshots_compare_with_their_parent_without_a_key_and_restore_only_with_one() {
    if !has_age_cli() {
        return;
    }
    let (app, keys) = encrypted_snapshot_app();
    build_tree(&app);
    let db_at_backup = live_dump(&app);
    let first = app.create("full");
    assert_eq!(jstr(&first, "type"), "full");
    let sealed_packs = store_files(&app, ".pack.age");
    assert!(!sealed_packs.is_empty());
    assert!(store_files(&app, ".pack").is_empty(), "a plaintext pack");
    for pack in &sealed_packs {
        assert!(
            fs::read(pack)
                .unwrap()
                .starts_with(b"age-encryption.org/v1\n")
        );
    }
    let key_file = app.backups.join("store/key.txt");
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Nothing else in clear: each data file of a snapshot is an age file named `.age`.
    for row in app.list() {
        let path = data_path(&row);
        if jstr(&row, "type") != "full" {
            assert!(
                path.to_string_lossy().ends_with(".tree.zst.age"),
                "{}",
                path.display()
            );
            assert_eq!(row["format"]["encryption"]["scheme"], "age");
        }
    }
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));

    // The stock CLI opens a pack and an entry list (whose header carries the id key).
    let out = app.root.join("pack.plain");
    age_decrypt(&keys.escrow, &sealed_packs[0], &out);
    assert!(fs::metadata(&out).unwrap().len() > 0);
    let tree = app
        .list()
        .into_iter()
        .find(|r| jstr(r, "type") == "storage")
        .map(|r| data_path(&r))
        .unwrap();
    let tree_plain = app.root.join("tree.zst");
    age_decrypt(&keys.operator, &tree, &tree_plain);
    let lines = Command::new("zstd")
        .arg("-dc")
        .arg(&tree_plain)
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&lines.stdout);
    let header = header.lines().next().unwrap_or_default();
    assert!(header.contains("\"chunk_key\""), "{header}");

    // A second storage snapshot, with no identity anywhere: one new file is read, the
    // rest taken from the parent through the store key.
    app.write_storage_file("client_9/new.txt", b"a new file");
    let second = app.create("storage");
    let info = &second["snapshot"];
    assert_eq!(info["read_files"], 1, "{second:#}");
    assert!(info["unchanged_files"].as_u64().unwrap() > 3, "{second:#}");
    let tree_at_second = snapshot_tree(&app.storage);

    // Restore: refused without an identity (nothing live changes), done with one.
    change_db(&app);
    change_tree(&app);
    let before = live(&app);
    let refused = restore_with(&app, None, &data_path(&first), &[]);
    assert_ne!(refused.code(), Some(0), "{}", refused.describe());
    assert_live_unchanged(&app, &before, "a restore without an identity");
    restore_with(&app, Some(&keys.operator), &data_path(&first), &[]).assert_code(0);
    assert_eq!(live_dump(&app), db_at_backup);
    restore_with(&app, Some(&keys.escrow), &data_path(&second), &[]).assert_code(0);
    assert_tree_matches(&tree_at_second, &app.storage);
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));

    // verify: presence without a key, every chunk read back with one.
    app.run(["verify", "--latest", "storage"]).assert_code(0);
    let deep = app.run([
        "--identity".as_ref(),
        keys.operator.as_os_str(),
        "verify".as_ref(),
        "--all".as_ref(),
        "--read-data".as_ref(),
    ]);
    deep.assert_code(0);
}
