//! A target that is a directory: a NAS, NFS or SMB mount, a USB disk. Objects are files
//! under the root with the backup directory's own relative names; each is written as
//! `NAME.partial`, fsynced, renamed into place and its directory fsynced — the same
//! protocol as the backup directory — so a crash leaves only `.partial` files, which
//! [`Target::clean_interrupted`] removes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::target::{ObjectHead, ObjectInfo, RemoteError, RemoteResult, Stored, Target};
use super::transfer::UploadStream;
use crate::error::RemoteFailure;

const PARTIAL: &str = ".partial";

pub struct PathTarget {
    root: PathBuf,
    bandwidth_limit: Option<u64>,
}

impl PathTarget {
    pub fn new(root: impl Into<PathBuf>, bandwidth_limit: Option<u64>) -> Self {
        PathTarget {
            root: root.into(),
            bandwidth_limit,
        }
    }

    fn path(&self, key: &str) -> RemoteResult<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err(RemoteError::new(
                RemoteFailure::Other,
                format!("`{key}` is not an object key"),
            ));
        }
        Ok(self.root.join(key))
    }

    /// The root must exist: a target whose mount is missing must fail, not fill the
    /// directory the mount point is on.
    fn check_root(&self) -> RemoteResult<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(RemoteError::new(
                RemoteFailure::Missing,
                format!("{} is not a directory", self.root.display()),
            )),
            Err(e) => Err(RemoteError::io(
                &e,
                &format!("{} (is it mounted?)", self.root.display()),
            )),
        }
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(String, fs::Metadata)>) -> RemoteResult<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return Err(RemoteError::io(&e, &format!("list {}", dir.display()))),
        };
        for entry in rd {
            let entry = entry.map_err(|e| RemoteError::io(&e, "list the target"))?;
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
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
        match fs::metadata(self.path(key)?) {
            Ok(m) if m.is_file() => Ok(Some(ObjectHead {
                size: m.len(),
                sha256: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.check_root()?;
                Ok(None)
            }
            Err(e) => Err(RemoteError::io(&e, key)),
        }
    }

    fn put(&self, key: &str, data: &mut dyn Read, sha256: Option<&str>) -> RemoteResult<Stored> {
        self.check_root()?;
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| RemoteError::io(&e, &dir.display().to_string()))?;
        let partial = PathBuf::from(format!("{}{PARTIAL}", path.display()));
        let mut write = || -> RemoteResult<Stored> {
            let io = |e: std::io::Error| RemoteError::io(&e, &partial.display().to_string());
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&partial)
                .map_err(io)?;
            let mut stream = UploadStream::new(data, self.bandwidth_limit);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = stream.fill(&mut buf).map_err(|e| {
                    RemoteError::new(RemoteFailure::Other, format!("read the local copy: {e}"))
                })?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n]).map_err(io)?;
            }
            file.sync_all().map_err(io)?;
            let (size, sent) = stream.finish();
            if let Some(want) = sha256
                && want != sent
            {
                return Err(RemoteError::new(
                    RemoteFailure::Mismatch,
                    format!(
                        "the bytes read hash to {sent}, not {want}: the local copy changed or is damaged"
                    ),
                ));
            }
            Ok(Stored { size, sha256: sent })
        };
        match write() {
            Ok(stored) => {
                fs::rename(&partial, &path)
                    .and_then(|()| sync_dir(&dir))
                    .map_err(|e| RemoteError::io(&e, &path.display().to_string()))?;
                Ok(stored)
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    fn get(&self, key: &str) -> RemoteResult<Box<dyn Read + Send + '_>> {
        let path = self.path(key)?;
        File::open(&path)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|e| RemoteError::io(&e, key))
    }

    fn delete(&self, key: &str) -> RemoteResult<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = sync_dir(dir);
                }
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
            match fs::remove_file(self.root.join(&key)) {
                Ok(()) => removed.push(key),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RemoteError::io(&e, &key)),
            }
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
        let t = PathTarget::new(dir.path(), None);
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
        let t = PathTarget::new(dir.path().join("not-mounted"), None);
        let err = t.put("database/a.db", &mut &b"x"[..], None).unwrap_err();
        assert_eq!(err.failure, RemoteFailure::Missing);
        assert!(!dir.path().join("not-mounted").exists());
        assert!(t.list().is_err());
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let t = PathTarget::new(dir.path(), None);
        assert!(t.put("../x", &mut &b"x"[..], None).is_err());
        assert!(t.get("/etc/passwd").is_err());
    }
}
