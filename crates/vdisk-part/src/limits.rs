//! Named bounds on what a partition table read from an untrusted image may make vdisk do.

/// Bytes per sector: image files are read with 512-byte logical sectors, as `sfdisk` and the
/// kernel's loop devices read them by default.
pub const SECTOR_SIZE: u64 = 512;

/// The most partition entries a GPT header may declare (UEFI 2.10 section 5.3.2 requires room
/// for at least 128; tools create 128). Beyond this the header is refused before anything is
/// allocated.
pub const MAX_GPT_ENTRIES: u32 = 16384;

/// The largest GPT partition entry (the spec's 128 bytes times a power of two; 128 in practice).
pub const MAX_GPT_ENTRY_SIZE: u32 = 4096;

/// The most bytes of GPT partition entry array read (entries times entry size).
pub const MAX_GPT_ARRAY_BYTES: u64 = 4 << 20;

/// The highest partition number of an MBR disk: libfdisk's MAXIMUM_PARTS. The chain of extended
/// boot records (logical partitions from 5) is followed no further, so a chain that loops or goes
/// on forever ends there, as sfdisk ends it ("Omitting partitions after #60").
pub const MAX_PARTITION_NUMBER: u32 = 60;
