//! `diff A B`: what changed from snapshot A to snapshot B, by walking both entry lists
//! side by side (both are in the walk's sorted order, so nothing is held in memory). A
//! file changed when its content did (its chunk ids), or its type, mode, owner or target;
//! a new mtime or new extended attributes alone are a change of metadata.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::read::open_tree;
use super::tree::Node;
use crate::error::Result;

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    /// Content, type or link target differ.
    Modified,
    /// Only mode, owner, mtime or extended attributes differ.
    Metadata,
}

impl ChangeKind {
    /// The one-character mark `diff` prints (restic's: `+`, `-`, `M`, `U`).
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub change: ChangeKind,
    pub path: PathBuf,
    /// Size in B (in A for a removed entry).
    pub size: u64,
}

fn content_differs(a: &Node, b: &Node) -> bool {
    a.kind != b.kind
        || a.size != b.size
        || a.target != b.target
        || a.chunks.len() != b.chunks.len()
        || a.chunks.iter().zip(&b.chunks).any(|(x, y)| x.id != y.id)
}

fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime != b.mtime
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs
}

/// The changes from `a` to `b`, in path order; `visit` sees each. Encrypted entry lists
/// are opened with `identity` or the store key.
pub fn diff_snapshots(
    a: &Path,
    b: &Path,
    identity: Option<&Path>,
    visit: &mut dyn FnMut(Change),
) -> Result<()> {
    let mut ra = open_tree(a, identity)?.reader;
    let mut rb = open_tree(b, identity)?.reader;
    let mut na = ra.next_node()?;
    let mut nb = rb.next_node()?;
    loop {
        let order = match (&na, &nb) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.path.cmp(&y.path),
        };
        match order {
            Ordering::Less => {
                if let Some(x) = na.take() {
                    visit(Change {
                        change: ChangeKind::Removed,
                        size: x.size,
                        path: x.path,
                    });
                }
                na = ra.next_node()?;
            }
            Ordering::Greater => {
                if let Some(y) = nb.take() {
                    visit(Change {
                        change: ChangeKind::Added,
                        size: y.size,
                        path: y.path,
                    });
                }
                nb = rb.next_node()?;
            }
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (na.take(), nb.take()) {
                    let change = if content_differs(&x, &y) {
                        Some(ChangeKind::Modified)
                    } else if metadata_differs(&x, &y) && !y.path.as_os_str().is_empty() {
                        Some(ChangeKind::Metadata)
                    } else {
                        None
                    };
                    if let Some(change) = change {
                        visit(Change {
                            change,
                            size: y.size,
                            path: y.path,
                        });
                    }
                }
                na = ra.next_node()?;
                nb = rb.next_node()?;
            }
        }
    }
}
