//! Bringing a remote backup home: its objects downloaded into the backup directory with
//! the same protocol as a backup being written (`.partial`, fsync, rename; data first,
//! metadata last), each data object checked against the size and SHA-256 its metadata
//! records while it streams in. The backup then is an ordinary local backup, and the
//! normal restore path (verify first, safety copy, atomic swap) takes it from there.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::Remote;
use super::push::read_listing;
use super::remote::{RemoteBackup, RemoteObject};
use crate::catalog::PartRole;
use crate::config::Config;
use crate::engine::Cancel;
use crate::engine::backup::catalog_for;
use crate::engine::direct_io::{DirectWriter, WriteBehind};
use crate::error::{Error, IoContext, Result};
use crate::kind::BackupKind;

/// Which remote backup: by name (as `offsite list` prints it) or the newest of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemotePick {
    Named(String),
    Latest(Option<BackupKind>),
}

/// A newer remote backup passed over by `--latest`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub problem: String,
}

/// Choose from a listing (newest first): complete backups only. With `--latest`, every
/// newer backup of the type passed over because it is incomplete is returned with its
/// problem — never skipped silently. A named backup that is on the target but
/// incomplete is refused with its problem, not "no such backup".
pub fn pick<'l>(
    backups: &'l [RemoteBackup],
    pick: &RemotePick,
    target: &str,
) -> Result<(&'l RemoteBackup, Vec<Skipped>)> {
    let mut skipped = Vec::new();
    let found = match pick {
        RemotePick::Named(n) => {
            let stem = [".json", ".tree.zst", ".db", ".tar.zst", ".tar.gz", ".tar"]
                .iter()
                .find_map(|ext| n.strip_suffix(ext))
                .unwrap_or(n);
            let named = backups.iter().find(|b| b.name == *n || b.stem == stem);
            if let Some(b) = named
                && let Some(problem) = &b.problem
            {
                return Err(Error::NoSuchBackup {
                    wanted: format!("`{target}:{n}`"),
                    reason: format!(
                        "it is on the target but not complete ({problem}); `vertex-backup offsite verify --target {target}` repairs it from a local copy where there is one"
                    ),
                });
            }
            named
        }
        RemotePick::Latest(kind) => {
            let mut chosen = None;
            for b in backups.iter().filter(|b| kind.is_none_or(|k| b.kind == k)) {
                match &b.problem {
                    None => {
                        chosen = Some(b);
                        break;
                    }
                    Some(problem) => skipped.push(Skipped {
                        name: b.name.clone(),
                        problem: problem.clone(),
                    }),
                }
            }
            chosen
        }
    };
    let found = found.ok_or_else(|| Error::NoSuchBackup {
        wanted: match pick {
            RemotePick::Named(n) => format!("`{target}:{n}`"),
            RemotePick::Latest(Some(k)) => format!("the latest {k} backup on `{target}`"),
            RemotePick::Latest(None) => format!("the latest backup on `{target}`"),
        },
        reason: format!(
            "the target holds {} complete backup(s); `vertex-backup offsite list --target {target}` shows them",
            backups.iter().filter(|b| b.is_complete()).count()
        ),
    })?;
    Ok((found, skipped))
}

/// Download the chosen backup into the backup directory; returns the path restore takes
/// (its data file; a full backup's manifest) and the newer backups passed over.
pub fn fetch(
    config: &Config,
    remote: &Remote,
    wanted: &RemotePick,
    cancel: &Cancel,
) -> Result<(PathBuf, Vec<Skipped>)> {
    let listing = read_listing(remote, cancel)?;
    let (backup, skipped) = pick(&listing.backups, wanted, &remote.config.name)?;
    for s in &skipped {
        tracing::warn!(
            "offsite {}: passed over the newer {}: {}",
            remote.config.name,
            s.name,
            s.problem
        );
    }
    let catalog = catalog_for(config);
    catalog.prepare()?;
    let _lock = catalog.lock("fetch from offsite")?;
    let local = catalog.list()?;
    if let Some(e) = local.find_stem(&backup.stem)
        && e.is_complete()
        && backup.copy_of(e)
    {
        return Ok((e.data_path.clone(), skipped));
    }
    let (data, metadata): (Vec<&RemoteObject>, Vec<&RemoteObject>) = backup
        .objects
        .iter()
        .partition(|o| o.role == PartRole::Data);
    download_data(config, remote, &data, cancel)?;
    for object in metadata {
        cancel.check()?;
        fetch_object(config, remote, object, cancel)?;
    }
    let local = catalog.list()?;
    let entry = local
        .find_stem(&backup.stem)
        .ok_or_else(|| Error::NoSuchBackup {
            wanted: backup.stem.clone(),
            reason: "downloaded, but it does not list as a backup".into(),
        })?;
    Ok((entry.data_path.clone(), skipped))
}

/// The data objects, `concurrency` at a time (the target's setting, as uploads use it):
/// one GET at a time leaves most of a link, and of a server, idle. The first failure
/// stops the rest and is returned.
fn download_data(
    config: &Config,
    remote: &Remote,
    objects: &[&RemoteObject],
    cancel: &Cancel,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = remote.config.concurrency.clamp(1, objects.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let Some(object) = objects.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    if let Err(e) = fetch_object(config, remote, object, cancel) {
                        failed.store(true, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One object of the backup into the backup directory, unless a pack the store already
/// holds (another snapshot brought it).
fn fetch_object(
    config: &Config,
    remote: &Remote,
    object: &RemoteObject,
    cancel: &Cancel,
) -> Result<()> {
    cancel.check()?;
    let dest = config.paths.backup_dir.join(object.local_path());
    let expect = match object.role {
        PartRole::Data => Some((object.size, object.sha256.as_deref())),
        PartRole::Metadata => None,
    };
    if object.shared && fs::metadata(&dest).is_ok_and(|m| m.len() == object.size) {
        return Ok(());
    }
    let op = format!("download {}", object.key);
    remote.with_retries(&op, cancel, || {
        download(
            remote,
            &object.key,
            &dest,
            expect,
            config.backup.file_mode.0,
        )
    })
}

/// One object to `dest`, atomically; checked when `expect` is given.
fn download(
    remote: &Remote,
    key: &str,
    dest: &Path,
    expect: Option<(u64, Option<&str>)>,
    mode: u32,
) -> std::result::Result<(), super::RemoteError> {
    use super::RemoteError;
    use crate::error::RemoteFailure;
    let local = |e: std::io::Error, what: &str| {
        RemoteError::new(
            RemoteFailure::Other,
            format!("{what} {}: {e}", dest.display()),
        )
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| local(e, "create the directory of"))?;
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let result = (|| {
        let mut reader = remote.target.get(key)?;
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&partial)
                .map_err(|e| local(e, "create"))?
        };
        // Past the page cache (a restore reads it back from the disk once, right after),
        // on a thread of its own so the next bytes arrive while these are written (see
        // `engine::direct_io`).
        let behind = WriteBehind::start();
        let written = |e: Error| RemoteError::new(RemoteFailure::Other, e.to_string());
        let mut file = DirectWriter::new(file, &partial, true, &behind);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // The body comes in frames of a few KiB: gather a full buffer per write.
            let n = super::transfer::fill(&mut reader, &mut buf).map_err(|e| {
                RemoteError::new(RemoteFailure::Network, format!("read {key}: {e}"))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            behind.check().map_err(written)?;
            file.write_all(&buf[..n]).map_err(|e| local(e, "write"))?;
        }
        let synced = partial.clone();
        file.then(Box::new(move |f: &File| f.sync_all().ctx("sync", &synced)))
            .map_err(written)?;
        behind.finish().map_err(written)?;
        if let Some((want_size, want_sha)) = expect {
            let got = hex::encode(hasher.finalize());
            if size != want_size || want_sha.is_some_and(|w| w != got) {
                return Err(RemoteError::new(
                    RemoteFailure::Mismatch,
                    format!(
                        "{key} arrived as {size} bytes with SHA-256 {got}; its metadata records {want_size} bytes and {}",
                        want_sha.unwrap_or("no checksum")
                    ),
                ));
            }
        }
        fs::rename(&partial, dest).map_err(|e| local(e, "rename into place"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| local(e, "sync the directory of"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}
