//! In-place storage restore against kills and mounts (issue 13, items 11–14): killed at
//! every rename of the swap (strace fault injection), the live path always names a whole
//! tree, and the next locked run (`create`) finishes or undoes the restore; the restored
//! tree is flushed (`syncfs`) before the live path changes; a killed restore's temporary
//! tree is named by `list` and removed by the next backup; storage on its own mount point
//! is refused before anything is touched.

use super::*;

/// What a tree holds, ignoring times and modes: enough to tell two trees apart.
fn contents(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot_tree(root)
        .into_iter()
        .map(|(p, n)| (p, format!("{:?}", n.kind)))
        .collect()
}

/// An app with a storage backup whose live tree has changed since: (app, backup, the
/// backed-up contents, the live contents).
type Prepared = (
    TestApp,
    PathBuf,
    BTreeMap<PathBuf, String>,
    BTreeMap<PathBuf, String>,
);

fn prepared() -> Prepared {
    let app = TestApp::new();
    app.write_random_files("media", 20, 16 << 10);
    let meta = app.create("storage");
    let restored = contents(&app.storage);
    app.write_storage_file("media/added_after_the_backup", b"new\n");
    fs::remove_file(app.storage.join("client_1/images/portrait_1.jpg")).unwrap();
    let live = contents(&app.storage);
    assert_ne!(restored, live);
    (
        app,
        PathBuf::from(jstr(&meta, "backup_path")),
        restored,
        live,
    )
}

/// `strace -f [-e inject=SYSCALL:signal=KILL:when=N] -e trace=TRACE BIN restore BACKUP --yes`.
fn strace_restore(
    app: &TestApp,
    backup: &Path,
    trace: &str,
    inject: Option<(&str, usize)>,
    log: &Path,
) -> Run {
    let args = ["restore".as_ref(), backup.as_os_str(), "--yes".as_ref()];
    run(super::crash::strace_command(app, &args, trace, inject, log))
}

/// The traced calls of a strace log, in order ("syscall(args) = result").
fn calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .expect("strace log")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, call)| call.trim().to_string()))
        .collect()
}

/// Paths beside the live storage tree whose names start with `prefix`.
fn beside_storage(app: &TestApp, prefix: &str) -> Vec<PathBuf> {
    fs::read_dir(&app.root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

const RENAMES: [&str; 3] = ["rename", "renameat", "renameat2"];

#[test]
fn an_in_place_restore_killed_at_any_rename_never_leaves_the_storage_path_missing() {
    if !require("strace, able to trace", super::crash::strace_usable()) {
        return;
    }
    let logs = tempfile::tempdir().expect("tempdir");
    let (app, backup, _, _) = prepared();
    let log = logs.path().join("unkilled.strace");
    strace_restore(&app, &backup, &RENAMES.join(","), None, &log).assert_code(0);
    let counted: Vec<(&str, usize)> = RENAMES
        .iter()
        .map(|s| {
            (
                *s,
                calls(&log)
                    .iter()
                    .filter(|c| c.starts_with(&format!("{s}(")))
                    .count(),
            )
        })
        .collect();
    let mut landed = Vec::new();
    for (syscall, count) in counted {
        for n in 1..=count {
            let ctx = format!("killed at {syscall} #{n} of {count}");
            let (app, backup, restored, live) = prepared();
            let log = logs.path().join(format!("{syscall}-{n}.strace"));
            let r = strace_restore(&app, &backup, syscall, Some((syscall, n)), &log);
            if r.code() == Some(0) {
                continue;
            }
            landed.push(ctx.clone());
            // The live path names a whole tree, the old or the restored one, at once.
            let now = contents(&app.storage);
            assert!(
                now == live || now == restored,
                "{ctx}: storage is neither tree: {now:#?}\n{}",
                r.describe()
            );
            // The next locked run brings the restore to one end or the other.
            app.create("database");
            let now = contents(&app.storage);
            let kept = beside_storage(&app, "storage.pre-restore-");
            if now == restored {
                assert_eq!(
                    kept.len(),
                    1,
                    "{ctx}: the replaced tree is not kept: {kept:?}"
                );
                assert_eq!(
                    contents(&kept[0]),
                    live,
                    "{ctx}: the kept tree is not the replaced one"
                );
            } else {
                assert_eq!(now, live, "{ctx}: storage changed after the repair");
                assert!(kept.is_empty(), "{ctx}: {kept:?}");
            }
            assert!(
                beside_storage(&app, ".storage.restore-").is_empty(),
                "{ctx}: temporary tree left"
            );
            assert!(
                !app.backups.join("restore-staging.json").exists(),
                "{ctx}: record left"
            );
        }
    }
    assert!(landed.len() >= 2, "too few kills landed: {landed:?}");
    eprintln!("{} kills: {landed:#?}", landed.len());
}

#[test]
fn the_restored_tree_is_flushed_before_it_is_swapped_in() {
    if !require("strace, able to trace", super::crash::strace_usable()) {
        return;
    }
    let logs = tempfile::tempdir().expect("tempdir");
    let (app, backup, restored, _) = prepared();
    let log = logs.path().join("restore.strace");
    // Quoted as strace prints it: the live path itself, not a name that starts with it.
    let storage = format!("\"{}\"", app.storage.display());
    strace_restore(
        &app,
        &backup,
        "rename,renameat,renameat2,syncfs,fsync,fdatasync",
        None,
        &log,
    )
    .assert_code(0);
    assert_eq!(contents(&app.storage), restored);
    let calls = calls(&log);
    // The first call that changes what the live path names.
    let swap = calls
        .iter()
        .position(|c| {
            RENAMES.iter().any(|s| c.starts_with(&format!("{s}("))) && c.contains(&storage)
        })
        .unwrap_or_else(|| panic!("no rename of {storage}: {calls:#?}"));
    assert!(
        calls[swap].contains("RENAME_EXCHANGE"),
        "the swap is not one exchange: {}",
        calls[swap]
    );
    assert!(
        calls[..swap]
            .iter()
            .any(|c| c.starts_with("syncfs(") && c.ends_with("= 0")),
        "nothing flushed the restored tree before the swap: {:#?}",
        &calls[..swap]
    );
}

#[test]
fn a_killed_restores_temporary_tree_is_listed_and_removed_by_the_next_backup() {
    if !require("strace, able to trace", super::crash::strace_usable()) {
        return;
    }
    let logs = tempfile::tempdir().expect("tempdir");
    let (app, backup, _, live) = prepared();
    // Killed while extracting: the first time it sets a restored file's times.
    let r = strace_restore(
        &app,
        &backup,
        "utimensat",
        Some(("utimensat", 1)),
        &logs.path().join("k.strace"),
    );
    assert!(r.code() != Some(0), "not killed\n{}", r.describe());
    let temp = beside_storage(&app, ".storage.restore-");
    assert_eq!(temp.len(), 1, "{temp:?}");
    let list = app.run(["list"]);
    list.assert_code(0);
    assert!(
        list.stdout.contains(&temp[0].display().to_string()),
        "list does not name the temporary tree {}\n{}",
        temp[0].display(),
        list.describe()
    );
    app.create("database");
    assert!(!temp[0].exists(), "the next backup left the temporary tree");
    assert_eq!(contents(&app.storage), live);
    let list = app.run(["list"]);
    assert!(
        !list.stdout.contains(".storage.restore-"),
        "{}",
        list.describe()
    );
}

#[test]
fn an_in_place_restore_of_storage_on_its_own_mount_is_refused_before_touching_anything() {
    if !require("root", root("mount a tmpfs")) {
        return;
    }
    let app = TestApp::new();
    let saved = app.root.join("saved");
    fs::rename(&app.storage, &saved).unwrap();
    fs::create_dir(&app.storage).unwrap();
    let _mount = match Mount::tmpfs(&app.storage, "16m") {
        Ok(m) => m,
        Err(why) => {
            require("a tmpfs mount", Err(why));
            return;
        }
    };
    assert!(
        system(
            "cp",
            &[
                "-a".as_ref(),
                saved.join(".").as_os_str(),
                app.storage.as_os_str()
            ]
        )
        .is_ok()
    );
    let meta = app.create("storage");
    app.write_storage_file("added_after_the_backup", b"new\n");
    let before = contents(&app.storage);
    let r = app.run(["restore", jstr(&meta, "backup_path"), "--yes"]);
    // Refused as asked, like a --target that exists: a usage error, nothing attempted.
    r.assert_code(2);
    assert!(
        r.stderr.contains("mount point") && r.stderr.contains("--target"),
        "no hint about the mount point\n{}",
        r.describe()
    );
    assert_eq!(contents(&app.storage), before, "the live tree changed");
    assert!(beside_storage(&app, ".storage.restore-").is_empty());
    assert!(beside_storage(&app, "storage.pre-restore-").is_empty());
}
