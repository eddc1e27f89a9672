//! Repacking in rotation: a pack most of whose chunks only deleted snapshots used is
//! rewritten — its used chunks copied into a new pack, the kept snapshots' entry lists
//! and metadata (a full backup's manifest too) pointed at the copy under one journal —
//! and the original deleted, so the store comes back to about the live data's size. The
//! kept snapshots keep their names, verify and restore as before; a target that holds
//! them is not sent them again. A kill at any call of the commit leaves every kept
//! snapshot whole (a reader finishes the journal), and random histories with a damaged
//! pack never lose a file a kept snapshot had.

use std::process::Command;

use crate::faults::crash::{calls_in, strace_usable, traced_run};

use super::*;

/// A snapshot app keeping `keep_last` backups of each type, with `extra` `[backup]` lines.
fn repack_app(keep_last: u32, extra: &str) -> TestApp {
    let app = TestApp::new();
    let text = app.config_text(
        &format!("{SNAPSHOT_LINES}\n{extra}"),
        &format!("[retention]\nkeep_last = {keep_last}\n"),
    );
    app.write_config_raw(&text);
    app
}

/// `rotate --json [extra…]`, which must succeed: its report.
#[track_caller]
fn rotate(app: &TestApp, extra: &[&str]) -> Value {
    let mut args = vec!["rotate", "--json"];
    args.extend_from_slice(extra);
    app.run(&args).assert_code(0).json()
}

/// Bytes of every pack on disk.
fn store_bytes(app: &TestApp) -> u64 {
    store_files(app)
        .iter()
        .filter(|p| p.to_string_lossy().contains(".pack"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// The storage member of the full backup `full` as `list` shows it.
#[track_caller]
fn storage_member(app: &TestApp, full: &Value) -> Value {
    let stem = name_of(full).trim_end_matches(".json").to_string();
    app.list_of("storage")
        .into_iter()
        .find(|r| r["part_of"] == stem.as_str())
        .unwrap_or_else(|| panic!("no storage member of {stem}"))
}

/// Twenty incompressible 100 KiB files in one snapshot, then half of them deleted and a
/// second snapshot: with keep_last = 1 rotation leaves the first pack half used.
fn half_used(app: &TestApp, kind: &str) -> (Value, Value) {
    app.write_random_files("client_1/bulk", 20, 100 << 10);
    let first = app.create(kind);
    for i in (0..20).step_by(2) {
        fs::remove_file(app.storage.join(format!("client_1/bulk/file_{i:03}.bin"))).unwrap();
    }
    let second = app.create(kind);
    (first, second)
}

#[test]
fn rotation_repacks_a_half_used_pack_and_the_kept_snapshot_restores_as_it_was() {
    let app = repack_app(1, "");
    let (first, second) = half_used(&app, "storage");
    let old_packs = packs_of(&first);
    assert_eq!(packs_of(&second), old_packs, "the second adds nothing");
    let before = store_bytes(&app);

    // A dry run says what it would do and changes nothing.
    let dry = rotate(&app, &["--dry-run"]);
    assert_eq!(dry["repack"]["packs_rewritten"], 1, "{dry:#}");
    assert!(
        dry["repack"]["reclaimed_bytes"].as_u64().unwrap() > 900 << 10,
        "{dry:#}"
    );
    assert_eq!(store_bytes(&app), before);

    let report = rotate(&app, &[]);
    let repack = &report["repack"];
    assert_eq!(repack["packs_rewritten"], 1, "{report:#}");
    assert_eq!(repack["packs_written"], 1, "{report:#}");
    assert!(
        repack["reclaimed_bytes"].as_u64().unwrap() > 900 << 10,
        "{report:#}"
    );
    assert_eq!(
        repack["backups_rewritten"][0],
        name_of(&second),
        "{report:#}"
    );
    // Same name, same files; its entry list points at the new pack, and records the
    // checksum it was made with.
    let kept = app.list_of("storage");
    assert_eq!(kept.len(), 1);
    let now = &kept[0];
    assert_eq!(name_of(now), name_of(&second));
    assert!(packs_of(now).is_disjoint(&old_packs), "{now:#}");
    assert_eq!(now["earlier_checksums"][0], second["checksum"], "{now:#}");
    assert_ne!(now["checksum"], second["checksum"]);
    for id in &old_packs {
        assert!(
            !pack_path(&app, id).exists(),
            "old pack {id} is still there"
        );
    }
    // The store is back to the live data's size, within 10 %.
    let live: u64 = snap(now)["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .sum();
    let used = repack["used_bytes"].as_u64().unwrap();
    assert!(
        (store_bytes(&app) as f64) <= used as f64 * 1.10,
        "{} bytes of packs for {used} used",
        store_bytes(&app)
    );
    assert_eq!(store_bytes(&app), live);
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");
    let target = app.root.join("restored");
    restore_to(&app, &tree_of(now), &target, &[]);
    assert_same_tree(&app.storage, &target);
    assert_store_exact(&app, "after the repack");
    assert!(app.backup_log().contains("repack: 1 pack(s) rewritten"));

    // The next snapshot takes the rewritten one as its parent: nothing is read again.
    let third = app.create("storage");
    assert_eq!(snap(&third)["read_files"], 0, "{third:#}");
    assert_eq!(packs_of(&third), packs_of(now));
}

#[test]
fn within_max_unused_or_unlimited_nothing_is_repacked_and_a_bad_value_names_its_line() {
    // About 1 MiB unused for 1.1 MiB used (88 %), 95 % allowed.
    let app = repack_app(1, "max_unused = \"95%\"");
    let (first, _) = half_used(&app, "storage");
    let report = rotate(&app, &[]);
    assert_eq!(report["repack"]["packs_rewritten"], 0, "{report:#}");
    assert!(report["repack"]["unused_bytes"].as_u64().unwrap() > 900 << 10);
    let listed = listed_packs(&app.list());
    assert_eq!(listed, packs_of(&first));

    let app = repack_app(1, "max_unused = \"unlimited\"");
    half_used(&app, "storage");
    let report = rotate(&app, &[]);
    assert_eq!(report["repack"]["packs_rewritten"], 0, "{report:#}");
    let text = app.run(["rotate"]).assert_code(0).stdout.clone();
    assert!(text.contains("nothing to repack"), "{text}");

    app.write_config_raw(&app.config_text(&format!("{SNAPSHOT_LINES}\nmax_unused = \"lots\""), ""));
    let r = app.run(["rotate"]);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("backup.max_unused") && r.stderr.contains("line 11"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_full_backup_is_rewritten_whole_and_a_target_holding_it_is_not_sent_it_again() {
    let app = TestApp::new();
    let nas = app.root.join("nas");
    fs::create_dir(&nas).unwrap();
    let text = app.config_text(
        SNAPSHOT_LINES,
        "[retention]\nkeep_last = 1\n\n[[offsite]]\nname = \"nas\"\nurl = \"nas\"\n[offsite.retention]\nkeep_last = 1\n",
    );
    app.write_config_raw(&text);
    let (_, second) = half_used(&app, "full");
    let report = rotate(&app, &[]);
    assert!(
        report["repack"]["packs_rewritten"].as_u64() >= Some(1),
        "{report:#}"
    );
    assert_eq!(
        report["repack"]["backups_rewritten"][0],
        name_of(&second),
        "{report:#}"
    );
    let full = app.list_of("full");
    assert_eq!(full.len(), 1);
    assert!(full[0]["problem"].is_null(), "{:#}", full[0]);
    assert_eq!(full[0]["earlier_checksums"][0], second["checksum"]);
    let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(0), "{reports:#?}");

    // The target got the full backup before the repack: the same files, not sent again.
    let push = app.run(["offsite", "push", "--json"]).assert_code(0).json();
    let push = &push[0]["push"];
    assert_eq!(
        push["uploaded"].as_array().map(Vec::len),
        Some(0),
        "{push:#}"
    );
    assert_eq!(push["already_there"], 1, "{push:#}");

    let target = app.root.join("restored");
    restore_to(
        &app,
        &tree_of(&storage_member(&app, &full[0])),
        &target,
        &[],
    );
    assert_same_tree(&app.storage, &target);
    assert_store_exact(&app, "after repacking a full backup");
}

// ---------------------------------------------------------------------------------------
// Kills

const SYSCALLS: [&str; 3] = ["rename", "unlink", "fsync"];

fn traced(app: &TestApp, inject: Option<(&str, usize)>, log: &Path) -> Command {
    traced_run(app, &["rotate"], &SYSCALLS, inject, log)
}

#[test]
fn sigkill_at_each_commit_call_of_a_repacking_rotation_leaves_every_kept_snapshot_whole() {
    if !require("strace, able to trace", strace_usable()) {
        return;
    }
    let app = repack_app(1, "");
    let (_, second) = half_used(&app, "full");
    let member = tree_of(&storage_member(&app, &second));
    let template = app.root.join("template");
    copy_tree(&app.backups, &template);
    let fresh = || {
        fs::remove_dir_all(&app.backups).unwrap();
        copy_tree(&template, &app.backups);
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("rotate.strace");
    run(traced(&app, None, &log)).assert_code(0);
    assert!(
        app.backup_log().contains("repack: 1 pack(s) rewritten"),
        "{}",
        app.backup_log()
    );
    let mut landed = Vec::new();
    for syscall in SYSCALLS {
        let calls = calls_in(&log, syscall);
        assert!(calls > 0, "rotate made no {syscall}");
        for n in 1..=calls {
            fresh();
            let ctx = format!("rotate killed at {syscall} #{n} of {calls}");
            let klog = logs.path().join(format!("{syscall}-{n}.strace"));
            let r = run(traced(&app, Some((syscall, n)), &klog));
            if r.signal() == Some(libc::SIGKILL) || r.code() == Some(137) {
                landed.push(ctx.clone());
            } else {
                r.assert_code(0);
            }
            // Right after the kill, before any other run: a restore of the kept storage
            // part (its name never changes) — the first holder of the lock finishes a
            // committed rewrite — gives back the files; then the kept full backup is
            // listed whole and verifies with its data read.
            let target = app.root.join(format!("restored-{syscall}-{n}"));
            restore_to(&app, &member, &target, &[]);
            assert_same_tree(&app.storage, &target);
            let full = app.list_of("full");
            let kept = full.iter().find(|f| name_of(f) == name_of(&second));
            let kept = kept.unwrap_or_else(|| panic!("{ctx}: {full:#?}"));
            assert!(kept["problem"].is_null(), "{ctx}: {kept:#}");
            let (code, reports) = verify_reports(&app, &[name_of(&second).as_str(), "--read-data"]);
            assert_eq!(code, Some(0), "{ctx}: {reports:#?}");
            // The next rotation finishes the job: the store holds what the kept need.
            rotate(&app, &[]);
            app.run(["create", "--type", "storage"]).assert_code(0);
            rotate(&app, &[]);
            assert_store_exact(&app, &ctx);
            fs::remove_dir_all(&target).unwrap();
        }
    }
    eprintln!("{} kills landed:\n{}", landed.len(), landed.join("\n"));
    assert!(landed.len() >= 15, "only {} kills landed", landed.len());
}

// ---------------------------------------------------------------------------------------
// Random histories

/// Each file of the storage tree and its bytes' SHA-256.
fn manifest(root: &Path) -> BTreeMap<PathBuf, String> {
    use sha2::{Digest, Sha256};
    files_under(root)
        .into_iter()
        .map(|p| {
            let digest = hex::encode(Sha256::digest(fs::read(&p).unwrap()));
            (p.strip_prefix(root).unwrap().to_path_buf(), digest)
        })
        .collect()
}

/// A small deterministic generator (xorshift): the same seed, the same history.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Over seeded random histories — files added, deleted and changed, snapshots taken,
/// rotations with keep_last 1 or 2 and a tight `max_unused`, now and then a byte of a pack
/// flipped — every kept snapshot that verified before a rotation still verifies after it
/// and restores exactly the files it was taken of: repacking never drops a chunk a kept
/// snapshot needs, and never rewrites a damaged pack.
#[test]
fn random_histories_with_damage_never_lose_a_file_a_kept_snapshot_had() {
    // (So the property is never met vacuously: packs were rewritten, and damaged.)
    let (mut repacked, mut damaged) = (0, 0);
    for seed in [7u64, 1_234, 99_991] {
        let app = repack_app(2, "max_unused = \"5%\"");
        let mut dice = Dice(seed);
        let mut taken: BTreeMap<String, BTreeMap<PathBuf, String>> = BTreeMap::new();
        let mut next_file = 0u64;
        for step in 0..16 {
            let ctx = format!("seed {seed}, step {step}");
            let files = files_under(&app.storage.join("h"));
            let pick = |dice: &mut Dice| files.get(dice.roll(files.len().max(1) as u64) as usize);
            // (Step 6 always damages a pack: every history has one.)
            let op = if step == 6 { 5 } else { dice.roll(6) };
            match op {
                0 | 1 => {
                    for _ in 0..=dice.roll(5) {
                        next_file += 1;
                        let size = 20_000 + dice.roll(120_000) as usize;
                        app.write_storage_file(
                            &format!("h/{}/f{next_file}.bin", dice.roll(3)),
                            &random_bytes(seed * 1_000 + next_file, size),
                        );
                    }
                }
                2 | 3 => {
                    for _ in 0..=dice.roll(4) {
                        if let Some(f) = pick(&mut dice) {
                            let _ = fs::remove_file(f);
                        }
                    }
                }
                4 => {
                    if let Some(f) = pick(&mut dice) {
                        next_file += 1;
                        fs::write(f, random_bytes(seed * 1_000 + next_file, 60_000)).unwrap();
                    }
                }
                _ => {
                    let packs: Vec<String> = packs_on_disk(&app).into_iter().collect();
                    if (step == 6 || dice.roll(2) == 0) && !packs.is_empty() {
                        let id = &packs[dice.roll(packs.len() as u64) as usize];
                        let path = pack_path(&app, id);
                        let mut bytes = fs::read(&path).unwrap();
                        let at = dice.roll(bytes.len() as u64) as usize;
                        bytes[at] ^= 0x55;
                        fs::write(&path, bytes).unwrap();
                        damaged += 1;
                    }
                }
            }
            let r = app.run(["create", "--type", "storage", "--json"]);
            if r.code() == Some(0) || r.code() == Some(3) {
                let meta = r.json();
                taken.insert(name_of(&meta), manifest(&app.storage));
            }
            // What verifies before the rotation must verify and restore after it.
            let (_, before) = verify_reports(&app, &["--all", "--read-data"]);
            let mut good: Vec<String> = before
                .iter()
                .filter(|(n, rep)| n.starts_with("storage") && failure_text(rep).is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            // Now and then (and always at step 9) a pack is damaged after that check:
            // then it is repacking's own reading that must refuse to copy from it, and
            // the snapshots listing it are no longer counted as good.
            let mut late = None;
            if step == 9 || dice.roll(8) == 0 {
                let packs: Vec<String> = packs_on_disk(&app).into_iter().collect();
                if !packs.is_empty() {
                    let id = packs[dice.roll(packs.len() as u64) as usize].clone();
                    let path = pack_path(&app, &id);
                    let mut bytes = fs::read(&path).unwrap();
                    let at = dice.roll(bytes.len() as u64) as usize;
                    bytes[at] ^= 0x0f;
                    fs::write(&path, bytes).unwrap();
                    let hit: Vec<String> = app
                        .list_of("storage")
                        .iter()
                        .filter(|r| packs_of(r).contains(&id))
                        .map(name_of)
                        .collect();
                    good.retain(|n| !hit.contains(n));
                    late = Some(id);
                    damaged += 1;
                }
            }
            let keep = 1 + dice.roll(2);
            app.write_config_raw(&app.config_text(
                &format!("{SNAPSHOT_LINES}\nmax_unused = \"5%\""),
                &format!("[retention]\nkeep_last = {keep}\n"),
            ));
            let report = rotate(&app, &[]);
            repacked += report["repack"]["packs_rewritten"].as_u64().unwrap_or(0);
            let listed: Vec<Value> = app.list_of("storage");
            if let Some(id) = &late
                && listed.iter().any(|r| packs_of(r).contains(id))
            {
                assert!(
                    pack_path(&app, id).exists(),
                    "{ctx}: damaged pack {id} went while listed"
                );
            }
            for row in &listed {
                let name = name_of(row);
                if !good.contains(&name) {
                    continue;
                }
                let (code, rep) = verify_reports(&app, &[name.as_str(), "--read-data"]);
                assert_eq!(code, Some(0), "{ctx}: {name} verified before: {rep:#?}");
                let target = app.root.join("check");
                let _ = fs::remove_dir_all(&target);
                restore_to(&app, &tree_of(row), &target, &[]);
                let want = taken.get(&name).unwrap_or_else(|| panic!("{ctx}: {name}"));
                assert_eq!(
                    &manifest(&target),
                    want,
                    "{ctx}: {name} restores other files"
                );
                fs::remove_dir_all(&target).unwrap();
            }
        }
    }
    eprintln!("{repacked} pack(s) rewritten, {damaged} damaged");
    assert!(
        repacked >= 3 && damaged >= 3,
        "{repacked} rewritten, {damaged} damaged"
    );
}

/// An entry list that cannot be read (here: overwritten with as many random bytes) hides
/// what its snapshot uses: every pack its metadata lists stays, rotation still succeeds
/// and says why nothing was repacked.
#[test]
fn an_unreadable_entry_list_pins_its_packs_and_rotation_still_succeeds() {
    let app = repack_app(1, "");
    let (first, second) = half_used(&app, "storage");
    let tree = tree_of(&second);
    let len = fs::metadata(&tree).unwrap().len() as usize;
    fs::write(&tree, random_bytes(5, len)).unwrap();
    let stem = |m: &Value| name_of(m).trim_end_matches(".tree.zst").to_string();
    let report = rotate(&app, &[]);
    assert_eq!(
        report["plan"]["delete"][0]["id"],
        stem(&first),
        "{report:#}"
    );
    let repack = &report["repack"];
    assert_eq!(repack["packs_rewritten"], 0, "{report:#}");
    let left = repack["left"][0].as_str().unwrap_or_default();
    assert!(
        left.contains("cannot be read") && left.contains(&stem(&second)),
        "{report:#}"
    );
    for id in packs_of(&second) {
        assert!(
            pack_path(&app, &id).exists(),
            "pack {id} of the kept snapshot is gone"
        );
    }
}

/// A pack damaged since the last verify is chosen (half of it is unused) but never copied:
/// repacking reads it against the SHA-256 its snapshots record, leaves it where it is and
/// names it; the kept snapshot keeps pointing at it, so `verify` still finds the damage.
#[test]
fn a_pack_damaged_since_the_last_verify_is_left_as_it_is_and_named() {
    let app = repack_app(1, "");
    let (_, second) = half_used(&app, "storage");
    let id = packs_of(&second).into_iter().next().unwrap();
    let path = pack_path(&app, &id);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let report = rotate(&app, &[]);
    let repack = &report["repack"];
    assert_eq!(repack["packs_rewritten"], 0, "{report:#}");
    let left = repack["left"].as_array().unwrap();
    assert!(
        left.iter()
            .any(|l| l.as_str().unwrap().contains(&id) && l.as_str().unwrap().contains("SHA-256")),
        "{report:#}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the damaged pack was touched"
    );
    assert_eq!(packs_of(&app.list_of("storage")[0]), packs_of(&second));
    let (code, _) = verify_reports(&app, &["--all", "--read-data"]);
    assert_eq!(code, Some(1));
    assert!(app.backup_log().contains(&id), "{}", app.backup_log());
}
