//! Inodes (ext4 docs "Index Nodes"): located through their group's inode table, 128 bytes of
//! the original ext2 inode plus `i_extra_isize` bytes of extra fields (nanosecond and epoch
//! bits of the times) and in-inode extended attributes up to `s_inode_size`.

use super::group::read_desc;
use super::superblock::{incompat, Super};
use crate::bytes::{bytes_at, u16_at, u32_at};
use crate::device::Device;
use crate::{FileKind, Node};
use vdisk_core::Result;

/// `i_flags` bits.
pub mod flags {
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
    pub const CASEFOLD: u32 = 0x4000_0000;
}

/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;

/// An inode as read, with its raw bytes (for inline data and its attributes).
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub flags: u32,
    /// `i_blocks` in 512-byte units.
    pub blocks_512: u64,
    pub file_acl: u64,
    /// `i_extra_isize` (0 for 128-byte inodes).
    pub extra_isize: u16,
    /// The whole on-disk inode, `s_inode_size` bytes.
    pub raw: Vec<u8>,
}

impl Inode {
    /// `i_block`, the 60 bytes holding block maps, extent roots, inline data or fast links.
    pub fn i_block(&self) -> &[u8] {
        bytes_at(&self.raw, 0x28, 60)
    }

    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(u32::from(self.mode))
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// The device number of a character or block device (the kernel's old or new encoding in
    /// `i_block[0]` or `i_block[1]`).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        if !matches!(self.kind(), FileKind::CharDevice | FileKind::BlockDevice) {
            return None;
        }
        let old = u32_at(self.i_block(), 0);
        if old != 0 {
            return Some(((old >> 8) & 0xff, old & 0xff));
        }
        let new = u32_at(self.i_block(), 4);
        Some(((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00)))
    }

    pub fn node(&self) -> Node {
        Node {
            id: u64::from(self.ino),
            kind: self.kind(),
            size: self.size,
            mode: u32::from(self.mode),
            uid: self.uid,
            gid: self.gid,
            nlink: u32::from(self.links),
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            rdev: self.rdev(),
        }
    }
}

/// Reads inode `ino`.
pub fn read_inode(dev: &Device, sb: &Super, ino: u64) -> Result<Inode> {
    if ino == 0 || ino > u64::from(sb.inodes_count) {
        return Err(dev.corrupt(
            None,
            format!("inode number {ino} is outside 1..={}", sb.inodes_count),
        ));
    }
    let ipg = u64::from(sb.inodes_per_group);
    let group = (ino - 1) / ipg;
    let index = (ino - 1) % ipg;
    let desc = read_desc(dev, sb, group)?;
    let isize = u64::from(sb.inode_size);
    let table_blocks = (ipg * isize).div_ceil(sb.block_size);
    if desc
        .inode_table
        .checked_add(table_blocks)
        .is_none_or(|end| end > sb.blocks_count || desc.inode_table == 0)
    {
        return Err(dev.corrupt(
            None,
            format!(
                "group {group}: inode table at block {} is outside the filesystem",
                desc.inode_table
            ),
        ));
    }
    let off = desc.inode_table * sb.block_size + index * isize;
    let raw = dev.read_vec(off, usize::from(sb.inode_size), "inode")?;
    let at = Some(off);
    let extra_isize = if sb.inode_size > 128 {
        let e = u16_at(&raw, 0x80);
        if 128 + u32::from(e) > u32::from(sb.inode_size) || e % 4 != 0 {
            return Err(dev.corrupt(at, format!("inode {ino}: i_extra_isize {e}")));
        }
        e
    } else {
        0
    };
    let mode = u16_at(&raw, 0x00);
    let links = u16_at(&raw, 0x1A);
    if links == 0 {
        return Err(dev.corrupt(at, format!("inode {ino} is deleted (i_links_count 0)")));
    }
    let size_lo = u64::from(u32_at(&raw, 0x04));
    let size = if sb.has_incompat(incompat::LARGEDIR)
        || FileKind::from_mode(u32::from(mode)) == FileKind::Regular
    {
        size_lo | (u64::from(u32_at(&raw, 0x6C)) << 32)
    } else {
        size_lo
    };
    if size > i64::MAX as u64 {
        return Err(dev.corrupt(at, format!("inode {ino}: size {size}")));
    }
    let base = i64::from(u32_at(&raw, 0x10) as i32);
    let (mtime, mtime_nsec) = if extra_isize >= 0x0C {
        let extra = u32_at(&raw, 0x88);
        (base + (i64::from(extra & 3) << 32), extra >> 2)
    } else {
        (base, 0)
    };
    let flags = u32_at(&raw, 0x20);
    let blocks_hi = if sb.has_ro_compat(super::superblock::ro_compat::HUGE_FILE) {
        u64::from(u16_at(&raw, 0x74))
    } else {
        0
    };
    let mut blocks_512 = u64::from(u32_at(&raw, 0x1C)) | (blocks_hi << 32);
    if flags & flags::HUGE_FILE != 0 {
        blocks_512 = blocks_512.saturating_mul(sb.block_size / 512);
    }
    Ok(Inode {
        ino: ino as u32,
        mode,
        uid: u32::from(u16_at(&raw, 0x02)) | (u32::from(u16_at(&raw, 0x78)) << 16),
        gid: u32::from(u16_at(&raw, 0x18)) | (u32::from(u16_at(&raw, 0x7A)) << 16),
        size,
        links,
        mtime,
        mtime_nsec,
        flags,
        blocks_512,
        file_acl: u64::from(u32_at(&raw, 0x68)) | (u64::from(u16_at(&raw, 0x76)) << 32),
        extra_isize,
        raw,
    })
}
