//! SIGKILL anywhere in a snapshot `create` (storage, database, full) and in a `rotate` of
//! snapshots that share packs: at seeded pseudo-random moments, and at each rename, fsync
//! and unlink through strace's fault injection. After every kill, every listed snapshot
//! passes `verify --read-data`, the newest storage and database snapshots restore to
//! exactly what they were taken from, nothing a `create` kill left is lost, and once the
//! next `create` has run no pack is left that no snapshot lists and no `.partial` file
//! remains.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::faults::SplitMix64;
use crate::faults::crash::{calls_in, strace_usable, traced_run};
use crate::restore::live_dump;

use super::*;

/// Deadline for a killed or injected run to be reaped.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What the test knows of every snapshot it has seen listed: the storage tree or the
/// database rows of the moment it was taken (nothing changes while a run is under way),
/// and which are listed now.
#[derive(Default)]
struct Ledger {
    trees: BTreeMap<String, BTreeMap<PathBuf, Node>>,
    dumps: BTreeMap<String, Vec<String>>,
    /// Stems listed at the last check (backups of every type).
    listed: BTreeSet<String>,
}

/// What a run may do to the backups listed before it.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// `create`: adds at most one backup and deletes none.
    Create,
    /// `rotate` keeping the newest `keep` of each type: deletes only older ones.
    Rotate { keep: usize },
}

/// The state of the app a run sees: the storage tree and the database rows.
struct Sources {
    tree: BTreeMap<PathBuf, Node>,
    dump: Vec<String>,
}

fn sources(app: &TestApp) -> Sources {
    Sources {
        tree: snapshot_tree(&app.storage),
        dump: live_dump(app),
    }
}

impl Ledger {
    /// After a run (`ran`, over `src`): every listed backup complete, none under a
    /// temporary name, nothing lost that the run may not delete; a new snapshot is
    /// remembered with `src`. Returns the rows.
    #[track_caller]
    fn observe(&mut self, app: &TestApp, ran: Run, src: &Sources, ctx: &str) -> Vec<Value> {
        let rows = app.list();
        let mut now = BTreeSet::new();
        for row in &rows {
            assert_eq!(
                row["complete"], true,
                "{ctx}: an incomplete backup is listed: {row:#}"
            );
            for key in ["path", "metadata_path"] {
                assert!(
                    !jstr(row, key).contains(".partial"),
                    "{ctx}: a temporary file is listed: {row:#}"
                );
            }
            let stem = stem_of(row);
            match jstr(row, "type") {
                "storage" => {
                    self.trees
                        .entry(stem.clone())
                        .or_insert_with(|| src.tree.clone());
                }
                "database" => {
                    self.dumps
                        .entry(stem.clone())
                        .or_insert_with(|| src.dump.clone());
                }
                _ => {}
            }
            now.insert(stem);
        }
        let gone: Vec<&String> = self.listed.difference(&now).collect();
        match ran {
            Run::Create => assert!(gone.is_empty(), "{ctx}: backups vanished: {gone:?}"),
            Run::Rotate { keep } => {
                // The newest `keep` of each type listed before are still there.
                for kind in ["database", "storage", "full"] {
                    let mut of_kind: Vec<&String> = self
                        .listed
                        .iter()
                        .filter(|s| kind_of_stem(s) == kind)
                        .collect();
                    of_kind.sort_by_key(|s| stem_order(s));
                    for s in of_kind.iter().rev().take(keep) {
                        assert!(now.contains(*s), "{ctx}: rotate deleted the kept {s}");
                    }
                }
            }
        }
        // A stem may come again (a rotate deleted it within the second it was made).
        for s in &gone {
            self.trees.remove(*s);
            self.dumps.remove(*s);
        }
        self.listed = now;
        rows
    }

    /// [`Self::observe`], then: every listed snapshot passes `verify --all --read-data`,
    /// and the newest storage and database snapshots restore to exactly their sources.
    #[track_caller]
    fn check(&mut self, app: &TestApp, ran: Run, src: &Sources, ctx: &str) {
        let rows = self.observe(app, ran, src, ctx);
        let v = app.run(["verify", "--all", "--read-data"]);
        assert_eq!(
            v.code(),
            Some(0),
            "{ctx}: a listed snapshot fails verify --read-data\n{}",
            v.describe()
        );
        let out = tempfile::tempdir_in(app.path()).unwrap();
        if let Some(newest) = rows.iter().find(|r| jstr(r, "type") == "storage") {
            let dest = out.path().join("storage");
            restore_to(app, Path::new(jstr(newest, "path")), &dest, &[]);
            assert_tree_matches(&self.trees[&stem_of(newest)], &dest);
        }
        if let Some(newest) = rows.iter().find(|r| jstr(r, "type") == "database") {
            let dest = out.path().join("app_data.db");
            restore_to(app, Path::new(jstr(newest, "path")), &dest, &[]);
            assert_eq!(
                dump_db_file(&dest),
                self.dumps[&stem_of(newest)],
                "{ctx}: the newest database snapshot does not hold the rows of its time"
            );
        }
    }
}

/// A stem's place in time: its timestamp, then the counter a second run in the same
/// second gets (`…_HHMMSS_2`).
fn stem_order(stem: &str) -> (String, u32) {
    let ts = stem.trim_start_matches(|c: char| !c.is_ascii_digit());
    let mut parts = ts.splitn(3, '_');
    let date = parts.next().unwrap_or_default();
    let time = parts.next().unwrap_or_default();
    let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    (format!("{date}_{time}"), n)
}

fn kind_of_stem(stem: &str) -> &'static str {
    if stem.starts_with("db_") {
        "database"
    } else if stem.starts_with("storage_") {
        "storage"
    } else {
        "full"
    }
}

/// Every file in the per-type directories belongs to a listed backup (no orphan data, no
/// temporary file), and the store is exactly what the listed snapshots need.
#[track_caller]
fn assert_only_listed(app: &TestApp, ctx: &str) {
    crate::faults::assert_only_listed_backups(app, ctx);
    assert_store_exact(app, ctx);
}

/// After a kill (`ctx`) and its check: the next `create` succeeds at once and its
/// cleaning leaves only what listed snapshots need (its own snapshot is verified with the
/// next check). A rotate killed between a backup's metadata and its entry list leaves the
/// entry list as a data file without metadata, which `list` shows as such and nothing
/// deletes, as for archives (`allow_orphan_data`). Then, with more than `bound` backups
/// listed, a rotate keeps the checks short.
fn recover(app: &TestApp, ledger: &mut Ledger, allow_orphan_data: bool, bound: usize, ctx: &str) {
    let ctx = format!("{ctx}, then a create");
    let src = sources(app);
    let next = app.run(["create", "--type", "storage"]);
    assert_eq!(
        next.code(),
        Some(0),
        "{ctx}: the next create failed\n{}",
        next.describe()
    );
    ledger.observe(app, Run::Create, &src, &ctx);
    if allow_orphan_data {
        assert_store_exact(app, &ctx);
        remove_orphan_data(app);
    }
    assert_only_listed(app, &ctx);
    if ledger.listed.len() > bound {
        app.run(["--max-backups", "2", "rotate"]).assert_code(0);
        ledger.observe(
            app,
            Run::Rotate { keep: 2 },
            &src,
            &format!("{ctx}, then a rotate"),
        );
    }
}

/// Remove entry lists without metadata (what a rotate killed between the two unlinks of
/// a snapshot leaves), so later checks see only what later runs did.
fn remove_orphan_data(app: &TestApp) {
    for f in app.backup_files() {
        let name = f.to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".tree.zst")
            && !Path::new(&format!("{stem}.json")).exists()
        {
            fs::remove_file(&f).unwrap();
        }
    }
}

/// What a killed run left, as a phase of its work.
fn debris_phase(before: &BTreeSet<PathBuf>, app: &TestApp) -> &'static str {
    let now: BTreeSet<PathBuf> = files_under(&app.backups).into_iter().collect();
    let new: Vec<String> = now
        .difference(before)
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let gone = before.difference(&now).count();
    let any = |f: &dyn Fn(&str) -> bool| new.iter().any(|n| f(n));
    if gone > 0 {
        "deleting"
    } else if any(&|n| n.ends_with(".pack.partial")) {
        "writing a pack"
    } else if any(&|n| n.contains("_copy.db")) {
        "copying the database"
    } else if any(&|n| n.ends_with(".tree.zst.partial")) {
        "packs closed, entry list being written"
    } else if any(&|n| n.ends_with(".json.partial")) {
        "committing"
    } else if any(&|n| n.ends_with(".pack")) && !any(&|n| n.ends_with(".json")) {
        "packs landed, no snapshot yet"
    } else if any(&|n| n.ends_with(".json")) {
        "after a snapshot landed"
    } else {
        "nothing written yet"
    }
}

/// The size of each media file of the crash tests.
const MEDIA_FILE: usize = 64 << 10;

/// The app for the crash tests: snapshots of a tree of `files` media files of 64 KiB, a
/// file of `large` bytes (over 1 MiB: cut by content) and 400 small notes, and a database
/// grown by `clients` rows.
fn crash_app(files: usize, large: usize, clients: usize) -> TestApp {
    let app = snapshot_app();
    app.write_random_files("media", files, MEDIA_FILE);
    app.write_storage_file("media/large.bin", &random_bytes(77, large));
    // Enough small files that a storage snapshot keeps its entry list in parts (in packs
    // of their own, written and renamed like the files' packs: killed between them too).
    app.write_small_files("notes", 10, 40);
    let mut conn = app.open_db();
    add_clients(&mut conn, clients, 600);
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    app
}

/// Change the sources so the next run has new chunks to store: `n` media files rewritten
/// with new content (seeded by `round`), an edit in the middle of the large file, a file
/// added, a note edited, and new rows in the database.
fn change_sources(app: &TestApp, round: u64, n: usize) {
    let files: Vec<PathBuf> = files_under(&app.storage.join("media"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("file_"))
        .collect();
    for (i, f) in files
        .iter()
        .enumerate()
        .skip(round as usize % 3)
        .step_by(3)
        .take(n)
    {
        fs::write(f, random_bytes(round * 1_000 + i as u64, MEDIA_FILE)).unwrap();
    }
    let large = fs::OpenOptions::new()
        .write(true)
        .open(app.storage.join("media/large.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &large,
        &random_bytes(round + 5_000, 64 << 10),
        (round % 16) * (64 << 10),
    )
    .unwrap();
    drop(large);
    app.write_storage_file(
        &format!("added/round_{round}.bin"),
        &random_bytes(round + 9_000, 10_000),
    );
    // One note edited: one part of the entry list changes, the others are reused.
    app.write_storage_file(
        &format!("notes/d{:02}/f000.txt", round % 10),
        format!("edited in round {round}\n").as_bytes(),
    );
    let mut conn = app.open_db();
    add_clients(&mut conn, 20, 300);
    drop(conn);
}

// ---------------------------------------------------------------------------------------
// 1. Seeded moments

/// Kills that must land (the run still going) per kind of run.
const KILLS_PER_RUN: usize = 8;
/// Attempts at most per kind of run (a delay past the end lets it finish: no kill).
const ATTEMPTS_PER_RUN: usize = 24;
/// Backups listed at most before a recovery rotates (keeps each check short).
const BOUND: usize = 5;

/// What each kind of run is: its arguments and what it may delete.
fn run_of(what: &str) -> (Vec<&'static str>, Run) {
    match what {
        "rotate" => (
            vec!["--max-backups", "2", "rotate"],
            Run::Rotate { keep: 2 },
        ),
        "storage" => (vec!["create", "--type", "storage"], Run::Create),
        "database" => (vec!["create", "--type", "database"], Run::Create),
        _ => (vec!["create", "--type", "full"], Run::Create),
    }
}

/// Before a run of `what`: new data to store; for a rotate, also snapshots of each type
/// that share packs with older ones, for it to delete.
fn prepare(app: &TestApp, ledger: &mut Ledger, what: &str, round: u64) {
    change_sources(app, round, 6);
    if what == "rotate" {
        for kind in ["storage", "database", "full"] {
            let src = sources(app);
            app.create(kind);
            ledger.observe(app, Run::Create, &src, "a snapshot for the rotate");
            change_sources(app, round + 1_000, 3);
        }
    }
}

#[test]
fn sigkill_at_seeded_moments_of_snapshot_create_and_rotate_loses_nothing_and_leaves_no_garbage() {
    let started = Instant::now();
    let app = crash_app(16, 3 << 19, 1_000);
    let mut rng = SplitMix64(0x5AA9_5407_C8A5);
    let mut ledger = Ledger::default();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let mut kills = 0;
    let mut round = 0u64;

    for what in ["storage", "database", "full", "rotate"] {
        let (args, ran) = run_of(what);
        // Two unkilled runs: the shorter spreads the kills.
        let mut unkilled = Duration::MAX;
        for _ in 0..2 {
            round += 1;
            prepare(&app, &mut ledger, what, round);
            let src = sources(&app);
            let t0 = Instant::now();
            app.run(&args).assert_code(0);
            unkilled = unkilled.min(t0.elapsed());
            let ctx = format!("an unkilled {what}");
            ledger.observe(&app, ran, &src, &ctx);
            recover(&app, &mut ledger, false, BOUND, &ctx);
        }
        let mut window = unkilled;
        let mut landed = 0;
        for attempt in 0..ATTEMPTS_PER_RUN {
            if landed == KILLS_PER_RUN {
                break;
            }
            round += 1;
            prepare(&app, &mut ledger, what, round);
            let src = sources(&app);
            let delay = if attempt == 0 {
                Duration::ZERO
            } else {
                window.mul_f64(1.2 * rng.unit())
            };
            let ctx = format!("{what} killed after {delay:?} (unkilled: {unkilled:?})");
            let before: BTreeSet<PathBuf> = files_under(&app.backups).into_iter().collect();
            let spawned_at = Instant::now();
            let mut child = app.spawn(&args);
            // The delay is the thing under test, not a synchronisation.
            thread::sleep(delay);
            if child.is_running() {
                child.signal(libc::SIGKILL);
            }
            let r = child.wait(RUN_DEADLINE);
            let phase = if r.signal() == Some(libc::SIGKILL) {
                kills += 1;
                landed += 1;
                debris_phase(&before, &app)
            } else {
                r.assert_code(0);
                window = window.min(spawned_at.elapsed());
                "finished before the kill"
            };
            *phases.entry(format!("{what}: {phase}")).or_default() += 1;
            ledger.check(&app, ran, &src, &ctx);
            recover(&app, &mut ledger, what == "rotate", BOUND, &ctx);
        }
        assert!(
            landed >= KILLS_PER_RUN / 2,
            "only {landed} {what} runs were still running when killed: {phases:#?}"
        );
    }
    let src = sources(&app);
    ledger.check(&app, Run::Create, &src, "at the end");
    eprintln!(
        "{kills} kills in {:?}; where they landed:\n{phases:#?}",
        started.elapsed()
    );
    // Where the kills land depends on the machine's speed (a pack of a few hundred KiB is
    // written in milliseconds): the kill while a pack is being written is made certain by
    // the next test, at the pack's rename.
    assert!(kills >= 30, "only {kills} kills landed: {phases:#?}");
}

// ---------------------------------------------------------------------------------------
// 2. Each commit system call

/// The calls that make a snapshot durable and visible, and those that delete one.
const SYSCALLS: [&str; 3] = ["rename", "fsync", "unlink"];
/// fsyncs killed at: the first few only. A run makes one per directory of the store
/// (hundreds, once the store is large) and then a few for the entry list and metadata;
/// a kill there leaves on disk what the kill at the rename after it leaves, which the
/// rename kills cover.
const FSYNCS: usize = 3;

/// `args` under strace, counting each of [`SYSCALLS`] (`inject`: killed at that call).
fn traced(app: &TestApp, args: &[&str], inject: Option<(&str, usize)>, log: &Path) -> Command {
    traced_run(app, args, &SYSCALLS, inject, log)
}

#[test]
fn sigkill_at_each_rename_fsync_and_unlink_of_snapshot_create_and_rotate_leaves_no_garbage() {
    if !require("strace, able to trace", strace_usable()) {
        return;
    }
    let app = crash_app(12, 3 << 19, 300);
    let logs = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    let mut landed: Vec<String> = Vec::new();
    let mut round = 0u64;

    for what in ["storage", "full", "rotate"] {
        let (args, ran) = run_of(what);
        round += 1;
        prepare(&app, &mut ledger, what, round);
        let log = logs.path().join(format!("{what}.strace"));
        let src = sources(&app);
        run(traced(&app, &args, None, &log)).assert_code(0);
        let ctx = format!("an unkilled {what} under strace");
        ledger.check(&app, ran, &src, &ctx);
        recover(&app, &mut ledger, false, 5, &ctx);
        for syscall in SYSCALLS {
            let mut calls = calls_in(&log, syscall);
            if syscall == "fsync" {
                calls = calls.min(FSYNCS);
            }
            for n in 1..=calls {
                round += 1;
                prepare(&app, &mut ledger, what, round);
                let ctx = format!("{what} killed at {syscall} #{n} of {calls}");
                let before: BTreeSet<PathBuf> = files_under(&app.backups).into_iter().collect();
                let src = sources(&app);
                let klog = logs.path().join(format!("{what}-{syscall}-{n}.strace"));
                let r = run(traced(&app, &args, Some((syscall, n)), &klog));
                let phase = if r.signal() == Some(libc::SIGKILL) || r.code() == Some(137) {
                    let call = fs::read_to_string(&klog)
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .find(|l| l.contains(&format!("{syscall}(")))
                        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default();
                    format!("{} at {call}", debris_phase(&before, &app))
                } else {
                    r.assert_code(0);
                    "not reached; finished".to_string()
                };
                landed.push(format!("{ctx}: {phase}"));
                ledger.check(&app, ran, &src, &ctx);
                recover(&app, &mut ledger, what == "rotate", 5, &ctx);
            }
        }
    }
    let src = sources(&app);
    ledger.check(&app, Run::Create, &src, "at the end");
    eprintln!("{} injected kills:\n{}", landed.len(), landed.join("\n"));
    let reached = landed.iter().filter(|l| !l.contains("not reached")).count();
    assert!(
        reached >= 30,
        "only {reached} kills landed:\n{}",
        landed.join("\n")
    );
    assert!(
        landed
            .iter()
            .any(|l| l.contains("writing a pack at rename(")),
        "no kill landed while a pack was being written:\n{}",
        landed.join("\n")
    );
    for what in ["storage killed", "full killed", "rotate killed at unlink"] {
        assert!(
            landed
                .iter()
                .any(|l| l.starts_with(what) && !l.contains("not reached")),
            "no {what} kill landed:\n{}",
            landed.join("\n")
        );
    }
}
