//! Partial restore (`restore --path P`): which entries of a storage archive the selected
//! paths take. Paths are relative to the storage directory (the archive's one top-level
//! directory). [`SelectiveSink`] passes the selected entries (and the directories above
//! them, for their modes and times) to the extractor in the same single streaming pass
//! that checks every entry; the rest is read past, still checksummed and judged.
//!
//! A selected hard link whose data file lies outside the selection cannot be made from
//! what was extracted: it is noted, and [`SpillSink`] fetches just those data files in a
//! second pass (the only case that reads the archive twice), so the link restores with
//! its content instead of failing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::archive::{EntryKind, EntrySink, SafeEntry};
use super::extract::Extractor;
use crate::error::{Error, Result};

/// The normalised `--path` values: relative, no `..`, none inside another.
#[derive(Debug, Clone, Default)]
pub struct PathSelection {
    paths: Vec<PathBuf>,
}

impl PathSelection {
    /// Normalise what the operator gave (`client_1/`, `./client_1`); refuse what cannot
    /// name a path inside the storage directory.
    pub fn new(raw: &[PathBuf]) -> Result<Self> {
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in raw {
            let mut norm = PathBuf::new();
            for c in p.components() {
                match c {
                    Component::Normal(n) => norm.push(n),
                    Component::CurDir => {}
                    _ => {
                        return Err(Error::Refused(format!(
                            "--path {}: give a path relative to the storage directory, without `..` (e.g. --path client_1/)",
                            p.display()
                        )));
                    }
                }
            }
            if norm.as_os_str().is_empty() {
                return Err(Error::Refused(format!(
                    "--path {} names the whole storage directory; leave --path out to restore all of it",
                    p.display()
                )));
            }
            paths.push(norm);
        }
        // A path inside another selected one is already taken with it.
        paths.sort();
        paths.dedup();
        let all = paths.clone();
        paths.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
        Ok(PathSelection { paths })
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// An entry's path below the archive's top-level directory.
    fn below_top(entry: &Path) -> &Path {
        let mut c = entry.components();
        c.next();
        c.as_path()
    }

    /// The index of the selected path that holds `rel`, if one does.
    fn holder(&self, rel: &Path) -> Option<usize> {
        self.paths.iter().position(|p| rel.starts_with(p))
    }

    /// Is `rel` a directory above a selected path (the top itself included)?
    fn is_above(&self, rel: &Path) -> bool {
        self.paths.iter().any(|p| p.starts_with(rel) && p != rel)
    }
}

/// What the selection took, as the report counts it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SelectedStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Passes the selected entries of an archive to an extractor.
pub struct SelectiveSink<'a> {
    inner: &'a mut Extractor,
    selection: &'a PathSelection,
    matched: Vec<bool>,
    /// The names directly under the storage directory: the hint for a `--path` that
    /// matches nothing.
    top_level: BTreeSet<String>,
    /// For every hard-link entry so far, the file entry that carries its data (chains of
    /// links resolved), so a selected link can be made even when its own target was not.
    data_of: HashMap<PathBuf, PathBuf>,
    /// Selected hard links whose data file is outside the selection: (link, data file).
    pub orphan_links: Vec<(PathBuf, PathBuf)>,
    pub stats: SelectedStats,
}

impl<'a> SelectiveSink<'a> {
    pub fn new(inner: &'a mut Extractor, selection: &'a PathSelection) -> Self {
        SelectiveSink {
            inner,
            selection,
            matched: vec![false; selection.paths.len()],
            top_level: BTreeSet::new(),
            data_of: HashMap::new(),
            orphan_links: Vec::new(),
            stats: SelectedStats::default(),
        }
    }

    /// After the pass: every `--path` must have matched something, or the restore is
    /// refused (nothing live has been touched yet) with what the archive does hold.
    pub fn check_all_matched(&self, archive: &Path) -> Result<()> {
        let missing: Vec<String> = self
            .selection
            .paths
            .iter()
            .zip(&self.matched)
            .filter(|(_, m)| !**m)
            .map(|(p, _)| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let listed: Vec<&str> = self.top_level.iter().map(String::as_str).collect();
        Err(Error::Refused(format!(
            "--path {} matches nothing in {}; nothing was changed. Paths are relative to the storage directory; its top-level entries are: {}",
            missing.join(", --path "),
            archive.display(),
            if listed.is_empty() {
                "(none: the archive is empty)".to_string()
            } else {
                listed.join(", ")
            }
        )))
    }

    fn note_top_level(&mut self, e: &SafeEntry) {
        let rel = PathSelection::below_top(&e.path);
        let mut c = rel.components();
        if let Some(first) = c.next() {
            let mut name = first.as_os_str().to_string_lossy().into_owned();
            if c.next().is_some() || e.kind == EntryKind::Dir {
                name.push('/');
            }
            // `a` as a file and `a/` as a directory cannot both exist; keep the directory.
            self.top_level.remove(name.trim_end_matches('/'));
            if !self.top_level.contains(&format!("{name}/")) {
                self.top_level.insert(name);
            }
        }
    }
}

impl EntrySink for SelectiveSink<'_> {
    fn entry(&mut self, e: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        self.note_top_level(e);
        let data_file = match &e.kind {
            EntryKind::Hardlink(target) => {
                let data_file = self
                    .data_of
                    .get(target)
                    .cloned()
                    .unwrap_or_else(|| target.clone());
                self.data_of.insert(e.path.clone(), data_file.clone());
                Some(data_file)
            }
            _ => {
                // The path holds something new: no longer the link it may have been.
                self.data_of.remove(&e.path);
                None
            }
        };
        let rel = PathSelection::below_top(&e.path);
        if let Some(i) = self.selection.holder(rel) {
            self.matched[i] = true;
            self.stats.entries += 1;
            if let Some(data_file) = data_file {
                if self
                    .selection
                    .holder(PathSelection::below_top(&data_file))
                    .is_none()
                {
                    self.orphan_links.push((e.path.clone(), data_file));
                    self.stats.files += 1;
                    return Ok(());
                }
                // Linked to the file that carries the data: an intermediate link may be
                // outside the selection.
                let linked = SafeEntry {
                    kind: EntryKind::Hardlink(data_file),
                    ..e.clone()
                };
                self.stats.files += 1;
                return self.inner.entry(&linked, data);
            }
            if e.kind == EntryKind::File {
                self.stats.files += 1;
                self.stats.bytes += e.size;
            }
            return self.inner.entry(e, data);
        }
        if e.kind == EntryKind::Dir && self.selection.is_above(rel) {
            return self.inner.entry(e, data);
        }
        // Not taken: the archive reader reads past its data (checksummed all the same).
        Ok(())
    }
}

/// The second pass for [`SelectiveSink::orphan_links`]: extracts only the data files
/// those links need, into a scratch directory they are then linked from.
pub struct SpillSink<'a> {
    inner: &'a mut Extractor,
    needed: HashSet<PathBuf>,
}

impl<'a> SpillSink<'a> {
    pub fn new(inner: &'a mut Extractor, orphan_links: &[(PathBuf, PathBuf)]) -> Self {
        SpillSink {
            inner,
            needed: orphan_links.iter().map(|(_, d)| d.clone()).collect(),
        }
    }
}

impl EntrySink for SpillSink<'_> {
    fn entry(&mut self, e: &SafeEntry, data: &mut dyn Read) -> Result<()> {
        if e.kind == EntryKind::File && self.needed.contains(&e.path) {
            return self.inner.entry(e, data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(paths: &[&str]) -> Result<PathSelection> {
        PathSelection::new(&paths.iter().map(PathBuf::from).collect::<Vec<_>>())
    }

    #[test]
    fn paths_are_normalised_and_nested_ones_folded_into_their_parent() {
        let s = sel(&["client_1/", "./client_1/sub", "b//c", "b/c"]).unwrap();
        assert_eq!(
            s.paths(),
            &[PathBuf::from("b/c"), PathBuf::from("client_1")]
        );
        assert_eq!(s.holder(Path::new("client_1/x/y")), Some(1));
        assert_eq!(s.holder(Path::new("client_10")), None);
        assert!(s.is_above(Path::new("")) && s.is_above(Path::new("b")));
        assert!(!s.is_above(Path::new("b/c")));
    }

    fn entry(path: &str, kind: EntryKind) -> SafeEntry {
        SafeEntry {
            path: PathBuf::from(path),
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            kind,
            mtime: 1_600_000_000,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            size: 1,
            xattrs: Vec::new(),
        }
    }

    /// Feed `entries` through a [`SelectiveSink`] extracting under a temporary root.
    fn run(
        paths: &[&str],
        entries: &[SafeEntry],
    ) -> (tempfile::TempDir, Vec<(PathBuf, PathBuf)>, String) {
        let dir = tempfile::tempdir().unwrap();
        let selection = sel(paths).unwrap();
        let mut x = Extractor::new(dir.path(), Path::new("a.tar"));
        let mut sink = SelectiveSink::new(&mut x, &selection);
        for e in entries {
            sink.entry(e, &mut &b"x"[..]).unwrap();
        }
        let hint = sink
            .check_all_matched(Path::new("a.tar"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let orphans = sink.orphan_links.clone();
        x.finish().unwrap();
        (dir, orphans, hint)
    }

    fn tree() -> Vec<SafeEntry> {
        use EntryKind::*;
        vec![
            entry("s", Dir),
            entry("s/a", Dir),
            entry("s/a/f", File),
            entry("s/o", Dir),
            entry("s/o/h", Hardlink("s/a/f".into())),
            entry("s/c", Dir),
            entry("s/c/l", Hardlink("s/o/h".into())),
            entry("s/c/m", Hardlink("s/c/l".into())),
            entry("s/top.txt", File),
        ]
    }

    #[test]
    fn links_resolve_to_the_file_carrying_the_data_through_unselected_links() {
        // The data file selected: the links are made from it, the unselected one skipped.
        let (dir, orphans, hint) = run(&["a", "c"], &tree());
        assert!(orphans.is_empty() && hint.is_empty(), "{orphans:?} {hint}");
        assert!(!dir.path().join("s/o").exists());
        assert_eq!(std::fs::read(dir.path().join("s/c/m")).unwrap(), b"x");
        // The data file not selected: both selected links are noted for the second pass.
        let (dir, orphans, _) = run(&["c"], &tree());
        assert_eq!(
            orphans,
            vec![
                (PathBuf::from("s/c/l"), PathBuf::from("s/a/f")),
                (PathBuf::from("s/c/m"), PathBuf::from("s/a/f"))
            ]
        );
        assert!(!dir.path().join("s/a").exists() && dir.path().join("s/c").is_dir());
    }

    #[test]
    fn a_path_matching_nothing_is_named_with_the_top_level_entries() {
        let (_dir, _, hint) = run(&["c", "nope"], &tree());
        assert!(hint.contains("--path nope matches nothing"), "{hint}");
        assert!(hint.contains("a/, c/, o/, top.txt"), "{hint}");
    }

    #[test]
    fn paths_leaving_the_storage_directory_or_naming_all_of_it_are_refused() {
        for bad in ["/etc", "../x", "a/../../b", ".", "./"] {
            assert!(sel(&[bad]).is_err(), "{bad} accepted");
        }
    }
}
