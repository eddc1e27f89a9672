//! Which backup the operator means: a name exactly as `list` prints it, a path (as
//! [`super::restore::resolve_backup`] takes it), the newest good backup of a type
//! (`--latest`), or the newest good one taken at or before a time (`--at`, read in the
//! configured `[schedule] timezone`). One resolver for `restore`, `verify` and `ls`, so the
//! three never disagree about what a name or a time picks.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};

use super::backup::catalog_for;
use super::restore::resolve_backup;
use crate::Config;
pub use crate::catalog::choice::listed_name;
use crate::catalog::choice::{good_of_kind, latest_good, passed_over};
use crate::catalog::{BackupEntry, Catalog, Listing, Verdicts};
use crate::config::Timezone;
use crate::error::{Error, Result};
use crate::kind::BackupKind;

/// How a backup was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRef {
    /// A name as `list` prints it (`db_backup_20261201_090129.db`, its stem or its
    /// `.json`), or a path to a backup's data or metadata file.
    Given(PathBuf),
    /// The newest good backup of a type.
    Latest(BackupKind),
    /// The newest good backup of a type taken at or before a time, as the operator wrote
    /// it (`2026-11-30 14:00`, or RFC 3339).
    At { time: String, kind: BackupKind },
}

/// The backup found, with the catalog and listing it was found in.
#[derive(Debug, Clone)]
pub struct Selected {
    pub catalog: Catalog,
    pub listing: Listing,
    pub entry: BackupEntry,
    /// Newer backups of the type `--latest`/`--at` passed over, each with why (incomplete,
    /// failed verification, dated in the future): never passed over silently — the
    /// commands name them and exit 3.
    pub passed_over: Vec<(String, String)>,
}

/// Find the backup `wanted` names; a relative path is taken from `cwd`.
pub fn select_backup(config: &Config, cwd: &Path, wanted: &BackupRef) -> Result<Selected> {
    match wanted {
        BackupRef::Given(given) => by_name_or_path(config, cwd, given),
        BackupRef::Latest(kind) => {
            let (catalog, listing, verdicts) = configured_listing(config)?;
            let Some((entry, passed_over)) = latest_good(&listing, &verdicts, *kind) else {
                return Err(Error::NoSuchBackup {
                    wanted: format!("--latest {}", kind.as_str()),
                    reason: format!(
                        "{} holds no complete {} backup that has not failed verification",
                        crate::names::shown(catalog.root()),
                        kind.as_str()
                    ),
                });
            };
            let entry = entry.clone();
            Ok(Selected {
                catalog,
                listing,
                entry,
                passed_over,
            })
        }
        BackupRef::At { time, kind } => {
            let at = parse_time(time, config.schedule.timezone)?;
            let (catalog, listing, verdicts) = configured_listing(config)?;
            let found = good_of_kind(&listing, &verdicts, *kind)
                .find(|b| b.created.is_some_and(|c| c <= at))
                .cloned();
            let entry = found.ok_or_else(|| Error::NoSuchBackup {
                wanted: format!("--at \"{time}\""),
                reason: nothing_before(&listing, &verdicts, *kind, at, config.schedule.timezone),
            })?;
            let passed_over = passed_over(&listing, &verdicts, *kind, &entry, Some(at));
            Ok(Selected {
                catalog,
                listing,
                entry,
                passed_over,
            })
        }
    }
}

/// Why `--at` found nothing: the oldest good backup there is, or that there is none.
fn nothing_before(
    listing: &Listing,
    verdicts: &Verdicts,
    kind: BackupKind,
    at: DateTime<FixedOffset>,
    zone: Timezone,
) -> String {
    let kind_name = kind.as_str();
    let asked = zone.format(&at);
    match good_of_kind(listing, verdicts, kind).last() {
        Some(oldest) => format!(
            "no complete {kind_name} backup was taken at or before {asked}; the oldest is {}{}",
            listed_name(oldest),
            oldest
                .created
                .map(|c| format!(", taken {}", zone.format(&c)))
                .unwrap_or_default()
        ),
        None => format!("there is no complete {kind_name} backup at all (asked for {asked})"),
    }
}

/// The catalog of the configured backup directory, its listing and the verdicts.
fn configured_listing(config: &Config) -> Result<(Catalog, Listing, Verdicts)> {
    let catalog = catalog_for(config);
    if !catalog.root().is_dir() {
        return Err(Error::NoSuchBackup {
            wanted: "a backup".into(),
            reason: format!(
                "the backup directory {} does not exist; check --backup-dir or [paths] backup_dir",
                crate::names::shown(catalog.root())
            ),
        });
    }
    let listing = catalog.list()?;
    let verdicts = catalog.load_verdicts();
    Ok((catalog, listing, verdicts))
}

/// A bare name is looked up in the configured backup directory first (by the name `list`
/// prints, its metadata's name or its stem); anything else, or a name that is not there
/// but exists as a file, is a path.
fn by_name_or_path(config: &Config, cwd: &Path, given: &Path) -> Result<Selected> {
    let bare = matches!(
        given.components().collect::<Vec<_>>().as_slice(),
        [Component::Normal(_)]
    );
    let path = cwd.join(given);
    if bare {
        let name = given.to_string_lossy();
        if let Ok((catalog, listing, _)) = configured_listing(config) {
            let found = listing.backups.iter().find(|b| {
                b.stem == name
                    || listed_name(b) == name
                    || b.meta_path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy() == name)
            });
            if let Some(entry) = found.cloned() {
                return Ok(Selected {
                    catalog,
                    listing,
                    entry,
                    passed_over: Vec::new(),
                });
            }
        }
        if !path.exists() {
            return Err(Error::NoSuchBackup {
                wanted: format!("\"{name}\""),
                reason: format!(
                    "{} holds no backup of that name, and no such file is in the working directory",
                    crate::names::shown(&config.paths.backup_dir)
                ),
            });
        }
    }
    let (catalog, listing, entry) = resolve_backup(config, &path)?;
    Ok(Selected {
        catalog,
        listing,
        entry,
        passed_over: Vec::new(),
    })
}

/// `2026-11-30 14:00[:SS]` (also with `T`) as wall-clock time in `zone`, or RFC 3339. A
/// time a DST change skips is refused; one it repeats means its later occurrence, so
/// `--at` never excludes a backup taken in the repeated hour.
pub fn parse_time(text: &str, zone: Timezone) -> Result<DateTime<FixedOffset>> {
    let text = text.trim();
    let bad = |why: String| Error::NoSuchBackup {
        wanted: format!("--at \"{text}\""),
        reason: why,
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| {
            bad(format!(
                "not a time: write \"YYYY-MM-DD HH:MM[:SS]\" (in the [schedule] timezone, {zone}) or RFC 3339 (\"2026-11-30T14:00:00+01:00\")"
            ))
        })?;
    let local = match zone {
        Timezone::Local => chrono::Local
            .from_local_datetime(&naive)
            .latest()
            .map(|t| t.fixed_offset()),
        Timezone::Named(tz) => tz
            .from_local_datetime(&naive)
            .latest()
            .map(|t| t.fixed_offset()),
    };
    local.ok_or_else(|| {
        bad(format!(
            "{naive} does not exist in {zone} (skipped by a daylight-saving change)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_time_is_read_in_the_configured_zone() {
        let zone = Timezone::Named(chrono_tz::Europe::Berlin);
        let t = parse_time("2026-11-30 14:00", zone).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-30T14:00:00+01:00");
        let t = parse_time("2026-07-01T08:30:15", zone).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-07-01T08:30:15+02:00");
    }

    #[test]
    fn rfc3339_keeps_its_own_offset() {
        let zone = Timezone::Named(chrono_tz::Europe::Berlin);
        let t = parse_time("2026-11-30T14:00:00Z", zone).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-30T14:00:00+00:00");
    }

    #[test]
    fn skipped_and_garbled_times_are_refused() {
        let zone = Timezone::Named(chrono_tz::Europe::Berlin);
        let skipped = parse_time("2026-03-29 02:30", zone)
            .unwrap_err()
            .to_string();
        assert!(skipped.contains("does not exist"), "{skipped}");
        let garbled = parse_time("yesterday", zone).unwrap_err().to_string();
        assert!(garbled.contains("YYYY-MM-DD HH:MM"), "{garbled}");
    }

    #[test]
    fn a_repeated_hour_means_its_later_occurrence() {
        let zone = Timezone::Named(chrono_tz::Europe::Berlin);
        let t = parse_time("2026-10-25 02:30", zone).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-10-25T02:30:00+01:00");
    }
}
