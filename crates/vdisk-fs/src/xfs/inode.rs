//! XFS inodes (`struct xfs_dinode`, "XFS Algorithms & Data Structures", chapter "On-disk
//! Inode"): the core (versions 1 and 2 of v4 filesystems, 3 of v5), its timestamps (classic
//! seconds and nanoseconds, or the bigtime nanosecond counter), and the data fork that follows
//! it (the literal area up to the attribute fork offset).

use super::superblock::Super;
use crate::bytes::{be16_at, be32_at, be64_at, u8_at};
use crate::device::Device;
use crate::{FileKind, Node};
use vdisk_core::Result;

/// `IN`.
pub const MAGIC: u16 = 0x494e;

/// `di_format`: how the data fork is stored.
pub mod format {
    /// A device number (character and block devices, fifos, sockets).
    pub const DEV: u8 = 0;
    /// The data itself (short directories and symlinks).
    pub const LOCAL: u8 = 1;
    /// An array of extent records.
    pub const EXTENTS: u8 = 2;
    /// The root of a block-map btree.
    pub const BTREE: u8 = 3;
}

/// `di_flags`: the file lies on the real-time device.
pub const FLAG_REALTIME: u16 = 0x1;

/// `di_flags2` bits.
pub mod flags2 {
    /// Timestamps are nanosecond counters (XFS_DIFLAG2_BIGTIME).
    pub const BIGTIME: u64 = 1 << 3;
    /// The extent counters are 64-bit (XFS_DIFLAG2_NREXT64).
    pub const NREXT64: u64 = 1 << 4;
}

/// Bytes of the inode core before the literal area: versions 1 and 2, and version 3.
const CORE_V2: usize = 100;
const CORE_V3: usize = 176;

/// Seconds between the bigtime epoch (1901-12-13T20:45:52Z) and the Unix epoch.
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// An inode, as checked.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub format: u8,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    /// Extents of the data fork (`di_nextents`, or `di_big_nextents`).
    pub nextents: u64,
    pub flags: u16,
    /// The data fork: the literal area up to the attribute fork.
    pub fork: Vec<u8>,
}

impl Inode {
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(u32::from(self.mode))
    }

    /// The device number of a character or block device: XFS stores `major << 18 | minor`
    /// and Linux keeps 9 bits of the major (`xfs_to_linux_dev_t`).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        match self.kind() {
            FileKind::CharDevice | FileKind::BlockDevice if self.format == format::DEV => {
                let dev = be32_at(&self.fork, 0);
                Some(((dev >> 18) & 0x1ff, dev & 0x3ffff))
            }
            _ => None,
        }
    }

    pub fn node(&self) -> Node {
        Node {
            id: self.ino,
            kind: self.kind(),
            size: self.size,
            mode: u32::from(self.mode),
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            rdev: self.rdev(),
        }
    }
}

/// A timestamp at `off`: seconds and nanoseconds, or a bigtime counter.
fn timestamp(b: &[u8], off: usize, bigtime: bool) -> (i64, u32) {
    if bigtime {
        let t = be64_at(b, off);
        let secs = (t / 1_000_000_000) as i64 - BIGTIME_EPOCH_OFFSET;
        (secs, (t % 1_000_000_000) as u32)
    } else {
        (i64::from(be32_at(b, off) as i32), be32_at(b, off + 4))
    }
}

/// Reads and checks inode `ino`.
pub fn read_inode(dev: &Device, sb: &Super, ino: u64) -> Result<Inode> {
    let at = sb.inode_byte(ino).ok_or_else(|| {
        dev.corrupt(
            None,
            format!("inode number {ino} is outside the filesystem"),
        )
    })?;
    let b = dev.read_vec(at, sb.inode_size as usize, "inode")?;
    let bad = |what: String| dev.corrupt(Some(at), format!("inode {ino}: {what}"));
    if be16_at(&b, 0) != MAGIC {
        return Err(bad("no inode magic".into()));
    }
    let version = u8_at(&b, 4);
    let core = match (version, sb.is_v5()) {
        (1 | 2, false) => CORE_V2,
        (3, true) => CORE_V3,
        _ => return Err(bad(format!("inode version {version}"))),
    };
    if version == 3 && be64_at(&b, 152) != ino {
        return Err(bad(format!("records inode number {}", be64_at(&b, 152))));
    }
    let flags2 = if version == 3 { be64_at(&b, 120) } else { 0 };
    let nextents = if flags2 & flags2::NREXT64 != 0 {
        be64_at(&b, 24)
    } else {
        u64::from(be32_at(&b, 76))
    };
    let forkoff = usize::from(u8_at(&b, 82)) * 8;
    let literal = b.len() - core;
    let fork_len = if forkoff == 0 { literal } else { forkoff };
    if fork_len > literal {
        return Err(bad(format!("attribute fork offset {forkoff}")));
    }
    let size = be64_at(&b, 56);
    if size > i64::MAX as u64 {
        return Err(bad(format!("size {size}")));
    }
    let (mtime, mtime_nsec) = timestamp(&b, 40, flags2 & flags2::BIGTIME != 0);
    Ok(Inode {
        ino,
        mode: be16_at(&b, 2),
        format: u8_at(&b, 5),
        uid: be32_at(&b, 8),
        gid: be32_at(&b, 12),
        nlink: if version == 1 {
            u32::from(be16_at(&b, 6))
        } else {
            be32_at(&b, 16)
        },
        mtime,
        mtime_nsec,
        size,
        nextents,
        flags: be16_at(&b, 90),
        fork: b[core..core + fork_len].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_classic_and_bigtime() {
        let mut b = vec![0u8; 16];
        b[0..4].copy_from_slice(&(-5i32).to_be_bytes());
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(timestamp(&b, 0, false), (-5, 7));
        // 2^31 s past the bigtime epoch is the Unix epoch; plus 1.5 s.
        let t: u64 = ((1u64 << 31) + 1) * 1_000_000_000 + 500_000_000;
        b[8..16].copy_from_slice(&t.to_be_bytes());
        assert_eq!(timestamp(&b, 8, true), (1, 500_000_000));
        assert_eq!(timestamp(&[0u8; 8], 0, true), (-(1i64 << 31), 0));
    }
}
