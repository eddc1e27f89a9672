//! Extended attributes a backup keeps: `user.*` always, and the POSIX ACLs
//! (`system.posix_acl_access`, `system.posix_acl_default`) when run as root (only root can
//! give them back to files it does not own), as restic and `tar --xattrs --acls` do.
//! Other namespaces are never read nor written: `security.*` (SELinux labels, file
//! capabilities) and `trusted.*` belong to the machine, and an entry list or an archive
//! that names one is refused — a hostile backup must not hand a restored binary
//! capabilities. Archives carry them as GNU tar does (PAX `SCHILY.xattr.NAME` records),
//! snapshots in each entry; both are bounded by the kernel's own limits.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One attribute: its full name (`user.origin`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: String,
    pub value: Vec<u8>,
}

/// The kernel's limit on one value (`XATTR_SIZE_MAX`) and on a name list (`XATTR_LIST_MAX`).
pub const MAX_VALUE: usize = 64 * 1024;
const MAX_LIST: usize = 64 * 1024;
/// A name's limit (`XATTR_NAME_MAX`).
const MAX_NAME: usize = 255;
/// The PAX record prefix GNU tar (`--xattrs`) and bsdtar use.
pub const PAX_PREFIX: &str = "SCHILY.xattr.";

const ACLS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// Whether a backup may carry (and a restore set) the attribute `name`.
pub fn allowed(name: &str) -> bool {
    (name.starts_with("user.") && name.len() > "user.".len()) || ACLS.contains(&name)
}

/// Why an attribute read from a backup is refused, or `None` when it is one we write.
pub fn refused(name: &str, value_len: usize) -> Option<String> {
    if !allowed(name) {
        return Some(format!(
            "it carries the extended attribute {name:?}, which backups never hold (only user.* and POSIX ACLs)"
        ));
    }
    if name.len() > MAX_NAME || value_len > MAX_VALUE {
        return Some(format!(
            "its extended attribute {name:?} is larger than the kernel allows"
        ));
    }
    None
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Whether `e` means "this filesystem (or this kind of file) has no extended attributes".
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Whether a backup keeps POSIX ACLs: only as root, who alone can give them back to
/// files it does not own.
pub fn with_acls() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The attributes of `path` (not followed if a symlink) a backup keeps, in name order.
/// A filesystem without extended attributes has none, and so has a file gone since the
/// walk saw it (the walk's own handling of vanished files decides about it).
pub fn read(path: &Path, with_acls: bool) -> io::Result<Vec<Xattr>> {
    let c = c_path(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `c` is NUL-terminated; the buffer is valid for `names.len()` bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if unsupported(&e) || e.kind() == io::ErrorKind::NotFound {
            return Ok(Vec::new());
        }
        if e.raw_os_error() != Some(libc::ERANGE) || names.len() >= MAX_LIST {
            return Err(e);
        }
        names.resize((names.len() * 4).min(MAX_LIST), 0);
    };
    let mut out = Vec::new();
    for raw in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let wanted = name.starts_with("user.") || (with_acls && ACLS.contains(&name));
        if !wanted {
            continue;
        }
        if let Some(value) = get(&c, raw)? {
            out.push(Xattr {
                name: name.to_string(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One value (`None`: removed, or its file gone, since it was listed).
fn get(path: &CString, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut value = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; the buffer holds `value.len()` bytes.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 0 {
            value.truncate(n as usize);
            return Ok(Some(value));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA | libc::ENOENT) => return Ok(None),
            Some(libc::ERANGE) if value.len() < MAX_VALUE => {
                value.resize((value.len() * 8).min(MAX_VALUE), 0);
            }
            _ => return Err(e),
        }
    }
}

/// Set `attrs` on an open file.
pub fn apply_fd(file: &impl AsRawFd, attrs: &[Xattr]) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the value's length.
    apply(attrs, |name, value| unsafe {
        libc::fsetxattr(fd, name, value.as_ptr().cast(), value.len(), 0)
    })
}

/// Set `attrs` on `path` (a directory; a symlink's own attributes, never its target's).
pub fn apply_path(path: &Path, attrs: &[Xattr]) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: NUL-terminated path and name, a buffer of the value's length.
    apply(attrs, |name, value| unsafe {
        libc::lsetxattr(c.as_ptr(), name, value.as_ptr().cast(), value.len(), 0)
    })
}

/// Each attribute through `set(name, value)`, a `*setxattr` call returning 0 or -1.
fn apply(
    attrs: &[Xattr],
    set: impl Fn(*const libc::c_char, &[u8]) -> libc::c_int,
) -> io::Result<()> {
    for a in attrs {
        let name = CString::new(a.name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if set(name.as_ptr(), &a.value) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The PAX records of `attrs` for the tar entry they go with.
pub fn pax_records(attrs: &[Xattr]) -> Vec<(String, &[u8])> {
    attrs
        .iter()
        .map(|a| (format!("{PAX_PREFIX}{}", a.name), a.value.as_slice()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_attributes_and_acls_are_allowed() {
        assert!(allowed("user.origin"));
        assert!(allowed("system.posix_acl_access"));
        for name in [
            "user.",
            "security.capability",
            "security.selinux",
            "trusted.overlay.opaque",
            "system.nfs4_acl",
        ] {
            assert!(!allowed(name), "{name}");
            assert!(refused(name, 1).is_some(), "{name}");
        }
        assert!(refused("user.big", MAX_VALUE + 1).is_some());
        assert!(refused("user.ok", MAX_VALUE).is_none());
    }

    #[test]
    fn a_file_keeps_its_user_attributes_through_read_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let attrs = vec![
            Xattr {
                name: "user.b".into(),
                value: vec![0, 1, 2, 255],
            },
            Xattr {
                name: "user.a".into(),
                value: vec![b'v'; 1500],
            },
        ];
        apply_path(&a, &attrs)
            .expect("the temporary directory's filesystem keeps user.* attributes");
        let mut sorted = attrs.clone();
        sorted.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(read(&a, false).unwrap(), sorted);
        let b = dir.path().join("b");
        let f = std::fs::File::create(&b).unwrap();
        apply_fd(&f, &sorted).unwrap();
        assert_eq!(read(&b, false).unwrap(), sorted);
    }
}
