//! Named bounds on what an untrusted filesystem may make vdisk-fs do: each says which on-disk
//! field it bounds. Values past a limit are refused with [`vdisk_core::Error::Limit`] or a
//! corruption error, before anything proportional to them is allocated or walked.

/// The largest ext block size, 64 KiB: `s_log_block_size` at most 6 (the kernel's
/// EXT4_MAX_BLOCK_LOG_SIZE is 16, i.e. 1024 << 6).
pub const EXT_MAX_BLOCK_SIZE: u64 = 65536;

/// The most block groups (`s_blocks_count` / `s_blocks_per_group`) whose descriptors
/// [`crate::Filesystem::usage`] sums: 2^22 groups is 512 TiB with 4 KiB blocks.
pub const EXT_MAX_GROUPS: u64 = 1 << 22;

/// The deepest extent tree (`eh_depth`): the kernel's EXT4_MAX_EXTENT_DEPTH.
pub const EXT_MAX_EXTENT_DEPTH: u16 = 5;

/// The largest directory (`i_size` of a directory inode) read: 256 MiB, several million entries.
pub const EXT_MAX_DIR_SIZE: u64 = 256 << 20;

/// The most entries one `read_dir` returns (directory entries, ext and FAT).
pub const MAX_DIR_ENTRIES: usize = 1 << 20;

/// The longest symbolic link target read (`i_size` of a symlink inode): the kernel's PATH_MAX
/// (4096) less its NUL; longer ones are refused as the kernel refuses them.
pub const MAX_SYMLINK_SIZE: u64 = 4095;

/// How many symbolic links one path resolution follows: Linux's MAXSYMLINKS (ELOOP after 40).
pub const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// The longest path resolved, in bytes, after symlink expansion: Linux's PATH_MAX per link
/// followed bounds it anyway; this is the overall cap on the work list.
pub const MAX_PATH_BYTES: usize = 64 * 1024;

/// The most nested directories a walk lists, the start included ([`crate::walk::walk_listed`],
/// [`crate::walk::walk`], `vdisk ls -R`): the kernel sets no such limit, so this one only
/// bounds the work on a hostile filesystem (each level costs heap, not stack).
pub const MAX_WALK_DEPTH: usize = 4096;

/// The largest FAT sector (`BPB_BytsPerSec`): fatgen103 allows 512, 1024, 2048, 4096.
pub const FAT_MAX_SECTOR_SIZE: u32 = 4096;

/// The most clusters of a FAT32 volume: fatgen103's 0x0FFFFFF5 reserved values above it.
pub const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;

/// The largest FAT directory: fatgen103 says a directory holds at most 65536 32-byte entries,
/// 2 MiB; a directory's cluster chain (which has no size field) is followed no further.
pub const FAT_MAX_DIR_BYTES: u64 = 65536 * 32;

/// The most long-name entries before a short entry: 255 UTF-16 units, 13 an entry (fatgen103
/// "Long Directory Entries": ordinals 1 to 20).
pub const FAT_MAX_LFN_ENTRIES: u8 = 20;

/// Bytes of the FAT read at once and cached while following chains.
pub const FAT_CACHE_CHUNK: u64 = 64 * 1024;

/// The longest jbd2 journal replayed, in blocks (`s_maxlen` of the journal superblock, also
/// bounded by the journal inode's size): above mke2fs's largest journal (10,240,000 blocks).
/// Each recovery pass reads at most this many journal blocks.
pub const EXT_JOURNAL_MAX_BLOCKS: u64 = 1 << 24;

/// The most distinct filesystem blocks a journal replay replaces (the block tags of the
/// committed descriptor blocks): each costs one entry in memory, a journal block number.
pub const EXT_JOURNAL_MAX_REPLAYED: u64 = 1 << 22;

/// The most distinct blocks named by the revoke records (`r_count` of each revoke block) of
/// one journal replay.
pub const EXT_JOURNAL_MAX_REVOKES: u64 = 1 << 22;

/// The most allocation groups (`sb_agcount`) an XFS filesystem may have: mkfs.xfs makes a few
/// to a few thousand; each costs one header read when usage is summed.
pub const XFS_MAX_AGCOUNT: u64 = 1 << 20;

/// The deepest block-map btree of an XFS file (`bb_level` of the inode's root): XFS's own
/// bound for 2^48 extents is under 10 levels (XFS_BM_MAXLEVELS).
pub const XFS_MAX_BMAP_LEVELS: u16 = 10;

/// The longest XFS directory data space read (`di_size` of a block, leaf or node directory):
/// as [`EXT_MAX_DIR_SIZE`].
pub const XFS_MAX_DIR_SIZE: u64 = EXT_MAX_DIR_SIZE;

/// The longest XFS symbolic link target: XFS_SYMLINK_MAXLEN (the kernel refuses longer ones).
pub const XFS_MAX_SYMLINK_SIZE: u64 = 1024;
