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

/// `verify --all --read-data` with `identity`: every chunk read back.
fn verify_deep(app: &TestApp, identity: &std::path::Path) -> Run {
    app.run([
        "--identity".as_ref(),
        identity.as_os_str(),
        "verify".as_ref(),
        "--all".as_ref(),
        "--read-data".as_ref(),
    ])
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
    verify_deep(&app, &keys.operator).assert_code(0);
}

/// "Not checked" is not "failed": on the production server (`encrypt = "all"`, no identity)
/// `verify` checks what needs no key and records no verdict for the rest, so a good
/// database or full snapshot is never marked failed, `--latest` still picks it, and a
/// restore with the key restores it. A key that is not among the recipients is named as
/// such, not as a backup that cannot be trusted; damage found without a key still fails.
#[test]
fn without_a_key_verify_checks_what_it_can_and_never_fails_a_good_snapshot() {
    if !has_age_cli() {
        return;
    }
    let (app, keys) = encrypted_snapshot_app();
    build_tree(&app);
    let db_at_backup = live_dump(&app);
    let full = app.create("full");
    let verdicts = app.backups.join("vertex-backup.verify.json");
    let recorded_failures = || -> Vec<String> {
        let Ok(text) = fs::read_to_string(&verdicts) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["backups"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v["ok"] == false)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    };

    let run = app.run(["verify", "--all"]);
    run.assert_code(3);
    assert!(run.stdout.contains("PART"), "{}", run.describe());
    assert!(
        run.stdout.contains("SQLite integrity_check"),
        "{}",
        run.describe()
    );
    assert!(!run.stdout.contains("FAIL"), "{}", run.describe());
    assert!(
        run.stderr.contains("could not be fully checked"),
        "{}",
        run.describe()
    );
    let json = app.run(["verify", "--all", "--json"]);
    json.assert_code(3);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert!(!reports.is_empty());
    for r in &reports {
        assert_eq!(r["ok"], true, "{r:#}");
        let storage = r["type"] == "storage";
        assert_eq!(r["fully_checked"], storage, "{r:#}");
        assert!(
            r["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"].as_str().unwrap().ends_with("checksum")),
            "the ciphertext's checksum is checked without a key: {r:#}"
        );
    }
    assert_eq!(recorded_failures(), Vec::<String>::new());

    // A stranger's key: named as not a recipient; still no failed verdict.
    let stranger = app.run([
        "--identity".as_ref(),
        keys.stranger.as_os_str(),
        "verify".as_ref(),
        "--latest".as_ref(),
        "database".as_ref(),
    ]);
    stranger.assert_code(3);
    assert!(
        stranger
            .stdout
            .contains("this identity is not among the backup's recipients"),
        "{}",
        stranger.describe()
    );
    assert!(
        !stranger.stdout.contains("cannot be trusted"),
        "{}",
        stranger.describe()
    );
    assert_eq!(recorded_failures(), Vec::<String>::new());

    // `--latest full` is still this backup, and the key restores it.
    change_db(&app);
    let restored = app.run([
        "--identity".as_ref(),
        keys.operator.as_os_str(),
        "restore".as_ref(),
        "--latest".as_ref(),
        "full".as_ref(),
        "--yes".as_ref(),
    ]);
    restored.assert_code(0);
    let name = data_path(&full);
    let name = name.file_name().unwrap().to_string_lossy();
    assert!(restored.stdout.contains(&*name), "{}", restored.describe());
    assert_eq!(live_dump(&app), db_at_backup);

    // With the key, the verdict is a full one, and good.
    let keyed = app.run([
        "--identity".as_ref(),
        keys.operator.as_os_str(),
        "verify".as_ref(),
        "--all".as_ref(),
    ]);
    keyed.assert_code(0);

    // Damage needs no key to be found: a flipped byte in the database snapshot's sealed
    // entry list fails its checksum, and that failure is recorded.
    // The backup `--latest database` checks (not the restore's safety copy).
    let latest = app.run(["verify", "--latest", "database", "--json"]);
    let latest: Vec<serde_json::Value> = serde_json::from_str(&latest.stdout).unwrap();
    let db_tree = PathBuf::from(latest[0]["path"].as_str().unwrap());
    let mut bytes = fs::read(&db_tree).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    fs::write(&db_tree, &bytes).unwrap();
    let damaged = app.run(["verify", "--latest", "database"]);
    damaged.assert_code(1);
    assert!(damaged.stdout.contains("FAIL"), "{}", damaged.describe());
    assert!(!recorded_failures().is_empty());
}

/// `repair --json` with `identity`, if any: the exit code and report.
fn repair_with(app: &TestApp, identity: Option<&Path>, extra: &[&str]) -> (Option<i32>, Value) {
    let mut all: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(id) = identity {
        all.extend(["--identity".as_ref(), id.as_os_str()]);
    }
    all.extend([
        std::ffi::OsStr::new("repair"),
        std::ffi::OsStr::new("--json"),
    ]);
    all.extend(extra.iter().map(std::ffi::OsStr::new));
    let r = app.run(all);
    (r.code(), r.json())
}

#[test]
fn an_encrypted_store_is_repaired_without_a_key_and_indexed_from_its_trailers_with_one() {
    let (app, keys) = encrypted_snapshot_app();
    let s1 = app.create("storage");
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let s2 = app.create("storage");
    let packs = |m: &Value| -> Vec<String> {
        m["snapshot"]["packs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| jstr(p, "id").to_string())
            .collect()
    };
    let new: Vec<String> = packs(&s2)
        .into_iter()
        .filter(|p| !packs(&s1).contains(p))
        .collect();
    let lost = store_files(&app, ".pack.age")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&new[0]))
        .unwrap();
    fs::remove_file(lost).unwrap();
    fs::remove_dir_all(app.backups.join("store/index")).unwrap();

    // Without a key: the entry lists (opened by the store key) say what is lost and index
    // what is left; the mended list is sealed again, to the same recipients.
    let (code, report) = repair_with(&app, None, &[]);
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(
        report["backups"][0]["lost_files"],
        serde_json::json!(["client_3/images/portrait_3.jpg"]),
        "{report:#}"
    );
    assert_eq!(report["index"]["from_trailers"], 0, "{report:#}");
    assert_eq!(report["index"]["from_entry_lists"], 1, "{report:#}");
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));
    let repaired = app.list_of("storage").into_iter().next().unwrap();
    assert!(
        jstr(&repaired, "backup_path").ends_with(".tree.zst.age"),
        "{repaired:#}"
    );
    let verified = app.run([
        "--identity".as_ref(),
        keys.operator.as_os_str(),
        "verify".as_ref(),
        "--all".as_ref(),
        "--read-data".as_ref(),
    ]);
    verified.assert_code(0);

    // With a key, the sealed packs' trailers are read.
    fs::remove_dir_all(app.backups.join("store/index")).unwrap();
    let (code, report) = repair_with(&app, Some(&keys.escrow), &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["index"]["from_trailers"], 1, "{report:#}");
    assert_eq!(report["index"]["from_entry_lists"], 0, "{report:#}");
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));
}

/// Repacking an encrypted store: the server alone (no identity) cannot read a pack's
/// chunks, so rotation leaves the packs and says what would free them; with the
/// operator's identity the used chunks go into a new pack sealed to the same keys (the
/// `age` CLI opens it), the kept snapshot's entry list is sealed again, and it restores.
#[test]
fn an_encrypted_store_is_repacked_only_with_the_identity_and_stays_sealed() {
    if !has_age_cli() {
        return;
    }
    let (app, keys) = encrypted_snapshot_app();
    let section = format!(
        "[encryption]\nrecipients = [\"{}\", \"{}\"]\nencrypt = \"all\"\n\n[retention]\nkeep_last = 1\n",
        public_key("operator"),
        public_key("escrow")
    );
    app.write_config_raw(&app.config_text(SNAPSHOTS, &section));
    app.write_random_files("client_1/bulk", 20, 100 << 10);
    app.create("storage");
    for i in (0..20).step_by(2) {
        fs::remove_file(app.storage.join(format!("client_1/bulk/file_{i:03}.bin"))).unwrap();
    }
    let second = app.create("storage");
    let tree_at_second = snapshot_tree(&app.storage);
    let old = store_files(&app, ".pack.age");

    let report = app.run(["rotate", "--json"]).assert_code(0).json();
    let repack = &report["repack"];
    assert_eq!(repack["packs_rewritten"], 0, "{report:#}");
    assert!(
        repack["left"][0]
            .as_str()
            .unwrap_or_default()
            .contains("--identity"),
        "{report:#}"
    );
    assert_eq!(store_files(&app, ".pack.age"), old);

    let report = app
        .run([
            "--identity".as_ref(),
            keys.operator.as_os_str(),
            "rotate".as_ref(),
            "--json".as_ref(),
        ])
        .assert_code(0)
        .json();
    assert!(
        report["repack"]["packs_rewritten"].as_u64() >= Some(1),
        "{report:#}"
    );
    let now: Vec<PathBuf> = store_files(&app, ".pack.age");
    let new: Vec<&PathBuf> = now.iter().filter(|p| !old.contains(p)).collect();
    assert_eq!(new.len(), 1, "{now:?}");
    // Sealed to the same keys: the escrow key opens the new pack, which ends with its
    // trailer; no plaintext anywhere.
    let out = app.root.join("new.pack");
    age_decrypt(&keys.escrow, new[0], &out);
    assert!(fs::read(&out).unwrap().ends_with(b"VXPACKT1"));
    fs::remove_file(&out).unwrap();
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));
    let kept = app.list_of("storage");
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0]["earlier_checksums"][0], second["checksum"],
        "{:#}",
        kept[0]
    );
    assert_eq!(name_of(&kept[0]), name_of(&second));
    assert_ne!(kept[0]["checksum"], second["checksum"], "not rewritten");
    let tree_plain = app.root.join("tree.zst");
    age_decrypt(&keys.operator, &data_path(&kept[0]), &tree_plain);

    // The next snapshot compares with it through the store key, without an identity.
    let third = app.create("storage");
    assert_eq!(third["snapshot"]["read_files"], 0, "{third:#}");
    verify_deep(&app, &keys.operator).assert_code(0);
    restore_with(&app, Some(&keys.escrow), &data_path(&kept[0]), &[]).assert_code(0);
    assert_tree_matches(&tree_at_second, &app.storage);
}

/// Whether the stock `age` CLI opens `file` with `key`.
fn age_opens(key: &std::path::Path, file: &std::path::Path) -> bool {
    age_cli_decrypt(key, file, std::path::Path::new("/dev/null"))
        .status
        .success()
}

#[test]
fn an_encrypted_list_in_parts_is_walked_without_a_key_and_only_its_parts_open_with_the_store_key() {
    if !has_age_cli() {
        return;
    }
    let (app, keys) = encrypted_snapshot_app();
    // About 1 000 entries: a list cut into parts.
    app.write_small_files("tree", 40, 25);
    let s1 = app.create("storage");
    let parts = s1["snapshot"]["list_parts"].as_u64().unwrap_or(0);
    assert!(parts >= 10, "{s1:#}");
    // The server walks its parent through the parts with its own key alone.
    let s2 = app.create("storage");
    assert_eq!(s2["snapshot"]["read_files"].as_u64(), Some(0), "{s2:#}");
    assert_eq!(s2["snapshot"]["added_list_parts"].as_u64().unwrap_or(0), 0);
    assert_eq!(s2["snapshot"]["list_parts"].as_u64(), Some(parts));
    // The packs of parts open with the store key (and the operator's); the packs of file
    // data only with the recipients'.
    let store_key = app.backups.join("store/key.txt");
    let packs = store_files(&app, ".pack.age");
    let server_readable: Vec<&PathBuf> =
        packs.iter().filter(|p| age_opens(&store_key, p)).collect();
    assert_eq!(server_readable.len(), 1, "only the parts' pack: {packs:#?}");
    assert!(packs.iter().all(|p| age_opens(&keys.operator, p)));
    assert!(plaintext(&app).is_empty(), "{:?}", plaintext(&app));
    verify_deep(&app, &keys.operator).assert_code(0);
    let target = app.root.join("restored");
    restore_with(
        &app,
        Some(&keys.operator),
        Path::new(jstr(&s2, "backup_path")),
        &["--target", target.to_str().unwrap()],
    )
    .assert_code(0);
    assert_same_tree(&app.storage, &target);
}
