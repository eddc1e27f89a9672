//! Integration tests of the `vertex-backup` binary: one test binary, one module per area.
//! `util` holds the shared fixtures (a temporary app install, a runner for the binary,
//! polling, tree comparison).

mod util;

mod api;
mod architecture;
mod backup;
mod cli;
mod daemon;
mod docker;
mod encryption;
mod faults;
mod format;
mod fuzz;
mod healthchecks;
mod hostile;
mod install;
mod offsite;
mod operator;
mod package;
mod pressure;
mod replication;
mod restore;
mod rotate;
mod snapshots;
mod state;
mod telegram;
mod unit_filter;
