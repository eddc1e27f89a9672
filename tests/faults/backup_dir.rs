//! The backup directory read-only, missing, or deleted while a backup writes into it.

use super::*;

// ---------------------------------------------------------------------------------------
// 3. The backup directory: read-only, vanished

/// Make `dir` and every directory under it read-only: a read-only bind mount as root
/// (root ignores modes), `chmod a-w` otherwise. The guard undoes it.
enum ReadOnly {
    Mounted(#[allow(dead_code)] Mount),
    Chmod(Vec<PathBuf>),
}

impl ReadOnly {
    fn make(dir: &Path) -> Result<ReadOnly, String> {
        if is_root() {
            return Mount::read_only_bind(dir).map(ReadOnly::Mounted);
        }
        let dirs = dirs_under(dir);
        for d in &dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o500))
                .map_err(|e| format!("chmod {}: {e}", d.display()))?;
        }
        Ok(ReadOnly::Chmod(dirs))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dirs) = self {
            for d in dirs {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o700));
            }
        }
    }
}

#[test]
fn a_read_only_backup_dir_fails_naming_the_path_and_keeps_older_backups() {
    let app = TestApp::new();
    app.create("database");
    app.create("storage");
    let older = backup_hashes(&app);
    let listed = app.list().len();
    let ro = ReadOnly::make(&app.backups).expect("make the backup dir read-only");

    for kind in ["database", "storage", "full"] {
        let ctx = format!("{kind} backup into a read-only backup dir");
        let r = app.run(["create", "--type", kind]);
        assert_fails_naming(&r, &[s(&app.backups)], &ctx);
        assert!(
            mentions_any(&r, &["Read-only file system", "Permission denied"]),
            "{ctx}: the cause is not named\n{}",
            r.describe()
        );
        assert_backups_unchanged(&app, &older, &ctx);
    }
    // Reads still work.
    assert_eq!(app.list().len(), listed);
    assert_all_verify(&app, "read-only backup dir");
    drop(ro);

    app.create("database");
    assert_eq!(app.list().len(), listed + 1);
    assert_only_listed_backups(&app, "after the backup dir became writable again");
}

#[test]
fn a_missing_backup_dir_under_a_read_only_parent_fails_and_is_recreated_when_possible() {
    let app = TestApp::new();
    let vault = app.root.join("vault");
    fs::create_dir(&vault).expect("mkdir vault");
    let text = app.config_text("", "").replace(
        "backup_dir = \"backups\"",
        "backup_dir = \"vault/a/backups\"",
    );
    app.write_config_raw(&text);
    let target = vault.join("a").join("backups");

    // (a) The whole path is gone and its parent is read-only: a clear error, nothing
    // written anywhere.
    {
        let _ro = ReadOnly::make(&vault).expect("make vault read-only");
        for kind in ["database", "storage", "full"] {
            let ctx = format!("{kind} backup under a read-only parent");
            let r = app.run(["create", "--type", kind]);
            assert_fails_naming(&r, &[s(&target)], &ctx);
            assert!(
                mentions_any(&r, &["Read-only file system", "Permission denied"]),
                "{ctx}: the cause is not named\n{}",
                r.describe()
            );
            assert!(
                files_under(&vault).is_empty(),
                "{ctx}: wrote into {vault:?}"
            );
        }
    }

    // (b) Deleted, with its parent missing too but creatable: created again (0700).
    let meta = app.create("database");
    assert!(jstr(&meta, "backup_path").starts_with(s(&target)));
    let mode = fs::metadata(&target)
        .expect("backup dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the recreated backup dir is {mode:o}");
    fs::remove_dir_all(vault.join("a")).expect("delete the backup dir and its parent");
    app.create("storage");
    let listed = app.list();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_all_verify(&app, "recreated backup dir");
}

#[test]
fn deleting_the_backup_dir_during_a_storage_backup_fails_cleanly_and_the_next_run_recreates_it() {
    let app = TestApp::new();
    // ~24 MiB of incompressible media: a run of a second or more in a debug build.
    app.write_random_files("media", 24, 1 << 20);
    let live = snapshot_tree(&app.storage);
    let storage_dir = app.kind_dir("storage");
    let mut child = app.spawn(["create", "--type", "storage"]);
    poll_until(
        Duration::from_secs(120),
        "a growing .partial archive",
        || {
            files_under(&storage_dir).iter().any(|p| {
                p.to_string_lossy().ends_with(".partial")
                    && fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20)
            })
        },
    );
    assert!(
        child.is_running(),
        "the backup finished before its directory could be deleted"
    );
    // The run may create a file between our readdir and rmdir: retry until it is gone.
    poll_until(
        Duration::from_secs(30),
        "the backup dir to be deleted",
        || match fs::remove_dir_all(&app.backups) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        },
    );
    let r = child.wait(RUN_DEADLINE);
    assert_fails_naming(
        &r,
        &[s(&app.backups), "No such file or directory"],
        "deleted backup dir",
    );
    // The hint names the directory that vanished, not the file that could not be made.
    let hint = format!("the directory {} does not exist", app.backups.display());
    assert!(
        r.stderr.contains(&hint),
        "no hint {hint:?}\n{}",
        r.describe()
    );
    assert_no_partials(&app.root, "after the failed run");
    assert_tree_matches(&live, &app.storage);

    // The next run creates the directory again and succeeds.
    let meta = app.create("storage");
    assert_eq!(
        sha256file_of(&meta),
        jstr(&meta, "checksum"),
        "the new archive does not match its metadata"
    );
    let mode = fs::metadata(&app.backups)
        .expect("backup dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(app.list().len(), 1);
    assert_only_listed_backups(&app, "after the backup dir was recreated");
    assert_all_verify(&app, "after the backup dir was recreated");
}

fn sha256file_of(meta: &Value) -> String {
    sha256sum_cli(Path::new(jstr(meta, "backup_path")))
}
