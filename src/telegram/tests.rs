use super::*;
use crate::events::BackupFacts;
use crate::kind::BackupKind;

fn facts(name: &str) -> BackupFacts {
    BackupFacts {
        kind: BackupKind::Database,
        file_name: name.into(),
        size: 68 * 1024 * 1024,
        added_to_store: None,
        file_count: 1,
        duration: Duration::from_millis(900),
        checksum: "3f9a0000000000000000000000000000000000000000000000000000c21e".into(),
        integrity_check: Some("ok".into()),
        warnings: vec![],
        disk: Some(DiskSpace {
            free: 41 * 1024 * 1024 * 1024,
            total: 66 * 1024 * 1024 * 1024,
        }),
        stopped: vec![],
    }
}

#[test]
fn success_message_has_the_facts() {
    let m = format_message(
        &Event::BackupSucceeded {
            facts: facts("db_backup_20261127_060000.db"),
            next_run: None,
        },
        "vertex-prod",
    );
    assert!(
        m.starts_with("✅ <b>vertex-prod</b> · database backup"),
        "{m}"
    );
    assert!(
        m.contains("db_backup_20261127_060000.db · 68.0 MiB · 1 file · 0.9 s"),
        "{m}"
    );
    assert!(m.contains("sha256 3f9a…c21e · integrity ok"), "{m}");
    assert!(m.contains("disk: 41.0 GiB free (62 %)"), "{m}");
}

#[test]
fn a_snapshot_message_says_what_it_holds_and_what_it_added() {
    let mut f = facts("storage_snapshot_20261127_060000.tree.zst");
    f.kind = BackupKind::Storage;
    f.size = 284 * 1024 * 1024;
    f.added_to_store = Some(1536 * 1024);
    let event = Event::BackupSucceeded {
        facts: f,
        next_run: None,
    };
    let m = format_message(&event, "vertex-prod");
    assert!(
        m.contains("storage_snapshot_20261127_060000.tree.zst · 284.0 MiB, 1.5 MiB added · 1 file"),
        "{m}"
    );
    assert!(
        event
            .summary()
            .contains("(284.0 MiB, 1.5 MiB added, 1 file"),
        "{}",
        event.summary()
    );
}

#[test]
fn dynamic_values_are_escaped() {
    let m = format_message(
        &Event::BackupFailed {
            job: crate::kind::JobName::Storage,
            step: "write <archive>".into(),
            error: "No space left & <b>bold</b> file_name_x".into(),
            hint: Some("free space".into()),
            disk: None,
            last_success: None,
            next_run: None,
            cancelled: false,
        },
        "host<&>",
    );
    assert!(m.contains("<b>host&lt;&amp;&gt;</b>"), "{m}");
    assert!(
        m.contains("No space left &amp; &lt;b&gt;bold&lt;/b&gt; file_name_x"),
        "{m}"
    );
    assert!(m.contains("FAILED at \"write &lt;archive&gt;\""), "{m}");
    // The only tags are ours.
    assert_eq!(m.matches("<b>").count(), 1, "{m}");
}

#[test]
fn long_errors_are_cut_to_the_limit_without_breaking_entities() {
    let error = "x&".repeat(5000);
    let m = format_message(&Event::RotationFailed { error }, "h");
    assert!(m.chars().count() <= MAX_MESSAGE);
    assert!(m.ends_with("(cut to fit Telegram's limit)"));
    let body = m.trim_end_matches("\n… (cut to fit Telegram's limit)");
    assert!(
        body.ends_with(';') || body.ends_with('x'),
        "half an entity left: {}",
        &body[body.len() - 10..]
    );
}

#[test]
fn redaction_removes_the_token_and_its_secret_half() {
    let token = "123456:ABCdefGHIjklMNOpqr";
    let text = format!(
        "error sending request for url (https://api.telegram.org/bot{token}/SendMessage) ABCdefGHIjklMNOpqr"
    );
    let r = redact(&text, token);
    assert!(!r.contains("ABCdefGHIjklMNOpqr"), "{r}");
    assert!(r.contains("<redacted>"));
}

fn failed(cancelled: bool, next_run: Option<chrono::DateTime<chrono::FixedOffset>>) -> Event {
    Event::BackupFailed {
        job: crate::kind::JobName::Database,
        step: "copy the database".into(),
        error: "cancelled before it finished; no partial backup was kept".into(),
        hint: None,
        disk: None,
        last_success: None,
        next_run,
        cancelled,
    }
}

#[test]
fn a_backup_cancelled_by_shutdown_is_not_a_failure_and_has_no_next_try() {
    let next = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:30+00:00").unwrap();
    let m = format_message(&failed(true, Some(next)), "h");
    assert!(
        m.contains("database backup cancelled by the shutdown"),
        "{m}"
    );
    assert!(!m.contains("FAILED"), "{m}");
    assert!(!m.contains("Next try"), "{m}");
    let m = format_message(&failed(false, Some(next)), "h");
    assert!(m.contains("FAILED") && m.contains("Next try"), "{m}");
}

#[test]
fn next_run_times_keep_their_seconds_only_when_they_have_them() {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let now = t("2026-12-01T10:00:00+00:00");
    assert_eq!(when_from(&t("2026-12-01T12:00:30+00:00"), &now), "12:00:30");
    assert_eq!(when_from(&t("2026-12-01T12:00:00+00:00"), &now), "12:00");
    assert_eq!(
        when_from(&t("2026-12-02T03:04:05+00:00"), &now),
        "Wed 03:04:05"
    );
    assert_eq!(
        when_from(&t("2027-01-02T03:04:00+00:00"), &now),
        "2027-01-02 03:04"
    );
}

#[test]
fn counts_read_as_english() {
    let m = format_message(&Event::VerifyPassed { checked: 1 }, "h");
    assert!(m.contains("restore drill: 1 backup verified"), "{m}");
    let m = format_message(&Event::VerifyPassed { checked: 3 }, "h");
    assert!(m.contains("3 backups verified"), "{m}");
    let mut f = facts("db.db");
    f.warnings = vec!["one".into()];
    let m = format_message(
        &Event::BackupSucceeded {
            facts: f,
            next_run: None,
        },
        "h",
    );
    assert!(m.contains("database backup with 1 warning\n"), "{m}");
}

#[test]
fn the_restore_message_says_what_went_where_and_where_the_safety_copy_is() {
    let m = format_message(
        &Event::RestoreDone {
            backup: "full_backup_20261201_100000".into(),
            restored: vec![
                crate::events::RestoredPart {
                    what: "database",
                    target: "/srv/app/db.sqlite".into(),
                    safety_copy: Some("/srv/app/db.sqlite.pre-restore-1".into()),
                },
                crate::events::RestoredPart {
                    what: "storage",
                    target: "/srv/app/media".into(),
                    safety_copy: None,
                },
            ],
            stopped: vec!["vertex-ar-app-1".into()],
        },
        "h",
    );
    assert!(
        m.contains("stopped meanwhile and started again: vertex-ar-app-1"),
        "{m}"
    );
    assert!(m.contains("restored full_backup_20261201_100000"), "{m}");
    assert!(
        m.contains("database → /srv/app/db.sqlite (safety copy: /srv/app/db.sqlite.pre-restore-1)"),
        "{m}"
    );
    assert!(
        m.contains("storage → /srv/app/media (nothing was there to keep)"),
        "{m}"
    );
}

#[test]
fn chat_commands_parse_with_and_without_the_bot_name() {
    use crate::kind::JobName;
    use bot::Command;
    assert_eq!(Command::parse("/status"), Command::Status);
    assert_eq!(Command::parse("/status@vertex_bot"), Command::Status);
    assert_eq!(
        Command::parse("/backup database"),
        Command::Backup(JobName::Database)
    );
    assert_eq!(
        Command::parse("/backup@vertex_bot full"),
        Command::Backup(JobName::Full)
    );
    assert_eq!(Command::parse("/backup rotate"), Command::Help);
    assert_eq!(Command::parse("/backup"), Command::Help);
    assert_eq!(
        Command::parse("/list storage"),
        Command::List(Some(BackupKind::Storage))
    );
    assert_eq!(Command::parse("/list"), Command::List(None));
    assert_eq!(Command::parse("/verify latest"), Command::Verify);
    assert_eq!(Command::parse("/restore db_backup_x"), Command::Restore);
    assert_eq!(Command::parse("/frobnicate"), Command::Help);
}

#[test]
fn containers_left_down_are_an_alert_naming_them_and_their_start_a_recovery() {
    let down = Event::ContainersNotStarted {
        job: "storage backup".into(),
        containers: vec!["app".into(), "worker<1>".into()],
        error: "cannot start the container `app`: connection refused".into(),
    };
    assert_eq!(down.category(), Some(crate::config::NotifyOn::Failure));
    let m = format_message(&down, "h");
    assert!(m.contains("the app is DOWN"), "{m}");
    assert!(m.contains("app, worker&lt;1&gt;"), "{m}");
    assert!(m.contains("docker start app worker&lt;1&gt;"), "{m}");
    let up = Event::ContainersStarted {
        containers: vec!["app".into()],
    };
    assert_eq!(up.category(), Some(crate::config::NotifyOn::Recovered));
    assert!(format_message(&up, "h").contains("running again: app started"));
    // A stop failure is the job's own failure message; this one only counts.
    let stop = Event::ContainerStopFailed {
        job: "restore".into(),
        container: "app".into(),
        error: "timeout".into(),
    };
    assert_eq!(stop.category(), None);
}
