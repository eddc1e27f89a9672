//! The WAL reader against logs SQLite itself wrote: a database in WAL mode with automatic
//! checkpoints off, a base copy of its file taken after a TRUNCATE checkpoint, then
//! transactions; what the reader returns, replayed onto the base, must be the database
//! SQLite shows, and nothing of a torn, damaged or uncommitted tail may be returned.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::*;
use crate::replication::apply::Replica;

struct Live {
    _dir: tempfile::TempDir,
    db: PathBuf,
    conn: Connection,
}

impl Live {
    /// A WAL database with one table, checkpointed (the log empty), and its base copy.
    fn new() -> (Live, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app_data.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE orders (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        let base = dir.path().join("base.db");
        std::fs::copy(&db, &base).unwrap();
        (
            Live {
                _dir: dir,
                db,
                conn,
            },
            base,
        )
    }

    fn wal(&self) -> PathBuf {
        self.db.with_file_name("app_data.db-wal")
    }

    /// One transaction of `rows` rows, each big enough to touch a few pages.
    fn commit(&self, first: i64, rows: i64) {
        let tx = self.conn.unchecked_transaction().unwrap();
        for id in first..first + rows {
            tx.execute(
                "INSERT INTO orders (id, body) VALUES (?1, ?2)",
                (id, format!("order {id} ").repeat(40)),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn read(&self, cursor: Option<&WalCursor>) -> (Vec<Transaction>, WalCursor) {
        let mut f = std::fs::File::open(self.wal()).unwrap();
        match read_committed(&mut f, cursor, u64::MAX, None).unwrap() {
            WalRead::Continued {
                transactions,
                cursor,
                complete,
            } => {
                assert!(complete, "an unbounded pass stopped early");
                (transactions, cursor)
            }
            other => panic!("expected frames, got {other:?}"),
        }
    }
}

fn rows(db: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, body FROM orders ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn integrity(db: &Path) -> String {
    Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Replays `txs` onto a fresh copy of `base` and returns the copy's path.
fn replay(base: &Path, page_size: u32, txs: &[Transaction]) -> PathBuf {
    let out = base.with_file_name(format!("replay-{}.db", txs.len()));
    std::fs::copy(base, &out).unwrap();
    let mut replica = Replica::open(&out, page_size).unwrap();
    for tx in txs {
        replica.apply(tx).unwrap();
    }
    replica.sync().unwrap();
    out
}

fn page_size(live: &Live) -> u32 {
    live.conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn committed_transactions_replayed_on_the_base_give_the_live_database() {
    let (live, base) = Live::new();
    for k in 0..12 {
        live.commit(k * 10, 10);
    }
    let (txs, cursor) = live.read(None);
    assert_eq!(txs.len(), 12);
    assert_eq!(cursor.offset, std::fs::metadata(live.wal()).unwrap().len());
    let replayed = replay(&base, page_size(&live), &txs);
    assert_eq!(integrity(&replayed), "ok");
    assert_eq!(rows(&replayed), rows(&live.db));
    assert_eq!(rows(&replayed).len(), 120);
}

#[test]
fn a_cursor_reads_only_what_was_appended_and_each_prefix_is_a_past_state() {
    let (live, base) = Live::new();
    live.commit(0, 5);
    let (first, cursor) = live.read(None);
    assert_eq!(first.len(), 1);
    let (none, same) = live.read(Some(&cursor));
    assert!(none.is_empty());
    assert_eq!(same, cursor);
    live.commit(5, 5);
    live.commit(10, 5);
    let (more, _) = live.read(Some(&cursor));
    assert_eq!(more.len(), 2);
    // Replaying a prefix gives the database as of that commit: the point-in-time restore.
    let all: Vec<_> = first.into_iter().chain(more).collect();
    for n in 1..=all.len() {
        let replayed = replay(&base, page_size(&live), &all[..n]);
        assert_eq!(integrity(&replayed), "ok");
        assert_eq!(rows(&replayed).len(), n * 5);
    }
}

#[test]
fn a_torn_or_uncommitted_tail_is_never_returned() {
    let (live, base) = Live::new();
    live.commit(0, 3);
    live.commit(3, 200); // many pages: a transaction of several frames
    let bytes = std::fs::read(live.wal()).unwrap();
    let frame = (FRAME_HEADER_LEN as u32 + page_size(&live)) as usize;
    let (txs, _) = live.read(None);
    let first_end = WAL_HEADER_LEN + frame * txs[0].pages.len();
    assert!(txs[1].pages.len() > 2, "{}", txs[1].pages.len());
    // Cut within the second transaction: at a frame boundary (its commit frame not yet
    // written) and in the middle of a frame (a torn write).
    for cut in [
        first_end + frame,
        first_end + frame + frame / 2,
        bytes.len() - 1,
    ] {
        let mut torn = std::io::Cursor::new(bytes[..cut].to_vec());
        let WalRead::Continued {
            transactions,
            cursor,
            ..
        } = read_committed(&mut torn, None, u64::MAX, None).unwrap()
        else {
            panic!("no frames")
        };
        assert_eq!(transactions.len(), 1, "cut at {cut}");
        assert_eq!(cursor.offset, first_end as u64);
        let replayed = replay(&base, page_size(&live), &transactions);
        assert_eq!(rows(&replayed).len(), 3);
    }
}

#[test]
fn a_damaged_frame_ends_the_log_at_the_commit_before_it() {
    let (live, _base) = Live::new();
    for k in 0..4 {
        live.commit(k * 10, 10);
    }
    let (txs, _) = live.read(None);
    let frame = (FRAME_HEADER_LEN as u32 + page_size(&live)) as usize;
    let before: usize = txs[..2].iter().map(|t| t.pages.len()).sum();
    let mut bytes = std::fs::read(live.wal()).unwrap();
    // One flipped byte in the page data of the third transaction's first frame.
    bytes[WAL_HEADER_LEN + before * frame + FRAME_HEADER_LEN + 100] ^= 0x40;
    let WalRead::Continued { transactions, .. } = read_committed(
        &mut std::io::Cursor::new(bytes.clone()),
        None,
        u64::MAX,
        None,
    )
    .unwrap() else {
        panic!("no frames")
    };
    assert_eq!(transactions, txs[..2].to_vec());
    // A frame with another log's salts (a restart's leftovers) ends it the same way.
    let mut foreign = std::fs::read(live.wal()).unwrap();
    foreign[WAL_HEADER_LEN + before * frame + 8] ^= 0x01;
    let WalRead::Continued { transactions, .. } =
        read_committed(&mut std::io::Cursor::new(foreign), None, u64::MAX, None).unwrap()
    else {
        panic!("no frames")
    };
    assert_eq!(transactions.len(), 2);
}

#[test]
fn a_checkpoint_that_restarts_the_log_is_reported_not_read_across() {
    let (live, _base) = Live::new();
    live.commit(0, 5);
    let (_, cursor) = live.read(None);
    live.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    live.commit(5, 5);
    let mut f = std::fs::File::open(live.wal()).unwrap();
    match read_committed(&mut f, Some(&cursor), u64::MAX, None).unwrap() {
        WalRead::Restarted(header) => {
            assert_ne!(header.salt, cursor.header.salt);
            assert!(
                cursor.restarted_once_as(&header),
                "{header:?} after {cursor:?}"
            );
        }
        other => panic!("expected a restart, got {other:?}"),
    }
    assert!(matches!(
        read_committed(&mut std::io::Cursor::new(Vec::new()), None, 1, None).unwrap(),
        WalRead::Empty
    ));
}

#[test]
fn max_bytes_bounds_a_pass_at_a_commit_and_the_next_pass_goes_on() {
    let (live, base) = Live::new();
    for k in 0..5 {
        live.commit(k * 10, 10);
    }
    let mut f = std::fs::File::open(live.wal()).unwrap();
    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let WalRead::Continued {
            transactions,
            cursor: next,
            complete,
        } = read_committed(&mut f, cursor.as_ref(), 1, None).unwrap()
        else {
            panic!("no frames")
        };
        if transactions.is_empty() {
            assert!(complete);
            break;
        }
        assert_eq!(transactions.len(), 1);
        assert!(!complete, "a pass stopped by its bound says so");
        all.extend(transactions);
        cursor = Some(next);
    }
    assert_eq!(all.len(), 5);
    assert_eq!(rows(&replay(&base, page_size(&live), &all)), rows(&live.db));
}

#[test]
fn a_header_that_is_not_a_wal_is_refused() {
    let mut raw = [0u8; WAL_HEADER_LEN];
    raw[..4].copy_from_slice(b"SQLi");
    assert!(matches!(WalHeader::parse(&raw), Err(WalError::Format(_))));
    let (live, _) = Live::new();
    live.commit(0, 1);
    let bytes = std::fs::read(live.wal()).unwrap();
    let mut header: [u8; WAL_HEADER_LEN] = bytes[..WAL_HEADER_LEN].try_into().unwrap();
    assert!(WalHeader::parse(&header).is_ok());
    header[13] ^= 1; // the checkpoint sequence, under the header's checksum
    assert!(WalHeader::parse(&header).is_err());
}

#[test]
fn a_replica_refuses_a_page_past_the_database_or_of_the_wrong_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    let mut replica = Replica::open(&path, 4096).unwrap();
    let page = |page, len| PageWrite {
        page,
        data: vec![0; len],
    };
    let tx = |pages, db_pages| Transaction { pages, db_pages };
    assert!(replica.apply(&tx(vec![page(3, 4096)], 2)).is_err());
    assert!(replica.apply(&tx(vec![page(1, 100)], 1)).is_err());
    assert!(replica.apply(&tx(vec![page(u32::MAX, 4096)], 1)).is_err());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing written"
    );
    replica
        .apply(&tx(vec![page(1, 4096), page(2, 4096)], 2))
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    // Shrinking (a VACUUM's commit) cuts the file.
    replica.apply(&tx(vec![page(1, 4096)], 1)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
}

#[test]
fn a_cursor_off_a_frame_boundary_is_refused_not_read() {
    let (live, _) = Live::new();
    live.commit(0, 3);
    let (_, cursor) = live.read(None);
    let mut f = std::fs::File::open(live.wal()).unwrap();
    for offset in [0, 31, cursor.offset - 1] {
        let off = WalCursor { offset, ..cursor };
        assert!(matches!(
            read_committed(&mut f, Some(&off), u64::MAX, None),
            Err(WalError::Format(_))
        ));
    }
}

/// SQLite on a big-endian machine writes magic 0x377f0683 and checksums over big-endian
/// words: a log built here by hand the same way reads back, and one flipped bit fails.
#[test]
fn a_big_endian_log_is_checked_in_its_own_byte_order() {
    let page_size = 512u32;
    let mut log = Vec::new();
    log.extend_from_slice(&0x377f_0683u32.to_be_bytes());
    log.extend_from_slice(&3_007_000u32.to_be_bytes());
    log.extend_from_slice(&page_size.to_be_bytes());
    log.extend_from_slice(&7u32.to_be_bytes());
    log.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4]);
    let mut sum = checksum(true, [0, 0], &log);
    log.extend_from_slice(&sum[0].to_be_bytes());
    log.extend_from_slice(&sum[1].to_be_bytes());
    for (page, db_pages) in [(1u32, 0u32), (2, 2)] {
        let mut head = Vec::new();
        head.extend_from_slice(&page.to_be_bytes());
        head.extend_from_slice(&db_pages.to_be_bytes());
        let data = vec![page as u8; page_size as usize];
        sum = checksum(true, sum, &head);
        sum = checksum(true, sum, &data);
        log.extend_from_slice(&head);
        log.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4]);
        log.extend_from_slice(&sum[0].to_be_bytes());
        log.extend_from_slice(&sum[1].to_be_bytes());
        log.extend_from_slice(&data);
    }
    let header = WalHeader::parse(log[..WAL_HEADER_LEN].try_into().unwrap()).unwrap();
    assert!(header.big_endian);
    let WalRead::Continued { transactions, .. } =
        read_committed(&mut std::io::Cursor::new(log.clone()), None, u64::MAX, None).unwrap()
    else {
        panic!("no frames")
    };
    assert_eq!(transactions.len(), 1);
    assert_eq!(transactions[0].pages.len(), 2);
    // Read as little-endian words, the same bytes do not check out.
    assert_ne!(checksum(false, [0, 0], &log[..24]), header.checksum);
    let mut flipped = log;
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let WalRead::Continued { transactions, .. } =
        read_committed(&mut std::io::Cursor::new(flipped), None, u64::MAX, None).unwrap()
    else {
        panic!("no frames")
    };
    assert!(transactions.is_empty());
}

#[test]
fn the_index_publishes_the_commit_point_and_frames_past_it_are_not_read() {
    let (live, _base) = Live::new();
    live.commit(0, 5);
    live.commit(5, 5);
    let shm = std::fs::read(live.db.with_file_name("app_data.db-shm")).unwrap();
    let (max_frame, salt) = index_max_frame(&shm).expect("a settled index");
    let bytes = std::fs::read(live.wal()).unwrap();
    let header = WalHeader::parse(bytes[..WAL_HEADER_LEN].try_into().unwrap()).unwrap();
    assert_eq!(salt, header.salt);
    let frame_len = FRAME_HEADER_LEN as u64 + u64::from(header.page_size);
    assert_eq!(
        u64::from(max_frame),
        (bytes.len() as u64 - WAL_HEADER_LEN as u64) / frame_len
    );
    // Published only up to the first transaction: the second is not read.
    let (first, _) = live.read(None);
    let first_frames: usize = first[..1].iter().map(|t| t.pages.len()).sum();
    let WalRead::Continued { transactions, .. } = read_committed(
        &mut std::io::Cursor::new(bytes.clone()),
        None,
        u64::MAX,
        Some(first_frames as u32),
    )
    .unwrap() else {
        panic!("no frames")
    };
    assert_eq!(transactions.len(), 1);
    // Copies of the header that differ (being written) are no commit point.
    let mut torn = shm.clone();
    torn[20] ^= 1;
    assert_eq!(index_max_frame(&torn), None);
}

#[test]
fn frames_written_again_under_the_cursor_are_reported() {
    let (live, _base) = Live::new();
    live.commit(0, 5);
    let (_, cursor) = live.read(None);
    let mut bytes = std::fs::read(live.wal()).unwrap();
    // The frame the cursor stands after, written again with other content.
    let at = cursor.offset as usize - FRAME_HEADER_LEN - cursor.header.page_size as usize;
    bytes[at + 16] ^= 0xff;
    assert!(matches!(
        read_committed(
            &mut std::io::Cursor::new(bytes),
            Some(&cursor),
            u64::MAX,
            None
        )
        .unwrap(),
        WalRead::Rewritten
    ));
}
