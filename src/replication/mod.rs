//! Continuous protection of the database: whole committed transactions read from SQLite's
//! write-ahead log ([`wal`]) by a [`replicator`] that never lets a frame be copied and
//! dropped unseen, kept as self-checking segments ([`segment`]) in generations under the
//! backup directory ([`store`]), and replayed onto a copy of the database ([`apply`]) to
//! restore it as of a time ([`restore`]). docs/design.md ("Continuous replication")
//! describes the design and what is still to be built on it.

pub mod apply;
pub mod compact;
pub mod fetch;
pub mod held;
pub mod keys;
pub mod point;
pub mod replicator;
pub mod restore;
pub mod retain;
pub mod segment;
pub mod service;
pub mod ship;
pub mod store;
pub mod wal;
