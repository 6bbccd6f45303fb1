//! The ext2/3/4 superblock (ext4 docs "Super Block": 1024 bytes at byte 1024 of the device) and
//! its feature flags: what is checked before anything else is read, and how blkid names the
//! filesystem (ext2, ext3, ext4) from its features.

use crate::bytes::{bytes_at, u16_at, u32_at};
use crate::device::Device;
use crate::limits::{EXT_MAX_BLOCK_SIZE, EXT_MAX_GROUPS};

/// Where the superblock is, and its size.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT_MAGIC: u16 = 0xEF53;

pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
}

/// `s_feature_incompat` bits.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// What vdisk-fs reads: everything else (compression, dirdata, unknown bits) is refused.
    /// `encrypt` and `casefold` are accepted for the files they do not touch: encrypted files
    /// and lookups in casefolded directories are refused one by one.
    pub const SUPPORTED: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// `s_feature_ro_compat` bits.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
}

/// `s_flags`: a filesystem for in-development code (blkid calls it ext4dev).
const FLAGS_TEST_FILESYS: u32 = 0x4;

/// What vdisk-fs uses of the superblock, checked.
#[derive(Debug, Clone)]
pub struct Super {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub first_data_block: u32,
    pub block_size: u64,
    /// log2 of the cluster size in blocks (0 without bigalloc).
    pub cluster_bits: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub first_ino: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub reserved_gdt_blocks: u16,
    pub journal_inum: u32,
    /// `s_journal_dev`: the device number of an external journal.
    pub journal_dev: u32,
    pub desc_size: u16,
    pub first_meta_bg: u32,
    pub overhead_clusters: u32,
    pub backup_bgs: [u32; 2],
    pub flags: u32,
    /// Block groups.
    pub groups: u64,
}

impl Super {
    /// Whether the first 1024 bytes at 1024 carry the ext magic.
    pub fn has_magic(sb: &[u8]) -> bool {
        u16_at(sb, 0x38) == EXT_MAGIC
    }

    /// Parses and checks the superblock (`sb` is its 1024 bytes).
    pub fn parse(dev: &Device, sb: &[u8]) -> vdisk_core::Result<Super> {
        let at = Some(SUPERBLOCK_OFFSET);
        let bad = |what: String| dev.corrupt(at, format!("superblock: {what}"));
        if !Self::has_magic(sb) {
            return Err(bad(format!(
                "magic {:#06x}, expected 0xef53",
                u16_at(sb, 0x38)
            )));
        }
        let rev_level = u32_at(sb, 0x4C);
        let log_block = u32_at(sb, 0x18);
        if log_block > 6 {
            return Err(bad(format!(
                "s_log_block_size {log_block} (more than 64 KiB blocks)"
            )));
        }
        let block_size = 1024u64 << log_block;
        debug_assert!(block_size <= EXT_MAX_BLOCK_SIZE);
        let incompat = u32_at(sb, 0x60);
        let ro_compat = u32_at(sb, 0x64);
        let (inode_size, first_ino) = if rev_level == 0 {
            (128u16, 11u32)
        } else {
            (u16_at(sb, 0x58), u32_at(sb, 0x54))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
            return Err(bad(format!("inode size {inode_size}")));
        }
        let blocks_hi = if incompat & incompat::BIT64 != 0 {
            u64::from(u32_at(sb, 0x150))
        } else {
            0
        };
        let blocks_count = u64::from(u32_at(sb, 0x04)) | (blocks_hi << 32);
        let r_hi = if incompat & incompat::BIT64 != 0 {
            u64::from(u32_at(sb, 0x154))
        } else {
            0
        };
        let r_blocks_count = u64::from(u32_at(sb, 0x08)) | (r_hi << 32);
        let first_data_block = u32_at(sb, 0x14);
        let blocks_per_group = u32_at(sb, 0x20);
        let inodes_per_group = u32_at(sb, 0x28);
        let inodes_count = u32_at(sb, 0x00);
        let cluster_bits = if ro_compat & ro_compat::BIGALLOC != 0 {
            let log_cluster = u32_at(sb, 0x1C);
            if log_cluster < log_block || log_cluster - log_block > 16 {
                return Err(bad(format!("s_log_cluster_size {log_cluster}")));
            }
            log_cluster - log_block
        } else {
            0
        };
        // The kernel's checks in ext4_fill_super, in the order that matters here.
        if blocks_per_group == 0 || u64::from(blocks_per_group) > (block_size * 8) << cluster_bits {
            return Err(bad(format!("s_blocks_per_group {blocks_per_group}")));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > block_size * 8 {
            return Err(bad(format!("s_inodes_per_group {inodes_per_group}")));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(bad(format!(
                "s_first_data_block {first_data_block} not below s_blocks_count {blocks_count}"
            )));
        }
        if block_size == 1024 && first_data_block == 0 {
            return Err(bad("s_first_data_block 0 with 1 KiB blocks".into()));
        }
        let dev_blocks = dev.size() / block_size;
        if blocks_count > dev_blocks {
            return Err(bad(format!(
                "s_blocks_count {blocks_count} is more than the device's {dev_blocks} blocks"
            )));
        }
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        if groups > EXT_MAX_GROUPS {
            return Err(dev.limit("ext block groups", groups, EXT_MAX_GROUPS));
        }
        if groups.checked_mul(u64::from(inodes_per_group)) != Some(u64::from(inodes_count)) {
            return Err(bad(format!(
                "s_inodes_count {inodes_count} is not {groups} groups of {inodes_per_group}"
            )));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return Err(bad(format!("s_first_ino {first_ino}")));
        }
        let desc_size = if incompat & incompat::BIT64 != 0 {
            let d = u16_at(sb, 0xFE);
            if d < 64 || u64::from(d) > block_size || !d.is_power_of_two() {
                return Err(bad(format!("s_desc_size {d}")));
            }
            d
        } else {
            32
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(bytes_at(sb, 0x68, 16));
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(bytes_at(sb, 0x78, 16));
        Ok(Super {
            inodes_count,
            blocks_count,
            r_blocks_count,
            first_data_block,
            block_size,
            cluster_bits,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            first_ino,
            compat: u32_at(sb, 0x5C),
            incompat,
            ro_compat,
            uuid,
            volume_name,
            reserved_gdt_blocks: u16_at(sb, 0xCE),
            journal_inum: u32_at(sb, 0xE0),
            journal_dev: u32_at(sb, 0xE4),
            desc_size,
            first_meta_bg: u32_at(sb, 0x104),
            overhead_clusters: u32_at(sb, 0x248),
            backup_bgs: [u32_at(sb, 0x24C), u32_at(sb, 0x250)],
            flags: u32_at(sb, 0x160),
            groups,
        })
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.ro_compat & bit != 0
    }

    /// Group descriptors per block.
    pub fn descs_per_block(&self) -> u64 {
        self.block_size / u64::from(self.desc_size)
    }

    /// The name blkid gives the filesystem: see [`blkid_type`].
    pub fn blkid_type(&self) -> &'static str {
        blkid_type(self.compat, self.incompat, self.ro_compat, self.flags)
    }

    /// Whether group `g` holds a copy of the superblock (ext4 docs "Block Groups": group 0, and
    /// with sparse_super groups 1 and the powers of 3, 5 and 7; sparse_super2 names two).
    pub fn group_has_super(&self, g: u64) -> bool {
        const SPARSE_SUPER2: u32 = 0x200;
        if g == 0 {
            return true;
        }
        if self.compat & SPARSE_SUPER2 != 0 {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = base;
            while n < g {
                n *= base;
            }
            n == g
        })
    }

    /// Group descriptor blocks stored in group `g` (the kernel's ext4_bg_num_gdb).
    pub fn group_desc_blocks(&self, g: u64) -> u64 {
        let dpb = self.descs_per_block();
        let metagroup = g / dpb;
        if !self.has_incompat(incompat::META_BG) || metagroup < u64::from(self.first_meta_bg) {
            if !self.group_has_super(g) {
                return 0;
            }
            return if self.has_incompat(incompat::META_BG) {
                u64::from(self.first_meta_bg)
            } else {
                self.groups.div_ceil(dpb)
            };
        }
        let first = metagroup * dpb;
        u64::from(g == first || g == first + 1 || g == first + dpb - 1)
    }
}

/// The name blkid gives an ext filesystem (libblkid's superblocks/ext.c) from its feature words
/// and `s_flags`: `ext4dev` with the test flag; `ext3` with a journal and no feature ext3 lacks;
/// `ext2` without a journal and no feature ext2 lacks; `ext4` otherwise.
pub fn blkid_type(compat: u32, incompat: u32, ro_compat: u32, flags: u32) -> &'static str {
    const EXT2_RO_SUPP: u32 =
        ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE | ro_compat::BTREE_DIR;
    const EXT2_INCOMPAT_SUPP: u32 = incompat::FILETYPE | incompat::META_BG;
    const EXT3_INCOMPAT_SUPP: u32 = EXT2_INCOMPAT_SUPP | incompat::RECOVER;
    if flags & FLAGS_TEST_FILESYS != 0 {
        return "ext4dev";
    }
    let journal = compat & compat::HAS_JOURNAL != 0;
    let ro_extra = ro_compat & !EXT2_RO_SUPP != 0;
    if journal && !ro_extra && incompat & !EXT3_INCOMPAT_SUPP == 0 {
        "ext3"
    } else if !journal && !ro_extra && incompat & !EXT2_INCOMPAT_SUPP == 0 {
        "ext2"
    } else {
        "ext4"
    }
}
