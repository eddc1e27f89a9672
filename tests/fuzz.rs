//! Fuzz targets (issue 8), written as proptest properties so they run in every CI run
//! with a modest number of cases and for hours from `scripts/fuzz.sh` (`FUZZ_CASES`).
//! cargo-fuzz needs a nightly toolchain, which this project's machines do not have.
//!
//! - The config parser: mutations of the documented example config and of random text
//!   never panic (neither does computing the schedule of what parses); every rejection
//!   is an error that names a key, and a line inside the file when it gives one.
//! - The archive reader: structure-aware random tar archives (hostile names, links in and
//!   out, hard links, truncation, flipped bytes), raw or compressed, fed through the same
//!   reader and extractor a restore uses: never a panic, and nothing is ever written
//!   outside the target directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, FileFailurePersistence};

use vertex_backup::catalog::Format;
use vertex_backup::config::{Compression, Config};
use vertex_backup::engine::archive::read_archive;
use vertex_backup::engine::decrypt::Reading;
use vertex_backup::engine::extract::{Extractor, fresh_dir};
use vertex_backup::engine::{Cancel, Silent};

use crate::util::{Node, snapshot_tree};

/// Cases per property: small in CI, as many as wanted from `scripts/fuzz.sh`.
fn runner(default_cases: u32) -> RunnerConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    RunnerConfig {
        cases,
        // Failures are reported with their minimal input; nothing is written into src/.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..RunnerConfig::default()
    }
}

// =======================================================================================
// The config parser

const EXAMPLE: &str = include_str!("../config/vertex-backup.toml");

/// Values that stress each kind of setting: sizes, durations, modes, cron lines, zones.
const HOSTILE_VALUES: &[&str] = &[
    "\"\"",
    "0",
    "-1",
    "18446744073709551616",
    "9223372036854775807",
    "1e309",
    "nan",
    "inf",
    "true",
    "[]",
    "{}",
    "[1, \"a\"]",
    "\"0 0 31 2 *\"",
    "\"* * * * * * *\"",
    "\"*/0 * * * *\"",
    "\"60 * * * *\"",
    "\"0 2 * * 8\"",
    "\"@yearly\"",
    "\"off\"",
    "\"99999999999 TiB\"",
    "\"1 ZiB\"",
    "\"-5 MiB\"",
    "\"5x\"",
    "\"0s\"",
    "\"18446744073709551615s\"",
    "\"9999999999999999d\"",
    "\"07777\"",
    "\"0999\"",
    "\"Mars/Olympus_Mons\"",
    "\"../../etc/passwd\"",
    "\"/\"",
    "\"\\u0000\"",
    "\"ÿ\u{202e}\"",
    "\"127.0.0.1:99999\"",
    "\"[::1]:0\"",
    "\"not an address\"",
    "\"zstd\"",
    "\"gzip\"",
    "-99",
    "99",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Replace the value after `=` on a line.
    ReplaceValue(usize, usize),
    /// Insert raw text at a byte offset (snapped to a char boundary).
    Insert(usize, String),
    /// Cut the text at a byte offset.
    Truncate(usize),
    /// Uncomment a commented-out `key = value` line.
    Uncomment(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(l, v)| Mutation::ReplaceValue(l, v)),
        (
            any::<usize>(),
            "[\\[\\]=\"#\n a-z0-9.\\\\\u{0}-\u{1f}\u{80}-\u{10ffff}]{0,12}"
        )
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::Uncomment),
    ]
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::ReplaceValue(i, v) => {
            let l = &mut lines[i % n];
            if let Some(eq) = l.find('=') {
                *l = format!("{} {}", &l[..=eq], HOSTILE_VALUES[v % HOSTILE_VALUES.len()]);
            }
        }
        Mutation::Insert(at, s) => {
            let mut t = lines.join("\n");
            let at = floor_char_boundary(&t, *at % (t.len() + 1));
            t.insert_str(at, s);
            return t;
        }
        Mutation::Truncate(at) => {
            let t = lines.join("\n");
            let at = floor_char_boundary(&t, *at % (t.len() + 1));
            return t[..at].to_string();
        }
        Mutation::Uncomment(i) => {
            let l = &mut lines[i % n];
            if let Some(rest) = l.trim_start().strip_prefix('#') {
                *l = rest.trim_start().to_string();
            }
        }
    }
    lines.join("\n")
}

/// Parse `text` as a config file and check the outcome is sane either way.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let dir = Path::new("/nonexistent-vertex-backup-fuzz");
    let file = dir.join("vertex-backup.toml");
    let env = |_: &str| None;
    match Config::parse(text, Some(file.clone()), dir, &env) {
        Ok(config) => {
            // What the daemon computes right after loading must not panic either.
            let now = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
            for (_, job) in config.jobs() {
                let next =
                    vertex_backup::schedule::next_runs(job, config.schedule.timezone, now, 3);
                vertex_backup::schedule::previous_run(job, config.schedule.timezone, now);
                prop_assert!(
                    next.windows(2).all(|w| w[0] < w[1]),
                    "next runs not increasing"
                );
            }
            let _ = config.permission_warning();
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.trim().is_empty(), "an empty error for {text:?}");
            if let vertex_backup::Error::Config { line: Some(l), .. } = &e {
                let lines = text.lines().count().max(1);
                prop_assert!(
                    *l >= 1 && *l <= lines + 1,
                    "error points at line {l} of a {lines}-line file: {msg}"
                );
                prop_assert!(msg.contains(&format!("line {l}")), "line not in: {msg}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(runner(256))]

    #[test]
    fn config_parser_never_panics_on_mutations_of_the_example(
        mutations in prop::collection::vec(mutation(), 1..6)
    ) {
        let mut text = EXAMPLE.to_string();
        for m in &mutations {
            text = apply(&text, m);
        }
        check_config(&text)?;
    }

    #[test]
    fn config_parser_never_panics_on_random_text(text in "(?s).{0,400}") {
        check_config(&text)?;
    }

    #[test]
    fn config_parser_never_panics_on_random_sections_and_keys(
        body in prop::collection::vec(
            (
                prop::sample::select(vec!["paths", "backup", "retention", "schedule", "alerts", "telegram", "api", "hooks", "x"]),
                prop::sample::select(vec!["database", "storage", "backup_dir", "compression", "compression_level", "threads", "exclude", "min_free_space", "file_mode", "dir_mode", "busy_timeout", "keep_last", "keep_daily", "keep_within", "timezone", "full", "rotate", "max_age", "bot_token", "chat_id", "chat_ids", "listen", "token", "timeout", "before", "shutdown_grace", "integrity_check"]),
                prop::sample::select(HOSTILE_VALUES.to_vec()),
            ),
            0..12,
        )
    ) {
        let mut text = String::new();
        for (section, key, value) in &body {
            text.push_str(&format!("[{section}]\n{key} = {value}\n"));
        }
        check_config(&text)?;
    }
}

// =======================================================================================
// The archive reader

#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File(String, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
}

/// Path pieces that try every trick: parent steps, absolute roots, dots, long names,
/// control characters; `@JAIL@` becomes the absolute path of the jail around the target.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,8}",
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just("".to_string()),
        1 => Just("@JAIL@".to_string()),
        1 => Just("outside".to_string()),
        1 => Just("storage".to_string()),
        1 => "[a-z\n\t\\-]{100,120}",
    ]
}

/// A path: maybe under an earlier entry's path (`@PREV<n>@`, resolved when the archive
/// is built), so links are followed by entries that try to pass through them.
fn entry_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.8),
        prop::option::weighted(0.5, any::<u8>()),
        prop::collection::vec(component(), 1..4),
    )
        .prop_map(|(under_top, prev, parts)| {
            let p = parts.join("/");
            match prev {
                Some(n) => format!("@PREV{n}@/{p}"),
                None if under_top => format!("storage/{p}"),
                None => p,
            }
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        2 => entry_path().prop_map(Entry::Dir),
        4 => (entry_path(), prop::collection::vec(any::<u8>(), 0..600))
            .prop_map(|(p, d)| Entry::File(p, d)),
        3 => (entry_path(), link_target()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        1 => (entry_path(), link_target()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
    ]
}

/// Link targets: relative climbs, absolute paths into the jail, or another entry's path.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => entry_path(),
        1 => Just("@JAIL@/outside".to_string()),
        1 => Just("../outside".to_string()),
        1 => Just("../../outside".to_string()),
        1 => Just("../../../outside/sentinel".to_string()),
        1 => Just("@JAIL@/outside/sentinel".to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        2 => prop::collection::vec((any::<usize>(), 1u8..=255), 1..8).prop_map(Damage::Flip),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

/// Write raw tar headers by hand (the `tar` crate's builder refuses `..` and absolute
/// names, which is exactly what a hostile archive contains).
fn build_tar(entries: &[Entry], jail: &Path) -> Vec<u8> {
    let jail = jail.to_string_lossy();
    let mut names: Vec<String> = Vec::new();
    let fix = |s: &str, names: &[String]| {
        let mut s = s.replace("@JAIL@", &jail);
        if let Some(rest) = s.strip_prefix("@PREV") {
            let (n, tail) = rest.split_once("@/").unwrap_or(("0", rest));
            let n: usize = n.parse().unwrap_or(0);
            let base = names
                .get(n % names.len().max(1))
                .cloned()
                .unwrap_or_default();
            s = format!("{base}/{tail}");
        }
        s
    };
    let mut out = Vec::new();
    for e in entries {
        let (name, kind, data, link): (String, tar::EntryType, &[u8], String) = match e {
            Entry::Dir(p) => (
                fix(p, &names),
                tar::EntryType::Directory,
                &[],
                String::new(),
            ),
            Entry::File(p, d) => (fix(p, &names), tar::EntryType::Regular, d, String::new()),
            Entry::Symlink(p, t) => (fix(p, &names), tar::EntryType::Symlink, &[], fix(t, &names)),
            Entry::Hardlink(p, t) => (fix(p, &names), tar::EntryType::Link, &[], fix(t, &names)),
        };
        names.push(name.clone());
        for (long, kind) in [(&name, b'L'), (&link, b'K')] {
            if long.len() >= 100 {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                h.set_entry_type(tar::EntryType::new(kind));
                h.set_size(long.len() as u64 + 1);
                h.set_mode(0o644);
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(long.as_bytes());
                out.push(0);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
        let mut h = tar::Header::new_gnu();
        let raw = h.as_old_mut();
        let n = name.len().min(99);
        raw.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let l = link.len().min(99);
        raw.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn compress(raw: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => raw.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(raw, 1).unwrap(),
    }
}

fn apply_damage(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Flip(flips) => {
            if !bytes.is_empty() {
                let n = bytes.len();
                for (at, x) in flips {
                    bytes[at % n] ^= x;
                }
            }
        }
        Damage::Truncate(at) => {
            let n = bytes.len();
            bytes.truncate(at % (n + 1));
        }
    }
    bytes
}

/// Everything under `jail` except the target directory itself.
fn outside_target(jail: &Path) -> BTreeMap<PathBuf, Node> {
    let mut tree = snapshot_tree(jail);
    tree.retain(|p, _| !p.starts_with("target") || p.as_os_str().is_empty());
    // The jail's own mtime changes when the target is created; compare contents only.
    tree.remove(Path::new(""));
    tree
}

proptest! {
    #![proptest_config(runner(256))]

    #[test]
    fn archive_reader_never_panics_and_never_writes_outside_the_target(
        entries in prop::collection::vec(entry(), 0..10),
        compression in prop::sample::select(vec![Compression::None, Compression::Gzip, Compression::Zstd]),
        damage_raw in damage(),
        damage_packed in damage(),
    ) {
        let tmp = tempfile::Builder::new().prefix("vertex-backup-fuzz-").tempdir().unwrap();
        let jail = tmp.path().join("jail");
        fs::create_dir_all(jail.join("outside")).unwrap();
        fs::write(jail.join("outside/sentinel"), b"must not change\n").unwrap();
        fs::write(jail.join("storage"), b"a file where a climbing entry might land\n").unwrap();
        let raw = apply_damage(build_tar(&entries, &jail), &damage_raw);
        let packed = apply_damage(compress(&raw, compression), &damage_packed);
        let archive = tmp.path().join(format!("storage_backup_fuzz.{}", compression.extension()));
        fs::write(&archive, &packed).unwrap();

        let before = outside_target(&jail);
        let target = jail.join("target");
        fresh_dir(&target).unwrap();
        let mut extractor = Extractor::new(&target, &archive);
        let format = Format::archive(compression);
        let reading = Reading { format: &format, identity: None };
        let read = read_archive(&archive, reading, None, &Silent, &Cancel::new(), &mut extractor);
        if read.is_ok() {
            let _ = extractor.finish();
        }
        let after = outside_target(&jail);
        prop_assert_eq!(before, after, "something outside the target changed");
        // Nothing under the target is a link that the restore would have to follow.
        for (rel, node) in snapshot_tree(&target) {
            if let crate::util::NodeKind::Symlink { target: t } = &node.kind {
                prop_assert!(
                    vertex_backup::engine::archive::link_stays_inside(&rel, t),
                    "restored symlink {:?} -> {:?} leaves the tree", rel, t
                );
            }
        }
    }
}
