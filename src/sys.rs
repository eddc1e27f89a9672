//! Facts about the machine the backups are taken on: host name and free disk space.

use std::path::Path;

/// The host name, for metadata and messages (so one chat can serve several servers).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Bytes available to this user on the filesystem holding `path`.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}

/// Total bytes of the filesystem holding `path`.
pub fn total_space(path: &Path) -> std::io::Result<u64> {
    fs4::total_space(path)
}
