//! Segments written and read back, and every way a damaged one must be refused: a flipped
//! byte anywhere, a cut anywhere, a header whose counts the data does not back.

use sha2::Digest;

use super::*;

fn shipped(commit_ms: i64, pages: &[(u32, u8)], db_pages: u32) -> Shipped {
    Shipped {
        commit_ms,
        covers: 1,
        tx: Transaction {
            pages: pages
                .iter()
                .map(|&(page, fill)| PageWrite {
                    page,
                    data: vec![fill; 1024],
                })
                .collect(),
            db_pages,
        },
    }
}

fn sample() -> Vec<Shipped> {
    vec![
        shipped(1_000, &[(1, 1), (2, 2)], 2),
        shipped(1_500, &[(3, 3)], 3),
        shipped(2_000, &[(1, 4), (3, 5), (2, 6)], 3),
    ]
}

fn write(txs: &[Shipped]) -> Vec<u8> {
    let mut out = Vec::new();
    write_segment(&mut out, 1024, [7; 16], 41, txs).unwrap();
    out
}

fn read_all(bytes: &[u8]) -> Result<(SegmentHeader, Vec<Shipped>), SegmentError> {
    let mut reader = SegmentReader::open(bytes)?;
    let mut txs = Vec::new();
    while let Some(t) = reader.next_transaction()? {
        txs.push(t);
    }
    Ok((reader.finish()?, txs))
}

#[test]
fn a_segment_reads_back_as_written() {
    let bytes = write(&sample());
    let (header, txs) = read_all(&bytes).unwrap();
    assert_eq!(txs, sample());
    assert_eq!(
        header,
        SegmentHeader {
            page_size: 1024,
            generation: [7; 16],
            first_tx: 41,
            transactions: 3,
            first_commit_ms: 1_000,
            last_commit_ms: 2_000,
        }
    );
}

#[test]
fn any_flipped_byte_or_cut_is_refused() {
    let bytes = write(&sample());
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(
            read_all(&bad).is_err(),
            "a flip at {at} of {} passed",
            bytes.len()
        );
    }
    for cut in 0..bytes.len() {
        assert!(read_all(&bytes[..cut]).is_err(), "a cut at {cut} passed");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(read_all(&longer).is_err());
}

#[test]
fn counts_the_data_does_not_back_fail_without_allocating_them() {
    // A transaction claiming 4 billion pages: refused by a short read, page by page.
    let mut body = Vec::new();
    body.extend_from_slice(&1_000i64.to_be_bytes());
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&(u32::MAX - 1).to_be_bytes());
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&[0u8; 1024]);
    let mut raw = Vec::new();
    raw.extend_from_slice(MAGIC);
    raw.push(VERSION);
    raw.extend_from_slice(&1024u32.to_be_bytes());
    raw.extend_from_slice(&[0; 16]);
    raw.extend_from_slice(&0u64.to_be_bytes());
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&1_000i64.to_be_bytes());
    raw.extend_from_slice(&1_000i64.to_be_bytes());
    raw.extend_from_slice(&zstd::encode_all(body.as_slice(), 3).unwrap());
    let digest: [u8; 32] = sha2::Sha256::digest(&raw).into();
    raw.extend_from_slice(&digest);
    let err = read_all(&raw).unwrap_err().to_string();
    assert!(err.contains("a page"), "{err}");
    // A page size the format does not allow.
    let mut odd = write(&sample());
    odd[9..13].copy_from_slice(&1000u32.to_be_bytes());
    assert!(
        read_all(&odd)
            .unwrap_err()
            .to_string()
            .contains("page size")
    );
}

#[test]
fn nothing_or_a_wrong_page_is_not_written() {
    let mut out = Vec::new();
    assert!(write_segment(&mut out, 1024, [0; 16], 0, &[]).is_err());
    let mut wrong = sample();
    wrong[1].tx.pages[0].data.truncate(10);
    assert!(write_segment(&mut out, 1024, [0; 16], 0, &wrong).is_err());
}
