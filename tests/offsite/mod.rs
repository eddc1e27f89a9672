//! Offsite copies to S3-compatible storage (issue 14), against a real S3 API server on
//! 127.0.0.1: moto, started by `scripts/test.sh` (the shared server, `util::s3_server`) or
//! by a test itself (`util::PrivateS3`, to stop and restart), with `util::FaultProxy` in
//! between to break connections mid-transfer. Without a server a test skips, and fails
//! under CI (`.ci/run` runs `scripts/test.sh`).
//!
//! `server`: the test infrastructure itself answers, refuses and cuts as the other tests
//! rely on.

mod runbook;
mod server;
