//! Snapshots (issue 16, docs/design.md §4) against the real binary: `storage_format` and
//! `database_format = "snapshot"`. Round trips of a tree with every kind of entry (odd
//! names, modes, links, a sparse file, a file large enough to be cut) through restore,
//! `--path`, `export` read back by GNU tar, and an incremental second snapshot that reads
//! only what changed and that `diff` describes exactly; database snapshots under a live
//! writer that store only the pages a change touched; a lost or damaged pack named with
//! every snapshot and file it costs, and a restore of such a snapshot refused before it
//! touches the live tree; SIGKILL anywhere in `create` and `rotate` leaving only complete
//! snapshots and, after the next run, no pack that no snapshot lists; a committed
//! snapshot directory written by an earlier build that still lists, verifies and
//! restores; and the daemon taking scheduled snapshots.
//!
//! The content store is `backups/store/packs/<id[..2]>/<id>.pack`; a snapshot's metadata
//! lists the packs it needs (`snapshot.packs`), which `list --json` shows with the rest of
//! the metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

mod cleaning;
mod crash;
mod daemon;
mod damage;
mod database;
mod fixture;
mod parts;
mod repack;
mod repair;
mod repair_crash;
mod round_trips;

// ---------------------------------------------------------------------------------------
// Helpers local to these tests

/// The `[backup]` lines that make both parts snapshots.
pub(crate) const SNAPSHOT_LINES: &str =
    "storage_format = \"snapshot\"\ndatabase_format = \"snapshot\"";

/// A test app configured for snapshots (see [`SNAPSHOT_LINES`]).
pub(crate) fn snapshot_app() -> TestApp {
    let app = TestApp::new();
    app.write_config(SNAPSHOT_LINES);
    app
}

/// The data file (the entry list, `…tree.zst`) a snapshot's metadata names.
pub(crate) fn tree_of(meta: &Value) -> PathBuf {
    PathBuf::from(jstr(meta, "backup_path"))
}

/// The stem of a listed backup (`storage_snapshot_<ts>`), from its metadata path.
pub(crate) fn stem_of(row: &Value) -> String {
    Path::new(jstr(row, "metadata_path"))
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

/// The `snapshot` object of a snapshot's metadata (panics if it has none).
#[track_caller]
pub(crate) fn snap(meta: &Value) -> &Value {
    let s = &meta["snapshot"];
    assert!(s.is_object(), "no snapshot object in {meta:#}");
    s
}

/// The ids of the packs a snapshot's metadata lists.
pub(crate) fn packs_of(meta: &Value) -> BTreeSet<String> {
    snap(meta)["packs"]
        .as_array()
        .unwrap_or_else(|| panic!("snapshot.packs is not an array: {meta:#}"))
        .iter()
        .map(|p| jstr(p, "id").to_string())
        .collect()
}

/// Where the pack `id` lies.
pub(crate) fn pack_path(app: &TestApp, id: &str) -> PathBuf {
    app.backups
        .join("store/packs")
        .join(&id[..2])
        .join(format!("{id}.pack"))
}

/// Cut the file at `path` to half its length (a copy cut short, a disk that lost its end).
pub(crate) fn cut_in_half(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// Every file under the content store (packs and anything else), sorted.
pub(crate) fn store_files(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.backups.join("store"))
}

/// The ids of the packs on disk (`.pack` files in the store).
pub(crate) fn packs_on_disk(app: &TestApp) -> BTreeSet<String> {
    store_files(app)
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            name.strip_suffix(".pack").map(str::to_string)
        })
        .collect()
}

/// The ids of every pack some listed snapshot lists.
pub(crate) fn listed_packs(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r["snapshot"].is_object())
        .flat_map(packs_of)
        .collect()
}

/// The store holds exactly the packs listed snapshots list, nothing else (no `.partial`,
/// no unreferenced pack), every listed pack is there, and no temporary file is left
/// anywhere in the backup directory.
#[track_caller]
pub(crate) fn assert_store_exact(app: &TestApp, ctx: &str) {
    let rows = app.list();
    let listed = listed_packs(&rows);
    let on_disk = packs_on_disk(app);
    let unreferenced: Vec<&String> = on_disk.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&on_disk).collect();
    assert!(
        unreferenced.is_empty() && missing.is_empty(),
        "{ctx}: packs no snapshot lists: {unreferenced:?}; listed packs missing: {missing:?}"
    );
    let index_dir = app.backups.join("store/index");
    let other: Vec<PathBuf> = store_files(app)
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            let index = p.parent() == Some(index_dir.as_path())
                && (name.ends_with(".idx") || name.ends_with(".idx.age"));
            !name.ends_with(".pack") && !index && !name.ends_with("store/key.txt")
        })
        .collect();
    assert!(
        other.is_empty(),
        "{ctx}: not packs nor the index, in the store: {other:#?}"
    );
    crate::faults::assert_no_partials(&app.backups, ctx);
    // (A store written before the index existed has none until its next run.)
    if !index_dir.exists() {
        return;
    }
    let indexed = indexed_packs(app);
    assert_eq!(
        indexed, listed,
        "{ctx}: the index does not cover exactly the packs listed snapshots list"
    );
}

/// The ids of the packs the store's index covers (each file read by the library).
pub(crate) fn indexed_packs(app: &TestApp) -> BTreeSet<String> {
    use vertex_backup::engine::snapshot::{index, keys::Opening};
    let opening = Opening::new(None, &app.backups).expect("the store key");
    let mut packs = BTreeSet::new();
    for file in index::files(&app.backups).expect("list the index") {
        index::read(&file, &opening, &mut |_| true, &mut |p| {
            packs.insert(p.id.to_hex());
        })
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    packs
}

/// `restore BACKUP --target TARGET --yes [extra…]`, which must succeed.
#[track_caller]
pub(crate) fn restore_to(app: &TestApp, backup: &Path, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "restore".into(),
        backup.as_os_str().to_owned(),
        "--target".into(),
        target.as_os_str().to_owned(),
        "--yes".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let r = app.run(&args);
    r.assert_code(0);
    r
}

/// `verify … --json` reports, by backup name; the exit code is returned beside them.
#[track_caller]
pub(crate) fn verify_reports(
    app: &TestApp,
    args: &[&str],
) -> (Option<i32>, BTreeMap<String, Value>) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let r = app.run(&all);
    let reports = match r.json() {
        Value::Array(v) => v,
        other => panic!("verify --json is not an array: {other:#}\n{}", r.describe()),
    };
    let by_name = reports
        .into_iter()
        .map(|rep| (jstr(&rep, "name").to_string(), rep))
        .collect();
    (r.code(), by_name)
}

/// The failed checks' details of one verify report, joined (empty when it passed).
pub(crate) fn failure_text(report: &Value) -> String {
    report["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| c["ok"] == false)
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["detail"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// Copy a directory tree with `cp -a` (modes, times, links, sparse files kept).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    tool("cp", ["-a".as_ref(), from.as_os_str(), to.as_os_str()]).assert_code(0);
}
