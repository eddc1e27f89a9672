//! How much of each pack the kept snapshots still use, read from their entry lists, and
//! the pure choice of which packs to rewrite ([`choose`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalog::{BackupEntry, Listing, PackRef};
use crate::engine::Cancel;
use crate::engine::snapshot::ids::PackId;
use crate::engine::snapshot::index;
use crate::engine::snapshot::keys::Opening;
use crate::engine::snapshot::trailer::{self, PackedChunk};
use crate::engine::snapshot::tree::{ChunkRef, TreeReader};
use crate::error::Result;

pub(super) use crate::engine::snapshot::unit::SnapshotUnit as Unit;

/// Every snapshot of `listing`, grouped as they are rewritten.
pub(super) fn units(listing: &Listing) -> Vec<Unit<'_>> {
    crate::engine::snapshot::unit::units(listing, &|_| false)
}

/// One pack as the kept snapshots use it.
#[derive(Debug, Clone)]
pub(super) struct PackUse {
    pub(super) recorded: PackRef,
    pub(super) sealed: bool,
    /// The index tag of the snapshots using it (how their chunk ids are made, to whom
    /// their packs are sealed); the chunk key of their entry lists.
    pub(super) tag: String,
    pub(super) chunk_key: Option<String>,
    /// The chunks used, by offset.
    pub(super) live: BTreeMap<u64, PackedChunk>,
    /// Why it must stay as it is, if it must (a snapshot using it cannot be rewritten).
    pub(super) pinned: Option<String>,
    /// A snapshot listing it has an entry list that could not be read: what it uses of
    /// the pack is unknown, so all of it counts as used.
    pub(super) opaque: bool,
    /// The used chunks (by offset) that are parts of entry lists. They count as used but
    /// are never copied: every snapshot listing a moved pack gets its entry list written
    /// anew, its entries inline, so no kept list points at a moved part — and a copy in
    /// a pack of file data would, encrypted, be sealed to the recipients alone, where
    /// the server could not read it back as a parent.
    pub(super) parts: BTreeSet<u64>,
}

impl PackUse {
    /// Bytes a pack holding only its used chunks would take: their bytes and their
    /// trailer entries, and for a sealed pack the age framing (a header of a stanza per
    /// recipient, 16 bytes per 64 KiB), over- rather than under-estimated.
    pub(super) fn used_bytes(&self) -> u64 {
        if self.opaque {
            return self.recorded.size;
        }
        let stored: u64 = self.live.values().map(|c| u64::from(c.stored)).sum();
        let plain = stored + (self.live.len() * trailer::ENTRY_LEN + trailer::FOOTER_LEN) as u64;
        if !self.sealed {
            return plain;
        }
        let recipients = self.tag.split(',').count() as u64;
        plain + 128 + 160 * recipients + 16 * plain.div_ceil(64 << 10)
    }

    pub(super) fn unused_bytes(&self) -> u64 {
        self.recorded.size.saturating_sub(self.used_bytes())
    }
}

/// What the entry lists say of the store.
pub(super) struct StoreUse {
    pub(super) packs: BTreeMap<PackId, PackUse>,
    /// Snapshots whose entry list could not be read, and why (their packs are pinned).
    pub(super) unreadable: Vec<String>,
}

/// Read every kept snapshot's entry list once. `fixed(unit)`: why a unit must not be
/// rewritten (the packs it uses are then left as they are). A snapshot whose entry list
/// cannot be read (damaged, or sealed to a key this server lacks) is fixed too, and so is
/// every pack its metadata lists — which is every pack it needs, read or not.
pub(super) fn read_use(
    listing: &Listing,
    opening: &Opening,
    fixed: &dyn Fn(&Unit) -> Option<String>,
    cancel: &Cancel,
) -> Result<StoreUse> {
    let mut packs: BTreeMap<PackId, PackUse> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for unit in units(listing) {
        let why_fixed = fixed(&unit);
        for m in &unit.members {
            cancel.check()?;
            if let Err(e) = read_member(m, opening, why_fixed.as_deref(), &mut packs) {
                let why = format!(
                    "the entry list of {} cannot be read ({}): its packs stay as they are (`verify`, then `repair`)",
                    m.stem,
                    crate::error_chain(&e)
                );
                pin_listed(m, &why, &mut packs);
                unreadable.push(why);
            }
        }
    }
    Ok(StoreUse { packs, unreadable })
}

/// Pin every pack snapshot `m`'s metadata lists, their use unknown.
fn pin_listed(m: &BackupEntry, why: &str, packs: &mut BTreeMap<PackId, PackUse>) {
    let sealed = m.metadata.format().is_ok_and(|f| f.encryption.is_some());
    for p in m.metadata.snapshot.iter().flat_map(|s| s.packs.iter()) {
        let Some(id) = PackId::parse(&p.id) else {
            continue;
        };
        let entry = packs.entry(id).or_insert_with(|| PackUse {
            recorded: p.clone(),
            sealed,
            tag: String::new(),
            chunk_key: None,
            live: BTreeMap::new(),
            pinned: None,
            opaque: true,
            parts: BTreeSet::new(),
        });
        entry.opaque = true;
        entry.pinned.get_or_insert_with(|| why.to_string());
    }
}

/// Add what snapshot `m` uses to `packs`: its files' chunks and its entry list's parts.
fn read_member(
    m: &BackupEntry,
    opening: &Opening,
    why_fixed: Option<&str>,
    packs: &mut BTreeMap<PackId, PackUse>,
) -> Result<()> {
    let recorded: HashMap<PackId, &PackRef> = m
        .metadata
        .snapshot
        .iter()
        .flat_map(|s| s.packs.iter())
        .filter_map(|p| Some((PackId::parse(&p.id)?, p)))
        .collect();
    let sealed = m.metadata.format().is_ok_and(|f| f.encryption.is_some());
    let mut reader = TreeReader::open(&m.data_path, opening)?;
    let chunk_key = reader.header().chunk_key.clone();
    let tag = index::tag_of(m, chunk_key.as_deref())?;
    let mut note = |c: &ChunkRef, part: bool| {
        {
            let own = recorded.get(&c.pack);
            let entry = packs.entry(c.pack).or_insert_with(|| PackUse {
                recorded: own.map(|p| (*p).clone()).unwrap_or_else(|| PackRef {
                    id: c.pack.to_hex(),
                    size: 0,
                    checksum: String::new(),
                }),
                sealed,
                tag: tag.clone(),
                chunk_key: chunk_key.clone(),
                live: BTreeMap::new(),
                pinned: None,
                opaque: false,
                parts: BTreeSet::new(),
            });
            // Every snapshot that points into a pack must record it (the sweep keeps only
            // what metadata records): one that does not, or records it otherwise, pins it.
            let agrees = own.is_some_and(|p| **p == entry.recorded);
            if !agrees {
                entry.pinned.get_or_insert_with(|| {
                    format!("{} does not record it as the others do", m.stem)
                });
            }
            if entry.tag != tag || entry.sealed != sealed {
                entry
                    .pinned
                    .get_or_insert_with(|| "snapshots made with other keys use it".into());
            }
            if let Some(why) = why_fixed {
                entry.pinned.get_or_insert_with(|| why.to_string());
            }
            // Two entry lists naming different chunks at one place: one of them is wrong,
            // and the copy could serve only one. Leave the pack to `verify` and `repair`.
            let at = entry.live.entry(c.offset).or_insert(c.packed());
            if *at != c.packed() {
                entry.pinned.get_or_insert_with(|| {
                    format!("entry lists disagree on the chunk at offset {}", c.offset)
                });
            }
            if part {
                entry.parts.insert(c.offset);
            }
        }
    };
    while let Some(node) = reader.next_node()? {
        node.chunks.iter().for_each(|c| note(c, false));
    }
    reader.take_parts().iter().for_each(|c| note(c, true));
    Ok(())
}

/// How much unused space the store may hold, in percent of the space its kept snapshots
/// use (`None`: any).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance(pub Option<u32>);

/// A pack is worth rewriting only when at least this share of it (in percent) is unused:
/// one barely touched is left (and an encrypted pack, whose age framing no estimate gets
/// exactly, is never rewritten for its framing alone).
const MIN_UNUSED_PERCENT: u64 = 1;

/// Whether a pack of `used` + `unused` bytes may be chosen at all.
fn worth_moving(used: u64, unused: u64) -> bool {
    unused > 0 && unused.saturating_mul(100) >= (used + unused).saturating_mul(MIN_UNUSED_PERCENT)
}

/// Which packs to rewrite (each `(id, used, unused, movable)`) so that the unused bytes
/// left in the packs that can move are at most `tolerance` of the used ones: the emptiest
/// first. Unused bytes in packs that must stay do not count — no rewrite could reclaim
/// them, and counting them would rewrite every movable pack at each rotation. Pure: the
/// same uses give the same choice.
pub(super) fn choose(packs: &[(PackId, u64, u64, bool)], tolerance: Tolerance) -> Vec<PackId> {
    let Some(pct) = tolerance.0 else {
        return Vec::new();
    };
    let used: u64 = packs.iter().map(|p| p.1).sum();
    let allowed = used.saturating_mul(u64::from(pct)) / 100;
    let mut movable: Vec<&(PackId, u64, u64, bool)> = packs
        .iter()
        .filter(|p| p.3 && worth_moving(p.1, p.2))
        .collect();
    let mut unused: u64 = movable.iter().map(|p| p.2).sum();
    // Emptiest first (the most reclaimed per byte copied), then by id: deterministic.
    movable.sort_by(|a, b| {
        let fa = a.2 as f64 / (a.1 + a.2).max(1) as f64;
        let fb = b.2 as f64 / (b.1 + b.2).max(1) as f64;
        fb.total_cmp(&fa).then(a.0.cmp(&b.0))
    });
    let mut chosen = BTreeSet::new();
    for p in movable {
        if unused <= allowed {
            break;
        }
        unused -= p.2;
        chosen.insert(p.0);
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> PackId {
        PackId([n; 16])
    }

    #[test]
    fn nothing_is_rewritten_within_the_tolerance() {
        // 100 used, 10 unused: exactly 10 %.
        let packs = [(id(1), 50, 5, true), (id(2), 50, 5, true)];
        assert!(choose(&packs, Tolerance(Some(10))).is_empty());
        assert!(choose(&packs, Tolerance(None)).is_empty());
    }

    #[test]
    fn the_emptiest_packs_go_first_and_pinned_ones_never() {
        let packs = [
            (id(1), 90, 10, true),
            (id(2), 10, 90, false),
            (id(3), 20, 80, true),
            (id(4), 60, 40, true),
        ];
        // 180 used: 18 allowed at 10 %; the movable hold 130 unused: 3 (80) leaves 50,
        // then 4 (40) leaves 10 — within; 1 stays.
        assert_eq!(choose(&packs, Tolerance(Some(10))), vec![id(3), id(4)]);
        // 50 %: 90 allowed; 3 alone brings the movable unused to 50.
        assert_eq!(choose(&packs, Tolerance(Some(50))), vec![id(3)]);
        // 80 %: 144 allowed: nothing.
        assert!(choose(&packs, Tolerance(Some(80))).is_empty());
    }

    #[test]
    fn unused_bytes_that_must_stay_never_make_the_rest_move() {
        // The pinned pack alone is far over any tolerance; the movable one is within it.
        let packs = [(id(1), 10, 990, false), (id(2), 1000, 20, true)];
        assert!(choose(&packs, Tolerance(Some(5))).is_empty());
        // A pack barely touched (under 1 % unused) is never worth it, even at 0 %.
        let packs = [(id(1), 1000, 5, true)];
        assert!(choose(&packs, Tolerance(Some(0))).is_empty());
    }

    proptest! {
        /// Whatever the uses: only movable packs worth moving are chosen; afterwards the
        /// unused bytes of those are within the tolerance unless every one was chosen;
        /// and no more is chosen than that takes.
        #[test]
        fn the_choice_meets_the_tolerance_or_takes_every_movable_pack(
            uses in prop::collection::vec((0u64..1000, 0u64..1000, any::<bool>()), 0..40),
            pct in 0u32..200,
        ) {
            let packs: Vec<(PackId, u64, u64, bool)> = uses
                .iter()
                .enumerate()
                .map(|(i, (u, n, m))| (id(i as u8), *u, *n, *m))
                .collect();
            let chosen = choose(&packs, Tolerance(Some(pct)));
            let used: u64 = packs.iter().map(|p| p.1).sum();
            let eligible: Vec<_> = packs.iter().filter(|p| p.3 && worth_moving(p.1, p.2)).collect();
            let mut left: u64 = eligible.iter().map(|p| p.2).sum();
            for c in &chosen {
                let p = packs.iter().find(|p| p.0 == *c).unwrap();
                prop_assert!(p.3 && worth_moving(p.1, p.2));
                left -= p.2;
            }
            let all = eligible.len() == chosen.len();
            prop_assert!(left <= used * u64::from(pct) / 100 || all);
            // Minimal: without the last (least empty) pack chosen, it would not be met.
            if let Some(last) = chosen.iter().filter_map(|c| eligible.iter().find(|p| p.0 == *c)).min_by(|a, b| {
                let fa = a.2 as f64 / (a.1 + a.2).max(1) as f64;
                let fb = b.2 as f64 / (b.1 + b.2).max(1) as f64;
                fa.total_cmp(&fb).then(b.0.cmp(&a.0))
            }) {
                prop_assert!(left + last.2 > used * u64::from(pct) / 100);
            }
        }
    }
}
