//! What can be wrong with the store, typed: why a chunk could not be read where its entry
//! says ([`ChunkError`]), and what a check of a snapshot finds ([`Damage`]) — each says
//! what it is and where, and is cloned into the report of every snapshot that meets it
//! (one verify run reads a pack once, however many snapshots list it).

use super::ids::{ChunkId, PackId};
use crate::encryption::DecryptFailure;

/// Why a chunk could not be read: the pack is missing, or the chunk is damaged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChunkError {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Damaged(String),
    /// A sealed pack the identity cannot open (none given, or not a recipient's): the
    /// key's problem, not the pack's.
    #[error("{1}")]
    Key(DecryptFailure, String),
}

impl ChunkError {
    /// The error a reader of `tree` reports: the key's problem as a decryption error
    /// (so `verify` tells a wrong key from a bad backup), anything else as a failed
    /// check of the contents, `what` saying where.
    pub fn into_error(self, tree: &std::path::Path, what: String) -> crate::error::Error {
        match self {
            ChunkError::Key(failure, detail) => crate::error::Error::Decrypt {
                path: tree.to_path_buf(),
                failure,
                detail,
            },
            _ => crate::error::Error::verify(tree, "contents", what),
        }
    }
}

/// What a check found wrong with the data of one file of a snapshot.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Damage {
    /// Its pack or the chunk itself could not be read back right.
    #[error(transparent)]
    Read(#[from] ChunkError),
    /// Its pack is not the one its snapshot recorded.
    #[error("pack {pack} has SHA-256 {found}, its snapshot recorded {recorded}")]
    Checksum {
        pack: PackId,
        found: String,
        recorded: String,
    },
    /// Its pack's trailer could not be read.
    #[error("pack {pack}: {why}")]
    Trailer { pack: PackId, why: String },
    /// Its pack's trailer lists no such chunk there: the entry list points elsewhere.
    #[error("pack {pack}'s trailer lists no chunk {chunk} of {stored} bytes at offset {offset}")]
    NotInTrailer {
        pack: PackId,
        chunk: ChunkId,
        stored: u32,
        offset: u64,
    },
    /// Its chunks do not add up to its size.
    #[error("its chunks hold {held} bytes, the entry says {size}")]
    Size { held: u64, size: u64 },
}
