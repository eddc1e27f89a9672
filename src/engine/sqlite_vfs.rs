//! A SQLite VFS for the database copies this program writes itself: it gathers SQLite's
//! page-sized writes of the main database file into 64 KiB writes. The online backup API
//! writes a copy one page (4 KiB) at a time, and on ext4 65 536 `pwrite`s of 4 KiB take
//! about twice as long as 4 096 writes of 64 KiB (issue 18, a 256 MiB copy: `dd bs=4k`
//! 0.28 s, `bs=64k` 0.15 s) — most of the gap between our copy and `sqlite3 .backup`'s.
//!
//! Only ever used for a file nobody else opens (a backup's `.partial` copy): a write held in the buffer is
//! invisible to other processes until it is flushed, which for a private file changes
//! nothing. Every call that could observe the file — read, size, truncate, sync, lock
//! changes, file controls, close — flushes first, so SQLite itself always sees its own
//! writes. Journals and WAL files pass straight through to the default VFS.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections pass to `open_with_flags_and_vfs`.
pub const NAME: &str = "vertex-backup-coalescing";
const NAME_C: &CStr = c"vertex-backup-coalescing";

/// Writes are gathered up to this many bytes. The unix VFS writes at most 128 KiB − 1
/// per call (`seekAndWriteFd` masks the length to 17 bits), so a larger run would have
/// to be cut up again.
const BUFFER: usize = 64 << 10;

/// The default VFS we wrap, kept as an address so the static is `Sync`.
static INNER: OnceLock<usize> = OnceLock::new();
/// Whether registration worked; `false` leaves callers on the default VFS.
static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Register the VFS once per process. Returns whether it can be used; when SQLite has no
/// default VFS to wrap (never on Linux), callers fall back to the default one.
pub fn register() -> bool {
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find with NULL returns the default VFS (initialising SQLite
        // first); the struct we register is leaked, so it lives as long as the process.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return false;
            }
            let _ = INNER.set(inner as usize);
            let mut vfs: ffi::sqlite3_vfs = *inner;
            // Every method but xOpen is the default VFS's own, called with our pointer;
            // pAppData stays the default's, which is all the unix VFS reads from it.
            vfs.szOsFile = (size_of::<Coalescing>() + (*inner).szOsFile as usize) as c_int;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME_C.as_ptr();
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

fn inner_vfs() -> *mut ffi::sqlite3_vfs {
    INNER.get().map_or(std::ptr::null_mut(), |&p| p as *mut _)
}

/// Our file object: SQLite's header, the default VFS's file right behind it (in the
/// same allocation, `szOsFile` bytes), and the pending run of writes.
#[repr(C)]
struct Coalescing {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes waiting to be written at `offset`; `None` once closed.
    pending: Option<Vec<u8>>,
    offset: i64,
    /// The first failed flush's code, returned by every call after it. Sticky because
    /// SQLite ignores the result of some calls that flush (the size hint sent when a
    /// spilled page passes the file's end, checkpoint notices): the next call it does
    /// check — at the latest the commit's `SQLITE_FCNTL_SYNC` — must fail too, or pages
    /// SQLite counts as written would be missing from a copy that looks complete.
    failed: c_int,
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 2: shared memory is passed through; no xFetch (memory-mapped reads would
    // bypass the buffer), so SQLite reads with xRead, which flushes first.
    iVersion: 2,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner_vfs = inner_vfs();
    // SAFETY: SQLite hands us `szOsFile` bytes at `file`; the default VFS's file fits
    // behind our header. Journals and WAL files are the default VFS's own files, opened
    // straight into this allocation, so SQLite calls their methods directly.
    unsafe {
        let Some(inner_open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let ours = file.cast::<Coalescing>();
        let inner = file
            .cast::<u8>()
            .add(size_of::<Coalescing>())
            .cast::<ffi::sqlite3_file>();
        // Until the inner file is open, SQLite must not call our methods (it checks
        // pMethods for NULL after a failed open).
        (*ours).base.pMethods = std::ptr::null();
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        std::ptr::write(
            ours,
            Coalescing {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                pending: Some(Vec::with_capacity(BUFFER)),
                offset: 0,
                failed: ffi::SQLITE_OK,
            },
        );
        ffi::SQLITE_OK
    }
}

/// Our state and the inner file's methods.
///
/// # Safety
/// `file` must be a file this VFS opened as a main database and has not closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (&'a mut Coalescing, &'a ffi::sqlite3_io_methods) {
    // SAFETY: per the contract, `file` is our live Coalescing whose inner file is open.
    unsafe {
        let ours = &mut *file.cast::<Coalescing>();
        let methods = &*(*ours.inner).pMethods;
        (ours, methods)
    }
}

/// Write what is pending. The error is the unix VFS's own (`SQLITE_IOERR_WRITE`, or
/// `SQLITE_FULL` for a full disk), and it sticks: see [`Coalescing::failed`].
unsafe fn flush(ours: &mut Coalescing, methods: &ffi::sqlite3_io_methods) -> c_int {
    if ours.failed != ffi::SQLITE_OK {
        return ours.failed;
    }
    let Some(pending) = ours.pending.as_mut() else {
        return ffi::SQLITE_OK;
    };
    if pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(inner_write) = methods.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: the inner file is open; the buffer is valid for its length (≤ 64 KiB).
    let rc = unsafe {
        inner_write(
            ours.inner,
            pending.as_ptr().cast::<c_void>(),
            pending.len() as c_int,
            ours.offset,
        )
    };
    pending.clear();
    if rc != ffi::SQLITE_OK {
        ours.failed = rc;
    }
    rc
}

/// Flush, then run `then` on the inner file.
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: SQLite calls our methods only on files we opened and have not closed.
    unsafe {
        let (ours, methods) = parts(file);
        let rc = flush(ours, methods);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        then(ours.inner, methods)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SQLite ignores what close returns; nothing is pending by then in our use, because
    // every commit (the copy's, and the `journal_mode = DELETE` that finishes it) sends
    // `SQLITE_FCNTL_SYNC` — even with `synchronous = OFF` — which flushes and whose
    // result SQLite checks. A write error surfaces there, failing the copy.
    // SAFETY: as in `flushed`; after the inner close our state is dropped exactly once.
    unsafe {
        let (ours, methods) = parts(file);
        let flushed = flush(ours, methods);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |f| f(ours.inner));
        ours.pending = None;
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in `flushed`; `buf` holds `amount` bytes (SQLite's contract).
    unsafe {
        let (ours, methods) = parts(file);
        if ours.failed != ffi::SQLITE_OK {
            return ours.failed;
        }
        let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize);
        let Some(pending) = ours.pending.as_mut() else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let follows = offset == ours.offset + pending.len() as i64;
        if !pending.is_empty() && follows && pending.len() + bytes.len() <= BUFFER {
            pending.extend_from_slice(bytes);
            return ffi::SQLITE_OK;
        }
        let rc = flush(ours, methods);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let Some(pending) = ours.pending.as_mut() else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if bytes.len() >= BUFFER {
            return methods.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |f| {
                f(ours.inner, buf, amount, offset)
            });
        }
        pending.extend_from_slice(bytes);
        ours.offset = offset;
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xRead
                .map_or(ffi::SQLITE_IOERR_READ, |f| f(inner, buf, amount, offset))
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(inner, size))
        })
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |f| f(inner, flags))
        })
    }
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xFileSize
                .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(inner, size))
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |f| f(inner, level))
        })
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // The unlock happens whatever the flush says: SQLite records the new lock level
    // either way, and the inner file must agree with it.
    unsafe {
        let (ours, m) = parts(file);
        let flushed = flush(ours, m);
        let unlocked = m
            .xUnlock
            .map_or(ffi::SQLITE_IOERR_UNLOCK, |f| f(ours.inner, level));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            unlocked
        }
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| f(ours.inner, out))
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe {
        flushed(file, |inner, m| {
            m.xFileControl
                .map_or(ffi::SQLITE_NOTFOUND, |f| f(inner, op, arg))
        })
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xSectorSize.map_or(4096, |f| f(ours.inner))
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xDeviceCharacteristics.map_or(0, |f| f(ours.inner))
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |f| {
            f(ours.inner, region, size, extend, out)
        })
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xShmLock.map_or(ffi::SQLITE_IOERR_SHMLOCK, |f| {
            f(ours.inner, offset, n, flags)
        })
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        let (ours, m) = parts(file);
        if let Some(f) = m.xShmBarrier {
            f(ours.inner);
        }
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        let (ours, m) = parts(file);
        m.xShmUnmap
            .map_or(ffi::SQLITE_OK, |f| f(ours.inner, delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &std::path::Path) -> Connection {
        assert!(register());
        Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            NAME,
        )
        .unwrap()
    }

    #[test]
    fn a_database_written_through_it_reads_back_the_same_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        let conn = open(&path);
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..5_000i64 {
            let body = vec![(i % 251) as u8; 700 + (i as usize % 900)];
            tx.execute("INSERT INTO t VALUES (?1, ?2)", (i, body))
                .unwrap();
        }
        tx.commit().unwrap();
        // Reads in the same connection see the pending writes (xRead flushes first).
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5_000);
        conn.execute_batch("PRAGMA journal_mode = DELETE").unwrap();
        conn.close().unwrap();
        // The default VFS, another connection: every page landed.
        let plain = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let sum: i64 = plain
            .query_row("SELECT sum(length(body)) FROM t", [], |r| r.get(0))
            .unwrap();
        let want: i64 = (0..5_000i64).map(|i| 700 + (i % 900)).sum();
        assert_eq!(sum, want);
    }

    #[test]
    fn a_rollback_journal_through_it_still_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let conn = open(&path);
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        tx.execute_batch("INSERT INTO t SELECT x + 1 FROM t; UPDATE t SET x = x * 10")
            .unwrap();
        tx.rollback().unwrap();
        let total: i64 = conn
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, 1);
    }

    #[test]
    fn a_database_read_through_it_read_only_reads_the_same_as_without() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.db");
        {
            // Written by the default VFS: 37 pages, not a multiple of the block.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL); CREATE INDEX tb ON t(body);")
                .unwrap();
            for i in 0..300i64 {
                conn.execute("INSERT INTO t VALUES (?1, ?2)", (i, format!("{i:0>200}")))
                    .unwrap();
            }
        }
        let want: (i64, i64) = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*), sum(length(body)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(register());
        let ro = Connection::open_with_flags_and_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            NAME,
        )
        .unwrap();
        let got: (i64, i64) = ro
            .query_row("SELECT count(*), sum(length(body)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(got, want);
        let check: String = ro
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
