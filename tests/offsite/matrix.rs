//! The combination matrix (issue 24): every way an operator can combine the formats,
//! encryption, the kind of target and Object Lock, run through one scripted history
//! against the real S3 server (moto) and a path target:
//!
//! {storage archive, snapshot} × {database copy, snapshot} × {no encryption,
//! `encrypt = "offsite"`, `encrypt = "all"`} × {path, S3, S3 with Object Lock, SFTP} = 48
//! cells, each with local `keep_last = 2` and remote `keep_last = 3` (two cells with the
//! remote policy shorter than the local one). SFTP cells run against a real OpenSSH server
//! on loopback (`SshServer`).
//!
//! History: three fulls with changes between (each uploaded), `offsite push`, `offsite
//! verify`, `rotate` (snapshot cells with `max_unused = "0%"`: the store is repacked, and
//! every push after it brings the target's copies up to date), `offsite prune`; a fourth full kept local, then `offsite push`
//! (push + prune) SIGKILLed at a seeded moment — once the target has changed by a seeded
//! number of objects, a moment measured in the target's own state, not in time — then
//! `offsite push` again.
//!
//! Each cell ends with: `offsite list` shows no backup with a problem; another push sends
//! zero bytes; a fresh server with only the config (and an identity where the backups are
//! encrypted) restores the newest full byte-identical (storage tree and every database
//! row); and that restore passes over nothing (exit 0, not 3).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::SplitMix64;
use crate::offsite::composed::{SNAPSHOTS, change, complete_remote, push_bytes};
use crate::offsite::encrypted::encryption_section;
use crate::offsite::setup::{
    WRITERS_DIR, bucket_objects, path_table, restore_latest_from_remote, s3_table,
};
use crate::util::{
    RUN_TIMEOUT, S3Server, SshServer, TestApp, assert_same_tree, dump_db_file, poll_until,
    s3_server, ssh_server,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encryption {
    Off,
    Offsite,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Path,
    S3,
    S3Locked,
    Sftp,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    storage_snapshot: bool,
    database_snapshot: bool,
    encryption: Encryption,
    target: Where,
    /// The target's `keep_last` (the local one is 2).
    remote_keep: u32,
}

impl Cell {
    fn backup_lines(&self) -> String {
        let mut lines = Vec::new();
        if self.storage_snapshot {
            lines.push("storage_format = \"snapshot\"");
        }
        if self.database_snapshot {
            lines.push("database_format = \"snapshot\"");
        }
        if self.storage_snapshot || self.database_snapshot {
            // Repack every pack with a dead chunk: the history's rotation leaves the
            // first full backup's packs partly dead, and the pushes after it must bring
            // the target's copies up to date.
            lines.push("max_unused = \"0%\"");
        }
        debug_assert!(SNAPSHOTS.contains("storage_format"));
        lines.join("\n")
    }

    fn encryption_section(&self) -> String {
        match self.encryption {
            Encryption::Off => String::new(),
            Encryption::Offsite => encryption_section(),
            Encryption::All => format!("{}encrypt = \"all\"\n", encryption_section()),
        }
    }

    /// A stable seed per cell, so a failure names a moment that can be replayed.
    fn seed(&self) -> u64 {
        let bits = (self.storage_snapshot as u64)
            | (self.database_snapshot as u64) << 1
            | (self.encryption as u64) << 2
            | (self.target as u64) << 4
            | (self.remote_keep as u64) << 6;
        0x5eed_0024_0000_0000 | bits
    }
}

/// Where the cell's backups go: the table for a config, and how to read the target's
/// keys behind the code's back.
enum Target {
    Path(PathBuf),
    S3 {
        s3: S3Server,
        bucket: String,
        lock: bool,
    },
    /// The server, and the target's directory on it (on this machine: readable directly).
    Sftp(SshServer, PathBuf),
}

impl Target {
    fn table(&self, app: &TestApp, remote_keep: u32) -> String {
        let retention = format!("[offsite.retention]\nkeep_last = {remote_keep}\n");
        match self {
            Target::Path(dir) => path_table("remote", dir, &retention),
            Target::Sftp(server, dir) => server.table("remote", dir, &retention),
            Target::S3 { s3, bucket, lock } => {
                let lock = if *lock { "object_lock = \"1d\"\n" } else { "" };
                s3_table(
                    app,
                    "remote",
                    s3.endpoint(),
                    bucket,
                    &format!("{lock}{retention}"),
                )
            }
        }
    }

    /// Every backup object on the target (the owner marker and locks left out).
    fn keys(&self) -> BTreeSet<String> {
        match self {
            Target::Path(dir) | Target::Sftp(_, dir) => crate::util::files_under(dir)
                .into_iter()
                .filter_map(|p| Some(p.strip_prefix(dir).ok()?.to_str()?.to_string()))
                .filter(|k| !k.starts_with(WRITERS_DIR))
                .collect(),
            Target::S3 { s3, bucket, .. } => bucket_objects(s3, bucket)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        }
    }
}

fn configure(app: &TestApp, cell: &Cell, target: &Target) {
    let rest = format!(
        "[retention]\nkeep_last = 2\n\n{}\n{}",
        cell.encryption_section(),
        target.table(app, cell.remote_keep)
    );
    app.write_config_raw(&app.config_text(&cell.backup_lines(), &rest));
}

/// `offsite push` SIGKILLed once the target's keys differ from before by `after`
/// objects (added or removed); returns whether it was killed (it may end first).
fn push_killed_after(app: &TestApp, target: &Target, after: usize) -> bool {
    let before = target.keys();
    let mut push = app.spawn(["offsite", "push"]);
    poll_until(
        Duration::from_secs(120),
        &format!("{after} objects to change on the target, or the push to end"),
        || before.symmetric_difference(&target.keys()).count() >= after || !push.is_running(),
    );
    let killed = push.is_running();
    if killed {
        push.signal(libc::SIGKILL);
    }
    let run = push.wait(RUN_TIMEOUT);
    assert!(
        run.signal() == Some(libc::SIGKILL) || run.code() == Some(0),
        "killed after {after} objects: {}",
        run.describe()
    );
    killed
}

/// The whole history of one cell, and its checks.
fn run_cell(cell: Cell) {
    let s3 = match cell.target {
        Where::Path | Where::Sftp => None,
        Where::S3 | Where::S3Locked => match s3_server() {
            Some(s3) => Some(s3),
            None => return,
        },
    };
    let app = TestApp::new();
    app.write_random_files("client_1/videos", 3, 150 << 10);
    if cell.storage_snapshot {
        // Enough entries that a storage snapshot's entry list is stored in parts.
        app.write_small_files("client_2/notes", 12, 40);
    }
    let target = match (cell.target, s3) {
        (Where::Path, _) => {
            let dir = app.root.join("nas");
            std::fs::create_dir(&dir).expect("the target directory");
            Target::Path(dir)
        }
        (Where::Sftp, _) => {
            let Some(server) = ssh_server() else { return };
            let dir = server.directory("vertex-ar");
            Target::Sftp(server, dir)
        }
        (kind, Some(s3)) => {
            let lock = kind == Where::S3Locked;
            let bucket = if lock {
                s3.new_locked_bucket()
            } else {
                s3.new_bucket()
            };
            Target::S3 { s3, bucket, lock }
        }
        (_, None) => unreachable!("an S3 cell has a server"),
    };
    configure(&app, &cell, &target);
    let seed = cell.seed();
    let mut rng = SplitMix64(seed);
    let context = format!("{cell:?} (seed {seed:#x})");

    for round in 0..3 {
        change(&app, round);
        let run = app.run(["create", "--type", "full"]);
        assert_eq!(run.code(), Some(0), "{context}: {}", run.describe());
    }
    if cell.storage_snapshot {
        let in_parts = crate::util::files_under(&app.backups.join("storage"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .any(|p| crate::util::read_json(p)["snapshot"]["list_parts"].as_u64() > Some(0));
        assert!(
            in_parts,
            "{context}: no storage snapshot's entry list is in parts"
        );
    }
    for step in [
        &["offsite", "push"][..],
        &["offsite", "verify"],
        &["rotate", "--json"],
        &["offsite", "prune"],
    ] {
        let run = app.run(step);
        assert_eq!(run.code(), Some(0), "{context}: {}", run.describe());
        if step[0] == "rotate" && cell.database_snapshot && cell.encryption != Encryption::All {
            // The first full's database snapshot shared a pack with rows changed since:
            // repacked (a sealed store is repacked only with an identity).
            let report = run.json();
            assert!(
                report["repack"]["packs_rewritten"].as_u64() >= Some(1),
                "{context}: {report:#}"
            );
        }
    }

    // A fourth full, uploaded by a push killed at a seeded moment, then pushed again.
    change(&app, 3);
    app.run(["create", "--type", "full", "--no-offsite"])
        .assert_code(0);
    let after = 1 + (rng.next_u64() % 12) as usize;
    push_killed_after(&app, &target, after);
    let again = app.run(["offsite", "push"]);
    assert_eq!(
        again.code(),
        Some(0),
        "{context}: killed after {after}: {}",
        again.describe()
    );

    // Whole, nothing left to send.
    // Four fulls taken; the target keeps `remote_keep` of them, or all four while Object
    // Lock holds them.
    let fulls = complete_remote(&app, "full");
    let expected = if cell.target == Where::S3Locked {
        4
    } else {
        cell.remote_keep as usize
    };
    assert_eq!(fulls.len(), expected, "{context}: {fulls:#?}");
    assert_eq!(push_bytes(&app), 0, "{context}: a second push sent bytes");

    // Disaster recovery: an empty server with the config (and a key) restores the newest.
    let fresh = TestApp::new();
    configure(&fresh, &cell, &target);
    let restored = restore_latest_from_remote(&fresh, "full", cell.encryption != Encryption::Off);
    assert_eq!(
        restored.code(),
        Some(0),
        "{context}: the disaster-recovery restore (exit 3 = it passed over a newer backup): {}",
        restored.describe()
    );
    assert_same_tree(&app.storage, &fresh.storage);
    assert_eq!(
        dump_db_file(&app.db),
        dump_db_file(&fresh.db),
        "{context}: the restored database differs"
    );
}

/// `cell!(name, storage, database, encryption, target, remote_keep)`.
macro_rules! cells {
    ($($name:ident: $st:expr, $db:expr, $enc:ident, $at:ident, $keep:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_cell(Cell {
                    storage_snapshot: $st,
                    database_snapshot: $db,
                    encryption: Encryption::$enc,
                    target: Where::$at,
                    remote_keep: $keep,
                });
            }
        )*
    };
}

// Named storage_database_encryption_target: a = archive, c = copy, s = snapshot.
cells! {
    a_c_off_path: false, false, Off, Path, 3;
    a_c_off_s3: false, false, Off, S3, 3;
    a_c_off_locked: false, false, Off, S3Locked, 3;
    a_c_offsite_path: false, false, Offsite, Path, 3;
    a_c_offsite_s3: false, false, Offsite, S3, 3;
    a_c_offsite_locked: false, false, Offsite, S3Locked, 3;
    a_c_all_path: false, false, All, Path, 3;
    a_c_all_s3: false, false, All, S3, 3;
    a_c_all_locked: false, false, All, S3Locked, 3;
    a_s_off_path: false, true, Off, Path, 3;
    a_s_off_s3: false, true, Off, S3, 3;
    a_s_off_locked: false, true, Off, S3Locked, 3;
    a_s_offsite_path: false, true, Offsite, Path, 3;
    a_s_offsite_s3: false, true, Offsite, S3, 3;
    a_s_offsite_locked: false, true, Offsite, S3Locked, 3;
    a_s_all_path: false, true, All, Path, 3;
    a_s_all_s3: false, true, All, S3, 3;
    a_s_all_locked: false, true, All, S3Locked, 3;
    s_c_off_path: true, false, Off, Path, 3;
    s_c_off_s3: true, false, Off, S3, 3;
    s_c_off_locked: true, false, Off, S3Locked, 3;
    s_c_offsite_path: true, false, Offsite, Path, 3;
    s_c_offsite_s3: true, false, Offsite, S3, 3;
    s_c_offsite_locked: true, false, Offsite, S3Locked, 3;
    s_c_all_path: true, false, All, Path, 3;
    s_c_all_s3: true, false, All, S3, 3;
    s_c_all_locked: true, false, All, S3Locked, 3;
    s_s_off_path: true, true, Off, Path, 3;
    s_s_off_s3: true, true, Off, S3, 3;
    s_s_off_locked: true, true, Off, S3Locked, 3;
    s_s_offsite_path: true, true, Offsite, Path, 3;
    s_s_offsite_s3: true, true, Offsite, S3, 3;
    s_s_offsite_locked: true, true, Offsite, S3Locked, 3;
    s_s_all_path: true, true, All, Path, 3;
    s_s_all_s3: true, true, All, S3, 3;
    s_s_all_locked: true, true, All, S3Locked, 3;
    a_c_off_sftp: false, false, Off, Sftp, 3;
    a_c_offsite_sftp: false, false, Offsite, Sftp, 3;
    a_c_all_sftp: false, false, All, Sftp, 3;
    a_s_off_sftp: false, true, Off, Sftp, 3;
    a_s_offsite_sftp: false, true, Offsite, Sftp, 3;
    a_s_all_sftp: false, true, All, Sftp, 3;
    s_c_off_sftp: true, false, Off, Sftp, 3;
    s_c_offsite_sftp: true, false, Offsite, Sftp, 3;
    s_c_all_sftp: true, false, All, Sftp, 3;
    s_s_off_sftp: true, true, Off, Sftp, 3;
    s_s_offsite_sftp: true, true, Offsite, Sftp, 3;
    s_s_all_sftp: true, true, All, Sftp, 3;
    // The remote policy shorter than the local one (1 against 2).
    s_s_offsite_s3_remote_shorter: true, true, Offsite, S3, 1;
    a_c_off_path_remote_shorter: false, false, Off, Path, 1;
}
