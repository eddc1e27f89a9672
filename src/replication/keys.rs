//! The stream's object keys on a target, the backup directory's own layout under
//! `replication/`, with `.age` appended to every object sealed to the recipients:
//!
//! ```text
//! replication/GENERATION/generation.json[.age]
//! replication/GENERATION/base.db.zst[.age]
//! replication/GENERATION/segments/NNNNNNNNNNNNNNNN.seg[.age]
//! ```
//!
//! One place formats them and one parses them; a key that does not parse as exactly one
//! of these is not the stream's (a listing may hold anything) and is never touched.

use super::store::{BASE_FILE, DIR, GENERATION_FILE, SEGMENT_EXT, SEGMENTS, is_generation_name};

const SEALED: &str = ".age";

/// What an object of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamObject {
    Info,
    Base,
    Segment(u64),
}

/// One of the stream's keys, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    pub generation: String,
    pub object: StreamObject,
    pub sealed: bool,
}

impl StreamKey {
    pub fn new(generation: &str, object: StreamObject, sealed: bool) -> StreamKey {
        StreamKey {
            generation: generation.to_string(),
            object,
            sealed,
        }
    }

    pub fn format(&self) -> String {
        let name = match self.object {
            StreamObject::Info => GENERATION_FILE.to_string(),
            StreamObject::Base => BASE_FILE.to_string(),
            StreamObject::Segment(first) => format!("{SEGMENTS}/{first:016x}.{SEGMENT_EXT}"),
        };
        let sealed = if self.sealed { SEALED } else { "" };
        format!("{DIR}/{}/{name}{sealed}", self.generation)
    }

    /// `key` as one of the stream's, or `None`.
    pub fn parse(key: &str) -> Option<StreamKey> {
        let rest = key.strip_prefix(DIR)?.strip_prefix('/')?;
        let (generation, name) = rest.split_once('/')?;
        if !is_generation_name(generation) {
            return None;
        }
        let (name, sealed) = match name.strip_suffix(SEALED) {
            Some(n) => (n, true),
            None => (name, false),
        };
        let object = if name == GENERATION_FILE {
            StreamObject::Info
        } else if name == BASE_FILE {
            StreamObject::Base
        } else {
            let stem = name
                .strip_prefix(SEGMENTS)?
                .strip_prefix('/')?
                .strip_suffix(SEGMENT_EXT)?
                .strip_suffix('.')?;
            let lower_hex = stem.len() == 16
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !lower_hex {
                return None;
            }
            StreamObject::Segment(u64::from_str_radix(stem, 16).ok()?)
        };
        Some(StreamKey {
            generation: generation.to_string(),
            object,
            sealed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_anything_else_is_not_ours() {
        let g = "0123456789abcdef0123456789abcdef";
        for object in [
            StreamObject::Info,
            StreamObject::Base,
            StreamObject::Segment(0x2a),
        ] {
            for sealed in [false, true] {
                let k = StreamKey::new(g, object, sealed);
                assert_eq!(StreamKey::parse(&k.format()), Some(k));
            }
        }
        assert_eq!(
            StreamKey::new(g, StreamObject::Segment(42), true).format(),
            format!("replication/{g}/segments/000000000000002a.seg.age")
        );
        for foreign in [
            "replication/position.json",
            "replication/0123/generation.json",
            &format!("replication/{g}/segments/2a.seg"),
            &format!("replication/{g}/segments/000000000000002A.seg"),
            &format!("replication/{g}/segments/000000000000002a.seg.partial"),
            &format!("replication/{g}/notes.txt"),
            &format!("database/{g}/base.db.zst"),
            &format!("replication/{g}/../base.db.zst"),
        ] {
            assert_eq!(StreamKey::parse(foreign), None, "{foreign}");
        }
    }
}
