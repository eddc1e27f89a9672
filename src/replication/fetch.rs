//! The stream read back from a target, for a restore on any server (a rebuilt one
//! included): the generations the target holds a record for, the one that covers the
//! time chosen, and its base and segments brought into a private directory laid out as
//! the backup directory's `replication/`, where the local restore replays and checks
//! them. Only keys that parse as the stream's are read; every object is read to exactly
//! the size its listing gave (more or fewer bytes are damage), sealed ones opened with
//! the identity, and nothing of the target is changed.

use std::io::{Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::keys::{StreamKey, StreamObject};
use super::store::{BASE_FILE, GenerationInfo, ReplicaStore};
use super::wal::valid_page_size;
use crate::catalog::PartialFile;
use crate::encryption::Identities;
use crate::error::{Error, IoContext, Result};
use crate::offsite::target::{ObjectInfo, RemoteError, Target};

/// A record larger than this is not one of ours.
const MAX_RECORD: u64 = 64 * 1024;

/// A generation as the target holds it.
#[derive(Debug, Clone)]
pub struct RemoteGeneration {
    pub name: String,
    pub info: GenerationInfo,
    pub sealed: bool,
    pub base: ObjectInfo,
    pub segments: Vec<(u64, ObjectInfo)>,
}

/// How a caller turns a target's failure into the program's error (naming the target).
pub type RemoteErr<'a> = &'a dyn Fn(&str, RemoteError) -> Error;

/// The usable generations on `target` (a record, a base, the same sealing throughout),
/// oldest first. `identities` opens sealed records; without it they are an error that
/// says to pass one.
pub fn remote_generations(
    target: &dyn Target,
    identities: Option<&Identities>,
    err: RemoteErr,
) -> Result<Vec<RemoteGeneration>> {
    let listing = target
        .list_under(&format!("{}/", super::store::DIR))
        .map_err(|e| err("list the replicated stream", e))?;
    let mut found: std::collections::BTreeMap<String, Parts> = Default::default();
    for object in listing {
        let Some(key) = StreamKey::parse(&object.key) else {
            continue;
        };
        let parts = found.entry(key.generation.clone()).or_default();
        let slot = if key.sealed {
            &mut parts.sealed
        } else {
            &mut parts.plain
        };
        match key.object {
            StreamObject::Info => slot.info = Some(object),
            StreamObject::Base => slot.base = Some(object),
            StreamObject::Segment(first) => slot.segments.push((first, object)),
        }
    }
    let mut out = Vec::new();
    for (name, parts) in found {
        for (sealed, slot) in [(true, parts.sealed), (false, parts.plain)] {
            let (Some(info_obj), Some(base)) = (slot.info, slot.base) else {
                continue;
            };
            let info = read_record(target, &info_obj, sealed, identities, err)?;
            if info.base_through.is_none() || !valid_page_size(info.page_size) {
                continue;
            }
            let mut segments = slot.segments;
            segments.sort_by_key(|s| s.0);
            out.push(RemoteGeneration {
                name: name.clone(),
                info,
                sealed,
                base,
                segments,
            });
            break;
        }
    }
    out.sort_by_key(|g| g.info.started);
    Ok(out)
}

#[derive(Default)]
struct Parts {
    sealed: Slot,
    plain: Slot,
}

#[derive(Default)]
struct Slot {
    info: Option<ObjectInfo>,
    base: Option<ObjectInfo>,
    segments: Vec<(u64, ObjectInfo)>,
}

fn read_record(
    target: &dyn Target,
    object: &ObjectInfo,
    sealed: bool,
    identities: Option<&Identities>,
    err: RemoteErr,
) -> Result<GenerationInfo> {
    let bad = |detail: String| Error::verify(Path::new(&object.key), "replication record", detail);
    if object.size > MAX_RECORD {
        return Err(bad(format!("{} bytes: not a record of ours", object.size)));
    }
    let mut raw = Vec::new();
    target
        .get(&object.key)
        .map_err(|e| err("read", e))?
        .take(MAX_RECORD + 1)
        .read_to_end(&mut raw)
        .map_err(|e| bad(format!("reading it failed: {e}")))?;
    let plain = if sealed {
        let identities = identities.ok_or_else(|| {
            Error::Refused(format!(
                "{} is encrypted: pass the identity (--identity FILE or $VERTEX_BACKUP_IDENTITY)",
                object.key
            ))
        })?;
        let mut out = Vec::new();
        identities
            .decrypt(&raw[..])
            .map_err(|e| Error::decrypt(Path::new(&object.key), e))?
            .take(MAX_RECORD + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("it does not decrypt whole: {e}")))?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))
}

/// The generation covering `at` (the newest when `None`).
pub fn choose(
    generations: &[RemoteGeneration],
    at: Option<DateTime<Utc>>,
) -> Option<&RemoteGeneration> {
    generations
        .iter()
        .rev()
        .find(|g| at.is_none_or(|t| g.info.started <= t))
}

/// Brings `generation` into `store` (a private, empty one): its record, base and every
/// segment, each read to exactly its listed size and opened when sealed.
pub fn bring(
    target: &dyn Target,
    generation: &RemoteGeneration,
    identities: Option<&Identities>,
    store: &ReplicaStore,
    err: RemoteErr,
) -> Result<()> {
    store.save_generation(&generation.name, &generation.info)?;
    let dir = store.generation_dir(&generation.name);
    let opener = if generation.sealed {
        Some(identities.ok_or_else(|| {
            Error::Refused(format!(
                "the replicated generation {} is encrypted: pass the identity (--identity FILE or $VERTEX_BACKUP_IDENTITY)",
                generation.name
            ))
        })?)
    } else {
        None
    };
    copy_object(
        target,
        &generation.base,
        &dir.join(BASE_FILE),
        opener,
        store,
        err,
    )?;
    for (first, object) in &generation.segments {
        let path = store.segment_path(&generation.name, *first);
        copy_object(target, object, &path, opener, store, err)?;
    }
    Ok(())
}

fn copy_object(
    target: &dyn Target,
    object: &ObjectInfo,
    to: &Path,
    identities: Option<&Identities>,
    store: &ReplicaStore,
    err: RemoteErr,
) -> Result<()> {
    let (partial, file) = PartialFile::create(to, store.file_mode())?;
    let mut counted = Counted {
        inner: target.get(&object.key).map_err(|e| err("read", e))?,
        read: 0,
        limit: object.size,
    };
    let mut out = std::io::BufWriter::new(&file);
    let copied = match identities {
        Some(ids) => {
            let mut plain = ids
                .decrypt(&mut counted)
                .map_err(|e| Error::decrypt(Path::new(&object.key), e))?;
            std::io::copy(&mut plain, &mut out)
        }
        None => std::io::copy(&mut counted, &mut out),
    };
    copied.map_err(|e| {
        Error::verify(
            Path::new(&object.key),
            "replicated object",
            format!("reading it failed: {e}"),
        )
    })?;
    if counted.read != object.size {
        return Err(Error::verify(
            Path::new(&object.key),
            "size",
            format!(
                "{} bytes read, the listing says {}",
                counted.read, object.size
            ),
        ));
    }
    out.flush().ctx("write", partial.temp_path())?;
    drop(out);
    partial.sync(&file)?;
    partial.rename()?;
    Ok(())
}

/// A reader that fails past `limit` bytes (an object larger than its listing).
struct Counted<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "more bytes than the listing says",
            ));
        }
        Ok(n)
    }
}
