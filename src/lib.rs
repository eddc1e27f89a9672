//! vertex-backup: unattended backups of the Vertex AR app — a live SQLite database and a
//! media directory — that are verified, rotated and restorable.
//!
//! Data flows one way: [`config`] → a job → [`engine`] → a report → [`catalog`] (files,
//! metadata, `backup.log`, state). The engine is synchronous; the binary and the daemon
//! are thin layers over it.

pub mod api;
pub mod catalog;
pub mod config;
pub mod config_location;
pub mod daemon;
pub mod docker;
pub mod encryption;
pub mod engine;
pub mod error;
pub mod events;
pub mod healthchecks;
pub mod jobs;
pub mod kind;
pub mod names;
pub mod offsite;
pub mod priority;
pub mod replication;
pub mod retention;
pub mod schedule;
pub mod status;
pub mod sys;
pub mod telegram;
pub mod units;

pub use config::Config;
pub use error::{Error, Result};
pub use kind::{BackupKind, JobName};

/// The error and its causes on one line: "a: b: c". A cause already said is left out,
/// and a cause that repeats the previous one with more detail replaces it (SQLite's
/// "database is locked" then "Error code 5: database is locked" reads once).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if parts.iter().any(|p| p.contains(&s)) {
            // Said already.
        } else if parts.len() > 1 && parts.last().is_some_and(|last| s.contains(last.as_str())) {
            if let Some(last) = parts.last_mut() {
                *last = s;
            }
        } else {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn chain(msgs: &[&'static str]) -> E {
        msgs.iter()
            .rev()
            .fold(None, |source: Option<Box<E>>, msg| {
                Some(Box::new(E { msg, source }))
            })
            .map(|b| *b)
            .expect("one message at least")
    }

    #[test]
    fn causes_are_joined_without_repeating_themselves() {
        let e = chain(&[
            "SQLite could not read /db",
            "database is locked",
            "Error code 5: database is locked",
        ]);
        assert_eq!(
            super::error_chain(&e),
            "SQLite could not read /db: Error code 5: database is locked"
        );
        let e = chain(&[
            "cannot write /x: No space left on device",
            "No space left on device",
        ]);
        assert_eq!(
            super::error_chain(&e),
            "cannot write /x: No space left on device"
        );
        let e = chain(&["a", "b", "c"]);
        assert_eq!(super::error_chain(&e), "a: b: c");
    }
}
