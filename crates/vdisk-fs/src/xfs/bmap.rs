//! Where a block of an XFS file lies ("XFS Algorithms & Data Structures", chapter "Data
//! Extents"): the 128-bit extent records (`xfs_bmbt_rec`: unwritten flag, file offset, start
//! block, length) of an extents-format fork, or the block-map btree of a btree-format fork,
//! its root in the inode (`xfs_bmdr_block`) and its blocks (`BMAP`, or `BMA3` with the v5
//! header), descended by key from the root to the leaf that maps the block.

use super::inode::{format, Inode};
use super::superblock::Super;
use crate::bytes::{be16_at, be32_at, be64_at};
use crate::device::Device;
use crate::limits::XFS_MAX_BMAP_LEVELS;
use vdisk_core::Result;

/// `BMAP`: a block-map btree block of a v4 filesystem.
const MAGIC_V4: u32 = 0x424d_4150;
/// `BMA3`: the same with the v5 self-describing header.
const MAGIC_V5: u32 = 0x424d_4133;
/// Header bytes of a long-format btree block: v4, and v5 (blkno, lsn, uuid, owner, crc).
const HDR_V4: usize = 24;
const HDR_V5: usize = 72;
/// `NULLFSBLOCK`: no sibling.
const NULL_BLOCK: u64 = u64::MAX;

/// One extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// File block of the first block.
    pub offset: u64,
    /// Filesystem block (AG number above `sb_agblklog`).
    pub start: u64,
    pub len: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
}

impl Extent {
    /// Decodes the record at `b[off..off + 16]`.
    pub fn parse(b: &[u8], off: usize) -> Extent {
        let l0 = be64_at(b, off);
        let l1 = be64_at(b, off + 8);
        Extent {
            unwritten: l0 >> 63 != 0,
            offset: (l0 & ((1 << 63) - 1)) >> 9,
            start: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            len: l1 & ((1 << 21) - 1),
        }
    }

    fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// What a file block maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `len` blocks (at least 1) from filesystem block `start`.
    Data {
        start: u64,
        len: u64,
        unwritten: bool,
    },
    /// A hole of `len` blocks, or to the end of the file when `None`.
    Hole { len: Option<u64> },
}

/// The mapping of file block `lblk` among `records`, in any order.
fn map_in(records: impl Iterator<Item = Extent>, lblk: u64) -> Mapping {
    let mut next: Option<u64> = None;
    for e in records {
        if e.len == 0 {
            continue;
        }
        if e.offset <= lblk && lblk < e.end() {
            let skip = lblk - e.offset;
            return Mapping::Data {
                start: e.start.saturating_add(skip),
                len: e.len - skip,
                unwritten: e.unwritten,
            };
        }
        if e.offset > lblk {
            next = Some(next.map_or(e.offset, |n| n.min(e.offset)));
        }
    }
    Mapping::Hole {
        len: next.map(|n| n - lblk),
    }
}

/// Records `0..n` of a record array at `at`, checked to fit `b`.
fn records(dev: &Device, b: &[u8], at: usize, n: u64, what: &str) -> Result<Vec<Extent>> {
    let room = (b.len().saturating_sub(at) / 16) as u64;
    if n > room {
        return Err(dev.corrupt(None, format!("{what}: {n} extent records where {room} fit")));
    }
    Ok((0..n as usize)
        .map(|i| Extent::parse(b, at + i * 16))
        .collect())
}

/// The index of the last key not above `lblk` (the first when all are above it).
fn child_index(keys: &[u8], n: usize, lblk: u64) -> usize {
    (0..n)
        .take_while(|&i| be64_at(keys, i * 8) <= lblk)
        .last()
        .unwrap_or(0)
}

/// Where file block `lblk` of `inode`'s data fork lies.
pub fn map(dev: &Device, sb: &Super, inode: &Inode, lblk: u64) -> Result<Mapping> {
    let what = format!("inode {} block map", inode.ino);
    match inode.format {
        format::EXTENTS => {
            let recs = records(dev, &inode.fork, 0, inode.nextents, &what)?;
            Ok(map_in(recs.into_iter(), lblk))
        }
        format::BTREE => map_btree(dev, sb, inode, lblk, &what),
        f => Err(dev.corrupt(None, format!("{what}: data fork format {f} maps no blocks"))),
    }
}

/// A long-format btree block at filesystem block `fsb`, checked to be at `level`.
fn btree_block(dev: &Device, sb: &Super, fsb: u64, level: u64, what: &str) -> Result<Vec<u8>> {
    let (at, _) = sb
        .fsb_to_byte(fsb)
        .ok_or_else(|| dev.corrupt(None, format!("{what}: btree block {fsb} out of range")))?;
    let b = dev.read_vec(at, sb.block_size as usize, "block map btree block")?;
    let magic = if sb.is_v5() { MAGIC_V5 } else { MAGIC_V4 };
    if be32_at(&b, 0) != magic || u64::from(be16_at(&b, 4)) != level {
        return Err(dev.corrupt(
            Some(at),
            format!("{what}: not a block map btree block of level {level}"),
        ));
    }
    Ok(b)
}

fn map_btree(dev: &Device, sb: &Super, inode: &Inode, lblk: u64, what: &str) -> Result<Mapping> {
    let root = &inode.fork;
    let mut level = be16_at(root, 0);
    if level == 0 || level > XFS_MAX_BMAP_LEVELS {
        return Err(dev.corrupt(None, format!("{what}: btree root of level {level}")));
    }
    // The root: level, count, then as many keys as fit the fork before the pointers.
    let root_max = (root.len().saturating_sub(4)) / 16;
    let mut n = usize::from(be16_at(root, 2));
    if n == 0 || n > root_max {
        return Err(dev.corrupt(None, format!("{what}: btree root of {n} records")));
    }
    let i = child_index(&root[4..], n, lblk);
    let mut ptr = be64_at(root, 4 + root_max * 8 + i * 8);
    let hdr = if sb.is_v5() { HDR_V5 } else { HDR_V4 };
    let block_max = (sb.block_size as usize - hdr) / 16;
    loop {
        level -= 1;
        let b = btree_block(dev, sb, ptr, u64::from(level), what)?;
        n = usize::from(be16_at(&b, 6));
        if level == 0 {
            let recs = records(dev, &b, hdr, n as u64, what)?;
            let m = map_in(recs.iter().copied(), lblk);
            let right = be64_at(&b, 16);
            return match m {
                // Past this leaf's last record: the hole ends where the next leaf begins.
                Mapping::Hole { len: None } if right != NULL_BLOCK => {
                    let next = btree_block(dev, sb, right, 0, what)?;
                    let first =
                        records(dev, &next, hdr, u64::from(be16_at(&next, 6)).min(1), what)?;
                    Ok(Mapping::Hole {
                        len: first
                            .first()
                            .filter(|e| e.offset > lblk)
                            .map(|e| e.offset - lblk)
                            .or(Some(1)),
                    })
                }
                m => Ok(m),
            };
        }
        if n == 0 || n > block_max {
            return Err(dev.corrupt(None, format!("{what}: btree node of {n} records")));
        }
        let i = child_index(&b[hdr..], n, lblk);
        ptr = be64_at(&b, hdr + block_max * 8 + i * 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(unwritten: bool, offset: u64, start: u64, len: u64) -> [u8; 16] {
        let l0 = (u64::from(unwritten) << 63) | (offset << 9) | (start >> 43);
        let l1 = (start << 21) | len;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&l0.to_be_bytes());
        b[8..].copy_from_slice(&l1.to_be_bytes());
        b
    }

    #[test]
    fn record_fields_round_trip_at_their_widths() {
        let max = Extent {
            unwritten: true,
            offset: (1 << 54) - 1,
            start: (1 << 52) - 1,
            len: (1 << 21) - 1,
        };
        let b = rec(true, max.offset, max.start, max.len);
        assert_eq!(Extent::parse(&b, 0), max);
        let b = rec(false, 7, 0x1_2345_6789, 3);
        assert_eq!(
            Extent::parse(&b, 0),
            Extent {
                unwritten: false,
                offset: 7,
                start: 0x1_2345_6789,
                len: 3
            }
        );
    }

    #[test]
    fn maps_data_and_holes_between_records() {
        let recs = [
            Extent::parse(&rec(false, 10, 100, 5), 0),
            Extent::parse(&rec(true, 2, 50, 3), 0),
        ];
        let m = |l| map_in(recs.iter().copied(), l);
        assert_eq!(m(0), Mapping::Hole { len: Some(2) });
        assert_eq!(
            m(3),
            Mapping::Data {
                start: 51,
                len: 2,
                unwritten: true
            }
        );
        assert_eq!(m(5), Mapping::Hole { len: Some(5) });
        assert_eq!(
            m(14),
            Mapping::Data {
                start: 104,
                len: 1,
                unwritten: false
            }
        );
        assert_eq!(m(15), Mapping::Hole { len: None });
    }
}
