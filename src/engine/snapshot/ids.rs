//! The store's two kinds of id as bytes: [`ChunkId`] (SHA-256 of a chunk's plain bytes,
//! or its HMAC under the store's chunk key) and [`PackId`] (16 random bytes). They are
//! hex only where they meet a person or a file name; parsing one from hex is the one
//! place it is validated, so a name taken from an entry list or an index can never lead
//! outside `store/packs/`.

use std::fmt;

/// A chunk's id: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

/// A pack's id: 16 random bytes (its file is `store/packs/ab/<hex>.pack`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

/// Parse `len` bytes from lower-case hex (upper case is not what this store writes).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl ChunkId {
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex(s).map(ChunkId)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl PackId {
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex(s).map(PackId)
    }

    /// A new pack's id: 16 bytes from the kernel's random source (chosen before the
    /// pack's content is known, since entries point into it while it fills).
    pub fn random() -> crate::error::Result<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| {
            crate::error::Error::Internal(format!("the kernel's random source failed: {e}"))
        })?;
        Ok(PackId(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_lower_case_hex_of_their_length() {
        let pack = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            PackId::parse(pack).map(PackId::to_hex).as_deref(),
            Some(pack)
        );
        assert!(PackId::parse(&pack.to_uppercase()).is_none());
        assert!(PackId::parse("../../etc/passwd").is_none());
        assert!(PackId::parse(&pack[..31]).is_none());
        let chunk = "ab".repeat(32);
        assert_eq!(
            ChunkId::parse(&chunk).map(ChunkId::to_hex),
            Some(chunk.clone())
        );
        assert!(ChunkId::parse(pack).is_none());
    }
}
