//! Value types of the config file that check themselves while being deserialized, so a
//! bad value is reported by the TOML parser with the exact line of the offending key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, de};

use crate::units;

/// A byte size written as "1 GiB" or as an integer number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => units::parse_bytes(&s)
                .map(ByteSize)
                .map_err(de::Error::custom),
        }
    }
}

/// A duration written as "26h", "2d", "5m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        units::parse_duration(&s)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

/// File or directory permission bits written as an octal string, e.g. "0600".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bits = u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|b| *b <= 0o7777)
            .ok_or_else(|| {
                de::Error::custom(format!("`{s}` is not an octal mode; write e.g. \"0600\""))
            })?;
        Ok(Mode(bits))
    }
}

/// One job's schedule: a cron expression, or "off".
#[derive(Clone)]
pub enum JobSchedule {
    Off,
    Cron { expression: String, cron: Box<Cron> },
}

impl fmt::Debug for JobSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobSchedule::Off => f.write_str("off"),
            JobSchedule::Cron { expression, .. } => write!(f, "{expression:?}"),
        }
    }
}

impl PartialEq for JobSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression() == other.expression()
    }
}

impl JobSchedule {
    /// Parse crontab syntax: 5 fields (minute first) or 6 (seconds first); "off" disables.
    /// Day-of-month and weekday are ORed, as in Vixie cron.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("disabled") {
            return Ok(JobSchedule::Off);
        }
        let fields = t.split_whitespace().count();
        if !(t.starts_with('@') || fields == 5 || fields == 6) {
            return Err(format!(
                "`{t}` has {fields} fields; write a crontab line with 5 fields (\"0 2 * * *\"), 6 with seconds first, or \"off\""
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(t)
            .map_err(|e| format!("`{t}` is not a valid cron expression: {e}"))?;
        Ok(JobSchedule::Cron {
            expression: t.to_string(),
            cron: Box::new(cron),
        })
    }

    pub fn expression(&self) -> &str {
        match self {
            JobSchedule::Off => "off",
            JobSchedule::Cron { expression, .. } => expression,
        }
    }

    pub fn cron(&self) -> Option<&Cron> {
        match self {
            JobSchedule::Off => None,
            JobSchedule::Cron { cron, .. } => Some(cron),
        }
    }
}

impl<'de> Deserialize<'de> for JobSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobSchedule::parse(&s).map_err(de::Error::custom)
    }
}

/// The zone cron expressions are evaluated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timezone {
    /// The system's zone (`/etc/localtime`, `$TZ`).
    Local,
    Named(chrono_tz::Tz),
}

impl Timezone {
    /// `t` as wall-clock time in this zone (with its offset at that instant).
    pub fn localize<Z: chrono::TimeZone>(
        &self,
        t: &chrono::DateTime<Z>,
    ) -> chrono::DateTime<chrono::FixedOffset> {
        match self {
            Timezone::Local => t.with_timezone(&chrono::Local).fixed_offset(),
            Timezone::Named(z) => t.with_timezone(z).fixed_offset(),
        }
    }

    /// `2026-11-27 02:00:00 +01:00`: how times are shown to operators.
    pub fn format<Z: chrono::TimeZone>(&self, t: &chrono::DateTime<Z>) -> String {
        self.localize(t).format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timezone::Local => f.write_str("local"),
            Timezone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.eq_ignore_ascii_case("local") || s.is_empty() {
            return Ok(Timezone::Local);
        }
        chrono_tz::Tz::from_str(&s).map(Timezone::Named).map_err(|_| {
            de::Error::custom(format!(
                "unknown time zone `{s}`; write \"local\" or an IANA name such as \"Europe/Moscow\""
            ))
        })
    }
}

/// A secret (token) that never prints itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_crontab_and_seconds() {
        assert!(JobSchedule::parse("0 2 * * *").is_ok());
        assert!(JobSchedule::parse("*/2 * * * * *").is_ok());
        assert!(JobSchedule::parse("@daily").is_ok());
        assert_eq!(JobSchedule::parse("off"), Ok(JobSchedule::Off));
        assert!(JobSchedule::parse("0 25 * * *").is_err());
        assert!(JobSchedule::parse("every day").is_err());
        assert!(JobSchedule::parse("0 0 2 * * * 2027").is_err());
    }
}
