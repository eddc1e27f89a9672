//! Continuous protection of the database: whole committed transactions read from SQLite's
//! write-ahead log ([`wal`]), kept as self-checking segments ([`segment`]) and replayed
//! onto a copy of the database ([`apply`]): the parts that shipping the log and restoring
//! to a point in time are built from.
//! docs/design.md ("Continuous replication") describes the design and what stands.

pub mod apply;
pub mod segment;
pub mod wal;
