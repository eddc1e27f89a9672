//! Which generations the point-in-time window no longer needs, as a pure plan: a
//! generation reaches from its start to the next usable generation's start, so it may go
//! once a usable generation that started later began before the window (every time in
//! the window then restores from that one or a later one). An unusable generation (its
//! start interrupted) that is not the current one is of no use to any restore. The
//! current generation is never in the plan.

use chrono::{DateTime, Duration, Utc};

use super::store::GenerationInfo;

/// The generations to remove, oldest first. `generations` oldest first; `current`: the
/// one the replicator writes to.
pub fn expired(
    generations: &[(String, GenerationInfo)],
    current: Option<&str>,
    retain: std::time::Duration,
    now: DateTime<Utc>,
) -> Vec<String> {
    let window_start = Duration::from_std(retain)
        .ok()
        .and_then(|r| now.checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    // The latest usable generation that began at or before the window's start: every
    // generation before it is covered.
    let anchor = generations
        .iter()
        .rposition(|(_, g)| g.base_through.is_some() && g.started <= window_start);
    generations
        .iter()
        .enumerate()
        .filter(|(i, (name, g))| {
            Some(name.as_str()) != current
                && (anchor.is_some_and(|a| *i < a) || g.base_through.is_none())
        })
        .map(|(_, (name, _))| name.clone())
        .collect()
}

/// The oldest time a restore can reach: the start of the first usable generation.
pub fn window_start(generations: &[(String, GenerationInfo)]) -> Option<DateTime<Utc>> {
    generations
        .iter()
        .find(|(_, g)| g.base_through.is_some())
        .map(|(_, g)| g.started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn generation(name: &str, day: u32, usable: bool) -> (String, GenerationInfo) {
        (
            name.to_string(),
            GenerationInfo {
                started: Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0).unwrap(),
                reason: "the daily base".into(),
                page_size: 4096,
                base_sha256: String::new(),
                base_bytes: None,
                base_through: usable.then_some(3),
                end_tx: None,
            },
        )
    }

    #[test]
    fn a_generation_goes_once_a_later_usable_one_covers_the_whole_window() {
        let gens = vec![
            generation("a", 1, true),
            generation("b", 2, false),
            generation("c", 3, true),
            generation("d", 4, true),
            generation("e", 5, false),
        ];
        let week = std::time::Duration::from_secs(2 * 24 * 3600);
        // Window from the 3rd 12:00: `c` covers its start, so `a` goes; `b` never was
        // usable; `e` is the current one (its start under way).
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap();
        assert_eq!(expired(&gens, Some("e"), week, now), ["a", "b"]);
        // Window from the 1st 12:00: only `a` covers it, so only the unusable `b` goes.
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
        assert_eq!(expired(&gens, Some("e"), week, now), ["b"]);
        assert_eq!(window_start(&gens), Some(gens[0].1.started));
    }
}
