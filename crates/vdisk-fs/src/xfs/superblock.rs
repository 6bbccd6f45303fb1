//! The XFS superblock (`struct xfs_dsb`, "XFS Algorithms & Data Structures", chapter
//! "Allocation Groups", section "Superblocks"): the geometry every other structure's address
//! is computed from, parsed from the first sector of the device and checked for the ranges and
//! relations vdisk-fs relies on. Pure parsing: no I/O.

use crate::bytes::{be16_at, be32_at, be64_at, bytes_at, u8_at};
use crate::limits::XFS_MAX_AGCOUNT;

/// `XFSB`.
pub const MAGIC: u32 = 0x5846_5342;

/// Bytes of the superblock fields read (through `sb_meta_uuid`).
pub const SUPERBLOCK_SIZE: usize = 264;

/// `sb_versionnum` bits (XFS_SB_VERSION_*BIT).
pub mod version {
    /// The low four bits: the superblock version, 4 or 5.
    pub const NUMBITS: u16 = 0x000f;
    /// Version 2 directories (every v4 filesystem since 2001; v5 has only those).
    pub const DIRV2: u16 = 0x2000;
    /// `sb_features2` is valid.
    pub const MOREBITS: u16 = 0x8000;
}

/// `sb_features2` of a version 4 superblock: directory entries carry the file type.
pub const FEATURES2_FTYPE: u32 = 0x200;

/// `sb_features_incompat` bits of a version 5 superblock (XFS_SB_FEAT_INCOMPAT_*).
pub mod incompat {
    /// Directory entries carry the file type.
    pub const FTYPE: u32 = 1 << 0;
    /// Sparse inode chunks.
    pub const SPINODES: u32 = 1 << 1;
    /// `sb_meta_uuid` is the UUID in metadata headers.
    pub const META_UUID: u32 = 1 << 2;
    /// Timestamps of inodes may be 64-bit nanosecond counters.
    pub const BIGTIME: u32 = 1 << 3;
    /// xfs_repair must run before the next mount.
    pub const NEEDSREPAIR: u32 = 1 << 4;
    /// Inodes may have 64-bit extent counters.
    pub const NREXT64: u32 = 1 << 5;
    /// File contents may be exchanged atomically (log format only).
    pub const EXCHRANGE: u32 = 1 << 6;
    /// Parent pointers (in extended attributes).
    pub const PARENT: u32 = 1 << 7;
    /// The bits vdisk-fs reads a filesystem with: none of them changes where file data,
    /// directories or inodes lie.
    pub const KNOWN: u32 =
        FTYPE | SPINODES | META_UUID | BIGTIME | NEEDSREPAIR | NREXT64 | EXCHRANGE | PARENT;
}

/// The superblock, as checked.
#[derive(Debug, Clone)]
pub struct Super {
    /// 4 or 5 (v5: CRCs, self-describing metadata with longer headers).
    pub version: u16,
    pub block_size: u64,
    pub block_log: u32,
    pub dblocks: u64,
    /// Real-time blocks: files there lie on another device.
    pub rblocks: u64,
    pub uuid: [u8; 16],
    /// First block of an internal log, 0 for an external log device.
    pub log_start: u64,
    pub root_ino: u64,
    pub ag_blocks: u64,
    pub ag_count: u64,
    pub log_blocks: u64,
    pub sect_size: u64,
    pub inode_size: u64,
    pub inode_log: u32,
    pub inop_block_log: u32,
    pub ag_block_log: u32,
    pub fname: [u8; 12],
    pub imax_pct: u8,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    /// Directory block size as a power of two of blocks.
    pub dir_block_log: u32,
    pub features_ro_compat: u32,
    pub features_incompat: u32,
    /// Directory entries carry a file type byte.
    pub ftype: bool,
}

/// `sb_features_ro_compat` bits used by [`crate::xfs::usage`].
pub mod ro_compat {
    pub const FINOBT: u32 = 1 << 0;
    pub const RMAPBT: u32 = 1 << 1;
    pub const REFLINK: u32 = 1 << 2;
}

fn log2_exact(v: u64) -> Option<u32> {
    v.is_power_of_two().then(|| v.trailing_zeros())
}

impl Super {
    /// Whether `b` starts with the XFS superblock magic.
    pub fn has_magic(b: &[u8]) -> bool {
        be32_at(b, 0) == MAGIC
    }

    /// Parses and checks the superblock; the error says which field is wrong.
    pub fn parse(b: &[u8]) -> Result<Super, String> {
        if !Self::has_magic(b) {
            return Err("no XFS superblock magic".into());
        }
        let versionnum = be16_at(b, 100);
        let version = versionnum & version::NUMBITS;
        if version != 4 && version != 5 {
            return Err(format!("superblock version {version} (4 and 5 are read)"));
        }
        if version == 4 && versionnum & version::DIRV2 == 0 {
            return Err("version 1 directories (pre-2001 XFS) are not read".into());
        }
        if u8_at(b, 126) != 0 {
            return Err("mkfs.xfs did not finish (sb_inprogress is set)".into());
        }
        let block_size = u64::from(be32_at(b, 4));
        let block_log = log2_exact(block_size)
            .filter(|l| (9..=16).contains(l) && u32::from(u8_at(b, 120)) == *l)
            .ok_or_else(|| format!("block size {block_size} (512 to 65536, a power of two)"))?;
        let sect_size = u64::from(be16_at(b, 102));
        log2_exact(sect_size)
            .filter(|l| (9..=15).contains(l) && *l <= block_log)
            .ok_or_else(|| format!("sector size {sect_size}"))?;
        let inode_size = u64::from(be16_at(b, 104));
        let inode_log = log2_exact(inode_size)
            .filter(|l| (8..=11).contains(l) && *l <= block_log && u32::from(u8_at(b, 122)) == *l)
            .ok_or_else(|| format!("inode size {inode_size} (256 to 2048, a power of two)"))?;
        let inop_block_log = block_log - inode_log;
        if u32::from(u8_at(b, 123)) != inop_block_log
            || u64::from(be16_at(b, 106)) != block_size / inode_size
        {
            return Err("inodes per block do not match the block and inode sizes".into());
        }
        let ag_blocks = u64::from(be32_at(b, 84));
        let ag_block_log = u32::from(u8_at(b, 124));
        // sb_agblklog is the log2 of sb_agblocks rounded up; an AG inode number (agino) is
        // 32 bits: AG block bits plus inode-in-block bits.
        if ag_blocks < 2
            || ag_block_log > 31
            || ag_block_log + inop_block_log > 32
            || ag_blocks > 1u64 << ag_block_log
            || ag_blocks <= 1u64 << ag_block_log >> 1
        {
            return Err(format!(
                "allocation group of {ag_blocks} blocks with sb_agblklog {ag_block_log}"
            ));
        }
        let ag_count = u64::from(be32_at(b, 88));
        if ag_count == 0 || ag_count > XFS_MAX_AGCOUNT {
            return Err(format!(
                "{ag_count} allocation groups (1 to {XFS_MAX_AGCOUNT} are read)"
            ));
        }
        let dblocks = be64_at(b, 8);
        let whole = ag_count
            .checked_mul(ag_blocks)
            .ok_or("allocation groups overflow")?;
        if dblocks == 0 || dblocks > whole || dblocks <= whole - ag_blocks {
            return Err(format!(
                "{dblocks} data blocks do not fit {ag_count} allocation groups of {ag_blocks}"
            ));
        }
        let dir_block_log = u32::from(u8_at(b, 192));
        if block_log + dir_block_log > 16 {
            return Err(format!(
                "directory blocks of 2^{dir_block_log} blocks (at most 64 KiB)"
            ));
        }
        let features2 = if versionnum & version::MOREBITS != 0 {
            be32_at(b, 200)
        } else {
            0
        };
        let (features_ro_compat, features_incompat) = if version == 5 {
            (be32_at(b, 212), be32_at(b, 216))
        } else {
            (0, 0)
        };
        let unknown = features_incompat & !incompat::KNOWN;
        if unknown != 0 {
            return Err(format!(
                "incompatible features 0x{unknown:x} that vdisk-fs does not read"
            ));
        }
        let ftype = if version == 5 {
            features_incompat & incompat::FTYPE != 0
        } else {
            features2 & FEATURES2_FTYPE != 0
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(bytes_at(b, 32, 16));
        let mut fname = [0u8; 12];
        fname.copy_from_slice(bytes_at(b, 108, 12));
        Ok(Super {
            version,
            block_size,
            block_log,
            dblocks,
            rblocks: be64_at(b, 16),
            uuid,
            log_start: be64_at(b, 48),
            root_ino: be64_at(b, 56),
            ag_blocks,
            ag_count,
            log_blocks: u64::from(be32_at(b, 96)),
            sect_size,
            inode_size,
            inode_log,
            inop_block_log,
            ag_block_log,
            fname,
            imax_pct: u8_at(b, 127),
            icount: be64_at(b, 128),
            ifree: be64_at(b, 136),
            fdblocks: be64_at(b, 144),
            dir_block_log,
            features_ro_compat,
            features_incompat,
            ftype,
        })
    }

    /// Whether this is a version 5 (CRC) filesystem.
    pub fn is_v5(&self) -> bool {
        self.version == 5
    }

    /// The byte offset of block `agbno` of allocation group `agno`, if both are in range.
    fn ag_byte(&self, agno: u64, agbno: u64) -> Option<u64> {
        if agno >= self.ag_count || agbno >= self.ag_blocks {
            return None;
        }
        agno.checked_mul(self.ag_blocks)?
            .checked_add(agbno)?
            .checked_mul(self.block_size)
    }

    /// The byte offset of filesystem block `fsb` (AG number in the bits above `sb_agblklog`)
    /// and the blocks from it to the end of its allocation group.
    pub fn fsb_to_byte(&self, fsb: u64) -> Option<(u64, u64)> {
        let agno = fsb >> self.ag_block_log;
        let agbno = fsb & ((1u64 << self.ag_block_log) - 1);
        Some((self.ag_byte(agno, agbno)?, self.ag_blocks - agbno))
    }

    /// The byte offset of inode `ino` (AG number, block in the AG, inode in the block).
    pub fn inode_byte(&self, ino: u64) -> Option<u64> {
        let agino_bits = self.ag_block_log + self.inop_block_log;
        let agno = ino.checked_shr(agino_bits).unwrap_or(0);
        let agino = ino & ((1u64 << agino_bits) - 1);
        let agbno = agino >> self.inop_block_log;
        let slot = agino & ((1u64 << self.inop_block_log) - 1);
        self.ag_byte(agno, agbno)?
            .checked_add(slot << self.inode_log)
    }

    /// Bytes of a directory block.
    pub fn dir_block_size(&self) -> u64 {
        self.block_size << self.dir_block_log
    }

    /// The byte offset of sector `n` of allocation group `agno` (its AGF is sector 1, its AGI
    /// sector 2).
    pub fn ag_sector_byte(&self, agno: u64, n: u64) -> Option<u64> {
        self.ag_byte(agno, 0)?.checked_add(n * self.sect_size)
    }
}

/// A v5 superblock as mkfs.xfs 6.1 writes it for a 300 MiB device (4 AGs of 19200 blocks).
#[cfg(test)]
pub(crate) fn sample() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&4096u32.to_be_bytes());
    b[8..16].copy_from_slice(&76800u64.to_be_bytes());
    b[56..64].copy_from_slice(&128u64.to_be_bytes());
    b[84..88].copy_from_slice(&19200u32.to_be_bytes());
    b[88..92].copy_from_slice(&4u32.to_be_bytes());
    b[100..102].copy_from_slice(&0xb4a5u16.to_be_bytes());
    b[102..104].copy_from_slice(&512u16.to_be_bytes());
    b[104..106].copy_from_slice(&512u16.to_be_bytes());
    b[106..108].copy_from_slice(&8u16.to_be_bytes());
    b[120] = 12;
    b[121] = 9;
    b[122] = 9;
    b[123] = 3;
    b[124] = 15;
    b[216..220].copy_from_slice(&0xbu32.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_geometry_and_addresses() {
        let sb = Super::parse(&sample()).unwrap();
        assert!(sb.is_v5() && sb.ftype);
        // Inode 262272 is in AG 1 (agino bits 15 + 3), block 16, slot 0.
        assert_eq!(sb.inode_byte(262272), Some((19200 + 16) * 4096));
        assert_eq!(sb.inode_byte(131), Some(16 * 4096 + 3 * 512));
        assert_eq!(
            sb.fsb_to_byte((1 << 15) | 100),
            Some(((19200 + 100) * 4096, 19100))
        );
        // Block 19200 of an AG does not exist (agblocks 19200), nor does AG 4.
        assert_eq!(sb.fsb_to_byte(19200), None);
        assert_eq!(sb.inode_byte(4 << 18), None);
    }

    #[test]
    fn refuses_each_bad_field() {
        let cases: [(usize, &[u8], &str); 6] = [
            (4, &3000u32.to_be_bytes(), "block size"),
            (88, &0u32.to_be_bytes(), "allocation groups"),
            (84, &70000u32.to_be_bytes(), "allocation group of"),
            (8, &999_999u64.to_be_bytes(), "data blocks"),
            (
                216,
                &0x8000u32.to_be_bytes(),
                "incompatible features 0x8000",
            ),
            (126, &[1], "did not finish"),
        ];
        for (at, bytes, want) in cases {
            let mut b = sample();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            let e = Super::parse(&b).unwrap_err();
            assert!(e.contains(want), "{at}: {e}");
        }
    }
}
