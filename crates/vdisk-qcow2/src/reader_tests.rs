//! Reader unit tests on tiny images built by hand in memory (512-byte clusters), valid and broken.

use super::*;
use crate::header::Header;
use crate::tables::{OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use std::io::Write;
use vdisk_core::storage::NoFiles;
use vdisk_core::MemStorage;

const CS: u64 = 512;

/// The header of a hand-built image of `size` bytes with 512-byte clusters: cluster 0 header,
/// 1 refcount table, 2 refcount block, 3 the L1 table of `l1_size` entries, then L2 tables.
pub(crate) fn tiny_header(size: u64, l1_size: u32) -> Header {
    Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: 9,
        size,
        crypt_method: 0,
        l1_size,
        l1_table_offset: 3 * CS,
        refcount_table_offset: CS,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: 112,
        compression_type: 0,
        extensions: vec![],
        backing_file: None,
    }
}

/// Clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5 data, 6 compressed.
fn image(l2: &[u64]) -> Vec<u8> {
    let h = tiny_header(64 * CS, 1);
    let mut b = vec![0u8; 7 * CS as usize];
    let hb = h.serialize();
    b[..hb.len()].copy_from_slice(&hb);
    let put = |b: &mut Vec<u8>, at: u64, v: u64| {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes())
    };
    put(&mut b, CS, 2 * CS);
    for c in 0..7u64 {
        let at = (2 * CS + 2 * c) as usize;
        b[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    put(&mut b, 3 * CS, OFLAG_COPIED | (4 * CS));
    for (i, e) in l2.iter().enumerate() {
        put(&mut b, 4 * CS + 8 * i as u64, *e);
    }
    b[5 * CS as usize..6 * CS as usize].fill(0xab);
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&[0x5au8; CS as usize]).unwrap();
    let z = enc.finish().unwrap();
    b[6 * CS as usize..6 * CS as usize + z.len()].copy_from_slice(&z);
    b
}

fn compressed_entry() -> u64 {
    // 512-byte clusters: offset in bits 0..61, one sector (count 0) above it.
    OFLAG_COMPRESSED | (6 * CS)
}

fn open_mem(b: Vec<u8>) -> Result<Qcow2Reader> {
    open(
        Arc::new(MemStorage::new("mem.qcow2", b)),
        Arc::new(NoFiles),
        &OpenOptions::default(),
    )
}

#[test]
fn reads_every_entry_kind() {
    let r = open_mem(image(&[
        OFLAG_COPIED | (5 * CS),
        OFLAG_ZERO,
        0,
        compressed_entry(),
    ]))
    .unwrap();
    let mut buf = vec![9u8; 4 * CS as usize];
    r.read_at(&mut buf, 0).unwrap();
    assert!(buf[..512].iter().all(|x| *x == 0xab));
    assert!(buf[512..1536].iter().all(|x| *x == 0));
    assert!(buf[1536..].iter().all(|x| *x == 0x5a));
    let kinds: Vec<_> = (0..5)
        .map(|i| r.block_status(i * CS, CS).unwrap().kind)
        .collect();
    use ExtentKind::*;
    assert_eq!(
        kinds,
        vec![Data, Zero, Unallocated, Compressed, Unallocated]
    );
    assert_eq!(r.block_status(0, CS).unwrap().host.unwrap().offset, 5 * CS);
    let c = r.check().unwrap();
    assert_eq!(
        (c.corruptions, c.leaks, c.allocated_clusters),
        (0, 0, Some(2)),
        "{:?}",
        c.messages
    );
    let mut tail = [0u8; 10];
    r.read_at(&mut tail, 64 * CS - 10).unwrap();
    assert!(r.read_at(&mut tail, 64 * CS - 9).is_err());
}

#[test]
fn broken_entries_are_errors() {
    let mut buf = vec![0u8; 512];
    let past = open_mem(image(&[OFLAG_COPIED | (1 << 30)])).unwrap();
    assert!(past
        .read_at(&mut buf, 0)
        .unwrap_err()
        .to_string()
        .contains("past the end"));
    let mut b = image(&[]);
    b[3 * CS as usize..3 * CS as usize + 8].copy_from_slice(&(64 * CS).to_be_bytes());
    let r = open_mem(b).unwrap();
    assert!(r
        .read_at(&mut buf, 0)
        .unwrap_err()
        .to_string()
        .contains("L2 table is past"));
    // A compressed stream that does not inflate to a full cluster.
    let mut b = image(&[compressed_entry()]);
    b[6 * CS as usize..7 * CS as usize].fill(0x13);
    assert!(open_mem(b)
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap_err()
        .to_string()
        .contains("decompress"));
    // A zero cluster in a version 2 image.
    let mut b = image(&[OFLAG_ZERO]);
    b[4..8].copy_from_slice(&2u32.to_be_bytes());
    assert!(open_mem(b)
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap_err()
        .to_string()
        .contains("pre-v3"));
    // Truncated: the L1 table is gone. The image opens, as in QEMU (which reads zeros), but
    // reading through the missing table is refused.
    let b = image(&[])[..3 * CS as usize].to_vec();
    assert!(open_mem(b)
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap_err()
        .to_string()
        .contains("L1 table extends past the end of the file"));
}

#[test]
fn padded_tables_read_zeros_past_the_end_of_the_file() {
    // Two and a half entries in the file, at offset 8: the third entry's missing bytes and the
    // fourth entry read as zeros, as QEMU's block layer reads them.
    let mut bytes = vec![0xeeu8; 8];
    bytes.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    bytes.extend_from_slice(&u64::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0xab, 0xcd, 0xef, 0x01]);
    let len = bytes.len() as u64;
    let s = MemStorage::new("t.qcow2", bytes);
    let words = read_u64_table_padded(&s, 8, 4, len).unwrap();
    assert_eq!(
        words,
        [0x0102_0304_0506_0708, u64::MAX, 0xabcd_ef01_0000_0000, 0]
    );
    // All past the end, and nothing at all.
    assert_eq!(read_u64_table_padded(&s, 4096, 3, len).unwrap(), [0; 3]);
    assert!(read_u64_table_padded(&s, 8, 0, len).unwrap().is_empty());
    // A table reaching past QEMU's largest request is refused as QEMU refuses it (EIO).
    let at = crate::refcount::BDRV_MAX_LENGTH - 8;
    let e = read_u64_table_padded(&s, at, 2, len).unwrap_err();
    assert!(matches!(e, vdisk_core::Error::Io { .. }), "{e}");
}
