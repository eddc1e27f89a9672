//! The messages for continuous replication: what is not protected, how far behind a
//! target is and why, and what to do — the same facts `status` shows.

use super::escape;
use crate::events::{Event, GenerationKind};
use crate::units::format_duration;

/// The text of a replication event after the host header `h`; `None` for other events.
pub fn message(event: &Event, h: &str) -> Option<String> {
    Some(match event {
        Event::ReplicationFailed { error } => format!(
            "❌ {h} · replication FAILED: new transactions are not protected\n{}\n→ check the database path and that the app uses WAL mode; `vertex-backup status` shows the state",
            escape(error)
        ),
        Event::ReplicationBehind {
            target,
            lag,
            max_lag,
            error,
        } => {
            let mut s = format!(
                "⏰ {h} · replication to <b>{}</b> is {} behind (max_lag {})",
                escape(target),
                format_duration(*lag),
                format_duration(*max_lag)
            );
            if let Some(e) = error {
                s.push_str(&format!("\n{}", escape(e)));
            }
            s.push_str("\nthe backup directory keeps every transaction; the target catches up when it answers\n→ `vertex-backup status` shows the lag");
            s
        }
        Event::ReplicationRecovered { target, after } => format!(
            "🟢 {h} · replication{} works again after {}; nothing was lost",
            target
                .as_ref()
                .map(|t| format!(" to <b>{}</b>", escape(t)))
                .unwrap_or_default(),
            format_duration(*after)
        ),
        Event::ReplicationGeneration {
            generation,
            reason,
            kind,
        } => match kind {
            GenerationKind::Gap => format!(
                "⚠️ {h} · replication started a new generation {}: {}\nrestores to times before it use the previous generation; nothing committed since is lost",
                escape(generation),
                escape(reason)
            ),
            _ => format!(
                "▶️ {h} · replication began: generation {} ({})",
                escape(generation),
                escape(reason)
            ),
        },
        _ => return None,
    })
}
