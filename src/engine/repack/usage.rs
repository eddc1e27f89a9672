//! How much of each pack the kept snapshots still use, read from their entry lists, and
//! the pure choice of which packs to rewrite ([`choose`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalog::{BackupEntry, Listing, PackRef};
use crate::engine::Cancel;
use crate::engine::snapshot::ids::PackId;
use crate::engine::snapshot::index;
use crate::engine::snapshot::keys::Opening;
use crate::engine::snapshot::trailer::{self, PackedChunk};
use crate::engine::snapshot::tree::TreeReader;
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
}

impl PackUse {
    /// Bytes a pack holding only its used chunks would take: their bytes and their
    /// trailer entries.
    pub(super) fn used_bytes(&self) -> u64 {
        if self.opaque {
            return self.recorded.size;
        }
        let stored: u64 = self.live.values().map(|c| u64::from(c.stored)).sum();
        stored + (self.live.len() * trailer::ENTRY_LEN + trailer::FOOTER_LEN) as u64
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
        });
        entry.opaque = true;
        entry.pinned.get_or_insert_with(|| why.to_string());
    }
}

fn read_member(
    m: &BackupEntry,
    opening: &Opening,
    why_fixed: Option<&str>,
    packs: &mut BTreeMap<PackId, PackUse>,
) -> Result<()> {
    let recorded: HashMap<&str, &PackRef> = m
        .metadata
        .snapshot
        .iter()
        .flat_map(|s| s.packs.iter())
        .map(|p| (p.id.as_str(), p))
        .collect();
    let sealed = m.metadata.format().is_ok_and(|f| f.encryption.is_some());
    let mut reader = TreeReader::open(&m.data_path, opening)?;
    let chunk_key = reader.header().chunk_key.clone();
    let tag = index::tag_of(m, chunk_key.as_deref())?;
    while let Some(node) = reader.next_node()? {
        for c in &node.chunks {
            let entry = packs.entry(c.pack).or_insert_with(|| {
                let hex = c.pack.to_hex();
                let (recorded, pinned) = match recorded.get(hex.as_str()) {
                    Some(p) => ((*p).clone(), None),
                    None => (
                        PackRef {
                            id: hex,
                            size: 0,
                            checksum: String::new(),
                        },
                        Some(format!("{} does not record it among its packs", m.stem)),
                    ),
                };
                PackUse {
                    recorded,
                    sealed,
                    tag: tag.clone(),
                    chunk_key: chunk_key.clone(),
                    live: BTreeMap::new(),
                    pinned,
                    opaque: false,
                }
            });
            if entry.tag != tag || entry.sealed != sealed {
                entry
                    .pinned
                    .get_or_insert_with(|| "snapshots made with other keys use it".into());
            }
            if let Some(why) = why_fixed {
                entry.pinned.get_or_insert_with(|| why.to_string());
            }
            entry.live.entry(c.offset).or_insert(c.packed());
        }
    }
    Ok(())
}

/// How much unused space the store may hold, in percent of the space its kept snapshots
/// use (`None`: any).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance(pub Option<u32>);

/// Which packs to rewrite so that the unused bytes left are at most `tolerance` of the
/// used ones: the emptiest first, only packs that may move and hold something unused.
/// Pure: the same uses give the same choice.
pub(super) fn choose(packs: &[(PackId, u64, u64, bool)], tolerance: Tolerance) -> Vec<PackId> {
    let Some(pct) = tolerance.0 else {
        return Vec::new();
    };
    let used: u64 = packs.iter().map(|p| p.1).sum();
    let mut unused: u64 = packs.iter().map(|p| p.2).sum();
    let allowed = used.saturating_mul(u64::from(pct)) / 100;
    let mut movable: Vec<&(PackId, u64, u64, bool)> =
        packs.iter().filter(|p| p.3 && p.2 > 0).collect();
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
        // 180 used, 220 unused; without 3 (80) and 4 (40): 100 left, still > 18; 1 too.
        assert_eq!(
            choose(&packs, Tolerance(Some(10))),
            vec![id(1), id(3), id(4)]
        );
        // 50 %: 90 allowed; 3 then 4 bring it to 100, then 1 to 90.
        assert_eq!(
            choose(&packs, Tolerance(Some(50))),
            vec![id(1), id(3), id(4)]
        );
        assert_eq!(choose(&packs, Tolerance(Some(70))), vec![id(3), id(4)]);
    }

    proptest! {
        /// Whatever the uses: only movable packs with unused bytes are chosen, and
        /// afterwards the unused bytes are within the tolerance unless every movable
        /// pack was chosen.
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
            let mut left: u64 = packs.iter().map(|p| p.2).sum();
            for c in &chosen {
                let p = packs.iter().find(|p| p.0 == *c).unwrap();
                prop_assert!(p.3 && p.2 > 0);
                left -= p.2;
            }
            let all_movable = packs.iter().filter(|p| p.3 && p.2 > 0).count() == chosen.len();
            prop_assert!(left <= used * u64::from(pct) / 100 || all_movable);
        }
    }
}
