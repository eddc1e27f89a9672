//! Offsite copies to S3-compatible storage (issue 14), against a real S3 API server on
//! 127.0.0.1: moto, started by `scripts/test.sh` (the shared server, `util::s3_server`) or
//! by a test itself (`util::PrivateS3`, to stop and restart), with `util::FaultProxy` in
//! between to break connections mid-transfer. Without a server a test skips, and fails
//! under CI (`.ci/run` runs `scripts/test.sh`).
//!
//! `server`: the test infrastructure itself answers, refuses and cuts as the other tests
//! rely on. `setup`: the config tables and read-backs the other modules share.
//! `round_trip`: every type through S3, a path and SFTP to a fresh server. `network`: the
//! connection cut or refused mid-upload. `killed`: the uploader SIGKILLed at many moments.
//! `errors`: missing bucket, unmounted and full path targets, wrong credentials.
//! `corruption`: a remote object changed on the server, found and repaired by verify.
//! `encrypted`: with `[encryption]` recipients, only ciphertext and content-free metadata
//! reach a target; the age CLI opens it; verify and fetch work on it (issue 15).
//! `daemon`: the real daemon uploads after a backup, verifies, tells failure and staleness.
//! `guards`: upload pins against local rotation; S3 Object Lock and retention.
//! `object_lock`: Object Lock extended on the packs a new snapshot reuses; prune judging
//! each object by its own retain-until.
//! `repacked`: a push after the local store repacked brings the target's copies up to
//! date (new packs and entry lists only, metadata last), killed at every rename too.
//! `runbook`: the README's disaster-recovery runbook, run as written.
//! `s3_api`: the hand-signed S3 client (odd keys, versions, Object Lock retention).
//! `sftp`: a backup server over SSH (a real `sshd` on loopback): killed mid-upload, host
//! keys unknown or changed, a key refused, a full disk, a missing directory.

mod as_of;
mod composed;
mod corruption;
mod daemon;
mod encrypted;
mod errors;
mod guards;
mod killed;
mod matrix;
mod network;
mod object_lock;
mod repacked;
mod round_trip;
mod runbook;
mod s3_api;
mod server;
mod setup;
mod sftp;
mod snapshots;
mod writers;
