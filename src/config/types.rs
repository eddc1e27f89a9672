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

/// `[backup] max_unused`: how many unused bytes the snapshot store may hold before
/// rotation repacks it, in percent of the bytes its kept snapshots use — `"5%"`, `5`,
/// or `"unlimited"` (never repack). `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxUnused(pub Option<u32>);

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused(Some(5))
    }
}

impl<'de> Deserialize<'de> for MaxUnused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        let bad = |s: &str| {
            de::Error::custom(format!(
                "{s:?} is not a share of the used space: write a percentage (\"10%\") or \"unlimited\""
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(MaxUnused(Some(n))),
            Raw::Text(s) if s.trim() == "unlimited" => Ok(MaxUnused(None)),
            Raw::Text(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u32>().ok())
                .map(|n| MaxUnused(Some(n)))
                .ok_or_else(|| bad(&s)),
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
        let cron = cron_parser().parse(t).map_err(|e| {
            format!(
                "`{t}` is not a valid cron expression: {}",
                field_error(t, e)
            )
        })?;
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

    /// A line that parses but names no real date (`0 0 31 2 *`): the job would silently
    /// never run, so the config check refuses it like a malformed one.
    pub fn never_fires(&self) -> bool {
        let probe = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        self.cron()
            .is_some_and(|c| c.find_next_occurrence(&probe, false).is_err())
    }

    pub fn cron(&self) -> Option<&Cron> {
        match self {
            JobSchedule::Off => None,
            JobSchedule::Cron { cron, .. } => Some(cron),
        }
    }
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// The parser's error, naming the field at fault: croner says only "Number out of
/// bounds", so each field is tried alone (the others `*`) to find the first it refuses.
fn field_error(text: &str, error: croner::errors::CronError) -> String {
    let fields: Vec<&str> = text.split_whitespace().collect();
    // (field, what it allows): the operator fixing `25` needs to see "0–23".
    const SECOND: (&str, &str) = ("second", "0–59");
    const MINUTE: (&str, &str) = ("minute", "0–59");
    const HOUR: (&str, &str) = ("hour", "0–23");
    const DAY: (&str, &str) = ("day of month", "1–31 or L");
    const MONTH: (&str, &str) = ("month", "1–12 or JAN–DEC");
    const WEEKDAY: (&str, &str) = ("day of week", "0–7 (0 and 7 are Sunday) or SUN–SAT");
    let names: &[(&str, &str)] = match fields.len() {
        5 => &[MINUTE, HOUR, DAY, MONTH, WEEKDAY],
        6 => &[SECOND, MINUTE, HOUR, DAY, MONTH, WEEKDAY],
        _ => return error.to_string(),
    };
    for (i, (name, allowed)) in names.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        if let Err(e) = cron_parser().parse(&alone.join(" ")) {
            let why = e.to_string();
            let why = why.trim_end_matches('.');
            return format!("the {name} field `{}`: {why}; allowed {allowed}", fields[i]);
        }
    }
    error.to_string()
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

/// One entry of `[telegram] chat_ids`: a numeric chat id (negative for groups and
/// channels, e.g. -1001234567890) or a public channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatRef {
    Id(i64),
    Channel(String),
}

/// The forms `chat_ids` accepts, for every error about a wrong one.
pub const CHAT_ID_FORMS: &str = "write a numeric chat id (42, or -1001234567890 for a group or channel) or a channel's \"@username\"";

impl ChatRef {
    /// Parse one entry as written in the file or `$TELEGRAM_CHAT_ID`.
    pub fn parse(s: &str) -> Result<ChatRef, String> {
        let s = s.trim();
        if let Some(name) = s.strip_prefix('@') {
            // Telegram usernames: 5–32 characters, letters, digits and underscores.
            let valid = (5..=32).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return if valid {
                Ok(ChatRef::Channel(format!("@{name}")))
            } else {
                Err(format!(
                    "`{s}` is not a channel username (5–32 letters, digits or _); {CHAT_ID_FORMS}"
                ))
            };
        }
        s.parse::<i64>()
            .map(ChatRef::Id)
            .map_err(|_| format!("`{s}` is not a chat id; {CHAT_ID_FORMS}"))
    }
}

impl fmt::Display for ChatRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatRef::Id(id) => write!(f, "{id}"),
            ChatRef::Channel(name) => f.write_str(name),
        }
    }
}

impl PartialEq<i64> for ChatRef {
    fn eq(&self, other: &i64) -> bool {
        matches!(self, ChatRef::Id(id) if id == other)
    }
}

impl<'de> Deserialize<'de> for ChatRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ChatRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a chat id; {CHAT_ID_FORMS}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ChatRef, E> {
                Ok(ChatRef::Id(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ChatRef, E> {
                i64::try_from(v).map(ChatRef::Id).map_err(|_| {
                    E::custom(format!("{v} is too large for a chat id; {CHAT_ID_FORMS}"))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ChatRef, E> {
                ChatRef::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
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

    #[test]
    fn cron_errors_name_the_field_and_a_line_that_never_fires_is_refused() {
        let e = JobSchedule::parse("0 25 * * *").unwrap_err();
        assert!(e.contains("the hour field `25`"), "{e}");
        assert!(e.contains("allowed 0–23"), "{e}");
        let e = JobSchedule::parse("0 0 1 13 *").unwrap_err();
        assert!(e.contains("the month field `13`"), "{e}");
        assert!(e.contains("allowed 1–12 or JAN–DEC"), "{e}");
        let e = JobSchedule::parse("61 * * * * *").unwrap_err();
        assert!(e.contains("the second field `61`"), "{e}");
        assert!(e.contains("allowed 0–59"), "{e}");
        let e = JobSchedule::parse("0 0 * * 8").unwrap_err();
        assert!(e.contains("the day of week field `8`"), "{e}");
        assert!(e.contains("allowed 0–7"), "{e}");
        assert!(JobSchedule::parse("0 0 31 2 *").unwrap().never_fires());
        // The 29th of February exists, in leap years.
        assert!(!JobSchedule::parse("0 0 29 2 *").unwrap().never_fires());
    }
}
