//! `repair` killed at each rename, unlink and (first) fsync it makes: every damaged
//! backup is always listed as itself or as its repaired copy (never neither), nothing a
//! listed backup needs is gone, and the next `repair` finishes the job — after which every
//! listed backup verifies with its data read, the lost file is named once, and the store
//! holds exactly what the listed snapshots need.

use std::collections::BTreeSet;
use std::process::Command;

use crate::faults::crash::{calls_in, strace_usable, traced_run};

use super::*;

/// The calls a repair commits and deletes with.
const SYSCALLS: [&str; 3] = ["rename", "unlink", "fsync"];
const FSYNCS: usize = 3;

/// A store with two damaged backups: a storage snapshot whose pack was cut short (its
/// chunks were stored again by the next snapshot: nothing is lost), and a full backup
/// whose new pack is gone (one file is lost).
fn damaged_app() -> (TestApp, Vec<String>) {
    let app = snapshot_app();
    let s1 = app.create("storage");
    let pack = pack_path(&app, packs_of(&s1).iter().next().unwrap());
    cut_in_half(&pack);
    let again = app.run(["create", "--type", "storage"]);
    assert_eq!(again.code(), Some(3), "{}", again.describe());
    let before: BTreeSet<String> = listed_packs(&app.list());
    app.write_storage_file("client_3/images/portrait_3.jpg", &random_bytes(33, 40_000));
    let full = app.create("full");
    // The packs its storage part added (not its database part's: a database that lost its
    // data has nothing left to repair).
    let part = app
        .list_of("storage")
        .into_iter()
        .find(|r| {
            r["part_of"]
                == jstr(&full, "backup_path")
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".json")
        })
        .unwrap();
    let new: Vec<String> = packs_of(&part).difference(&before).cloned().collect();
    assert!(!new.is_empty(), "{full:#}");
    for id in &new {
        fs::remove_file(pack_path(&app, id)).unwrap();
    }
    (app, vec![name_of(&s1), name_of(&full)])
}

/// Each damaged backup is listed as itself or as a copy repaired from it.
#[track_caller]
fn assert_each_kept(app: &TestApp, originals: &[String], ctx: &str) {
    let rows = app.list();
    for original in originals {
        let kept = rows.iter().any(|r| {
            name_of(r) == *original || r["repaired"]["from"].as_str() == Some(original.as_str())
        });
        assert!(
            kept,
            "{ctx}: {original} is gone and no repaired copy is listed"
        );
    }
}

fn traced(app: &TestApp, inject: Option<(&str, usize)>, log: &Path) -> Command {
    traced_run(app, &["repair"], &SYSCALLS, inject, log)
}

#[test]
fn sigkill_at_each_commit_call_of_repair_loses_nothing_and_the_next_repair_finishes() {
    if !require("strace, able to trace", strace_usable()) {
        return;
    }
    let (app, originals) = damaged_app();
    let template = app.root.join("template");
    copy_tree(&app.backups, &template);
    let logs = tempfile::tempdir().unwrap();
    let fresh = || {
        fs::remove_dir_all(&app.backups).unwrap();
        copy_tree(&template, &app.backups);
    };
    let log = logs.path().join("repair.strace");
    let r = run(traced(&app, None, &log));
    assert_eq!(r.code(), Some(3), "{}", r.describe());
    let mut landed = Vec::new();
    for syscall in SYSCALLS {
        let mut calls = calls_in(&log, syscall);
        if syscall == "fsync" {
            calls = calls.min(FSYNCS);
        }
        assert!(calls > 0, "repair made no {syscall}");
        for n in 1..=calls {
            fresh();
            let ctx = format!("repair killed at {syscall} #{n} of {calls}");
            let klog = logs.path().join(format!("{syscall}-{n}.strace"));
            let r = run(traced(&app, Some((syscall, n)), &klog));
            if r.signal() == Some(libc::SIGKILL) || r.code() == Some(137) {
                landed.push(ctx.clone());
            } else {
                assert_eq!(r.code(), Some(3), "{ctx}: {}", r.describe());
            }
            assert_each_kept(&app, &originals, &ctx);
            // The next repair finishes: everything listed verifies, one file is lost.
            let again = app.run(["repair", "--json"]);
            assert!(
                matches!(again.code(), Some(0 | 3)),
                "{ctx}: {}",
                again.describe()
            );
            assert_each_kept(&app, &originals, &ctx);
            let (code, reports) = verify_reports(&app, &["--all", "--read-data"]);
            assert_eq!(
                code,
                Some(0),
                "{ctx}: {reports:#?}\nthe second repair: {}\nfiles: {:#?}",
                again.describe(),
                files_under(&app.backups)
            );
            let repaired: Vec<Value> = app
                .list()
                .into_iter()
                .filter(|r| r["repaired"].is_object() && r["type"] == "full")
                .collect();
            assert_eq!(repaired.len(), 1, "{ctx}: {repaired:#?}");
            assert_eq!(repaired[0]["repaired"]["lost_files"], 1, "{ctx}");
            app.run(["create", "--type", "storage"]).assert_code(0);
            assert_store_exact(&app, &ctx);
        }
    }
    eprintln!("{} kills landed:\n{}", landed.len(), landed.join("\n"));
    assert!(landed.len() >= 10, "only {} kills landed", landed.len());
}
