//! Snapshots (docs/design.md §4): backups that cost what changed. A snapshot is its metadata, its
//! entry list ([`tree`]) and the chunks of its files in the content store's packs
//! ([`pack`]), shared by every snapshot in the backup directory. Taking one
//! ([`create`]) reads only new and changed files; reading one ([`read`]) feeds the same
//! sinks an archive feeds; [`check`] verifies one and names the files a damaged or
//! missing pack affects; [`compare`] says what changed between two; [`export`] writes one
//! as a plain `.tar.zst`. Deleting snapshots and sweeping the packs nothing lists any more
//! is the catalog's (rotation, then cleaning).

pub mod check;
mod chunk_ref;
mod chunk_table;
mod chunker;
pub mod compare;
mod create;
pub mod damage;
pub mod export;
pub mod ids;
pub mod index;
pub mod keys;
pub mod mend;
mod node_json;
pub mod pack;
pub mod read;
pub mod trailer;
pub mod tree;
pub mod unit;
pub mod upkeep;
mod writer;

pub use create::{Parent, SnapshotOptions, SnapshotSummary, snapshot_database, snapshot_storage};
pub use read::{read_database_snapshot, read_snapshot};
