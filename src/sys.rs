//! Facts about the machine the backups are taken on: host name and free disk space.

use std::path::Path;

/// The host name, for metadata and messages (so one chat can serve several servers).
/// From gethostname(2), which works where /proc/sys is hidden (systemd `ProcSubset=pid`).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    } else {
        String::new()
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Bytes available to this user on the filesystem holding `path`.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}

/// Total bytes of the filesystem holding `path`.
pub fn total_space(path: &Path) -> std::io::Result<u64> {
    fs4::total_space(path)
}

/// Whether this process may read `path` (`access(R_OK)`), without opening it: closing any
/// descriptor of a database file drops every POSIX lock this process holds on it,
/// SQLite's included (a replicating connection's among them).
pub fn may_read(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    match unsafe { libc::access(c.as_ptr(), libc::R_OK) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Whether this process may create files in `dir` (`access(W_OK)`: real uid, as the
/// kernel will judge the create).
pub fn may_write(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}
