//! Where a snapshot's entry list lives on a target once repacking has rewritten it.
//!
//! Repacking the local store rewrites a kept snapshot's entry list (and its metadata) to
//! point at the packs its chunks moved to; the local names never change. A target holding
//! the snapshot as it was is brought up to date by the next push, and that must not have
//! a moment where the target's copy is neither the old one nor the new one: a push killed
//! between overwriting the entry list and overwriting the metadata would leave metadata
//! that describes another file. So the rewritten entry list goes up under a name of its
//! own — `storage_snapshot_X.r1.tree.zst`, the generation being how many times repacking
//! rewrote it — and the metadata object, written last as always, names it
//! (`data_object`). Until that one PUT lands the target holds the old copy whole; after
//! it, the new one. The old entry list and the packs only it needed are then objects no
//! metadata names: debris, removed by the push that follows. `fetch` puts the object back
//! under the local name.

use std::collections::BTreeMap;

use crate::catalog::{BackupEntry, BackupMetadata, Part, PartRole};
use crate::error::{Error, Result};

/// `storage_snapshot_X.r{generation}.tree.zst` for the file `storage_snapshot_X.tree.zst`
/// of the backup `stem` (the extension kept whole: `.tree.zst.age` on an encrypted target).
/// `None` when `file` is not named after `stem`.
pub fn versioned(stem: &str, file: &str, generation: usize) -> Option<String> {
    let ext = file.strip_prefix(stem).filter(|e| e.starts_with('.'))?;
    Some(format!("{stem}.r{generation}{ext}"))
}

/// Whether `object` is a name [`versioned`] gives `file` of `stem`: what a metadata object
/// on a target may name as its data object instead of `file` (anything else — another
/// backup's object, a path, a key outside the type's directory — is refused).
pub fn valid(stem: &str, file: &str, object: &str) -> bool {
    let Some(ext) = file.strip_prefix(stem).filter(|e| e.starts_with('.')) else {
        return false;
    };
    let Some(rest) = object.strip_prefix(stem).and_then(|r| r.strip_prefix(".r")) else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (1..=6).contains(&digits) && &rest[digits..] == ext
}

/// Which snapshots of one local backup (itself, or a full backup's members) repacking has
/// rewritten, by stem, with their generation: their entry lists go up under
/// [`versioned`] names.
#[derive(Debug, Default)]
pub struct Generations(BTreeMap<String, usize>);

impl Generations {
    /// Read from the backup's metadata (a full backup's members' files are read: they are
    /// small).
    pub fn of(entry: &BackupEntry) -> Result<Generations> {
        let mut generations = BTreeMap::new();
        for part in entry.parts.iter().filter(|p| p.role == PartRole::Metadata) {
            let read;
            let meta = if part.of == entry.stem {
                &entry.metadata
            } else {
                read = read_metadata(part)?;
                &read
            };
            if meta.snapshot.is_some() && !meta.earlier_checksums.is_empty() {
                generations.insert(part.of.clone(), meta.earlier_checksums.len());
            }
        }
        Ok(Generations(generations))
    }

    /// The key the data part `part` goes up as, given the key it would have had
    /// (`canonical`): a rewritten snapshot's entry list under its versioned name; every
    /// other object (packs, archives, copies, snapshots never rewritten) as it is.
    pub fn key(&self, part: &Part, canonical: &str) -> String {
        if part.role != PartRole::Data || part.shared {
            return canonical.to_string();
        }
        self.object_of(&part.of, canonical).map_or_else(
            || canonical.to_string(),
            |object| replace_file(canonical, &object),
        )
    }

    /// The versioned file name the metadata of the backup `of` names, given its data
    /// object's canonical key: set as `data_object` in the metadata object sent.
    pub fn object_of(&self, of: &str, canonical: &str) -> Option<String> {
        let generation = *self.0.get(of)?;
        versioned(of, file_of(canonical), generation)
    }
}

/// `storage/x.tree.zst` → `x.tree.zst`.
fn file_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, f)| f)
}

/// `storage/x.tree.zst` with its file replaced by `file`.
fn replace_file(key: &str, file: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file}"),
        None => file.to_string(),
    }
}

fn read_metadata(part: &Part) -> Result<BackupMetadata> {
    let bytes = std::fs::read(&part.path).map_err(|e| Error::io("read", &part.path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::NotABackup {
        path: part.path.clone(),
        reason: format!("its metadata is not valid: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEM: &str = "storage_snapshot_20261201_020000";

    #[test]
    fn a_versioned_name_keeps_the_whole_extension() {
        let file = format!("{STEM}.tree.zst.age");
        let v = versioned(STEM, &file, 3).expect("named after its stem");
        assert_eq!(v, format!("{STEM}.r3.tree.zst.age"));
        assert!(valid(STEM, &file, &v));
        assert_eq!(versioned(STEM, "other.tree.zst", 1), None);
        assert_eq!(versioned(STEM, &format!("{STEM}x.tree.zst"), 1), None);
    }

    #[test]
    fn only_names_versioned_could_give_are_valid() {
        let file = format!("{STEM}.tree.zst");
        for bad in [
            format!("{STEM}.tree.zst"),
            format!("{STEM}.r.tree.zst"),
            format!("{STEM}.r1.tree.zst.age"),
            format!("{STEM}.r1234567.tree.zst"),
            format!("{STEM}.r1/../x.tree.zst"),
            format!("{STEM}.r1.db"),
            "storage_snapshot_20261201_020001.r1.tree.zst".to_string(),
            "../store/packs/ab/x.pack".to_string(),
        ] {
            assert!(!valid(STEM, &file, &bad), "{bad} was taken");
        }
        assert!(valid(STEM, &file, &format!("{STEM}.r12.tree.zst")));
        assert!(!valid(
            STEM,
            "elsewhere.tree.zst",
            &format!("{STEM}.r1.tree.zst")
        ));
    }

    #[test]
    fn keys_change_only_for_a_rewritten_entry_list() {
        let g = Generations([(STEM.to_string(), 2)].into_iter().collect());
        let path = std::path::Path::new("/b/storage").join(format!("{STEM}.tree.zst"));
        let list = Part::data(
            crate::kind::BackupKind::Storage,
            STEM,
            &path,
            10,
            "00",
            None,
        );
        let canonical = format!("storage/{STEM}.tree.zst.age");
        assert_eq!(
            g.key(&list, &canonical),
            format!("storage/{STEM}.r2.tree.zst.age")
        );
        let mut pack = list.clone();
        pack.shared = true;
        assert_eq!(g.key(&pack, &canonical), canonical);
        let mut other = list.clone();
        other.of = "storage_snapshot_20261202_020000".into();
        assert_eq!(g.key(&other, &canonical), canonical);
    }
}
