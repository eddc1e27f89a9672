//! What `repair` knows of the store's packs: which kept snapshots list, whether each is
//! as recorded, what their trailers say, and — per snapshot — whether each chunk can be
//! used where it is, or salvaged out of a pack that is not as recorded.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::PackProblem;
use crate::catalog::{BackupEntry, Listing, PackRef, pack_name};
use crate::encryption::Identities;
use crate::engine::Cancel;
use crate::engine::hashing::HashingReader;
use crate::engine::snapshot::mend::ChunkHealth;
use crate::engine::snapshot::pack::{PackReader, PackWriter};
use crate::engine::snapshot::trailer::{self, PackedChunk};
use crate::engine::snapshot::tree::ChunkRef;
use crate::error::{Error, Result};

/// The state of one pack a kept snapshot lists.
#[derive(Debug, Clone)]
pub(super) enum PackState {
    /// As recorded: `len` bytes.
    Good {
        len: u64,
    },
    Missing(String),
    /// Not as recorded: its chunks are checked one by one.
    Suspect(String),
}

/// Every pack kept snapshots list: id → (what is recorded, sealed).
pub(super) fn live_packs(listing: &Listing) -> BTreeMap<String, (PackRef, bool)> {
    let mut live = BTreeMap::new();
    for b in &listing.backups {
        let Some(s) = &b.metadata.snapshot else {
            continue;
        };
        let sealed = is_sealed(b);
        for p in &s.packs {
            live.entry(p.id.clone()).or_insert((p.clone(), sealed));
        }
    }
    live
}

pub(super) fn is_sealed(b: &BackupEntry) -> bool {
    b.metadata.format().is_ok_and(|f| f.encryption.is_some())
}

/// Check each live pack once: present, of its recorded size, and with `read_data` of its
/// recorded SHA-256.
pub(super) fn check_packs(
    root: &Path,
    live: &BTreeMap<String, (PackRef, bool)>,
    read_data: bool,
    cancel: &Cancel,
) -> Result<BTreeMap<String, PackState>> {
    let mut states = BTreeMap::new();
    for (id, (recorded, sealed)) in live {
        cancel.check()?;
        let path = root.join(pack_name(id, *sealed));
        let state = match fs::metadata(&path) {
            Err(e) => PackState::Missing(format!("cannot be opened: {e}")),
            Ok(m) if m.len() != recorded.size => PackState::Suspect(format!(
                "is {} bytes, its snapshots record {}",
                m.len(),
                recorded.size
            )),
            Ok(m) if read_data => {
                match File::open(&path).and_then(|f| HashingReader::new(f).finish()) {
                    Ok((sha, _)) if sha == recorded.checksum => PackState::Good { len: m.len() },
                    Ok(_) => PackState::Suspect("its SHA-256 differs from the one recorded".into()),
                    Err(e) => PackState::Suspect(format!("cannot be read: {e}")),
                }
            }
            Ok(m) => PackState::Good { len: m.len() },
        };
        states.insert(id.clone(), state);
    }
    Ok(states)
}

/// Whether chunks of one snapshot can be read where its entries say; chunks that still
/// read back right out of a suspect pack are copied into new packs (`salvage`, when
/// writing), so no repaired snapshot lists a pack that is not as recorded.
pub(super) struct Health<'a, 'k> {
    pub(super) states: &'a BTreeMap<String, PackState>,
    pub(super) reader: PackReader<'k>,
    /// A suspect pack it needs could not be read chunk by chunk (sealed, no identity).
    pub(super) undecidable: bool,
    pub(super) can_open: bool,
    pub(super) buf: Vec<u8>,
    pub(super) salvage: Option<PackWriter>,
    /// A write into the salvage pack failed: the first error.
    pub(super) failed: Option<Error>,
}

impl ChunkHealth for Health<'_, '_> {
    fn usable(&mut self, c: &ChunkRef) -> bool {
        match self.states.get(&c.pack.to_hex()) {
            Some(PackState::Good { len }) => c.offset + u64::from(c.stored) <= *len,
            Some(PackState::Suspect(_) | PackState::Missing(_)) | None => false,
        }
    }

    fn salvage(&mut self, c: &ChunkRef) -> Option<ChunkRef> {
        if !matches!(
            self.states.get(&c.pack.to_hex()),
            Some(PackState::Suspect(_))
        ) {
            return None;
        }
        if !self.can_open {
            self.undecidable = true;
            return None;
        }
        self.reader.read_chunk(c, &mut self.buf).ok()?;
        let Some(writer) = &mut self.salvage else {
            return Some(c.clone());
        };
        let packed = zstd::bulk::compress(&self.buf, 3)
            .ok()
            .filter(|z| z.len() < self.buf.len());
        let (stored, zstd) = match &packed {
            Some(z) => (z.as_slice(), true),
            None => (self.buf.as_slice(), false),
        };
        match writer.append(c.id, stored, (c.raw, zstd)) {
            Ok((pack, offset)) => Some(ChunkRef {
                id: c.id,
                pack,
                offset,
                stored: stored.len() as u32,
                raw: c.raw,
                zstd,
            }),
            Err(e) => {
                self.failed.get_or_insert(e);
                None
            }
        }
    }
}

/// The chunks each good pack's trailer lists (plain packs; sealed ones with an identity).
/// `None`: no trailer (format 1), or a sealed pack this run cannot open.
pub(super) type Trailers = BTreeMap<String, Option<Vec<PackedChunk>>>;

pub(super) fn read_trailers(
    root: &Path,
    live: &BTreeMap<String, (PackRef, bool)>,
    states: &BTreeMap<String, PackState>,
    identity: Option<&Identities>,
    damaged: &mut Vec<PackProblem>,
) -> Trailers {
    let mut out = Trailers::new();
    for (id, (_, sealed)) in live {
        if !matches!(states.get(id), Some(PackState::Good { .. })) {
            continue;
        }
        let path = root.join(pack_name(id, *sealed));
        let read = match (sealed, identity) {
            (false, _) => File::open(&path)
                .map_err(trailer::TrailerError::Io)
                .and_then(|mut f| trailer::read(&mut f)),
            (true, Some(ids)) => match File::open(&path).map(|f| ids.decrypt(f)) {
                Ok(Ok(mut r)) => trailer::read(&mut r),
                Ok(Err(e)) => Err(trailer::TrailerError::Io(io::Error::other(e.detail))),
                Err(e) => Err(trailer::TrailerError::Io(e)),
            },
            (true, None) => Ok(None),
        };
        match read {
            Ok(chunks) => {
                out.insert(id.clone(), chunks);
            }
            Err(e) => damaged.push(PackProblem {
                pack: id.clone(),
                problem: e.to_string(),
            }),
        }
    }
    out
}
