//! A target on a backup server reached over SSH (`sftp://USER@HOST[:PORT]/PATH`): the
//! seed's `rsync -avz backups/ user@backup-server:/backups/vertex-ar/`, with the same
//! contract as S3 and path targets. Objects are files under the directory PATH with the
//! backup directory's own relative names; each is written as `NAME.partial`, flushed to
//! the server's disk (`fsync@openssh.com`, where the server offers it: OpenSSH does since
//! 6.3), then renamed over its name (`posix-rename@openssh.com`: atomic, replacing), so a
//! reader sees a whole object or none, and a dropped connection leaves only `.partial`
//! files, which [`Target::clean_interrupted`] removes. A second connection flushes a
//! large upload as it goes ([`super::sftp_flush`]), so the final fsync finds little left.
//!
//! The directory PATH must exist (a server whose disk is not mounted must fail, as a path
//! target's missing mount does). Directories below it are made with the backup
//! directory's `dir_mode`, files get its `file_mode`. A symbolic link found where a
//! directory of ours belongs is refused, never written through, and listings never
//! follow one; checked once per directory and connection (the server resolves names
//! itself, so a link swapped in afterwards is out of our sight: a backup server is the
//! operator's own). Writes keep up to 8 MiB of requests in flight, reads 16 requests
//! ([`super::sftp_read`]). The connection ([`super::sftp_session`]) is opened at the first use
//! and again after it drops; the engine is synchronous, so the target owns a small runtime
//! and waits on it, as the S3 target does.

use std::collections::HashSet;
use std::io::{IoSlice, Read};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::file::TokioCompatFile;
use openssh_sftp_client::metadata::Permissions;
use tokio::io::AsyncWriteExt;

use super::sftp_flush::{EarlyFlush, FLUSH_EVERY};
use super::sftp_read::ReadAhead;
use super::sftp_session::{Session, SshLogin, connection_lost, describe, failure_of};
use super::target::{
    ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored, Target, key_segments,
};
use super::transfer::{UploadStream, check_sent};
use crate::config::OffsiteTarget;
use crate::error::RemoteFailure;

const PARTIAL: &str = ".partial";
/// Bytes handed to the SFTP writer at a time; it splits them into the server's largest
/// write and keeps the requests in flight.
const WRITE_BLOCK: usize = 1 << 20;

pub struct SftpTarget {
    login: SshLogin,
    bandwidth_limit: Option<u64>,
    file_mode: u32,
    dir_mode: u32,
    /// Declared before the runtime: dropped while the runtime still runs.
    session: Mutex<Option<Arc<Session>>>,
    /// Directories below the root known to exist as directories on this connection.
    dirs: Mutex<HashSet<String>>,
    /// A second connection that flushes uploads as they go (declared before the runtime).
    early: EarlyFlush,
    runtime: tokio::runtime::Runtime,
}

impl SftpTarget {
    pub fn open(target: &OffsiteTarget, file_mode: u32, dir_mode: u32) -> RemoteResult<Self> {
        let crate::config::TargetLocation::Sftp(location) = &target.location else {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                "not an sftp:// target",
            ));
        };
        let (Some(key), Some(known_hosts)) = (&target.ssh_key, &target.known_hosts) else {
            return Err(RemoteError::new(
                RemoteFailure::Credentials,
                "an sftp:// target needs `ssh_key` and `known_hosts`",
            ));
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sftp")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::io(&e, "start the SFTP client"))?;
        let login = SshLogin {
            location: location.clone(),
            key: key.clone(),
            known_hosts: known_hosts.clone(),
            timeout: target.timeout,
        };
        Ok(SftpTarget {
            early: EarlyFlush::new(login.clone()),
            login,
            bandwidth_limit: target.bandwidth_limit,
            file_mode,
            dir_mode,
            session: Mutex::new(None),
            dirs: Mutex::new(HashSet::new()),
            runtime,
        })
    }

    /// Early flushes from the second connection that the server confirmed.
    pub fn early_flushes(&self) -> u64 {
        self.early.done()
    }

    /// The live connection, opened (and the root checked) when there is none.
    fn session(&self) -> RemoteResult<Arc<Session>> {
        if let Some(s) = self.session.lock().ok().and_then(|s| s.clone()) {
            return Ok(s);
        }
        let session = Arc::new(self.runtime.block_on(self.login.connect())?);
        self.runtime.block_on(self.check_root(&session))?;
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.clear();
        }
        if let Ok(mut slot) = self.session.lock() {
            *slot = Some(Arc::clone(&session));
        }
        Ok(session)
    }

    /// Run `op` on the connection; an error that means the connection is gone drops it,
    /// so the next attempt (the caller retries network failures) opens a new one.
    fn with_session<T>(
        &self,
        what: &str,
        op: impl AsyncFnOnce(&Session) -> Result<T, SftpError>,
    ) -> RemoteResult<T> {
        let session = self.session()?;
        self.wait(&session, what, op(session.as_ref()))?
            .map_err(|e| self.failed(&session, what, &e))
    }

    /// `e` as a target failure; a lost connection is forgotten.
    fn failed(&self, session: &Arc<Session>, what: &str, e: &SftpError) -> RemoteError {
        if connection_lost(e) {
            self.forget(session);
        }
        RemoteError::new(failure_of(e), format!("{what}: {}", describe(e)))
    }

    fn forget(&self, session: &Arc<Session>) {
        if let Ok(mut slot) = self.session.lock()
            && slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session))
        {
            *slot = None;
        }
    }

    /// The server path of `key` (checked: relative, no empty, `.` or `..` segment).
    fn path_of(&self, key: &str) -> RemoteResult<String> {
        key_segments(key)?;
        Ok(self.join(key))
    }

    fn join(&self, rel: &str) -> String {
        let root = &self.login.location.path;
        if root == "/" {
            format!("/{rel}")
        } else {
            format!("{root}/{rel}")
        }
    }

    /// The root must exist and be a directory.
    async fn check_root(&self, session: &Session) -> RemoteResult<()> {
        let root = &self.login.location.path;
        match session.sftp.fs().metadata(root).await {
            Ok(m) if m.file_type().is_some_and(|t| t.is_dir()) => Ok(()),
            Ok(_) => Err(RemoteError::new(
                RemoteFailure::Missing,
                format!("{root} on {} is not a directory", self.login.location.host),
            )),
            Err(e) if failure_of(&e) == RemoteFailure::Missing => Err(RemoteError::new(
                RemoteFailure::Missing,
                format!(
                    "{root} does not exist on {}: create it there (mkdir -p {root}, owned by {})",
                    self.login.location.host, self.login.location.user
                ),
            )),
            Err(e) => Err(RemoteError::new(
                failure_of(&e),
                format!("{root}: {}", describe(&e)),
            )),
        }
    }

    /// Make the directories `key` lies in (each checked to be a directory, not a link).
    fn make_dirs(&self, key: &str) -> RemoteResult<()> {
        let Some((parent, _)) = key.rsplit_once('/') else {
            return Ok(());
        };
        let mut rel = String::new();
        for part in parent.split('/') {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            if self.dirs.lock().is_ok_and(|d| d.contains(&rel)) {
                continue;
            }
            let path = self.join(&rel);
            let mode = self.dir_mode;
            let made = self.with_session(&format!("make {path}"), async |s: &Session| {
                let mut fs = s.sftp.fs();
                match fs.symlink_metadata(&path).await {
                    Ok(m) => Ok(m.file_type()),
                    Err(e) if failure_of(&e) == RemoteFailure::Missing => {
                        let made = fs.create_dir(&path).await;
                        // Made by another writer meanwhile: what is there now decides.
                        let now = fs.symlink_metadata(&path).await?.file_type();
                        if made.is_ok() {
                            fs.set_permissions(&path, Permissions::from(mode as u16))
                                .await?;
                        }
                        Ok(now)
                    }
                    Err(e) => Err(e),
                }
            })?;
            if !made.is_some_and(|t| t.is_dir()) {
                return Err(RemoteError::new(
                    RemoteFailure::Other,
                    format!(
                        "{path} on {} is not a directory (a symbolic link or a file where a directory belongs): refused, never followed; remove it there (it was not put by this tool)",
                        self.login.location.host
                    ),
                ));
            }
            if let Ok(mut d) = self.dirs.lock() {
                d.insert(rel.clone());
            }
        }
        Ok(())
    }

    /// Every regular file under the root, `.partial` ones included, with size and mtime.
    fn walk(&self) -> RemoteResult<Vec<ObjectInfo>> {
        let root = self.login.location.path.clone();
        self.with_session(&format!("list {root}"), async |s: &Session| {
            let mut fs = s.sftp.fs();
            let mut found = Vec::new();
            let mut pending = vec![String::new()];
            while let Some(rel) = pending.pop() {
                let dir = if rel.is_empty() {
                    root.clone()
                } else {
                    self.join(&rel)
                };
                let entries = fs.open_dir(&dir).await?.read_dir();
                let mut entries = std::pin::pin!(entries);
                while let Some(entry) = entries.next().await {
                    let entry = entry?;
                    let Some(name) = entry.filename().to_str() else {
                        continue; // not a name this tool writes
                    };
                    if name == "." || name == ".." {
                        continue;
                    }
                    let key = if rel.is_empty() {
                        name.to_string()
                    } else {
                        format!("{rel}/{name}")
                    };
                    let meta = entry.metadata();
                    // Not followed: a link is neither a directory nor a file here.
                    match meta.file_type() {
                        Some(t) if t.is_dir() => pending.push(key),
                        Some(t) if t.is_file() => found.push(ObjectInfo {
                            key,
                            size: meta.len().unwrap_or(0),
                            modified: meta
                                .modified()
                                .map(|t| DateTime::<Utc>::from(t.as_system_time())),
                        }),
                        _ => {}
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
    }

    /// Write `data` to the server as `partial`, flushed to its disk; the bytes' size and
    /// SHA-256.
    fn write_partial(
        &self,
        partial: &str,
        data: &mut dyn Read,
        sha256: Option<&str>,
    ) -> RemoteResult<Stored> {
        let session = self.session()?;
        let mode = self.file_mode;
        let opened = self.wait(&session, partial, async {
            let mut file = session
                .sftp
                .options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(partial)
                .await?;
            file.set_permissions(Permissions::from(mode as u16)).await?;
            Ok::<_, SftpError>(file)
        })?;
        let file = opened.map_err(|e| self.failed(&session, &format!("write {partial}"), &e))?;
        // Pipelined: each block's write requests stay in flight while the next is read.
        let mut file = std::pin::pin!(TokioCompatFile::new(file));
        let mut stream = UploadStream::new(data, self.bandwidth_limit);
        let mut buf = vec![0u8; WRITE_BLOCK];
        let (mut written, mut flushing) = (0u64, None);
        loop {
            let n = stream.next_block(&mut buf)?;
            if n == 0 {
                break;
            }
            self.wait(&session, partial, write_block(file.as_mut(), &buf[..n]))?
                .map_err(|e| self.io_failed(&session, partial, e))?;
            written += n as u64;
            if written / FLUSH_EVERY != (written - n as u64) / FLUSH_EVERY
                && session.sftp.support_fsync()
            {
                self.early.start(&self.runtime, partial, &mut flushing);
            }
        }
        self.wait(&session, partial, file.flush())?
            .map_err(|e| self.io_failed(&session, partial, e))?;
        // The early flush is waited for (it has the most of the bytes on disk by now), so
        // that no handle of ours is open on the file when it is renamed.
        // Bounded: a second connection that hangs costs the overlap, never the upload.
        if let Some(running) = flushing {
            let timeout = self.login.timeout;
            self.runtime.block_on(async {
                let _ = tokio::time::timeout(timeout, running).await;
            });
        }
        if session.sftp.support_fsync() {
            self.wait(&session, partial, file.as_mut().as_mut_file().sync_all())?
                .map_err(|e| self.failed(&session, &format!("fsync {partial}"), &e))?;
        }
        let (size, sent) = stream.finish();
        check_sent(sha256, &sent)?;
        Ok(Stored { size, sha256: sent })
    }

    /// `fut` on the runtime within the timeout; no answer in time drops the connection.
    fn wait<F: std::future::Future>(
        &self,
        session: &Arc<Session>,
        what: &str,
        fut: F,
    ) -> RemoteResult<F::Output> {
        let timeout = self.login.timeout;
        // The timer is made inside the runtime (tokio's timers need its context).
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, fut).await })
            .map_err(|_| {
                self.forget(session);
                RemoteError::new(
                    RemoteFailure::Network,
                    format!(
                        "{what}: no answer from {} within {} s",
                        self.login.location.host,
                        timeout.as_secs()
                    ),
                )
            })
    }

    /// A write's I/O error (the SFTP writer reports as `std::io::Error`): a server
    /// status inside is the server's refusal; anything else, a lost connection.
    fn io_failed(&self, session: &Arc<Session>, partial: &str, e: std::io::Error) -> RemoteError {
        match e.into_inner().map(|inner| inner.downcast::<SftpError>()) {
            Some(Ok(sftp)) => self.failed(session, &format!("write {partial}"), &sftp),
            Some(Err(other)) => {
                self.forget(session);
                RemoteError::new(RemoteFailure::Network, format!("write {partial}: {other}"))
            }
            None => {
                self.forget(session);
                RemoteError::new(RemoteFailure::Network, format!("write {partial}: lost"))
            }
        }
    }

    /// A write the server refused with a generic failure: a full disk, when its
    /// `statvfs` says so (SFTP version 3 has no code for it).
    fn full_or(&self, e: RemoteError) -> RemoteError {
        if e.failure != RemoteFailure::Other {
            return e;
        }
        let root = self.login.location.path.clone();
        let free = self.with_session("statvfs", async |s: &Session| {
            if !s.sftp.support_statvfs() {
                return Ok(None);
            }
            let st = s.sftp.fs().statvfs(&root).await?;
            Ok(Some(st.bavail.saturating_mul(st.frsize)))
        });
        match free {
            Ok(Some(bytes)) if bytes < 1 << 20 => RemoteError::new(
                RemoteFailure::Full,
                format!(
                    "{} ({} free on {}'s disk)",
                    e.detail,
                    crate::units::format_bytes(bytes),
                    self.login.location.host
                ),
            ),
            _ => e,
        }
    }
}

/// Hands one block to the pipelined writer through its vectored path: the plain
/// `poll_write` of `openssh-sftp-client` serialises the payload byte by byte through serde
/// (a third of the upload's CPU in a profile), the vectored one copies it whole.
async fn write_block(
    mut file: std::pin::Pin<&mut TokioCompatFile>,
    mut block: &[u8],
) -> std::io::Result<()> {
    while !block.is_empty() {
        let n = file.write_vectored(&[IoSlice::new(block)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        block = &block[n..];
    }
    Ok(())
}

impl Target for SftpTarget {
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>> {
        Ok(self
            .walk()?
            .into_iter()
            .filter(|o| !o.key.ends_with(PARTIAL))
            .collect())
    }

    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>> {
        let path = self.path_of(key)?;
        let found = self.with_session(&format!("stat {path}"), async |s: &Session| {
            match s.sftp.fs().symlink_metadata(&path).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if failure_of(&e) == RemoteFailure::Missing => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(found
            .filter(|m| m.file_type().is_some_and(|t| t.is_file()))
            .map(|m| ObjectHead {
                size: m.len().unwrap_or(0),
                sha256: None,
            }))
    }

    fn put(&self, key: &str, data: &mut dyn Read, sha256: Option<&str>) -> RemoteResult<Stored> {
        let path = self.path_of(key)?;
        self.make_dirs(key)?;
        let partial = format!("{path}{PARTIAL}");
        let written = self
            .write_partial(&partial, data, sha256)
            .map_err(|e| self.full_or(e));
        let stored = match written {
            Ok(stored) => stored,
            Err(e) => {
                if e.failure != RemoteFailure::Network {
                    let _ = self.delete_path(&partial);
                }
                return Err(e);
            }
        };
        self.with_session(&format!("rename {partial}"), async |s: &Session| {
            // posix-rename replaces atomically; plain SFTP rename refuses an existing name.
            if !s.sftp.support_posix_rename() {
                let _ = s.sftp.fs().remove_file(&path).await;
            }
            s.sftp.fs().rename(&partial, &path).await
        })?;
        Ok(stored)
    }

    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>> {
        let path = self.path_of(key)?;
        let session = self.session()?;
        let file = self.with_session(&format!("open {path}"), async |s: &Session| {
            s.sftp.open(&path).await
        })?;
        let on_lost = Box::new(move || self.forget(&session));
        Ok(Box::new(ReadAhead::new(
            self.runtime.handle().clone(),
            file,
            self.login.timeout,
            path,
            on_lost,
        )))
    }

    fn delete(&self, key: &str) -> RemoteResult<()> {
        let path = self.path_of(key)?;
        self.delete_path(&path)
    }

    fn clean_interrupted(&self) -> RemoteResult<Vec<String>> {
        let mut removed = Vec::new();
        for o in self.walk()? {
            if o.key.ends_with(PARTIAL) {
                self.delete_path(&self.join(&o.key))?;
                removed.push(o.key);
            }
        }
        Ok(removed)
    }
}

impl SftpTarget {
    fn delete_path(&self, path: &str) -> RemoteResult<()> {
        self.with_session(&format!("remove {path}"), async |s: &Session| {
            match s.sftp.fs().remove_file(path).await {
                Err(e) if failure_of(&e) == RemoteFailure::Missing => Ok(()),
                other => other,
            }
        })
    }
}
