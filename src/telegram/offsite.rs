//! The messages for offsite events: which target, what failed, what is pending, and what
//! to do — an operator reading one on a phone should not need the log.

use super::escape;
use crate::events::Event;
use crate::units::{format_bytes, format_duration, plural};

/// The text of an offsite event after the host header `h`; `None` for other events.
pub fn message(event: &Event, h: &str) -> Option<String> {
    Some(match event {
        Event::OffsiteUploaded {
            target,
            backups,
            bytes,
            pruned,
        } => {
            let mut s = format!(
                "☁️ {h} · offsite <b>{}</b>: {} uploaded ({})",
                escape(target),
                plural(backups.len() as u64, "backup"),
                format_bytes(*bytes)
            );
            for b in backups.iter().take(5) {
                s.push_str(&format!("\n• {}", escape(b)));
            }
            if backups.len() > 5 {
                s.push_str(&format!("\n• … and {} more", backups.len() - 5));
            }
            if *pruned > 0 {
                s.push_str(&format!("\nretention deleted {pruned} old remote"));
            }
            s
        }
        Event::OffsiteUploadFailed {
            target,
            error,
            hint,
            pending,
            pending_bytes,
            failing_since,
        } => {
            let mut s = format!(
                "❌ {h} · offsite <b>{}</b>: upload FAILED\n{}\npending: {} ({})",
                escape(target),
                escape(error),
                plural(pending.len() as u64, "backup"),
                format_bytes(*pending_bytes)
            );
            if let Some(since) = failing_since {
                s.push_str(&format!(" · failing since {}", escape(since)));
            }
            if let Some(hint) = hint {
                s.push_str(&format!("\n→ {}", escape(hint)));
            }
            s
        }
        Event::OffsiteRecovered { target, failed_for } => format!(
            "🟢 {h} · offsite <b>{}</b>: uploads work again{}; nothing is pending",
            escape(target),
            failed_for
                .map(|d| format!(" after {}", format_duration(d)))
                .unwrap_or_default()
        ),
        Event::OffsiteVerifyPassed {
            target,
            checked,
            sampled_bytes,
            repaired,
        } => {
            let mark = if repaired.is_empty() { "✅" } else { "⚠️" };
            let mut s = format!(
                "{mark} {h} · offsite <b>{}</b>: {} checked, {} read back",
                escape(target),
                plural(*checked as u64, "backup"),
                format_bytes(*sampled_bytes)
            );
            if !repaired.is_empty() {
                s.push_str(&format!(
                    "\nbad remote copies uploaded again from local: {}",
                    escape(&repaired.join(", "))
                ));
            }
            s
        }
        Event::OffsiteVerifyFailed {
            target,
            problems,
            repaired,
        } => {
            let mut s = format!(
                "❌ {h} · offsite <b>{}</b>: verification FAILED",
                escape(target)
            );
            for p in problems.iter().take(5) {
                s.push_str(&format!("\n• {}", escape(p)));
            }
            if !repaired.is_empty() {
                s.push_str(&format!("\nrepaired: {}", escape(&repaired.join(", "))));
            }
            s.push_str("\n→ these copies have no local original left to upload again; check the target, and keep the local backups until a good copy is offsite");
            s
        }
        Event::OffsiteStale {
            target,
            kind,
            age,
            max_age,
            pending,
        } => format!(
            "⏰ {h} · offsite <b>{}</b>: no complete {kind} copy for {} (max_age {})\n{} pending\n→ run `vertex-backup offsite push --target {}` and read its error; `vertex-backup status` shows the lag",
            escape(target),
            age.map(format_duration).unwrap_or_else(|| "ever".into()),
            format_duration(*max_age),
            plural(*pending as u64, "backup"),
            escape(target)
        ),
        _ => return None,
    })
}
