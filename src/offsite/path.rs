//! A target that is a directory: a NAS, NFS or SMB mount, a USB disk. Objects are files
//! under the root with the backup directory's own relative names; each is written as
//! `NAME.partial`, fsynced, renamed into place and its directory fsynced — the same
//! protocol as the backup directory — so a crash leaves only `.partial` files, which
//! [`Target::clean_interrupted`] removes.
//!
//! The root is the operator's (it may itself be a link to the mount); below it nothing is
//! trusted: whoever else writes to the share could plant `database -> /var/lib/…`, and a
//! followed link would put a plaintext backup on this machine or delete a local file.
//! So every directory below the root is opened with `O_NOFOLLOW | O_DIRECTORY` from its
//! parent's handle, and files are created, opened, renamed, stat'ed and unlinked relative
//! to that handle ([`Dir`]): a symbolic link anywhere inside is refused, never followed.
//! Files get the backup directory's `file_mode`, directories its `dir_mode`.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::target::{
    ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored, Target, key_segments,
};
use super::transfer::{UploadStream, check_sent};
use crate::error::RemoteFailure;

const PARTIAL: &str = ".partial";

pub struct PathTarget {
    root: PathBuf,
    bandwidth_limit: Option<u64>,
    file_mode: u32,
    dir_mode: u32,
}

/// A directory inside the target, reached without following a symbolic link.
struct Dir(File);

fn c_name(name: &str) -> std::io::Result<CString> {
    CString::new(std::ffi::OsStr::new(name).as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// A libc return value as an io result.
fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Dir {
    fn open_root(root: &Path) -> std::io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)
            .map(Dir)
    }

    fn openat(&self, name: &str, flags: libc::c_int, mode: u32) -> std::io::Result<File> {
        let c = c_name(name)?;
        // SAFETY: `c` is a valid NUL-terminated string and the directory handle is open
        // for the duration of the call; the returned descriptor is new and owned here.
        let fd = cvt(unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just returned by openat and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, made first (with `mode`) when `create` is set.
    fn child(&self, name: &str, create: Option<u32>) -> std::io::Result<Dir> {
        if let Some(mode) = create {
            let c = c_name(name)?;
            // SAFETY: valid C string, open directory handle.
            let made = cvt(unsafe { libc::mkdirat(self.0.as_raw_fd(), c.as_ptr(), mode) });
            match made {
                Ok(_) => {
                    // The mode as asked, whatever the umask; then the new entry is durable.
                    let dir = self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                    use std::os::unix::fs::PermissionsExt;
                    dir.set_permissions(fs::Permissions::from_mode(mode))?;
                    self.sync()?;
                    return Ok(Dir(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map(Dir)
    }

    /// `name`'s metadata, not following a link; `None` when it does not exist.
    fn stat(&self, name: &str) -> std::io::Result<Option<libc::stat>> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid C string and handle; `st` is written by a successful call.
        let r = unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(r) {
            // SAFETY: fstatat succeeded, so it filled `st`.
            Ok(_) => Ok(Some(unsafe { st.assume_init() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        let fd = self.0.as_raw_fd();
        // SAFETY: valid C strings, the same open directory handle for both names.
        cvt(unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) }).map(|_| ())
    }

    fn unlink(&self, name: &str) -> std::io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid C string and handle.
        cvt(unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

/// The refusal for a link (or a file where a directory belongs) inside the target.
fn link_refused(e: &std::io::Error, key: &str) -> RemoteError {
    if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
        RemoteError::new(
            RemoteFailure::Other,
            format!(
                "`{key}`: a symbolic link (or a file where a directory belongs) inside the \
                 target: refused, never followed. Remove it from the target (it was not \
                 put there by this tool)"
            ),
        )
    } else {
        RemoteError::io(e, key)
    }
}

impl PathTarget {
    pub fn new(
        root: impl Into<PathBuf>,
        bandwidth_limit: Option<u64>,
        file_mode: u32,
        dir_mode: u32,
    ) -> Self {
        PathTarget {
            root: root.into(),
            bandwidth_limit,
            file_mode,
            dir_mode,
        }
    }

    /// The directory `key` lives in, reached without following links (made when
    /// `create`), and its file name. `None`: a directory on the way does not exist.
    fn parent(&self, key: &str, create: bool) -> RemoteResult<Option<(Dir, String)>> {
        let parts = key_segments(key)?;
        let (file, dirs) = parts.split_last().unwrap_or((&"", &[]));
        let mut dir = Dir::open_root(&self.root).map_err(|e| self.root_error(&e))?;
        for d in dirs {
            match dir.child(d, create.then_some(self.dir_mode)) {
                Ok(next) => dir = next,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                Err(e) => return Err(link_refused(&e, key)),
            }
        }
        Ok(Some((dir, (*file).to_string())))
    }

    fn root_error(&self, e: &std::io::Error) -> RemoteError {
        if e.raw_os_error() == Some(libc::ENOTDIR) {
            return RemoteError::new(
                RemoteFailure::Missing,
                format!("{} is not a directory", self.root.display()),
            );
        }
        RemoteError::io(e, &format!("{} (is it mounted?)", self.root.display()))
    }

    /// The root must exist: a target whose mount is missing must fail, not fill the
    /// directory the mount point is on.
    fn check_root(&self) -> RemoteResult<()> {
        Dir::open_root(&self.root)
            .map(drop)
            .map_err(|e| self.root_error(&e))
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(String, fs::Metadata)>) -> RemoteResult<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return Err(RemoteError::io(&e, &format!("list {}", dir.display()))),
        };
        for entry in rd {
            let entry = entry.map_err(|e| RemoteError::io(&e, "list the target"))?;
            // Not followed: a link is neither a directory nor a file here.
            let meta = entry
                .metadata()
                .map_err(|e| RemoteError::io(&e, "list the target"))?;
            let path = entry.path();
            if meta.is_dir() {
                self.walk(&path, out)?;
            } else if meta.is_file()
                && let Ok(rel) = path.strip_prefix(&self.root)
                && let Some(rel) = rel.to_str()
            {
                out.push((rel.to_string(), meta));
            }
        }
        Ok(())
    }

    /// Write `data` as `NAME.partial` in `dir`, fsynced, with the file mode.
    fn write_partial(
        &self,
        dir: &Dir,
        partial: &str,
        data: &mut dyn Read,
        sha256: Option<&str>,
    ) -> RemoteResult<Stored> {
        let io = |e: std::io::Error| link_refused(&e, partial);
        let mut file = dir
            .openat(
                partial,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                self.file_mode,
            )
            .map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(self.file_mode))
            .map_err(io)?;
        let mut stream = UploadStream::new(data, self.bandwidth_limit);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stream.next_block(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        let (size, sent) = stream.finish();
        check_sent(sha256, &sent)?;
        Ok(Stored { size, sha256: sent })
    }
}

impl Target for PathTarget {
    fn list(&self) -> RemoteResult<Vec<ObjectInfo>> {
        self.check_root()?;
        let mut files = Vec::new();
        self.walk(&self.root, &mut files)?;
        Ok(files
            .into_iter()
            .filter(|(k, _)| !k.ends_with(PARTIAL))
            .map(|(key, m)| ObjectInfo {
                key,
                size: m.len(),
                modified: m.modified().ok().map(Into::into),
            })
            .collect())
    }

    fn head(&self, key: &str) -> RemoteResult<Option<ObjectHead>> {
        let Some((dir, name)) = self.parent(key, false)? else {
            return Ok(None);
        };
        match dir.stat(&name) {
            Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Ok(Some(ObjectHead {
                size: st.st_size as u64,
                sha256: None,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(RemoteError::io(&e, key)),
        }
    }

    fn put(&self, key: &str, data: &mut dyn Read, sha256: Option<&str>) -> RemoteResult<Stored> {
        self.check_root()?;
        let Some((dir, name)) = self.parent(key, true)? else {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                format!("`{key}`: its directory could not be made"),
            ));
        };
        let partial = format!("{name}{PARTIAL}");
        match self.write_partial(&dir, &partial, data, sha256) {
            Ok(stored) => {
                dir.rename(&partial, &name)
                    .and_then(|()| dir.sync())
                    .map_err(|e| RemoteError::io(&e, key))?;
                Ok(stored)
            }
            Err(e) => {
                let _ = dir.unlink(&partial);
                Err(e)
            }
        }
    }

    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>> {
        let missing = || {
            RemoteError::new(
                RemoteFailure::Missing,
                format!("{key}: no such object on the target"),
            )
        };
        let (dir, name) = self.parent(key, false)?.ok_or_else(missing)?;
        dir.openat(&name, libc::O_RDONLY, 0)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|e| link_refused(&e, key))
    }

    fn delete(&self, key: &str) -> RemoteResult<()> {
        let Some((dir, name)) = self.parent(key, false)? else {
            return Ok(());
        };
        match dir.unlink(&name) {
            Ok(()) => {
                let _ = dir.sync();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RemoteError::io(&e, key)),
        }
    }

    fn clean_interrupted(&self) -> RemoteResult<Vec<String>> {
        self.check_root()?;
        let mut files = Vec::new();
        self.walk(&self.root, &mut files)?;
        let mut removed = Vec::new();
        for (key, _) in files.into_iter().filter(|(k, _)| k.ends_with(PARTIAL)) {
            self.delete(&key)?;
            removed.push(key);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_atomic_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = PathTarget::new(dir.path(), None, 0o600, 0o700);
        let data = b"hello".to_vec();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
        let stored = t.put("database/a.db", &mut &data[..], Some(&sha)).unwrap();
        assert_eq!(stored.size, 5);
        let wrong = t
            .put("database/b.db", &mut &data[..], Some("00"))
            .unwrap_err();
        assert_eq!(wrong.failure, RemoteFailure::Mismatch);
        let keys: Vec<String> = t.list().unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["database/a.db".to_string()]);
        assert_eq!(t.head("database/b.db").unwrap(), None);
        let mut back = Vec::new();
        t.get("database/a.db")
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        fs::write(dir.path().join("database/c.db.partial"), b"x").unwrap();
        assert_eq!(
            t.clean_interrupted().unwrap(),
            vec!["database/c.db.partial"]
        );
        t.delete("database/a.db").unwrap();
        t.delete("database/a.db").unwrap();
        assert!(t.list().unwrap().is_empty());
    }

    #[test]
    fn a_missing_root_is_an_error_not_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t = PathTarget::new(dir.path().join("not-mounted"), None, 0o600, 0o700);
        let err = t.put("database/a.db", &mut &b"x"[..], None).unwrap_err();
        assert_eq!(err.failure, RemoteFailure::Missing);
        assert!(!dir.path().join("not-mounted").exists());
        assert!(t.list().is_err());
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let t = PathTarget::new(dir.path(), None, 0o600, 0o700);
        assert!(t.put("../x", &mut &b"x"[..], None).is_err());
        assert!(t.get("/etc/passwd").is_err());
    }

    #[test]
    fn links_inside_the_target_are_refused_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        fs::write(local.path().join("a.db"), b"local file").unwrap();
        let root = dir.path().join("nas");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(local.path(), root.join("database")).unwrap();
        let t = PathTarget::new(&root, None, 0o640, 0o750);
        let err = t.put("database/b.db", &mut &b"x"[..], None).unwrap_err();
        assert!(err.detail.contains("symbolic link"), "{err}");
        assert!(!local.path().join("b.db").exists());
        assert!(!local.path().join("b.db.partial").exists());
        assert!(t.get("database/a.db").is_err());
        assert_eq!(t.head("database/a.db").ok().flatten(), None);
        t.delete("database/a.db").unwrap_err();
        assert!(
            local.path().join("a.db").exists(),
            "a local file was deleted"
        );
        assert!(t.list().unwrap().is_empty());
        // A link in place of the file itself: refused too.
        fs::create_dir(root.join("storage")).unwrap();
        std::os::unix::fs::symlink(local.path().join("a.db"), root.join("storage/s.partial"))
            .unwrap();
        assert!(t.put("storage/s", &mut &b"x"[..], None).is_err());
        assert_eq!(fs::read(local.path().join("a.db")).unwrap(), b"local file");
        // What is written gets the configured modes.
        t.put("full/f.json", &mut &b"{}"[..], None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("full/f.json")), 0o640);
        assert_eq!(mode(&root.join("full")), 0o750);
    }
}
