//! Shared fixtures for the integration tests: a throw-away installation laid out like a
//! Vertex AR server (`TestApp`), a runner for the real binary with a deadline, polling
//! without fixed sleeps, a local HTTP server for fakes (`LocalServer`), and helpers to hash, list and compare file trees.
//!
//! Every test module uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

mod app;
mod daemon;
mod files;
mod http;
mod process;
mod require;

pub use app::*;
pub use daemon::*;
pub use files::*;
pub use http::*;
pub use process::*;
pub use require::*;
