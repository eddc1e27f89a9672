//! vertex-backup: unattended backups of the Vertex AR app — a live SQLite database and a
//! media directory — that are verified, rotated and restorable.
//!
//! Data flows one way: [`config`] → a job → [`engine`] → a report → [`catalog`] (files,
//! metadata, `backup.log`, state). The engine is synchronous; the binary and the daemon
//! are thin layers over it.

pub mod api;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod events;
pub mod kind;
pub mod names;
pub mod retention;
pub mod schedule;
pub mod sys;
pub mod telegram;
pub mod units;

pub use config::Config;
pub use error::{Error, Result};
pub use kind::BackupKind;

/// The error and its causes on one line: "a: b: c".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
