//! The tree an archive's entries build, judged entry by entry as a restore would build
//! it — the one judgement `verify` and `restore` share. [`super::archive::read_archive`]
//! runs every entry through an [`EntryTree`] before any sink sees it, so an archive that
//! a restore would refuse half-way (a hard link to a later entry, a file and then a
//! directory of the same name, a file "inside" a file) fails `verify` the same way and is
//! refused by `restore` before anything is written. The extractor keeps its own checks
//! on the real filesystem; these make sure they are never the first to object.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::archive::{EntryKind, SafeEntry};
use crate::error::{Error, Result};

/// What a path holds once the entries so far are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    /// A regular file (also one made by a hard-link entry): a hard link may point at it.
    File,
    Symlink,
}

/// Why an entry cannot be extracted where it stands; the extractor says the same.
pub const PARENT_NOT_DIR: &str =
    "a parent of it in the archive is a link or a file, not a directory";
pub const DIR_COLLIDES: &str = "a directory entry collides with a file or link";
pub const REPLACES_DIR: &str = "it replaces a directory";
pub const HARDLINK_NOT_BEFORE: &str =
    "it is a hard link to something that is not a file extracted before it";

/// The paths the entries admitted so far create, and what each is.
#[derive(Debug, Default)]
pub struct EntryTree {
    nodes: HashMap<PathBuf, Node>,
    /// Non-directory entries admitted (files, links): what metadata's `file_count` counts.
    pub non_dir_entries: u64,
}

impl EntryTree {
    /// Admit the next entry, or say why a restore could not extract it here.
    pub fn admit(&mut self, archive: &Path, e: &SafeEntry) -> Result<()> {
        let refuse = |reason: &str| Error::UnsafeEntry {
            archive: archive.to_path_buf(),
            entry: crate::names::shown(&e.path).to_string(),
            reason: reason.into(),
        };
        self.make_parents(&e.path)
            .map_err(|()| refuse(PARENT_NOT_DIR))?;
        let existing = self.nodes.get(&e.path).copied();
        let node = match &e.kind {
            EntryKind::Dir => {
                if existing.is_some_and(|n| n != Node::Dir) {
                    return Err(refuse(DIR_COLLIDES));
                }
                Node::Dir
            }
            EntryKind::File | EntryKind::Symlink(_) | EntryKind::Hardlink(_) => {
                if let EntryKind::Hardlink(target) = &e.kind {
                    // The extractor creates the target's parents before looking at it.
                    self.make_parents(target)
                        .map_err(|()| refuse(PARENT_NOT_DIR))?;
                    // A link to itself would remove its own source before linking.
                    if target == &e.path || self.nodes.get(target) != Some(&Node::File) {
                        return Err(refuse(HARDLINK_NOT_BEFORE));
                    }
                }
                if existing == Some(Node::Dir) {
                    return Err(refuse(REPLACES_DIR));
                }
                self.non_dir_entries += 1;
                match e.kind {
                    EntryKind::Symlink(_) => Node::Symlink,
                    _ => Node::File,
                }
            }
        };
        self.nodes.insert(e.path.clone(), node);
        Ok(())
    }

    /// Every parent of `rel` becomes a directory, as the extractor creates them; `Err` if
    /// one already is something else.
    fn make_parents(&mut self, rel: &Path) -> std::result::Result<(), ()> {
        for parent in rel.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            match self.nodes.get(parent) {
                Some(Node::Dir) => {}
                Some(_) => return Err(()),
                None => {
                    self.nodes.insert(parent.to_path_buf(), Node::Dir);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> SafeEntry {
        SafeEntry {
            path: PathBuf::from(path),
            kind,
            mode: 0o644,
            mtime: 0,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            size: 0,
            xattrs: Vec::new(),
        }
    }

    fn judge(entries: &[SafeEntry]) -> std::result::Result<u64, String> {
        let mut tree = EntryTree::default();
        for e in entries {
            tree.admit(Path::new("a.tar"), e)
                .map_err(|e| e.to_string())?;
        }
        Ok(tree.non_dir_entries)
    }

    #[test]
    fn a_well_formed_tree_is_admitted_and_its_files_and_links_counted() {
        let n = judge(&[
            entry("s", EntryKind::Dir),
            entry("s/a/f", EntryKind::File),
            entry("s/a/f", EntryKind::File),
            entry("s/h", EntryKind::Hardlink("s/a/f".into())),
            entry("s/h2", EntryKind::Hardlink("s/h".into())),
            entry("s/l", EntryKind::Symlink("a/f".into())),
            entry("s/a", EntryKind::Dir),
        ]);
        assert_eq!(n, Ok(5));
    }

    #[test]
    fn what_the_extractor_would_refuse_is_refused() {
        let cases: &[(&[SafeEntry], &str)] = &[
            (
                &[
                    entry("s/h", EntryKind::Hardlink("s/later".into())),
                    entry("s/later", EntryKind::File),
                ],
                HARDLINK_NOT_BEFORE,
            ),
            (
                &[entry("s/x", EntryKind::File), entry("s/x", EntryKind::Dir)],
                DIR_COLLIDES,
            ),
            (
                &[
                    entry("s/x", EntryKind::File),
                    entry("s/x/y", EntryKind::File),
                ],
                PARENT_NOT_DIR,
            ),
            (
                &[
                    entry("s/x/y", EntryKind::File),
                    entry("s/x", EntryKind::File),
                ],
                REPLACES_DIR,
            ),
            (
                &[
                    entry("s/l", EntryKind::Symlink("x".into())),
                    entry("s/h", EntryKind::Hardlink("s/l".into())),
                ],
                HARDLINK_NOT_BEFORE,
            ),
            (
                &[
                    entry("s/f", EntryKind::File),
                    entry("s/f", EntryKind::Hardlink("s/f".into())),
                ],
                HARDLINK_NOT_BEFORE,
            ),
        ];
        for (entries, reason) in cases {
            let got = judge(entries).expect_err(reason);
            assert!(got.contains(reason), "{got} does not say {reason}");
        }
    }
}
