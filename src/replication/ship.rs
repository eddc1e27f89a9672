//! The stream mirrored to one target: what the backup directory's `replication/` holds,
//! object by object, in the order that keeps the target's copy usable at every moment —
//! a generation's base, then its segments in chain order, its record
//! (`generation.json`) only once every segment of its base's log is there (a restore
//! from the target uses only generations with a record), a compacted segment before the
//! segments it replaces are removed, and a generation's record removed before the rest
//! of it once retention let it go here.
//!
//! What was sent is remembered in `replication/targets/NAME.json` (written after every
//! object): an object is sent again only when the local one changed (a compaction), and
//! only keys remembered there — ours, sent by this server — are ever deleted. An idle
//! database costs no request at all. With recipients, every object goes up as age
//! ciphertext (`.age`): the server never holds the identity.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compact::chain_of;
use super::keys::{StreamKey, StreamObject};
use super::store::{BASE_FILE, GenerationInfo, ReplicaStore, read_json, write_json_unsynced};
use crate::encryption::Recipients;
use crate::error::{RemoteFailure, Result};
use crate::offsite::encrypt::EncryptingReader;
use crate::offsite::target::{RemoteError, Target};

const TARGETS_DIR: &str = "targets";

/// What one target was sent, per generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shipment {
    pub generations: BTreeMap<String, ShippedGeneration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShippedGeneration {
    pub sealed: bool,
    pub base: bool,
    pub info: bool,
    /// The chain's end the record sent says (`GenerationInfo::end_tx`), once it says one.
    #[serde(default)]
    pub info_end: Option<u64>,
    /// First transaction → transactions covered, per segment sent.
    pub segments: BTreeMap<u64, u32>,
    /// When the last object of it was sent (what Object Lock counts from).
    pub last_sent: Option<DateTime<Utc>>,
}

/// What one round of shipping did, and where the target stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipReport {
    pub uploads: u64,
    pub bytes: u64,
    pub deletes: u64,
}

/// Where a target stands against the backup directory's stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The read time of the oldest transaction the target lacks; `None`: it has all.
    pub behind_since: Option<DateTime<Utc>>,
    /// The read time of the newest transaction it holds.
    pub newest: Option<DateTime<Utc>>,
}

/// One target's mirror of the stream.
pub struct Mirror<'a> {
    pub name: &'a str,
    pub target: &'a dyn Target,
    /// Recipients to seal to (`None`: objects go as they are).
    pub seal: Option<&'a Recipients>,
    pub store: &'a ReplicaStore,
}

/// Where what was sent to the target `name` is remembered.
fn record_path(store: &ReplicaStore, name: &str) -> PathBuf {
    store.root().join(TARGETS_DIR).join(format!("{name}.json"))
}

/// What was sent to the target `name`. A record that does not parse (it is written
/// without a flush, so a power cut can leave it torn) counts as none: the objects are
/// sent again.
pub fn shipment(store: &ReplicaStore, name: &str) -> Result<Shipment> {
    match read_json(&record_path(store, name)) {
        Ok(found) => Ok(found.unwrap_or_default()),
        Err(crate::error::Error::Verify { .. }) => Ok(Shipment::default()),
        Err(e) => Err(e),
    }
}

/// Where the target `name` stands, from what was sent to it (no request to it); `sealed`:
/// whether what it should hold is sealed.
pub fn standing(store: &ReplicaStore, name: &str, sealed: bool) -> Result<Standing> {
    let shipment = shipment(store, name)?;
    let mut standing = Standing::default();
    for (generation, info) in store.generations()? {
        let (chain, _) = chain_of(store.segments(&generation)?)?;
        let sent = shipment
            .generations
            .get(&generation)
            .filter(|s| s.sealed == sealed);
        for (f, _, h) in &chain {
            let time = DateTime::from_timestamp_millis(h.last_commit_ms);
            if sent.is_some_and(|s| s.segments.get(f) == Some(&h.transactions)) {
                standing.newest = standing.newest.max(time);
            } else if standing.behind_since.is_none() {
                standing.behind_since = DateTime::from_timestamp_millis(h.first_commit_ms);
            }
        }
        let info_missing = info.base_through.is_some() && !sent.is_some_and(|s| s.info);
        if info_missing && standing.behind_since.is_none() {
            standing.behind_since = Some(info.started);
        }
    }
    Ok(standing)
}

impl Mirror<'_> {
    fn record_path(&self) -> PathBuf {
        record_path(self.store, self.name)
    }

    pub fn shipment(&self) -> Result<Shipment> {
        shipment(self.store, self.name)
    }

    fn save(&self, shipment: &Shipment) -> Result<()> {
        let path = self.record_path();
        if let Some(dir) = path.parent() {
            self.store.make_dir(dir)?;
        }
        // Not flushed: lost, it only makes the next round send some objects again.
        write_json_unsynced(&path, shipment, self.store.file_mode())
    }

    /// Sends what the target lacks and removes what it no longer needs. A target
    /// failure stops the round (what was sent stays remembered); it is returned as the
    /// target's, local failures as the program's.
    pub fn ship(&self, now: DateTime<Utc>) -> std::result::Result<ShipReport, ShipError> {
        let mut shipment = self.shipment()?;
        let mut report = ShipReport::default();
        let generations = self.store.generations()?;
        for (generation, info) in &generations {
            self.ship_generation(generation, info, &mut shipment, &mut report, now)?;
        }
        // Generations retention removed here go there too, record first; not while
        // Object Lock still holds what was sent last.
        let gone: Vec<String> = shipment
            .generations
            .keys()
            .filter(|g| !generations.iter().any(|(name, _)| name == *g))
            .cloned()
            .collect();
        for generation in gone {
            let sent = &shipment.generations[&generation];
            let locked = sent
                .last_sent
                .and_then(|t| self.target.locked_until(t))
                .is_some_and(|until| until > now);
            if locked {
                continue;
            }
            self.remove_generation(&generation, sent, &mut report)?;
            shipment.generations.remove(&generation);
            self.save(&shipment)?;
        }
        Ok(report)
    }

    fn ship_generation(
        &self,
        generation: &str,
        info: &GenerationInfo,
        shipment: &mut Shipment,
        report: &mut ShipReport,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), ShipError> {
        let sealed = self.seal.is_some();
        let sent = shipment
            .generations
            .entry(generation.to_string())
            .or_insert_with(|| ShippedGeneration {
                sealed,
                ..Default::default()
            });
        if sent.sealed != sealed {
            // Encryption was turned on or off: the objects go again under their new keys.
            *sent = ShippedGeneration {
                sealed,
                ..Default::default()
            };
        }
        let key = |object| StreamKey::new(generation, object, sealed).format();
        if !sent.base {
            let path = self.store.generation_dir(generation).join(BASE_FILE);
            self.put(&key(StreamObject::Base), &path, report)?;
            sent.base = true;
            sent.last_sent = Some(now);
            self.save(shipment)?;
        }
        let (chain, _) = chain_of(self.store.segments(generation)?)?;
        for (first_tx, path, header) in &chain {
            let sent = shipment
                .generations
                .get_mut(generation)
                .ok_or_else(|| ShipError::Local(missing_entry(generation)))?;
            if sent.segments.get(first_tx) == Some(&header.transactions) {
                continue;
            }
            self.put(&key(StreamObject::Segment(*first_tx)), path, report)?;
            sent.segments.insert(*first_tx, header.transactions);
            sent.last_sent = Some(now);
            self.save(shipment)?;
            // What it replaced (a compaction): gone once the merged one is there. Under
            // Object Lock they stay (harmless: a restore passes over what a segment
            // covers) and go with their generation.
            if self.target.write_horizon().is_none() {
                let end = first_tx + u64::from(header.transactions);
                let replaced: Vec<u64> = shipment.generations[generation]
                    .segments
                    .range(first_tx + 1..end)
                    .map(|(f, _)| *f)
                    .collect();
                let keys: Vec<String> = replaced
                    .iter()
                    .map(|f| key(StreamObject::Segment(*f)))
                    .collect();
                if !keys.is_empty() {
                    // What replaces them must read whole: a damaged count in its header
                    // would otherwise "cover" segments that nothing holds any more.
                    super::compact::verify_segment(path)?;
                }
                report.deletes += self.target.delete_many(&keys).map_err(ShipError::Remote)?;
                if let Some(s) = shipment.generations.get_mut(generation) {
                    for f in &replaced {
                        s.segments.remove(f);
                    }
                }
                if !replaced.is_empty() {
                    self.save(shipment)?;
                }
            }
        }
        self.send_record(generation, info, &chain, shipment, report, now)
    }

    /// The generation's record, once the target holds what it promises: the base's log;
    /// the chain's end once it holds the whole chain (the record sent again then; until
    /// then, or if it never does, the record without the end).
    fn send_record(
        &self,
        generation: &str,
        info: &GenerationInfo,
        chain: &[super::compact::ChainSegment],
        shipment: &mut Shipment,
        report: &mut ShipReport,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), ShipError> {
        let sent = shipment
            .generations
            .get_mut(generation)
            .ok_or_else(|| ShipError::Local(missing_entry(generation)))?;
        let through = shipped_through(chain, sent);
        let end = info.end_tx.filter(|&end| through >= end);
        let Some(base) = info.base_through else {
            return Ok(());
        };
        if through < base || (sent.info && sent.info_end == end) {
            return Ok(());
        }
        let promised = GenerationInfo {
            end_tx: end,
            ..info.clone()
        };
        let bytes = serde_json::to_vec_pretty(&promised)
            .map_err(|e| ShipError::Local(crate::error::Error::Internal(e.to_string())))?;
        let key = StreamKey::new(generation, StreamObject::Info, sent.sealed).format();
        self.put_bytes(&key, bytes, report)?;
        sent.info = true;
        sent.info_end = end;
        sent.last_sent = Some(now);
        self.save(shipment)?;
        Ok(())
    }

    fn remove_generation(
        &self,
        generation: &str,
        sent: &ShippedGeneration,
        report: &mut ShipReport,
    ) -> std::result::Result<(), ShipError> {
        let key = |object| StreamKey::new(generation, object, sent.sealed).format();
        // The record first: the generation stops being one for a restore at once.
        if sent.info {
            self.delete(&key(StreamObject::Info), report)?;
        }
        let mut rest: Vec<String> = sent
            .segments
            .keys()
            .map(|f| key(StreamObject::Segment(*f)))
            .collect();
        if sent.base {
            rest.push(key(StreamObject::Base));
        }
        report.deletes += self.target.delete_many(&rest).map_err(ShipError::Remote)?;
        Ok(())
    }

    fn put(
        &self,
        key: &str,
        path: &std::path::Path,
        report: &mut ShipReport,
    ) -> std::result::Result<(), ShipError> {
        let file = std::fs::File::open(path)
            .map_err(|e| ShipError::Local(crate::error::Error::io("open", path, e)))?;
        let stored = match self.seal {
            Some(recipients) => self
                .target
                .put(key, &mut seal(recipients, Box::new(file))?, None),
            // A plain file: a target may read it at any offset (S3 parts stream from it).
            None => self.target.put_file(key, file, None),
        };
        count(report, stored)
    }

    fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        report: &mut ShipReport,
    ) -> std::result::Result<(), ShipError> {
        let mut reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes));
        let stored = match self.seal {
            Some(recipients) => self.target.put(key, &mut seal(recipients, reader)?, None),
            None => self.target.put(key, &mut reader, None),
        };
        count(report, stored)
    }

    fn delete(&self, key: &str, report: &mut ShipReport) -> std::result::Result<(), ShipError> {
        self.target.delete(key).map_err(ShipError::Remote)?;
        report.deletes += 1;
        Ok(())
    }
}

fn missing_entry(generation: &str) -> crate::error::Error {
    crate::error::Error::Internal(format!("no shipment entry for generation {generation}"))
}

/// A round of shipping that stopped: at the target, or here.
#[derive(Debug)]
pub enum ShipError {
    Remote(RemoteError),
    Local(crate::error::Error),
}

impl From<crate::error::Error> for ShipError {
    fn from(e: crate::error::Error) -> Self {
        ShipError::Local(e)
    }
}

/// `plain` as age ciphertext to `recipients`, read as it is sent.
fn seal(
    recipients: &Recipients,
    plain: Box<dyn Read + Send>,
) -> std::result::Result<EncryptingReader, ShipError> {
    EncryptingReader::start(recipients.clone(), plain, None).map_err(|e| {
        ShipError::Remote(RemoteError::new(
            RemoteFailure::Other,
            format!("start encrypting: {e}"),
        ))
    })
}

/// An upload counted in the round's report.
fn count(
    report: &mut ShipReport,
    stored: crate::offsite::target::RemoteResult<crate::offsite::target::Stored>,
) -> std::result::Result<(), ShipError> {
    let stored = stored.map_err(ShipError::Remote)?;
    report.uploads += 1;
    report.bytes += stored.size;
    Ok(())
}

/// The end of the unbroken run of segments, from the chain's start, that `sent` holds:
/// each following the one before (a hole in the local chain ends the run too).
fn shipped_through(chain: &[super::compact::ChainSegment], sent: &ShippedGeneration) -> u64 {
    let mut next = 0u64;
    for (first_tx, _, header) in chain {
        if *first_tx != next || sent.segments.get(first_tx) != Some(&header.transactions) {
            break;
        }
        next = first_tx + u64::from(header.transactions);
    }
    next
}
