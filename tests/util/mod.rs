//! Shared fixtures for the integration tests: a throw-away installation laid out like a
//! Vertex AR server (`TestApp`), a runner for the real binary with a deadline, polling
//! without fixed sleeps, a local HTTP server for fakes (`LocalServer`), the S3 servers of
//! the offsite tests (`S3Server`, `PrivateS3`), a real OpenSSH server for SFTP targets
//! (`SshServer`), a real container engine (`Podman`) and a `FaultProxy` to break connections to them, and helpers to hash, list and compare file trees.
//!
//! Every test module uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

mod app;
mod daemon;
mod fault_proxy;
mod files;
mod http;
mod podman;
mod process;
mod require;
mod s3;
mod ssh;

pub use app::*;
pub use daemon::*;
pub use fault_proxy::*;
pub use files::*;
pub use http::*;
pub use podman::*;
pub use process::*;
pub use require::*;
pub use s3::*;
pub use ssh::*;
