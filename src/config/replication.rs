//! `[replication]`: continuous protection of the database — how often new transactions
//! are shipped (the most that can be lost), to which `[[offsite]]` targets, how far back
//! a restore to a time can reach, and when a lagging stream is alerted. Checked here; the
//! stream itself lives in src/replication/.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// `[replication]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSection {
    pub enabled: bool,
    pub interval: Option<HumanDuration>,
    pub targets: Option<Vec<String>>,
    pub retain: Option<HumanDuration>,
    pub max_lag: Option<HumanDuration>,
}

/// The checked `[replication]` settings (present only when enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// How often new committed transactions are read and shipped.
    pub interval: Duration,
    /// The `[[offsite]]` targets the stream goes to (names, checked), in config order.
    pub targets: Vec<String>,
    /// How far back a restore to a time reaches.
    pub retain: Duration,
    /// A target whose newest shipped transaction is older than this is alerted.
    pub max_lag: Duration,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_RETAIN: Duration = Duration::from_secs(3600);
const MAX_RETAIN: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// `[replication]` checked against the targets configured (`offsite`: their names);
/// problems as (key, message).
pub fn settings(
    section: &ReplicationSection,
    offsite: &[String],
) -> Result<Option<Replication>, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let interval = section.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        problems.push((
            "replication.interval".into(),
            "must be between 100ms and 1h: it is how often new transactions are shipped, \
             and so the most a lost disk can take (e.g. \"1s\")"
                .into(),
        ));
    }
    let retain = section.retain.map_or(DEFAULT_RETAIN, |d| d.0);
    if !(MIN_RETAIN..=MAX_RETAIN).contains(&retain) {
        problems.push((
            "replication.retain".into(),
            "must be between 1h and 10 years: it is how far back `restore --at` can reach \
             (e.g. \"7d\"); older states are what the scheduled backups keep"
                .into(),
        ));
    }
    let max_lag = section.max_lag.map_or(DEFAULT_MAX_LAG, |d| d.0);
    if max_lag <= interval {
        problems.push((
            "replication.max_lag".into(),
            format!(
                "must be longer than the interval ({}): a stream is behind only once a ship \
                 is overdue (e.g. \"60s\")",
                crate::units::format_duration(interval)
            ),
        ));
    }
    let targets = match &section.targets {
        None => offsite.to_vec(),
        Some(named) => {
            for name in named {
                if !offsite.contains(name) {
                    problems.push((
                        "replication.targets".into(),
                        format!(
                            "`{name}` is not an [[offsite]] target; name one of: {}",
                            if offsite.is_empty() {
                                "(none configured)".to_string()
                            } else {
                                offsite.join(", ")
                            }
                        ),
                    ));
                }
            }
            let mut unique = named.clone();
            unique.dedup();
            unique
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(section.enabled.then_some(Replication {
        interval,
        targets,
        retain,
        max_lag,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> ReplicationSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_ship_every_second_to_every_target() {
        let r = settings(&section("enabled = true"), &["a".into(), "b".into()])
            .unwrap()
            .unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        assert_eq!(r.targets, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(r.retain, DEFAULT_RETAIN);
        assert_eq!(r.max_lag, DEFAULT_MAX_LAG);
    }

    #[test]
    fn off_unless_enabled_but_checked_all_the_same() {
        assert_eq!(settings(&section(""), &[]).unwrap(), None);
        let problems = settings(&section("interval = \"0s\""), &[]).unwrap_err();
        assert_eq!(problems[0].0, "replication.interval");
    }

    #[test]
    fn unknown_targets_short_windows_and_lags_within_an_interval_are_refused() {
        let problems = settings(
            &section(
                "enabled = true\ninterval = \"10s\"\nmax_lag = \"5s\"\nretain = \"10m\"\ntargets = [\"nas\"]",
            ),
            &["s3".into()],
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "replication.retain",
                "replication.max_lag",
                "replication.targets"
            ]
        );
        assert!(problems[2].1.contains("name one of: s3"), "{problems:?}");
    }
}
