//! XFS version 2 directories ("XFS Algorithms & Data Structures", chapter "Directories"):
//! short form in the inode (`xfs_dir2_sf_hdr` and its entries, 4- or 8-byte inode numbers),
//! and the data blocks of block, leaf and node directories (`XD2B`/`XD2D`, `XDB3`/`XDD3` with
//! the v5 header), whose entries and unused regions tile each block. Every entry of a
//! directory lies in a data block; the leaf and free-index blocks beyond them only index the
//! entries, so listing reads the data blocks alone.

use super::superblock::Super;
use crate::bytes::{be16_at, be32_at, be64_at, u8_at};
use crate::device::Device;
use vdisk_core::Result;

/// `XD2B`, `XDB3`: a single-block directory (its leaf at the block's end).
const BLOCK_V4: u32 = 0x5844_3242;
const BLOCK_V5: u32 = 0x5844_4233;
/// `XD2D`, `XDD3`: a data block of a leaf or node directory.
const DATA_V4: u32 = 0x5844_3244;
const DATA_V5: u32 = 0x5844_4433;
/// Header bytes of a data block: magic and the best-free table (v4), or the v5 block header,
/// the table and padding.
const HDR_V4: usize = 16;
const HDR_V5: usize = 64;
/// The tag of an unused region.
const FREE_TAG: u16 = 0xffff;

/// One directory entry: its name and inode number.
pub type Entry = (Vec<u8>, u64);

/// Entries of a short-form directory (`data`: the fork's first `di_size` bytes), without `.`
/// and `..` (which it does not store).
pub fn short_form(dev: &Device, sb: &Super, data: &[u8], ino: u64) -> Result<Vec<Entry>> {
    let bad = |what: &str| dev.corrupt(None, format!("short-form directory inode {ino}: {what}"));
    let count = usize::from(u8_at(data, 0));
    let wide = u8_at(data, 1) != 0;
    let ino_len = if wide { 8 } else { 4 };
    let mut p = 2 + ino_len;
    let read_ino = |at: usize| {
        if wide {
            be64_at(data, at)
        } else {
            u64::from(be32_at(data, at))
        }
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let namelen = usize::from(u8_at(data, p));
        let name_at = p + 3;
        let ino_at = name_at + namelen + usize::from(sb.ftype);
        let end = ino_at + ino_len;
        if namelen == 0 || end > data.len() {
            return Err(bad("an entry runs past the directory"));
        }
        out.push((data[name_at..name_at + namelen].to_vec(), read_ino(ino_at)));
        p = end;
    }
    Ok(out)
}

/// Appends the entries of one directory data block (`b`, a whole directory block) to `out`,
/// without `.` and `..`; `at` is its directory offset, for errors.
pub fn data_block(dev: &Device, sb: &Super, b: &[u8], at: u64, out: &mut Vec<Entry>) -> Result<()> {
    let bad = |what: String| dev.corrupt(None, format!("directory block at {at}: {what}"));
    let magic = be32_at(b, 0);
    let (hdr, block_magic, data_magic) = if sb.is_v5() {
        (HDR_V5, BLOCK_V5, DATA_V5)
    } else {
        (HDR_V4, BLOCK_V4, DATA_V4)
    };
    let end = if magic == data_magic {
        b.len()
    } else if magic == block_magic {
        // The tail (leaf count, stale count) and the leaf entries before it.
        let leaves = u64::from(be32_at(b, b.len() - 8));
        let leaf_bytes = leaves.checked_mul(8).and_then(|n| n.checked_add(8));
        match leaf_bytes {
            Some(n) if n <= (b.len() - hdr) as u64 => b.len() - n as usize,
            _ => return Err(bad(format!("{leaves} leaf entries do not fit"))),
        }
    } else {
        return Err(bad(format!("magic 0x{magic:08x}")));
    };
    let mut p = hdr;
    while p < end {
        if be16_at(b, p) == FREE_TAG {
            let len = usize::from(be16_at(b, p + 2));
            if len < 8 || len % 8 != 0 || p + len > end {
                return Err(bad(format!("unused region of {len} bytes at {p}")));
            }
            p += len;
            continue;
        }
        let namelen = usize::from(u8_at(b, p + 8));
        // inumber, namelen, name, file type, tag; rounded up to 8 bytes.
        let size = (8 + 1 + namelen + usize::from(sb.ftype) + 2).next_multiple_of(8);
        if namelen == 0 || p + size > end {
            return Err(bad(format!("entry at {p} runs past the block")));
        }
        let name = &b[p + 9..p + 9 + namelen];
        if name != b"." && name != b".." {
            out.push((name.to_vec(), be64_at(b, p)));
        }
        p += size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(v5: bool, ftype: bool) -> Super {
        let mut s = Super::parse(&crate::xfs::superblock::sample()).unwrap();
        s.version = if v5 { 5 } else { 4 };
        s.ftype = ftype;
        s
    }

    #[test]
    fn short_form_with_4_and_8_byte_inode_numbers() {
        let dev = crate::testmem::device(Vec::new());
        // count 2, i8count 0, parent 128; "a" -> 131 (ftype 1), "bc" -> 132.
        let mut d = vec![2, 0, 0, 0, 0, 128];
        d.extend([1, 0, 0x30, b'a', 1, 0, 0, 0, 131]);
        d.extend([2, 0, 0x40, b'b', b'c', 1, 0, 0, 0, 132]);
        let e = short_form(&dev, &sb(true, true), &d, 128).unwrap();
        assert_eq!(e, vec![(b"a".to_vec(), 131), (b"bc".to_vec(), 132)]);
        // The same with 8-byte numbers and no file type.
        let mut d = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 128];
        d.extend([1, 0, 0x30, b'z', 0, 0, 0, 1, 0, 0, 0, 5]);
        let e = short_form(&dev, &sb(false, false), &d, 128).unwrap();
        assert_eq!(e, vec![(b"z".to_vec(), (1 << 32) | 5)]);
        // An entry cut short.
        assert!(short_form(&dev, &sb(false, false), &d[..d.len() - 1], 128).is_err());
    }

    #[test]
    fn data_block_entries_and_free_regions() {
        let dev = crate::testmem::device(Vec::new());
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&DATA_V4.to_be_bytes());
        let mut p = HDR_V4;
        for (name, ino) in [(&b"."[..], 128u64), (b"..", 128), (b"file", 140)] {
            b[p..p + 8].copy_from_slice(&ino.to_be_bytes());
            b[p + 8] = name.len() as u8;
            b[p + 9..p + 9 + name.len()].copy_from_slice(name);
            p += (8 + 1 + name.len() + 2).next_multiple_of(8);
        }
        b[p..p + 2].copy_from_slice(&FREE_TAG.to_be_bytes());
        b[p + 2..p + 4].copy_from_slice(&((512 - p) as u16).to_be_bytes());
        let mut out = Vec::new();
        data_block(&dev, &sb(false, false), &b, 0, &mut out).unwrap();
        assert_eq!(out, vec![(b"file".to_vec(), 140)]);
        // A free region that overruns the block.
        b[p + 2..p + 4].copy_from_slice(&1024u16.to_be_bytes());
        assert!(data_block(&dev, &sb(false, false), &b, 0, &mut Vec::new()).is_err());
    }
}
