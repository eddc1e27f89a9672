use super::*;
use crate::events::BackupFacts;
use crate::kind::BackupKind;

fn facts(name: &str) -> BackupFacts {
    BackupFacts {
        kind: BackupKind::Database,
        file_name: name.into(),
        size: 68 * 1024 * 1024,
        file_count: 1,
        duration: Duration::from_millis(900),
        checksum: "3f9a0000000000000000000000000000000000000000000000000000c21e".into(),
        integrity_check: Some("ok".into()),
        warnings: vec![],
        disk: Some(DiskSpace {
            free: 41 * 1024 * 1024 * 1024,
            total: 66 * 1024 * 1024 * 1024,
        }),
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
