//! A chunk reference as an entry list writes it: where one chunk of a file (or a part of
//! the list) lies in the store, every field bounded and validated where it is parsed.

use serde::{Deserialize, Serialize};

use super::ids::{ChunkId, PackId};

/// One chunk of a file: its id (SHA-256 of the plain bytes, hex), the pack it lies in, and
/// where: `stored` bytes at `offset`, `raw` bytes once decompressed. Written as a JSON
/// array, `[id, pack, offset, stored, raw, zstd]`, because a large tree has millions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChunkTuple", into = "ChunkTuple")]
pub struct ChunkRef {
    pub id: ChunkId,
    pub pack: PackId,
    pub offset: u64,
    pub stored: u32,
    pub raw: u32,
    /// Stored zstd-compressed (else as is: it did not get smaller).
    pub zstd: bool,
}

impl ChunkRef {
    /// Chunk `c` of pack `pack`.
    pub fn at(pack: PackId, c: &super::trailer::PackedChunk) -> ChunkRef {
        ChunkRef {
            id: c.id,
            pack,
            offset: c.offset,
            stored: c.stored,
            raw: c.raw,
            zstd: c.zstd,
        }
    }

    /// Where it lies in its pack, as the pack's trailer says it.
    pub fn packed(&self) -> super::trailer::PackedChunk {
        super::trailer::PackedChunk {
            id: self.id,
            offset: self.offset,
            stored: self.stored,
            raw: self.raw,
            zstd: self.zstd,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ChunkTuple(String, String, u64, u32, u32, u8);

/// The most plain bytes one chunk of this format holds (content-defined chunks are cut at
/// this size at the latest; whole files and database chunks are smaller). A chunk is
/// stored compressed only when that is smaller, so `stored` never exceeds it either.
const CHUNK_MAX: u32 = super::chunker::CDC_MAX as u32;

/// Why a chunk reference of an entry list is refused where it is parsed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefError {
    #[error("a chunk id {0:?} is not 64 hex digits")]
    Id(String),
    #[error("a chunk names a pack {0:?} that is no pack id")]
    Pack(String),
    #[error(
        "chunk {id} claims {stored} stored and {raw} plain bytes, which no chunk of this format has (at most {CHUNK_MAX})"
    )]
    Size { id: ChunkId, stored: u32, raw: u32 },
    #[error("chunk {0} lies beyond any pack")]
    Offset(ChunkId),
}

/// An entry list is checked by its SHA-256, but whoever can rewrite it can fix that up (a
/// bucket's owner, a copy from an untrusted place): every field that becomes a path or an
/// allocation is bounded by what the format writes, here where it is parsed.
impl TryFrom<ChunkTuple> for ChunkRef {
    type Error = ChunkRefError;

    fn try_from(t: ChunkTuple) -> Result<Self, ChunkRefError> {
        let id = ChunkId::parse(&t.0).ok_or(ChunkRefError::Id(t.0))?;
        let pack = PackId::parse(&t.1).ok_or(ChunkRefError::Pack(t.1))?;
        if t.4 > CHUNK_MAX || t.3 > CHUNK_MAX || (t.5 == 0 && t.3 != t.4) {
            return Err(ChunkRefError::Size {
                id,
                stored: t.3,
                raw: t.4,
            });
        }
        if t.2.checked_add(u64::from(t.3)).is_none() {
            return Err(ChunkRefError::Offset(id));
        }
        Ok(ChunkRef {
            id,
            pack,
            offset: t.2,
            stored: t.3,
            raw: t.4,
            zstd: t.5 != 0,
        })
    }
}

impl From<ChunkRef> for ChunkTuple {
    fn from(c: ChunkRef) -> Self {
        ChunkTuple(
            c.id.to_hex(),
            c.pack.to_hex(),
            c.offset,
            c.stored,
            c.raw,
            u8::from(c.zstd),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_chunk_is_refused_where_it_is_parsed() {
        let id = "ab".repeat(32);
        let pack = "cd".repeat(16);
        let parse = |v: serde_json::Value| serde_json::from_value::<ChunkRef>(v);
        assert!(parse(serde_json::json!([id, pack, 0, 100, 200, 1])).is_ok());
        // 4 GiB to allocate before failing: refused up front.
        let huge = parse(serde_json::json!([id, pack, 0, u32::MAX, 200, 1])).unwrap_err();
        assert!(
            huge.to_string().contains("no chunk of this format"),
            "{huge}"
        );
        assert!(parse(serde_json::json!([id, pack, 0, 10, u32::MAX, 1])).is_err());
        // A pack id that would become a path elsewhere.
        assert!(parse(serde_json::json!([id, "../../etc", 0, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!(["x", pack, 0, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!([id, pack, u64::MAX, 10, 10, 0])).is_err());
        assert!(parse(serde_json::json!([id, pack, 0, 10, 11, 0])).is_err());
    }
}
