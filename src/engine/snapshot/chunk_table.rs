//! The chunks one snapshot run can find again — the parent's, the index's, and its own
//! new ones — and where each lies, shared by the reading side (which looks every chunk
//! up) and the pack thread (which says where each new one went). Its size is what a
//! snapshot of many small files costs in memory, so it is laid out densely: the ids and
//! their locations in two vectors in insertion order (48 bytes a chunk), and a hash table
//! of 4-byte positions into them (about 5–11 bytes a chunk with its spare room) keyed
//! by a hash of the id, the full id compared on every hit. A million chunks: about 55 MB,
//! where a map of ids to references took several times that, twice (one per thread).

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::ids::{ChunkId, PackId};
use super::trailer::PackedChunk;
use super::tree::ChunkRef;

/// A chunk's place in the table: its position in the dense vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot(u32);

/// Where a known chunk lies: 16 bytes. `pack` is a number standing for a pack id
/// ([`SENT`] while the pack thread has not stored it yet); `raw` carries the zstd flag in
/// its top bit (a chunk is far below 2 GiB).
#[derive(Debug, Clone, Copy)]
struct Location {
    pack: u32,
    offset: u32,
    stored: u32,
    raw: u32,
}

const SENT: u32 = u32::MAX;
const ZSTD_BIT: u32 = 1 << 31;

/// What the table says of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Stored (before this run, or by it): its reference.
    Stored(ChunkRef),
    /// Sent to the pack thread in this run and not stored yet.
    Sent(Slot),
}

#[derive(Default)]
pub struct ChunkTable {
    positions: HashTable<u32>,
    ids: Vec<[u8; 32]>,
    locations: Vec<Location>,
    /// Keyed per run, so that ids chosen to collide (a hostile index) cannot make every
    /// lookup walk one chain.
    hasher: std::collections::hash_map::RandomState,
    /// The pack ids the numbers in the locations stand for, each once.
    pack_names: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
}

impl ChunkTable {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn find(&self, id: &[u8; 32]) -> Option<Slot> {
        let hash = self.hasher.hash_one(id);
        self.positions
            .find(hash, |&i| self.ids[i as usize] == *id)
            .map(|&i| Slot(i))
    }

    /// What is known of `id`.
    pub fn get(&self, id: &[u8; 32]) -> Option<Found> {
        let slot = self.find(id)?;
        Some(match self.reference(slot) {
            Some(c) => Found::Stored(c),
            None => Found::Sent(slot),
        })
    }

    /// The reference of the chunk at `slot`, once stored.
    pub fn reference(&self, slot: Slot) -> Option<ChunkRef> {
        let at = self.locations.get(slot.0 as usize)?;
        if at.pack == SENT {
            return None;
        }
        Some(ChunkRef {
            id: ChunkId(self.ids[slot.0 as usize]),
            pack: self.pack_names[at.pack as usize],
            offset: u64::from(at.offset),
            stored: at.stored,
            raw: at.raw & !ZSTD_BIT,
            zstd: at.raw & ZSTD_BIT != 0,
        })
    }

    /// Make a chunk stored earlier (in `pack`, as its trailer or an entry list says)
    /// known, unless it is already. A location the table cannot hold (an offset past
    /// 4 GiB, a chunk past 2 GiB: no pack we write has one) is left out: it only costs
    /// deduplication.
    pub fn insert_stored(&mut self, pack: PackId, c: &PackedChunk) {
        let Some(at) = self.location(pack, c) else {
            return;
        };
        if self.find(&c.id.0).is_none() {
            self.push(c.id.0, at);
        }
    }

    /// Record `id` as sent to the pack thread; its slot, for [`Self::set_stored`].
    pub fn insert_sent(&mut self, id: [u8; 32]) -> Slot {
        let at = Location {
            pack: SENT,
            offset: 0,
            stored: 0,
            raw: 0,
        };
        self.push(id, at)
    }

    /// Where the pack thread stored the chunk at `slot`. `false` when the location does
    /// not fit (no pack we write has one).
    pub fn set_stored(&mut self, slot: Slot, pack: PackId, c: &PackedChunk) -> bool {
        let Some(at) = self.location(pack, c) else {
            return false;
        };
        match self.locations.get_mut(slot.0 as usize) {
            Some(l) => {
                *l = at;
                true
            }
            None => false,
        }
    }

    fn location(&mut self, pack: PackId, c: &PackedChunk) -> Option<Location> {
        let offset = u32::try_from(c.offset).ok()?;
        if c.raw & ZSTD_BIT != 0 {
            return None;
        }
        Some(Location {
            pack: self.pack_number(pack),
            offset,
            stored: c.stored,
            raw: c.raw | if c.zstd { ZSTD_BIT } else { 0 },
        })
    }

    fn push(&mut self, id: [u8; 32], at: Location) -> Slot {
        let i = self.ids.len() as u32;
        self.ids.push(id);
        self.locations.push(at);
        let hasher = &self.hasher;
        let ids = &self.ids;
        let hash = hasher.hash_one(id);
        self.positions
            .insert_unique(hash, i, |&j| hasher.hash_one(ids[j as usize]));
        Slot(i)
    }

    /// The number standing for pack `name`.
    fn pack_number(&mut self, name: PackId) -> u32 {
        if let Some(n) = self.pack_numbers.get(&name) {
            return *n;
        }
        let n = self.pack_names.len() as u32;
        self.pack_names.push(name);
        self.pack_numbers.insert(name, n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8, offset: u64) -> PackedChunk {
        PackedChunk {
            id: ChunkId([n; 32]),
            offset,
            stored: 10 + u32::from(n),
            raw: 20 + u32::from(n),
            zstd: n.is_multiple_of(2),
        }
    }

    #[test]
    fn chunks_are_found_by_their_whole_id_with_their_location() {
        let mut t = ChunkTable::default();
        let (a, b) = (PackId([1; 16]), PackId([2; 16]));
        for n in 0..200u8 {
            t.insert_stored(
                if n % 3 == 0 { a } else { b },
                &chunk(n, u64::from(n) * 100),
            );
        }
        // Known already: not added twice.
        t.insert_stored(b, &chunk(7, 1));
        assert_eq!(t.len(), 200);
        for n in 0..200u8 {
            let Some(Found::Stored(c)) = t.get(&[n; 32]) else {
                panic!("{n} not found");
            };
            let want = chunk(n, u64::from(n) * 100);
            assert_eq!(c.pack, if n % 3 == 0 { a } else { b });
            assert_eq!(
                (c.offset, c.stored, c.raw, c.zstd),
                (want.offset, want.stored, want.raw, want.zstd)
            );
        }
        let mut near = [5u8; 32];
        near[31] = 6;
        assert_eq!(t.get(&near), None, "a different id sharing a prefix");
    }

    #[test]
    fn a_sent_chunk_is_found_as_sent_until_stored() {
        let mut t = ChunkTable::default();
        let slot = t.insert_sent([9; 32]);
        assert_eq!(t.get(&[9; 32]), Some(Found::Sent(slot)));
        assert!(t.reference(slot).is_none());
        assert!(t.set_stored(slot, PackId([3; 16]), &chunk(9, 4096)));
        let Some(Found::Stored(c)) = t.get(&[9; 32]) else {
            panic!("not stored");
        };
        assert_eq!((c.pack, c.offset, c.zstd), (PackId([3; 16]), 4096, false));
    }

    #[test]
    fn a_location_the_table_cannot_hold_is_left_out() {
        let mut t = ChunkTable::default();
        t.insert_stored(PackId([1; 16]), &chunk(1, 1 << 33));
        let mut huge = chunk(2, 0);
        huge.raw = 1 << 31;
        t.insert_stored(PackId([1; 16]), &huge);
        assert!(t.is_empty());
    }
}
