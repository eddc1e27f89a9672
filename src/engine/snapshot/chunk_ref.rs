//! A chunk reference as an entry list writes it: where one chunk of a file (or a part of
//! the list) lies in the store, every field bounded and validated where it is parsed.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::{ChunkId, PackId};

/// One chunk of a file: its id (SHA-256 of the plain bytes, hex), the pack it lies in, and
/// where: `stored` bytes at `offset`, `raw` bytes once decompressed. Written as a JSON
/// array, `[id, pack, offset, stored, raw, zstd]`, because a large tree has millions —
/// read and written without a heap allocation (the ids' hex goes through the stack).
#[derive(Debug, Clone, PartialEq, Eq)]
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
fn checked(
    (id, pack): (Hex<32>, Hex<16>),
    offset: u64,
    stored: u32,
    raw: u32,
    zstd: u8,
) -> Result<ChunkRef, ChunkRefError> {
    let id = ChunkId(id.0.map_err(ChunkRefError::Id)?);
    let pack = PackId(pack.0.map_err(ChunkRefError::Pack)?);
    if raw > CHUNK_MAX || stored > CHUNK_MAX || (zstd == 0 && stored != raw) {
        return Err(ChunkRefError::Size { id, stored, raw });
    }
    if offset.checked_add(u64::from(stored)).is_none() {
        return Err(ChunkRefError::Offset(id));
    }
    Ok(ChunkRef {
        id,
        pack,
        offset,
        stored,
        raw,
        zstd: zstd != 0,
    })
}

impl Serialize for ChunkRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let (mut id, mut pack) = ([0u8; 64], [0u8; 32]);
        hex::encode_to_slice(self.id.0, &mut id).map_err(S::Error::custom)?;
        hex::encode_to_slice(self.pack.0, &mut pack).map_err(S::Error::custom)?;
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(std::str::from_utf8(&id).map_err(S::Error::custom)?)?;
        t.serialize_element(std::str::from_utf8(&pack).map_err(S::Error::custom)?)?;
        t.serialize_element(&self.offset)?;
        t.serialize_element(&self.stored)?;
        t.serialize_element(&self.raw)?;
        t.serialize_element(&u8::from(self.zstd))?;
        t.end()
    }
}

/// `N` bytes given as hex, or the text that was not (kept only then, for the error).
struct Hex<const N: usize>(Result<[u8; N], String>);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for HexVisitor<N> {
            type Value = Hex<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{} hex digits", 2 * N)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hex<N>, E> {
                let mut out = [0u8; N];
                Ok(Hex(match hex::decode_to_slice(v, &mut out) {
                    Ok(()) => Ok(out),
                    Err(_) => Err(v.to_string()),
                }))
            }
        }
        d.deserialize_str(HexVisitor::<N>)
    }
}

impl<'de> Deserialize<'de> for ChunkRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TupleVisitor;
        impl<'de> Visitor<'de> for TupleVisitor {
            type Value = ChunkRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[id, pack, offset, stored, raw, zstd]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChunkRef, A::Error> {
                let short = |n| de::Error::invalid_length(n, &self);
                let id = seq.next_element::<Hex<32>>()?.ok_or_else(|| short(0))?;
                let pack = seq.next_element::<Hex<16>>()?.ok_or_else(|| short(1))?;
                let offset = seq.next_element::<u64>()?.ok_or_else(|| short(2))?;
                let stored = seq.next_element::<u32>()?.ok_or_else(|| short(3))?;
                let raw = seq.next_element::<u32>()?.ok_or_else(|| short(4))?;
                let zstd = seq.next_element::<u8>()?.ok_or_else(|| short(5))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(7, &self));
                }
                checked((id, pack), offset, stored, raw, zstd).map_err(de::Error::custom)
            }
        }
        d.deserialize_tuple(6, TupleVisitor)
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
        assert!(parse(serde_json::json!([id, pack, 0, 10, 10])).is_err());
        assert!(parse(serde_json::json!([id, pack, 0, 10, 10, 0, 0])).is_err());
    }

    #[test]
    fn a_chunk_reads_back_as_written() {
        let c = ChunkRef {
            id: ChunkId([0xab; 32]),
            pack: PackId([0x0c; 16]),
            offset: 1 << 40,
            stored: 100,
            raw: 200,
            zstd: true,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            format!(
                "[\"{}\",\"{}\",1099511627776,100,200,1]",
                "ab".repeat(32),
                "0c".repeat(16)
            )
        );
        assert_eq!(serde_json::from_str::<ChunkRef>(&text).unwrap(), c);
    }
}
