//! Metadata that is complete and true, the full manifest, and `stats` against `list`.

use super::*;

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
