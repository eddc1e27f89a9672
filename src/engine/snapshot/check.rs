//! Verifying a snapshot without stopping at the first problem: the entry list's checksum
//! and structure, then every chunk of every file — present in its pack (the default), or
//! read back, decompressed and hashed against its id (`--read-data`, and always before a
//! restore, which reads everything anyway). A missing or damaged pack fails the check
//! with the files it affects named, so the operator knows what a lost pack cost.

use std::path::Path;

use super::read::{check_tree, open_tree, safe_entry};
use crate::engine::entry_tree::EntryTree;
use crate::engine::{Cancel, Progress};
use crate::error::{Error, Result};

/// How deep a snapshot check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every chunk's pack is there and long enough.
    Presence,
    /// Every chunk is read back and hashed.
    ReadData,
}

/// What a passing check saw.
#[derive(Debug, Default)]
pub struct Checked {
    pub entries: u64,
    pub files: u64,
    pub non_dir_entries: u64,
    pub chunks: u64,
    /// Bytes read: the entry list, plus the chunks with [`Depth::ReadData`].
    pub bytes_read: u64,
}

/// Names at most this many affected files in the failure (and counts the rest).
const NAMED: usize = 10;

pub fn check_snapshot(
    tree: &Path,
    (expected, identity): (Option<&str>, Option<&Path>),
    depth: Depth,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<Checked> {
    let (_, size) = check_tree(tree, expected)?;
    let mut opened = open_tree(tree, identity)?;
    let (reader, mut packs) = opened.split();
    let top = reader.header().root.clone();
    let mut judged = EntryTree::default();
    let mut checked = Checked {
        bytes_read: size,
        ..Checked::default()
    };
    let mut affected: Vec<String> = Vec::new();
    let mut affected_count = 0usize;
    let mut first_problem = None;
    let mut buf = Vec::new();
    progress.begin("check snapshot", None, None);
    while let Some(node) = reader.next_node()? {
        cancel.check()?;
        let safe = safe_entry(tree, &top, &node)?;
        judged.admit(tree, &safe)?;
        checked.entries += 1;
        let mut problem = None;
        let mut total = 0u64;
        for chunk in &node.chunks {
            checked.chunks += 1;
            total += u64::from(chunk.raw);
            let result = match depth {
                Depth::Presence => packs.check_present(chunk),
                Depth::ReadData => {
                    checked.bytes_read += u64::from(chunk.stored);
                    packs.read_chunk(chunk, &mut buf)
                }
            };
            match result {
                Err(e @ super::pack::ChunkError::Key(..)) => {
                    return Err(e.into_error(tree, String::new()));
                }
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
                Ok(()) => {}
            }
        }
        if problem.is_none() && node.kind == super::tree::NodeKind::File && total != node.size {
            problem = Some(format!(
                "its chunks hold {total} bytes, the entry says {}",
                node.size
            ));
        }
        if let Some(p) = problem {
            affected_count += 1;
            if affected.len() < NAMED {
                affected.push(crate::names::shown(&node.path).to_string());
            }
            first_problem.get_or_insert(p);
        }
        if node.kind == super::tree::NodeKind::File {
            checked.files += 1;
        }
        progress.advance(node.size, 1);
    }
    progress.end();
    checked.non_dir_entries = judged.non_dir_entries;
    if let Some(p) = first_problem {
        let more = affected_count.saturating_sub(affected.len());
        let mut detail = format!(
            "{affected_count} file(s) cannot be restored: {}",
            affected.join(", ")
        );
        if more > 0 {
            detail.push_str(&format!(" and {more} more"));
        }
        detail.push_str(&format!(" ({p})"));
        return Err(Error::verify(tree, "contents", detail));
    }
    Ok(checked)
}
