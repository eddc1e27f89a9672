//! The allowed range of every duration and size key. A value the parser accepts can still
//! be unusable further down (`busy_timeout = "30d"` overflows SQLite's millisecond
//! `int` and panicked inside every backup; a year-long hook timeout is a hang): each key
//! gets a range here, checked at load, so `check-config` rejects what a job would choke on.

use std::time::Duration;

use super::Config;
use crate::error::Error;
use crate::units::format_bytes;

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// One duration key, its value when set, and its inclusive bounds.
struct DurationKey {
    key: &'static str,
    value: Option<Duration>,
    min: Duration,
    max: Duration,
}

/// The largest `min_free_space`: 1 PiB, beyond any disk this runs on.
pub const MAX_MIN_FREE_SPACE: u64 = 1 << 50;

impl Config {
    /// Every duration and size key outside its range, each as an error naming key and line.
    pub(super) fn range_problems(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        for k in self.duration_keys() {
            let Some(value) = k.value else { continue };
            if value < k.min || value > k.max {
                problems.push(self.key_error(
                    k.key,
                    format!(
                        "{} is out of range: allowed from {} to {}",
                        humantime::format_duration(value),
                        humantime::format_duration(k.min),
                        humantime::format_duration(k.max)
                    ),
                ));
            }
        }
        let reserve = self.backup.min_free_space.0;
        if reserve > MAX_MIN_FREE_SPACE {
            problems.push(self.key_error(
                "backup.min_free_space",
                format!(
                    "{} is out of range: at most {}",
                    format_bytes(reserve),
                    format_bytes(MAX_MIN_FREE_SPACE)
                ),
            ));
        }
        problems
    }

    fn duration_keys(&self) -> [DurationKey; 8] {
        let key = |key, value: Option<Duration>, min, max| DurationKey {
            key,
            value,
            min,
            max,
        };
        let max_age = &self.alerts.max_age;
        [
            // SQLite takes milliseconds as a C int (~24 days); waiting an hour for the
            // app's writer is already a stuck app.
            key(
                "backup.busy_timeout",
                Some(self.backup.busy_timeout.0),
                Duration::ZERO,
                HOUR,
            ),
            key(
                "retention.keep_within",
                self.retention.keep_within.map(|d| d.0),
                SECOND,
                DAY * 36_500,
            ),
            key(
                "schedule.shutdown_grace",
                Some(self.schedule.shutdown_grace.0),
                Duration::ZERO,
                DAY,
            ),
            key(
                "alerts.max_age.full",
                max_age.full.map(|d| d.0),
                SECOND,
                DAY * 3650,
            ),
            key(
                "alerts.max_age.database",
                max_age.database.map(|d| d.0),
                SECOND,
                DAY * 3650,
            ),
            key(
                "alerts.max_age.storage",
                max_age.storage.map(|d| d.0),
                SECOND,
                DAY * 3650,
            ),
            key(
                "telegram.timeout",
                Some(self.telegram.timeout.0),
                SECOND,
                DAY,
            ),
            key("hooks.timeout", Some(self.hooks.timeout.0), SECOND, DAY),
        ]
    }
}
