//! The offsite families of `/metrics`: per target and type the last upload, the bytes
//! uploaded and staleness; per target the failed upload jobs and what is pending. Target
//! names need no escaping in labels: the config allows only letters, digits, `-`, `_`.

use std::collections::BTreeMap;

use super::{Health, OffsiteView};
use crate::kind::BackupKind;

type Samples = Vec<(String, f64)>;

/// Write the offsite families through `family` (name, type, help, samples).
pub(super) fn render(
    family: &mut impl FnMut(&str, &str, &str, Samples),
    view: &OffsiteView,
    failures: &BTreeMap<String, u64>,
    health: &Health,
) {
    if view.targets.is_empty() {
        return;
    }
    let record = |t: &str| view.state.targets.get(t).cloned().unwrap_or_default();
    // Every type a target takes, labelled; `f` gives the value or leaves the sample out.
    let per_type = |f: &dyn Fn(&str, BackupKind) -> Option<f64>| -> Samples {
        view.targets
            .iter()
            .flat_map(|t| {
                BackupKind::ALL
                    .into_iter()
                    .filter(|k| t.takes(*k))
                    .filter_map(|k| {
                        let labels = format!("{{target=\"{}\",type=\"{k}\"}}", t.name);
                        f(&t.name, k).map(|v| (labels, v))
                    })
            })
            .collect()
    };
    let per_target = |f: &dyn Fn(&str) -> f64| -> Samples {
        view.targets
            .iter()
            .map(|t| (format!("{{target=\"{}\"}}", t.name), f(&t.name)))
            .collect()
    };
    family(
        "vertex_backup_offsite_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful upload of a backup of this type to this target.",
        per_type(&|t, k| {
            record(t)
                .last_upload
                .get(&k)
                .map(|at| at.timestamp() as f64)
        }),
    );
    family(
        "vertex_backup_offsite_uploaded_bytes_total",
        "counter",
        "Bytes of backups of this type this server uploaded to this target.",
        per_type(&|t, k| Some(record(t).uploaded_bytes.get(&k).copied().unwrap_or(0) as f64)),
    );
    family(
        "vertex_backup_offsite_stale",
        "gauge",
        "1 when this target has no complete copy of this type newer than its max_age.",
        per_type(&|t, k| {
            Some(if health.is_offsite_stale(t, k) {
                1.0
            } else {
                0.0
            })
        }),
    );
    family(
        "vertex_backup_offsite_failures_total",
        "counter",
        "Failed upload jobs to this target since the daemon started.",
        per_target(&|t| failures.get(t).copied().unwrap_or(0) as f64),
    );
    family(
        "vertex_backup_offsite_pending_backups",
        "gauge",
        "Backups not on this target yet, as the last upload job left them.",
        per_target(&|t| record(t).pending.len() as f64),
    );
    family(
        "vertex_backup_offsite_pending_bytes",
        "gauge",
        "Bytes of the backups not on this target yet.",
        per_target(&|t| record(t).pending_bytes as f64),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use chrono::{TimeZone, Utc};

    use super::super::{Health, Metrics, OffsiteView};
    use crate::catalog::{CatalogState, Listing};
    use crate::config::Config;
    use crate::events::{Event, Sink};
    use crate::kind::BackupKind;
    use crate::offsite::OffsiteState;

    fn sample<'a>(text: &'a str, line_start: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
    }

    #[test]
    fn offsite_families_per_target_and_type_from_state_events_and_health() {
        let config = Config::parse(
            "[[offsite]]\nname = \"b2\"\nurl = \"s3://bucket/p\"\nupload = [\"database\"]\n\
             [[offsite]]\nname = \"nas\"\nurl = \"/mnt/nas\"\n",
            None,
            Path::new("/srv"),
            &|_| None,
        )
        .unwrap();
        let mut state = OffsiteState::default();
        let b2 = state.targets.entry("b2".into()).or_default();
        let uploaded = Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, 0).unwrap();
        b2.last_upload.insert(BackupKind::Database, uploaded);
        b2.uploaded_bytes.insert(BackupKind::Database, 4096);
        b2.pending = vec!["db_backup_x".into(), "db_backup_y".into()];
        b2.pending_bytes = 777;
        let metrics = Metrics::default();
        for _ in 0..2 {
            metrics.handle(&Event::OffsiteUploadFailed {
                target: "b2".into(),
                error: "refused".into(),
                hint: None,
                pending: Vec::new(),
                pending_bytes: 0,
                failing_since: None,
            });
        }
        let health = Health::default();
        health.set_offsite_stale(BTreeSet::from([("b2".to_string(), BackupKind::Database)]));
        let view = OffsiteView {
            targets: &config.offsite,
            state: &state,
        };
        let text = metrics.render(
            &Listing::default(),
            &CatalogState::default(),
            &health,
            &view,
            None,
        );
        let last = "vertex_backup_offsite_last_success_timestamp_seconds";
        assert_eq!(
            sample(&text, &format!("{last}{{target=\"b2\",type=\"database\"}}")),
            Some(uploaded.timestamp().to_string().as_str()),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("{last}{{target=\"nas\",type=\"full\"}}")),
            None,
            "no upload yet: no sample\n{text}"
        );
        assert!(
            !text.contains("target=\"b2\",type=\"full\""),
            "b2 does not take full backups\n{text}"
        );
        let expect = [
            (
                "vertex_backup_offsite_uploaded_bytes_total{target=\"b2\",type=\"database\"}",
                "4096",
            ),
            (
                "vertex_backup_offsite_uploaded_bytes_total{target=\"nas\",type=\"storage\"}",
                "0",
            ),
            (
                "vertex_backup_offsite_stale{target=\"b2\",type=\"database\"}",
                "1",
            ),
            (
                "vertex_backup_offsite_stale{target=\"nas\",type=\"database\"}",
                "0",
            ),
            ("vertex_backup_offsite_failures_total{target=\"b2\"}", "2"),
            ("vertex_backup_offsite_failures_total{target=\"nas\"}", "0"),
            ("vertex_backup_offsite_pending_backups{target=\"b2\"}", "2"),
            ("vertex_backup_offsite_pending_bytes{target=\"b2\"}", "777"),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
        }
        assert!(text.contains("# TYPE vertex_backup_offsite_failures_total counter"));
        // Without targets, no offsite family at all.
        let none = OffsiteView {
            targets: &[],
            state: &state,
        };
        let text = metrics.render(
            &Listing::default(),
            &CatalogState::default(),
            &health,
            &none,
            None,
        );
        assert!(!text.contains("vertex_backup_offsite_"), "{text}");
    }

    #[test]
    fn a_stale_target_degrades_health_without_making_it_unhealthy() {
        let health = Health::default();
        let now = Utc::now();
        health.tick(now);
        assert!(health.degraded().is_empty());
        health.set_offsite_stale(BTreeSet::from([("b2".to_string(), BackupKind::Full)]));
        assert!(health.problems(now).is_empty());
        let degraded = health.degraded();
        assert_eq!(degraded.len(), 1);
        assert!(
            degraded[0].contains("b2") && degraded[0].contains("full"),
            "{degraded:?}"
        );
        health.set_offsite_stale(BTreeSet::new());
        assert!(health.degraded().is_empty());
    }

    #[test]
    fn container_stop_and_start_failures_are_counted_apart() {
        let config = Config::parse("", None, Path::new("/srv"), &|_| None).unwrap();
        let metrics = Metrics::default();
        metrics.handle(&Event::ContainerStopFailed {
            job: "storage backup".into(),
            container: "app".into(),
            error: "no answer within 2m".into(),
        });
        for _ in 0..2 {
            metrics.handle(&Event::ContainersNotStarted {
                job: "restore".into(),
                containers: vec!["app".into()],
                error: "unreachable".into(),
            });
        }
        let view = OffsiteView {
            targets: &config.offsite,
            state: &OffsiteState::default(),
        };
        let text = metrics.render(
            &Listing::default(),
            &CatalogState::default(),
            &Health::default(),
            &view,
            None,
        );
        let family = "vertex_backup_container_failures_total";
        assert_eq!(
            sample(&text, &format!("{family}{{op=\"stop\"}}")),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("{family}{{op=\"start\"}}")),
            Some("2"),
            "{text}"
        );
        assert!(text.contains(&format!("# TYPE {family} counter")), "{text}");
    }
}
