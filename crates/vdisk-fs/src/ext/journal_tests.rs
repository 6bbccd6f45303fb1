//! Hand-built journals: what the kernel's recovery would replay, wrapped logs, checksums, and
//! hostile superblocks and descriptors.

use super::*;
use crate::ext::journal_overlay::Replayed;
use crate::testmem::{device, Mem};
use std::sync::Arc;
use vdisk_core::ImageReader;

const BS: usize = 1024;
const PHYS_BASE: u64 = 1000;
const UUID: [u8; 16] = *b"0123456789abcdef";

/// A journal of `blocks`, journal block `j` at device block `PHYS_BASE + j`.
struct MemLog(Vec<Vec<u8>>);

impl LogSource for MemLog {
    fn read(&self, jblk: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(&self.0[jblk as usize]);
        Ok(())
    }
    fn phys(&self, jblk: u64) -> Result<u64> {
        Ok(PHYS_BASE + jblk)
    }
}

#[derive(Clone, Copy)]
struct Feat {
    incompat: u32,
    compat: u32,
}

const PLAIN: Feat = Feat {
    incompat: feature::INCOMPAT_REVOKE,
    compat: 0,
};
const CSUM3: Feat = Feat {
    incompat: feature::INCOMPAT_REVOKE | feature::INCOMPAT_64BIT | feature::INCOMPAT_CSUM_V3,
    compat: 0,
};

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn header(t: u32, seq: u32) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    put32(&mut b, 0, JBD2_MAGIC);
    put32(&mut b, 4, t);
    put32(&mut b, 8, seq);
    b
}

fn seed() -> u32 {
    crc32c(!0, &UUID)
}

fn is_csum(f: Feat) -> bool {
    f.incompat & (feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3) != 0
}

fn super_block(f: Feat, maxlen: u32, first: u32, seq: u32, start: u32) -> Vec<u8> {
    let mut b = header(blocktype::SUPERBLOCK_V2, 0);
    put32(&mut b, 0x0C, BS as u32);
    put32(&mut b, 0x10, maxlen);
    put32(&mut b, 0x14, first);
    put32(&mut b, 0x18, seq);
    put32(&mut b, 0x1C, start);
    put32(&mut b, 0x24, f.compat);
    put32(&mut b, 0x28, f.incompat);
    b[0x30..0x40].copy_from_slice(&UUID);
    if is_csum(f) {
        b[0x50] = 4;
        let c = crc32c(!0, &b[..1024]);
        put32(&mut b, 0xFC, c);
    }
    b
}

fn tail(f: Feat, b: &mut [u8]) {
    if is_csum(f) {
        let c = crc32c(seed(), b);
        put32(b, BS - 4, c);
    }
}

/// A descriptor for (fs block, data, escaped) copies.
fn descriptor(f: Feat, seq: u32, tags: &[(u64, &[u8], bool)]) -> Vec<u8> {
    let mut b = header(blocktype::DESCRIPTOR, seq);
    let jsb = JournalSuper {
        block_size: BS as u32,
        maxlen: 0,
        first: 0,
        sequence: 0,
        start: 0,
        compat: f.compat,
        incompat: f.incompat,
        csum_seed: seed(),
    };
    let tb = jsb.tag_bytes();
    let mut at = HEADER_SIZE;
    for (i, (blk, data, esc)) in tags.iter().enumerate() {
        let mut flags = 0u32;
        if i > 0 {
            flags |= tag_flag::SAME_UUID;
        }
        if i + 1 == tags.len() {
            flags |= tag_flag::LAST_TAG;
        }
        if *esc {
            flags |= tag_flag::ESCAPE;
        }
        put32(&mut b, at, *blk as u32);
        b[at + 6..at + 8].copy_from_slice(&(flags as u16).to_be_bytes());
        if f.incompat & feature::INCOMPAT_64BIT != 0 {
            put32(&mut b, at + 8, (*blk >> 32) as u32);
        }
        if f.incompat & feature::INCOMPAT_CSUM_V3 != 0 {
            let c = crc32c(crc32c(seed(), &seq.to_be_bytes()), data);
            put32(&mut b, at + 12, c);
        }
        at += tb;
        if i == 0 {
            b[at..at + 16].copy_from_slice(&UUID);
            at += 16;
        }
    }
    tail(f, &mut b);
    b
}

fn commit(f: Feat, seq: u32, time: u64) -> Vec<u8> {
    let mut b = header(blocktype::COMMIT, seq);
    b[0x30..0x38].copy_from_slice(&time.to_be_bytes());
    if is_csum(f) {
        let c = crc32c(seed(), &b);
        put32(&mut b, 16, c);
    }
    b
}

fn revoke(f: Feat, seq: u32, blocks: &[u64]) -> Vec<u8> {
    let mut b = header(blocktype::REVOKE, seq);
    let wide = f.incompat & feature::INCOMPAT_64BIT != 0;
    let mut at = REVOKE_HEADER_SIZE;
    for blk in blocks {
        if wide {
            b[at..at + 8].copy_from_slice(&blk.to_be_bytes());
            at += 8;
        } else {
            put32(&mut b, at, *blk as u32);
            at += 4;
        }
    }
    put32(&mut b, 12, at as u32);
    tail(f, &mut b);
    b
}

fn data(tag: u8) -> Vec<u8> {
    vec![tag; BS]
}

/// A journal of `len` blocks (all zero but the superblock), with `log` written from `start`
/// on (wrapping to block 1).
fn journal(f: Feat, len: u32, seq: u32, start: u32, log: Vec<Vec<u8>>) -> MemLog {
    let mut blocks = vec![vec![0u8; BS]; len as usize];
    blocks[0] = super_block(f, len, 1, seq, start);
    let mut at = start;
    for b in log {
        blocks[at as usize] = b;
        at += 1;
        if at == len {
            at = 1;
        }
    }
    MemLog(blocks)
}

fn run(log: &MemLog) -> Result<Replay> {
    let dev = device(vec![0u8; 4096]);
    let jsb = JournalSuper::parse(&dev, &log.0[0], BS as u64, log.0.len() as u64)?;
    recover(&dev, log, &jsb, 1 << 40)
}

fn phys_of(r: &Replay, blk: u64) -> Option<u64> {
    r.blocks.get(&blk).map(|x| x.phys - PHYS_BASE)
}

#[test]
fn later_copy_wins_revoke_and_escape() {
    for f in [PLAIN, CSUM3] {
        let (a, b, c) = (data(1), data(2), data(3));
        let mut esc = data(4);
        esc[..4].fill(0);
        let log = vec![
            descriptor(
                f,
                7,
                &[(100, &a, false), (101, &b, false), (102, &a, false)],
            ),
            a.clone(),
            b.clone(),
            a.clone(),
            commit(f, 7, 10),
            // Transaction 8: 100 again, 103 escaped, and revokes 101.
            revoke(f, 8, &[101]),
            descriptor(f, 8, &[(100, &c, false), (103, &esc, true)]),
            c.clone(),
            esc.clone(),
            commit(f, 8, 11),
            // Transaction 9: 102 logged, then revoked in transaction 10 (which logs nothing).
            descriptor(f, 9, &[(102, &c, false)]),
            c.clone(),
            commit(f, 9, 12),
            revoke(f, 10, &[102]),
            commit(f, 10, 13),
        ];
        let r = run(&journal(f, 64, 7, 5, log)).unwrap();
        assert_eq!(r.transactions, 4);
        assert_eq!(phys_of(&r, 100), Some(5 + 7), "the later copy of 100");
        assert_eq!(
            phys_of(&r, 101),
            None,
            "101 is revoked by a later transaction"
        );
        assert_eq!(
            phys_of(&r, 102),
            None,
            "102 is revoked by a later transaction"
        );
        assert_eq!(phys_of(&r, 103), Some(5 + 8));
        assert!(r.blocks[&103].escaped && !r.blocks[&100].escaped);
        assert_eq!(r.revoke_hits, 3);
    }
}

#[test]
fn revoke_in_same_transaction_and_earlier_revoke() {
    let f = PLAIN;
    let a = data(1);
    let log = vec![
        // A revoke of transaction 1 does not hide a copy logged by transaction 2.
        revoke(f, 1, &[50]),
        commit(f, 1, 1),
        revoke(f, 2, &[51]),
        descriptor(f, 2, &[(50, &a, false), (51, &a, false)]),
        a.clone(),
        a.clone(),
        commit(f, 2, 2),
    ];
    let r = run(&journal(f, 32, 1, 3, log)).unwrap();
    assert_eq!(phys_of(&r, 50), Some(3 + 4));
    assert_eq!(phys_of(&r, 51), None);
}

#[test]
fn wrapped_log() {
    let f = PLAIN;
    let (a, b) = (data(1), data(2));
    // 16 blocks, log starting at 13: the first transaction's data wraps to block 1.
    let log = vec![
        descriptor(f, 3, &[(10, &a, false), (11, &b, false), (12, &a, false)]),
        a.clone(),
        b.clone(),
        a.clone(),
        commit(f, 3, 1),
        descriptor(f, 4, &[(13, &b, false)]),
        b.clone(),
        commit(f, 4, 2),
    ];
    let r = run(&journal(f, 16, 3, 13, log)).unwrap();
    assert_eq!(r.transactions, 2);
    assert_eq!(phys_of(&r, 10), Some(14));
    assert_eq!(phys_of(&r, 11), Some(15));
    assert_eq!(phys_of(&r, 12), Some(1));
    assert_eq!(phys_of(&r, 13), Some(4));
}

#[test]
fn uncommitted_and_stale_transactions_are_ignored() {
    for f in [PLAIN, CSUM3] {
        let a = data(1);
        let log = vec![
            descriptor(f, 5, &[(20, &a, false)]),
            a.clone(),
            commit(f, 5, 1),
            // No commit for 6.
            descriptor(f, 6, &[(21, &a, false)]),
            a.clone(),
            // A commit of an old transaction after it: not 6, so the log ended before.
            commit(f, 2, 0),
        ];
        let r = run(&journal(f, 32, 5, 2, log)).unwrap();
        assert_eq!(r.transactions, 1);
        assert!(r.blocks.contains_key(&20) && !r.blocks.contains_key(&21));
        // A stale transaction (wrong sequence) after the committed one.
        let log = vec![
            descriptor(f, 5, &[(20, &a, false)]),
            a.clone(),
            commit(f, 5, 1),
            descriptor(f, 9, &[(22, &a, false)]),
            a.clone(),
            commit(f, 9, 2),
        ];
        let r = run(&journal(f, 32, 5, 2, log)).unwrap();
        assert_eq!(r.blocks.keys().copied().collect::<Vec<_>>(), vec![20]);
    }
}

#[test]
fn clean_journal_replays_nothing() {
    let r = run(&journal(PLAIN, 32, 5, 0, vec![])).unwrap();
    assert!(r.blocks.is_empty() && r.transactions == 0);
    // s_start set but nothing there: no transaction.
    let r = run(&journal(PLAIN, 32, 5, 3, vec![])).unwrap();
    assert!(r.blocks.is_empty());
}

#[test]
fn csum_v3_checks() {
    let f = CSUM3;
    let a = data(1);
    let good = || {
        vec![
            descriptor(f, 5, &[(20, &a, false)]),
            a.clone(),
            commit(f, 5, 1),
            descriptor(f, 6, &[(21, &a, false)]),
            a.clone(),
            commit(f, 6, 2),
        ]
    };
    assert_eq!(run(&journal(f, 32, 5, 2, good())).unwrap().blocks.len(), 2);
    // A commit block damaged past its header still passes the kernel's partial check (its
    // checksum over the header alone, the rest zero).
    let mut log = good();
    log[5][100] ^= 1;
    assert_eq!(run(&journal(f, 32, 5, 2, log)).unwrap().blocks.len(), 2);
    // A bad commit checksum ends the log before its transaction (no async_commit).
    let mut log = good();
    log[5][0x39] ^= 1;
    let r = run(&journal(f, 32, 5, 2, log)).unwrap();
    assert_eq!(r.blocks.keys().copied().collect::<Vec<_>>(), vec![20]);
    // A logged copy that does not match its tag checksum: the kernel's recovery fails.
    let mut log = good();
    log[4][7] ^= 1;
    let e = run(&journal(f, 32, 5, 2, log)).unwrap_err().to_string();
    assert!(e.contains("bad checksum of the copy of block 21"), "{e}");
    // A bad descriptor checksum followed by a commit not older than the last: corruption.
    let mut log = good();
    log[3][BS - 10] ^= 1;
    let e = run(&journal(f, 32, 5, 2, log)).unwrap_err().to_string();
    assert!(e.contains("bad checksum in transaction 6"), "{e}");
    // ... followed by an older commit: stale blocks, the log ends there.
    let mut log = good();
    log[3][BS - 10] ^= 1;
    log[5] = commit(f, 6, 0);
    let r = run(&journal(f, 32, 5, 2, log)).unwrap();
    assert_eq!(r.blocks.keys().copied().collect::<Vec<_>>(), vec![20]);
    // A bad journal superblock checksum.
    let mut j = journal(f, 32, 5, 2, good());
    j.0[0][0x200] ^= 1;
    let e = run(&j).unwrap_err().to_string();
    assert!(e.contains("journal superblock: checksum"), "{e}");
}

#[test]
fn v1_checksums() {
    let f = Feat {
        incompat: feature::INCOMPAT_REVOKE,
        compat: feature::COMPAT_CHECKSUM,
    };
    let a = data(9);
    let d = descriptor(f, 5, &[(20, &a, false)]);
    let crc = crc32_be(crc32_be(!0, &d), &a);
    let mut c = commit(f, 5, 1);
    c[12] = CRC32_CHKSUM;
    c[13] = CRC32_CHKSUM_SIZE;
    put32(&mut c, 16, crc);
    let r = run(&journal(f, 32, 5, 2, vec![d.clone(), a.clone(), c.clone()])).unwrap();
    assert!(r.blocks.contains_key(&20));
    put32(&mut c, 16, crc ^ 1);
    let r = run(&journal(f, 32, 5, 2, vec![d, a, c])).unwrap();
    assert!(r.blocks.is_empty());
}

#[test]
fn sixty_four_bit_tags() {
    let f = Feat {
        incompat: feature::INCOMPAT_REVOKE | feature::INCOMPAT_64BIT,
        compat: 0,
    };
    let a = data(1);
    let big = (3u64 << 32) | 17;
    let log = vec![
        descriptor(f, 1, &[(big, &a, false), (18, &a, false)]),
        a.clone(),
        a.clone(),
        commit(f, 1, 1),
        revoke(f, 2, &[18]),
        commit(f, 2, 2),
    ];
    let r = run(&journal(f, 32, 1, 1, log)).unwrap();
    assert_eq!(r.blocks.keys().copied().collect::<Vec<_>>(), vec![big]);
}

#[test]
fn hostile_superblocks() {
    let dev = device(vec![0u8; 4096]);
    let parse = |b: &[u8], total: u64| {
        JournalSuper::parse(&dev, b, BS as u64, total)
            .unwrap_err()
            .to_string()
    };
    let good = super_block(PLAIN, 32, 1, 1, 1);
    assert!(JournalSuper::parse(&dev, &good, BS as u64, 32).is_ok());
    assert!(parse(&good, 31).contains("s_maxlen 32 is more than"));
    let mut b = good.clone();
    put32(&mut b, 0x14, 0);
    assert!(parse(&b, 32).contains("s_first 0"));
    put32(&mut b, 0x14, 32);
    assert!(parse(&b, 32).contains("s_first 32"));
    let mut b = good.clone();
    put32(&mut b, 0x0C, 4096);
    assert!(parse(&b, 32).contains("block size 4096"));
    let mut b = good.clone();
    put32(&mut b, 0, 0x1234);
    assert!(parse(&b, 32).contains("magic"));
    let mut b = good.clone();
    put32(&mut b, 4, 2);
    assert!(parse(&b, 32).contains("block type 2"));
    for (bit, what) in [
        (0x40u32, "incompat 0x40"),
        (feature::INCOMPAT_FAST_COMMIT, "fast_commit"),
    ] {
        let mut b = good.clone();
        put32(&mut b, 0x28, bit);
        assert!(parse(&b, 32).contains(what), "{what}");
    }
    let mut b = good.clone();
    put32(&mut b, 0x2C, 1);
    assert!(parse(&b, 32).contains("ro_compat 0x1"));
    let b = super_block(
        Feat {
            incompat: feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3,
            compat: 0,
        },
        32,
        1,
        1,
        1,
    );
    assert!(parse(&b, 32).contains("both csum v2 and csum v3"));
    let mut b = good.clone();
    put32(&mut b, 0x10, u32::MAX);
    assert!(parse(&b, u64::MAX).contains("more than the limit"));
    // s_start past s_maxlen: the first read is refused.
    let j = journal(PLAIN, 32, 1, 40, vec![]);
    assert!(run(&j).unwrap_err().to_string().contains("past s_maxlen"));
}

#[test]
fn hostile_logs() {
    let f = PLAIN;
    let a = data(1);
    // A log that never ends: every block a one-tag descriptor of the same transaction whose
    // "data" block is the next descriptor; the walk must stop, not loop.
    let mut blocks = vec![descriptor(f, 4, &[(20, &a, false)]); 16];
    blocks[0] = super_block(f, 16, 1, 4, 1);
    let e = run(&MemLog(blocks)).unwrap_err().to_string();
    assert!(e.contains("runs on past"), "{e}");
    // A revoke block whose r_count is larger than the block.
    let mut r = revoke(f, 4, &[1]);
    put32(&mut r, 12, 5000);
    let e = run(&journal(f, 16, 4, 1, vec![r, commit(f, 4, 1)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("r_count 5000"), "{e}");
    // A descriptor without LAST_TAG, full of tags (each of 8 bytes + no uuid): its count of
    // data blocks wraps past the end of a short journal.
    let mut d = header(blocktype::DESCRIPTOR, 4);
    for k in 0..(BS - HEADER_SIZE) / 8 {
        put32(&mut d, HEADER_SIZE + k * 8, 20);
        d[HEADER_SIZE + k * 8 + 7] = tag_flag::SAME_UUID as u8;
    }
    let e = run(&journal(f, 16, 4, 1, vec![d, commit(f, 4, 1)])).unwrap_err();
    assert!(e.to_string().contains("journal"), "{e}");
    // A logged block past the device.
    let dev = device(vec![0u8; 4096]);
    let j = journal(
        f,
        16,
        4,
        1,
        vec![
            descriptor(f, 4, &[(5000, &a, false)]),
            a.clone(),
            commit(f, 4, 1),
        ],
    );
    let jsb = JournalSuper::parse(&dev, &j.0[0], BS as u64, 16).unwrap();
    let e = recover(&dev, &j, &jsb, 4096).unwrap_err().to_string();
    assert!(e.contains("past the device"), "{e}");
    // Garbage everywhere: an error or a result, never a panic.
    let mut x: u64 = 0x1234_5678;
    for round in 0..200 {
        let mut j = journal(
            f,
            16,
            4,
            1,
            vec![
                descriptor(f, 4, &[(20, &a, false), (21, &a, true)]),
                a.clone(),
                a.clone(),
                revoke(f, 4, &[20]),
                commit(f, 4, 1),
            ],
        );
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let blk = 1 + (x % 15) as usize;
            let at = ((x >> 8) % 64) as usize;
            j.0[blk][at] = (x >> 32) as u8 ^ round as u8;
        }
        let _ = run(&j);
    }
}

#[test]
fn overlay_reads_replacements() {
    // Device: 8 blocks of 1 KiB, block k filled with k; block 6 is the journal copy of block 2
    // (escaped), block 7 the copy of block 3.
    let mut disk = Vec::new();
    for k in 0..8u8 {
        disk.extend(std::iter::repeat_n(k, BS));
    }
    disk[6 * BS..6 * BS + 4].fill(0);
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        2,
        Replacement {
            phys: 6,
            escaped: true,
        },
    );
    map.insert(
        3,
        Replacement {
            phys: 7,
            escaped: false,
        },
    );
    let r = Replayed::new(Arc::new(Mem(disk.clone())), BS as u64, map);
    let mut want = disk[..6 * BS].to_vec();
    want[2 * BS..3 * BS].fill(6);
    want[2 * BS..2 * BS + 4].copy_from_slice(&JBD2_MAGIC.to_be_bytes());
    want[3 * BS..4 * BS].fill(7);
    for (off, len) in [
        (0, 6 * BS),
        (2 * BS + 2, 5),
        (2 * BS - 3, 10),
        (3 * BS + 1000, 2000),
    ] {
        let mut buf = vec![0u8; len];
        r.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, want[off..off + len], "read of {len} at {off}");
    }
    let mut buf = vec![0u8; 10];
    assert!(r.read_at(&mut buf, 8 * BS as u64 - 5).is_err());
}
