//! `create`, `list` and `stats` against the real binary (SPEC §2–4): consistent database
//! snapshots under a live writer, storage archives that stock GNU tar restores exactly,
//! truthful metadata, private permissions, crash safety, the lock, and clear failures
//! that leave nothing behind.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde_json::Value;

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// The data file a database/storage metadata names.
fn data_path(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// Open a database file read-only.
fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `PRAGMA integrity_check` rows.
fn integrity(conn: &Connection) -> Vec<String> {
    let mut st = conn.prepare("PRAGMA integrity_check").expect("prepare");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The `tar` flag that selects a compression, for extraction and listing.
fn tar_flag(compression: &str) -> Option<&'static str> {
    match compression {
        "zstd" => Some("--zstd"),
        "gzip" => Some("-z"),
        "none" => None,
        other => panic!("unknown compression {other}"),
    }
}

/// Entry names of an archive as `tar -t` lists them (trailing `/` of dirs removed).
fn tar_list(archive: &Path, compression: &str) -> Vec<String> {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(f) = tar_flag(compression) {
        args.push(f.as_ref());
    }
    args.push("-tf".as_ref());
    args.push(archive.as_os_str());
    let r = tool("tar", args);
    r.assert_code(0);
    r.stdout
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// Number of non-directory entries (files and symlinks) under `dir`.
fn non_dir_entries(dir: &Path) -> u64 {
    files_under(dir).len() as u64
}

/// Assert that no backup and no temporary file exists: nothing under the per-type
/// directories, no `.partial` anywhere under the app root.
#[track_caller]
fn assert_nothing_written(app: &TestApp) {
    let files = app.backup_files();
    assert!(files.is_empty(), "files were left behind: {files:#?}");
    let partials: Vec<PathBuf> = files_under(&app.root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "temporary files left: {partials:#?}");
}

/// 1-based line of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
        + 1
}

// ---------------------------------------------------------------------------------------
// 1. The database under a live writer

/// One transaction of the "app": a client with a portrait, the client counter bumped in
/// the same transaction, and one view moved from portrait 1 to portrait 2.
fn app_write(conn: &mut Connection, i: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO clients (phone, name, created_at) VALUES (?1, 'live client', datetime('now'))",
        [format!("+7000{i:07}")],
    )?;
    let cid = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO portraits (client_id, image_path, permanent_link, view_count, created_at)
         VALUES (?1, 'storage/live.jpg', ?2, 0, datetime('now'))",
        rusqlite::params![cid, format!("live-{i}")],
    )?;
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'clients'",
        [],
    )?;
    tx.execute(
        "UPDATE portraits SET view_count = view_count - 1 WHERE id = 1",
        [],
    )?;
    tx.execute(
        "UPDATE portraits SET view_count = view_count + 1 WHERE id = 2",
        [],
    )?;
    tx.commit()
}

#[test]
fn database_backup_is_consistent_while_the_app_keeps_writing() {
    let app = TestApp::new();
    {
        let mut conn = app.open_db();
        // ~15 MB, so the copy is not instantaneous.
        add_clients(&mut conn, 20_000, 400);
        conn.execute_batch(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters SELECT 'clients', count(*) FROM clients;",
        )
        .expect("counters");
    }
    let base_clients = count(&app.open_db(), "SELECT count(*) FROM clients");
    let views = count(&app.open_db(), "SELECT sum(view_count) FROM portraits");

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, busy) = (stop.clone(), commits.clone(), busy.clone());
        let db = app.db.clone();
        thread::spawn(move || -> Result<(), String> {
            // The app's own connection: a short busy timeout, so that a backup holding a
            // lock for more than a moment shows up as SQLITE_BUSY here.
            let mut conn = Connection::open(&db).map_err(|e| e.to_string())?;
            conn.busy_timeout(Duration::from_millis(200))
                .map_err(|e| e.to_string())?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| e.to_string())?;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match app_write(&mut conn, i) {
                    Ok(()) => {
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err(format!("writer failed after {i} transactions: {e}")),
                }
            }
            Ok(())
        })
    };
    poll_until(Duration::from_secs(60), "the writer to commit", || {
        commits.load(Ordering::SeqCst) >= 20 || writer.is_finished()
    });
    assert!(!writer.is_finished(), "the writer stopped early");

    let before = commits.load(Ordering::SeqCst);
    let run = app.run(["create", "--type", "database", "--json"]);
    let after = commits.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread").expect("writer");
    run.assert_code(0);
    eprintln!(
        "writer: {before} commits before the backup, {} during it, {} busy",
        after - before,
        busy.load(Ordering::SeqCst)
    );

    assert!(
        after > before,
        "the app committed nothing while the backup ran ({before} commits before, {after} after): its writes were blocked"
    );
    assert_eq!(
        busy.load(Ordering::SeqCst),
        0,
        "the app's writer got SQLITE_BUSY while the backup ran"
    );

    let meta = run.json();
    let copy = data_path(&meta);
    assert_eq!(copy.parent(), Some(app.kind_dir("database").as_path()));
    // The copy is one self-contained file: no WAL beside it holds part of it.
    for sfx in ["-wal", "-shm", "-journal"] {
        let mut side = copy.as_os_str().to_owned();
        side.push(sfx);
        assert!(
            !Path::new(&side).exists(),
            "{} exists beside the copy",
            Path::new(&side).display()
        );
    }
    let conn = open_ro(&copy);
    assert_eq!(integrity(&conn), vec!["ok".to_string()]);
    let clients = count(&conn, "SELECT count(*) FROM clients");
    let counter = count(&conn, "SELECT value FROM counters WHERE name = 'clients'");
    assert_eq!(
        clients, counter,
        "the copy is not a transaction-consistent snapshot: {clients} clients but the counter says {counter}"
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM portraits"),
        clients,
        "each client has exactly one portrait in a consistent snapshot"
    );
    assert_eq!(
        count(&conn, "SELECT sum(view_count) FROM portraits"),
        views,
        "views moved between portraits must sum to a constant"
    );
    // The snapshot was taken while the backup ran, not before or after.
    let in_copy = (clients - base_clients) as u64;
    assert!(
        before <= in_copy && in_copy <= after + 1,
        "the copy holds {in_copy} app transactions; {before} were committed when the backup started and {after} when it ended"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM users"), 1);
    assert_eq!(app.list_of("database").len(), 1);
}

// ---------------------------------------------------------------------------------------
// 2. Storage round trip through GNU tar

/// A path (relative to storage) longer than 100 bytes, the old tar name limit.
fn long_rel_path() -> String {
    format!(
        "deep/{}/{}/file_with_a_long_name_beyond_the_ustar_limit.txt",
        "a".repeat(60),
        "b".repeat(60)
    )
}

/// Add every awkward kind of entry to the app's storage tree and give all entries fixed
/// modes and mtimes.
fn build_awkward_tree(app: &TestApp) {
    let s = &app.storage;
    app.write_storage_file(
        "client_1/videos/big_video.mp4",
        &random_bytes(7, (3 << 20) + 123),
    );
    app.write_storage_file("фото/портрет.jpg", &random_bytes(8, 4096));
    app.write_storage_file(
        "фото/подпапка/заметка — примечание.txt",
        "привет\n".as_bytes(),
    );
    app.write_storage_file("empty.bin", b"");
    fs::create_dir_all(s.join("empty_dir")).unwrap();
    fs::create_dir_all(s.join("nested/empty/leaf")).unwrap();
    let long = long_rel_path();
    assert!(long.len() > 100 && format!("storage/{long}").len() > 100);
    app.write_storage_file(&long, b"deep down\n");
    fs::create_dir_all(s.join("links")).unwrap();
    symlink(
        "../client_1/images/portrait_1.jpg",
        s.join("links/latest.jpg"),
    )
    .unwrap();
    let long_target = format!("../{long}");
    assert!(long_target.len() > 100);
    symlink(&long_target, s.join("links/deep_file")).unwrap();
    symlink("does/not/exist", s.join("links/dangling")).unwrap();
    app.write_storage_file("tools/regen.sh", b"#!/bin/sh\necho regen\n");
    app.write_storage_file("private/secret.txt", b"secret\n");
    let modes: &[(&str, u32)] = &[
        ("tools/regen.sh", 0o755),
        ("private/secret.txt", 0o600),
        ("private", 0o700),
        ("client_1/images/portrait_1.jpg", 0o640),
        ("client_2/nft_markers", 0o750),
        ("empty.bin", 0o444),
        ("empty_dir", 0o775),
    ];
    for (rel, mode) in modes {
        fs::set_permissions(s.join(rel), fs::Permissions::from_mode(*mode)).unwrap();
    }
    set_fixed_mtimes(s, 1_600_000_000);
}

fn storage_round_trip(compression: &str, extension: &str) {
    let app = TestApp::new();
    build_awkward_tree(&app);
    app.write_config(&format!("compression = \"{compression}\""));
    let meta = app.create("storage");
    let archive = data_path(&meta);
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("storage_backup_") && name.ends_with(extension),
        "archive name {name}"
    );
    assert_eq!(jstr(&meta, "compression"), compression);

    // Stock GNU tar extracts it, silently, and the tree is identical.
    let dest = app.root.join("extracted");
    fs::create_dir(&dest).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(f) = tar_flag(compression) {
        args.push(f.as_ref());
    }
    args.extend([
        "-xpf".as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        dest.as_os_str(),
    ]);
    let r = tool("tar", args);
    r.assert_code(0);
    assert!(
        r.stderr.trim().is_empty(),
        "tar complained:\n{}",
        r.describe()
    );
    assert_eq!(
        fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        vec![std::ffi::OsString::from("storage")],
        "the archive holds one top directory named like the storage directory"
    );
    assert_same_tree(&app.storage, &dest.join("storage"));

    // Spot checks that do not go through the snapshot code.
    let big = fs::read(dest.join("storage/client_1/videos/big_video.mp4")).unwrap();
    assert_eq!(big, random_bytes(7, (3 << 20) + 123));
    assert_eq!(
        fs::read_link(dest.join("storage/links/latest.jpg")).unwrap(),
        PathBuf::from("../client_1/images/portrait_1.jpg")
    );
    assert_eq!(
        fs::read(dest.join("storage/links/deep_file")).unwrap(),
        b"deep down\n",
        "the long relative symlink resolves inside the extracted tree"
    );
    assert!(dest.join("storage/empty_dir").is_dir());
    assert_eq!(
        fs::read(dest.join("storage").join(long_rel_path())).unwrap(),
        b"deep down\n"
    );
    let m = fs::metadata(dest.join("storage/tools/regen.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);

    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
    for entry in tar_list(&archive, compression) {
        assert!(
            entry == "storage" || entry.starts_with("storage/"),
            "entry {entry:?} is outside storage/"
        );
    }
    if compression == "zstd" {
        let t = tool("zstd", ["-q".as_ref(), "-t".as_ref(), archive.as_os_str()]);
        t.assert_code(0);
    }
    if compression == "gzip" {
        tool("gzip", ["-t".as_ref(), archive.as_os_str()]).assert_code(0);
    }
}

#[test]
fn storage_zstd_archive_round_trips_through_gnu_tar() {
    storage_round_trip("zstd", ".tar.zst");
}

#[test]
fn storage_gzip_archive_round_trips_through_gnu_tar() {
    storage_round_trip("gzip", ".tar.gz");
}

#[test]
fn storage_uncompressed_archive_round_trips_through_gnu_tar() {
    storage_round_trip("none", ".tar");
}

/// Media often lives on another disk, with the configured storage path a symlink to it.
/// The archive must hold the directory's tree, not the link.
#[test]
fn storage_path_that_is_a_symlink_archives_the_directory_behind_it() {
    let app = TestApp::new();
    build_awkward_tree(&app);
    let link = app.root.join("media");
    symlink(&app.storage, &link).unwrap();
    let text = app
        .config_text("", "")
        .replace("storage = \"storage\"", "storage = \"media\"");
    app.write_config_raw(&text);
    let meta = app.create("storage");
    let archive = data_path(&meta);

    let dest = app.root.join("extracted");
    fs::create_dir(&dest).unwrap();
    let r = tool(
        "tar",
        [
            "--zstd".as_ref(),
            "-xpf".as_ref(),
            archive.as_os_str(),
            "-C".as_ref(),
            dest.as_os_str(),
        ],
    );
    r.assert_code(0);
    let top: Vec<PathBuf> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(top.len(), 1, "{top:#?}");
    let m = fs::symlink_metadata(&top[0]).unwrap();
    assert!(
        m.file_type().is_dir(),
        "the archive's top entry {} is not a directory but {:?}",
        top[0].display(),
        m.file_type()
    );
    assert_same_tree(&app.storage, &top[0]);
    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
}

// ---------------------------------------------------------------------------------------
// 3. Metadata

const SEED_FIELDS: &[&str] = &[
    "timestamp",
    "type",
    "original_path",
    "backup_path",
    "file_size",
    "checksum",
    "created_at",
    "file_count",
];

const ADDED_FIELDS: &[&str] = &[
    "format_version",
    "checksum_algorithm",
    "compression",
    "duration_ms",
    "uncompressed_size",
    "tool_version",
    "hostname",
    "warnings",
];

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Fields every metadata file has, with their types and values that do not depend on the
/// backup type. `started` is a Unix time taken before the backup ran.
#[track_caller]
fn assert_common_metadata(meta: &Value, kind: &str, started: i64) {
    for f in SEED_FIELDS.iter().chain(ADDED_FIELDS) {
        assert!(meta.get(*f).is_some(), "metadata lacks `{f}`: {meta:#}");
    }
    assert_eq!(jstr(meta, "type"), kind);
    let ts = jstr(meta, "timestamp");
    let base = ts.get(..15).unwrap_or_default();
    assert!(
        base.len() == 15
            && base.as_bytes()[8] == b'_'
            && base
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit())
            && (ts.len() == 15 || ts[15..].starts_with('_')),
        "timestamp {ts:?} is not YYYYMMDD_HHMMSS[_N]"
    );
    let checksum = jstr(meta, "checksum");
    assert!(
        checksum.len() == 64
            && checksum
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "checksum {checksum:?} is not lower-case hex SHA-256"
    );
    ju64(meta, "file_size");
    ju64(meta, "file_count");
    ju64(meta, "duration_ms");
    ju64(meta, "uncompressed_size");
    assert!(ju64(meta, "format_version") >= 1);
    assert_eq!(jstr(meta, "checksum_algorithm"), "sha256");
    jstr(meta, "compression");
    assert_eq!(jstr(meta, "tool_version"), env!("CARGO_PKG_VERSION"));
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !host.is_empty() {
        assert_eq!(jstr(meta, "hostname"), host);
    } else {
        assert!(!jstr(meta, "hostname").is_empty());
    }
    assert!(meta["warnings"].is_array(), "warnings is not an array");

    let created = jstr(meta, "created_at");
    let t = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap_or_else(|e| panic!("created_at {created:?} is not RFC 3339: {e}"));
    let tail = created.as_bytes();
    let has_offset = created.ends_with('Z')
        || (tail.len() > 6
            && matches!(tail[tail.len() - 6], b'+' | b'-')
            && tail[tail.len() - 3] == b':');
    assert!(has_offset, "created_at {created:?} carries no UTC offset");
    let secs = t.timestamp();
    assert!(
        secs >= started - 1 && secs <= unix_now() + 1,
        "created_at {created} is not the time of this backup"
    );
    assert_eq!(
        t.format("%Y%m%d_%H%M%S").to_string(),
        base,
        "timestamp and created_at disagree"
    );
}

/// The data file a database/storage metadata describes: where it lies, its name, its size
/// and its checksum (computed here and by `sha256sum`), and the metadata file beside it
/// holding the same JSON.
#[track_caller]
fn assert_data_file(app: &TestApp, meta: &Value, dir: &str, prefix: &str, ext: &str) -> PathBuf {
    let path = data_path(meta);
    assert_eq!(path.parent(), Some(app.kind_dir(dir).as_path()));
    let ts = jstr(meta, "timestamp");
    assert_eq!(
        path.file_name().unwrap().to_string_lossy(),
        format!("{prefix}{ts}{ext}")
    );
    let len = fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert_eq!(
        ju64(meta, "file_size"),
        len,
        "file_size is not the file's size"
    );
    let ours = sha256_file(&path);
    assert_eq!(
        jstr(meta, "checksum"),
        ours,
        "checksum is not the SHA-256 of the file"
    );
    assert_eq!(sha256sum_cli(&path), ours, "sha256sum disagrees");
    let meta_file = app.kind_dir(dir).join(format!("{prefix}{ts}.json"));
    let on_disk: Value = serde_json::from_slice(&fs::read(&meta_file).unwrap()).unwrap();
    assert_eq!(
        &on_disk,
        meta,
        "--json output differs from {}",
        meta_file.display()
    );
    path
}

#[test]
fn database_metadata_is_complete_and_true() {
    let app = TestApp::new();
    let started = unix_now();
    let meta = app.create("database");
    assert_common_metadata(&meta, "database", started);
    let path = assert_data_file(&app, &meta, "database", "db_backup_", ".db");
    assert_eq!(jstr(&meta, "original_path"), app.db.to_str().unwrap());
    assert_eq!(jstr(&meta, "compression"), "none");
    assert_eq!(ju64(&meta, "uncompressed_size"), ju64(&meta, "file_size"));
    assert!(meta["warnings"].as_array().unwrap().is_empty());
    if let Some(ic) = meta.get("integrity_check") {
        assert_eq!(ic, "ok");
    }
    // And it is the app's data.
    let conn = open_ro(&path);
    assert_eq!(count(&conn, "SELECT count(*) FROM clients"), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM videos"), 3);
    assert_eq!(
        conn.query_row("SELECT username FROM users WHERE id = 1", [], |r| r
            .get::<_, String>(0))
            .unwrap(),
        "admin"
    );
}

#[test]
fn storage_metadata_is_complete_and_true() {
    let app = TestApp::new();
    app.write_storage_file("client_1/videos/long.mp4", &random_bytes(77, 2 << 20));
    let started = unix_now();
    let meta = app.create("storage");
    assert_common_metadata(&meta, "storage", started);
    let path = assert_data_file(&app, &meta, "storage", "storage_backup_", ".tar.zst");
    assert_eq!(jstr(&meta, "original_path"), app.storage.to_str().unwrap());
    assert_eq!(jstr(&meta, "compression"), "zstd");
    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
    assert!(meta["warnings"].as_array().unwrap().is_empty());
    // uncompressed_size is the length of the tar stream inside.
    let mut dec = zstd::stream::read::Decoder::new(fs::File::open(&path).unwrap()).unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = dec.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(ju64(&meta, "uncompressed_size"), total);
    assert!(total > 2 << 20);
}

#[test]
fn full_manifest_names_both_parts_with_their_checksums() {
    let app = TestApp::new();
    let started = unix_now();
    let manifest = app.create("full");
    assert_common_metadata(&manifest, "full", started);
    let ts = jstr(&manifest, "timestamp").to_string();
    let stem = format!("full_backup_{ts}");
    let manifest_path = app.kind_dir("full").join(format!("{stem}.json"));
    assert_eq!(data_path(&manifest), manifest_path);
    let on_disk: Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);

    let parts = manifest["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no parts: {manifest:#}"));
    assert_eq!(parts.len(), 2, "{manifest:#}");
    let mut kinds: Vec<&str> = parts.iter().map(|p| jstr(p, "type")).collect();
    kinds.sort();
    assert_eq!(kinds, ["database", "storage"]);
    let mut total = 0;
    for part in parts {
        let kind = jstr(part, "type");
        let file_name = jstr(part, "file_name");
        let (prefix, ext) = if kind == "database" {
            ("db_backup_", ".db")
        } else {
            ("storage_backup_", ".tar.zst")
        };
        assert_eq!(
            file_name,
            format!("{prefix}{ts}{ext}"),
            "parts share the timestamp"
        );
        let file = app.kind_dir(kind).join(file_name);
        assert_eq!(
            jstr(part, "checksum"),
            sha256_file(&file),
            "{kind} part checksum"
        );
        assert_eq!(ju64(part, "file_size"), fs::metadata(&file).unwrap().len());
        total += ju64(part, "file_size");
        // The part's own metadata agrees and names its full backup.
        let meta: Value = serde_json::from_slice(
            &fs::read(app.kind_dir(kind).join(format!("{prefix}{ts}.json"))).unwrap(),
        )
        .unwrap();
        assert_common_metadata(&meta, kind, started);
        assert_data_file(&app, &meta, kind, prefix, ext);
        assert_eq!(jstr(&meta, "checksum"), jstr(part, "checksum"));
        assert_eq!(jstr(&meta, "part_of"), stem);
    }
    assert_eq!(ju64(&manifest, "file_size"), total);

    let rows = app.list();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["complete"], true, "{row:#}");
        match jstr(row, "type") {
            "full" => assert!(row.get("part_of").is_none_or(Value::is_null)),
            _ => assert_eq!(jstr(row, "part_of"), stem, "{row:#}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Permissions

#[test]
fn backups_are_private_even_with_umask_000() {
    // The umask really reaches the child.
    let mut probe = Command::new("sh");
    probe.args(["-c", "umask"]);
    with_umask(&mut probe, 0);
    assert_eq!(run(probe).stdout.trim(), "0000");

    let app = TestApp::new();
    fs::remove_dir(&app.backups).unwrap();
    for kind in ["full", "database", "storage"] {
        let mut cmd = app.command(["create", "--type", kind]);
        with_umask(&mut cmd, 0);
        run(cmd).assert_code(0);
    }
    let dirs = dirs_under(&app.backups);
    for kind in ["full", "database", "storage"] {
        assert!(dirs.contains(&app.kind_dir(kind)), "{dirs:#?}");
    }
    for d in dirs {
        let mode = fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    let files = files_under(&app.backups);
    let backups = app.backup_files();
    assert!(backups.len() >= 9, "{backups:#?}");
    for f in files {
        let m = fs::symlink_metadata(&f).unwrap();
        assert!(m.file_type().is_file(), "{} is not a file", f.display());
        let mode = m.mode() & 0o7777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

// ---------------------------------------------------------------------------------------
// 5. Two backups in one second

#[test]
fn two_backups_in_the_same_second_do_not_collide() {
    let app = TestApp::new();
    let mut made: Vec<Value> = Vec::new();
    let mut collided = false;
    for _ in 0..5 {
        // Start right after a second boundary, so both runs very likely share it.
        poll_until(Duration::from_secs(5), "a fresh second", || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_millis()
                < 100
        });
        let a = app.create("database");
        let b = app.create("database");
        collided = jstr(&a, "timestamp")[..15] == jstr(&b, "timestamp")[..15];
        made.push(a);
        made.push(b);
        if collided {
            break;
        }
    }
    assert!(collided, "never managed two backups within one second");
    let mut paths: Vec<PathBuf> = made.iter().map(data_path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), made.len(), "two backups share a file name");
    for m in &made {
        // Neither overwrote the other: each still matches its own metadata.
        assert_eq!(sha256_file(&data_path(m)), jstr(m, "checksum"));
    }
    let rows = app.list_of("database");
    assert_eq!(rows.len(), made.len(), "{rows:#?}");
    let mut names: Vec<&str> = rows.iter().map(|r| jstr(r, "name")).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), made.len());
    assert!(rows.iter().all(|r| r["complete"] == true), "{rows:#?}");
}

// ---------------------------------------------------------------------------------------
// 6 + 7. A crash mid-backup, and the lock

#[test]
fn killed_storage_backup_leaves_no_backup_and_the_next_run_cleans_up() {
    let app = TestApp::new();
    // ~150 MB of incompressible data: several seconds of work for a debug build.
    app.write_random_files("media", 15, 10 << 20);
    let storage_dir = app.kind_dir("storage");
    let mut child = app.spawn(["create", "--type", "storage"]);
    let partial = poll_for(
        Duration::from_secs(120),
        "a growing .partial archive",
        || {
            files_under(&storage_dir).into_iter().find(|p| {
                p.to_string_lossy().ends_with(".partial")
                    && fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
            })
        },
    );
    assert!(
        child.is_running(),
        "the backup finished before it could be killed"
    );

    // While it runs, a second mutating operation is refused, naming the holder.
    let second = app.run(["create", "--type", "database"]);
    second.assert_code(1);
    assert!(
        second.stderr.contains(&format!("pid {}", child.pid())),
        "the refusal does not name the running process:\n{}",
        second.describe()
    );
    assert!(files_under(&app.kind_dir("database")).is_empty());

    assert!(
        child.is_running(),
        "the backup finished before it could be killed"
    );
    child.signal(libc::SIGKILL);
    let killed = child.wait(Duration::from_secs(30));
    assert_eq!(
        killed.signal(),
        Some(libc::SIGKILL),
        "{}",
        killed.describe()
    );

    assert!(
        app.list_of("storage").is_empty(),
        "a killed backup is listed"
    );
    assert!(app.list().is_empty());
    assert!(
        partial.exists(),
        "the temporary file vanished without a run to clean it"
    );

    let meta = app.create("storage");
    let leftovers = app.partial_files();
    assert!(
        leftovers.is_empty(),
        "left after the next run: {leftovers:#?}"
    );
    let rows = app.list_of("storage");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["complete"], true);
    assert_eq!(jstr(&rows[0], "checksum"), jstr(&meta, "checksum"));
    let archive = data_path(&meta);
    assert_eq!(sha256_file(&archive), jstr(&meta, "checksum"));
    tool("zstd", ["-q".as_ref(), "-t".as_ref(), archive.as_os_str()]).assert_code(0);
    assert_eq!(ju64(&meta, "file_count"), non_dir_entries(&app.storage));
}

#[test]
fn create_while_the_lock_is_held_fails_naming_the_holder() {
    let app = TestApp::new();
    let lock_path = app.backups.join(".vertex-backup.lock");
    let holder = "pid 12345 running `create full` since 2026-11-27 03:00:00";
    let held = hold_flock(&lock_path, holder);

    let r = app.run(["create", "--type", "database"]);
    r.assert_code(1);
    assert!(r.stderr.contains("pid 12345"), "{}", r.describe());
    assert!(r.stderr.contains("create full"), "{}", r.describe());
    assert_nothing_written(&app);
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), holder);
    // Reads never wait for the lock.
    assert!(app.list().is_empty());
    app.stats();

    drop(held);
    app.create("database");
    assert_eq!(app.list().len(), 1);
}

// ---------------------------------------------------------------------------------------
// 8. Errors

#[test]
fn unknown_config_key_is_a_usage_error_naming_key_and_line() {
    let app = TestApp::new();
    let text = app.config_text("compresion = \"zstd\"", "");
    app.write_config_raw(&text);
    let line = line_of(&text, "compresion");
    for args in [
        &["create", "--type", "database"][..],
        &["check-config"][..],
        &["list"][..],
    ] {
        let r = app.run(args);
        r.assert_code(2);
        assert!(r.stderr.contains("compresion"), "{}", r.describe());
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "expected line {line}\n{}",
            r.describe()
        );
    }
    assert_nothing_written(&app);
}

#[test]
fn bad_cron_expression_is_a_usage_error_naming_its_line() {
    let app = TestApp::new();
    let text = app.config_text(
        "",
        "[schedule]\ndatabase = \"0 */6 * * *\"\nfull = \"0 25 * * *\"\n",
    );
    app.write_config_raw(&text);
    let line = line_of(&text, "full =");
    for args in [&["check-config"][..], &["create", "--type", "database"][..]] {
        let r = app.run(args);
        r.assert_code(2);
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "expected line {line}\n{}",
            r.describe()
        );
        assert!(r.stderr.contains("0 25 * * *"), "{}", r.describe());
    }
    assert_nothing_written(&app);
}

#[test]
fn missing_database_is_a_usage_error_naming_the_path() {
    let app = TestApp::new();
    for sfx in ["", "-wal", "-shm"] {
        let mut p = app.db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
    for kind in ["database", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(2);
        assert!(
            r.stderr.contains(app.db.to_str().unwrap()),
            "the error does not name {}\n{}",
            app.db.display(),
            r.describe()
        );
    }
    assert_nothing_written(&app);
    assert!(app.list().is_empty());
    assert!(!app.db.exists(), "the missing database was created");
}

#[test]
fn backup_dir_inside_storage_is_refused() {
    let app = TestApp::new();
    let text = app.config_text("", "").replace(
        "backup_dir = \"backups\"",
        "backup_dir = \"storage/backups\"",
    );
    app.write_config_raw(&text);
    let line = line_of(&text, "backup_dir");
    for kind in ["storage", "full", "database"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(2);
        assert!(r.stderr.contains("backup_dir"), "{}", r.describe());
        assert!(
            r.stderr.contains(&format!("line {line}")),
            "{}",
            r.describe()
        );
    }
    assert!(!app.storage.join("backups").exists());
    assert_nothing_written(&app);
}

#[test]
fn unusable_backup_dir_fails_naming_the_path() {
    let app = TestApp::new();
    // A regular file where a directory is needed: even root cannot create under it.
    let afile = app.root.join("afile");
    fs::write(&afile, b"not a directory\n").unwrap();
    let text = app
        .config_text("", "")
        .replace("backup_dir = \"backups\"", "backup_dir = \"afile/backups\"");
    app.write_config_raw(&text);
    let target = afile.join("backups");
    for kind in ["database", "storage", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(target.to_str().unwrap()),
            "the error does not name {}\n{}",
            target.display(),
            r.describe()
        );
    }
    assert_eq!(fs::read(&afile).unwrap(), b"not a directory\n");
    assert_nothing_written(&app);
}

#[test]
fn a_database_that_is_not_sqlite_fails_and_writes_nothing() {
    let app = TestApp::new();
    for sfx in ["-wal", "-shm"] {
        let mut p = app.db.as_os_str().to_owned();
        p.push(sfx);
        let _ = fs::remove_file(PathBuf::from(p));
    }
    let junk = "this is not a database\n".repeat(200);
    fs::write(&app.db, &junk).unwrap();
    for kind in ["database", "full"] {
        let r = app.run(["create", "--type", kind]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(app.db.to_str().unwrap()),
            "the error does not name {}\n{}",
            app.db.display(),
            r.describe()
        );
    }
    assert_eq!(
        fs::read_to_string(&app.db).unwrap(),
        junk,
        "the source was modified"
    );
    assert_nothing_written(&app);
    assert!(app.list().is_empty());
}

// ---------------------------------------------------------------------------------------
// 9. Excludes

#[test]
fn exclude_globs_keep_files_out_of_the_archive() {
    let app = TestApp::new();
    for rel in [
        "upload.tmp",
        "client_1/images/resize.tmp",
        "cache/thumb.jpg",
        "cache/deep/x.bin",
    ] {
        app.write_storage_file(rel, b"excluded");
    }
    let kept = [
        "client_1/notes.tmp.txt",
        "mycache/keep.bin",
        "client_1/cache.jpg",
        "client_1/images/portrait_1.jpg",
        "client_2/videos/video_2.mp4",
    ];
    for rel in &kept[..3] {
        app.write_storage_file(rel, b"kept");
    }
    app.write_config("exclude = [\"*.tmp\", \"cache/**\"]");
    let meta = app.create("storage");
    let entries = tar_list(&data_path(&meta), "zstd");
    for e in &entries {
        assert!(!e.ends_with(".tmp"), "{e} should be excluded");
        assert!(!e.starts_with("storage/cache/"), "{e} should be excluded");
    }
    for rel in kept {
        let name = format!("storage/{rel}");
        assert!(
            entries.contains(&name),
            "{name} is missing from {entries:#?}"
        );
    }
    // 6 files of the standard tree + 3 kept extras.
    assert_eq!(ju64(&meta, "file_count"), 9, "{entries:#?}");
}

// ---------------------------------------------------------------------------------------
// 10. Special files

#[test]
fn a_fifo_is_skipped_with_a_warning_and_exit_code_3() {
    let app = TestApp::new();
    mkfifo(&app.storage.join("client_1/app.pipe"));
    // A backup that opens the FIFO would block forever: give it a deadline.
    let r = app
        .spawn(["create", "--type", "storage"])
        .wait(Duration::from_secs(120));
    r.assert_code(3);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("app.pipe"),
        "{}",
        r.describe()
    );
    let rows = app.list_of("storage");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(row["complete"], true);
    let warnings = row["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|s| s.contains("app.pipe"))),
        "{row:#}"
    );
    let archive = PathBuf::from(jstr(row, "path"));
    let on_disk: Value =
        serde_json::from_slice(&fs::read(jstr(row, "metadata_path")).unwrap()).unwrap();
    assert!(!on_disk["warnings"].as_array().unwrap().is_empty());
    let entries = tar_list(&archive, "zstd");
    assert!(!entries.iter().any(|e| e.contains("app.pipe")));
    assert!(entries.contains(&"storage/client_1/images/portrait_1.jpg".to_string()));
    assert_eq!(ju64(row, "file_count"), 6);
}

// ---------------------------------------------------------------------------------------
// 11. Stats

#[test]
fn stats_agree_with_list() {
    let app = TestApp::new();
    app.write_storage_file("client_1/videos/long.mp4", &random_bytes(5, 3 << 20));
    app.create("database");
    app.create("storage");
    app.create("full");
    let rows = app.list();
    assert_eq!(rows.len(), 5, "{rows:#?}");
    let stats = app.stats();
    assert_eq!(
        ju64(&stats, "total_backups") as usize,
        rows.len(),
        "{stats:#}"
    );
    for kind in ["full", "database", "storage"] {
        let n = rows.iter().filter(|r| jstr(r, "type") == kind).count();
        assert_eq!(
            ju64(&stats, &format!("{kind}_backups")) as usize,
            n,
            "{kind}: {stats:#}"
        );
    }
    // Bytes on disk: every data file once (a full backup's size is that of its parts).
    let bytes: u64 = rows
        .iter()
        .filter(|r| jstr(r, "type") != "full")
        .map(|r| ju64(r, "file_size"))
        .sum();
    let on_disk: u64 = ["database", "storage"]
        .iter()
        .flat_map(|k| files_under(&app.kind_dir(k)))
        .filter(|p| p.extension().is_some_and(|e| e != "json"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(bytes, on_disk);
    let mb = stats["total_size_mb"]
        .as_f64()
        .unwrap_or_else(|| panic!("total_size_mb missing: {stats:#}"));
    let want = bytes as f64 / (1024.0 * 1024.0);
    assert!(
        (mb - want).abs() <= 0.01,
        "total_size_mb {mb} but the backups hold {want:.3} MiB"
    );
    assert!(mb > 5.0, "{mb}");
}
