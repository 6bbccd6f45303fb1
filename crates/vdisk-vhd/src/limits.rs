//! Named limits and fixed sizes of the VHD format, each with its source: the "Virtual Hard Disk Image
//! Format Specification" (footer, dynamic disk header, BAT) and the constants and checks of QEMU's
//! block/vpc.c (`vpc_open`).

/// The sector size of every VHD (the spec counts the BAT and all offsets in 512-byte sectors).
pub const SECTOR_SIZE: u64 = 512;

/// Size of the hard disk footer (spec "Hard Disk Footer Format"; vpc.c `sizeof(VHDFooter)`).
pub const FOOTER_SIZE: usize = 512;

/// Size of the dynamic disk header (spec "Dynamic Disk Header Format"; vpc.c `sizeof(VHDDynDiskHeader)`),
/// which `vpc_open` reads whole.
pub const DYN_HEADER_SIZE: usize = 1024;

/// Cookie of the footer (spec: "conectix"; vpc.c compares 8 bytes with `strncmp`).
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";

/// Cookie of the dynamic disk header (spec: "cxsparse").
pub const DYN_HEADER_COOKIE: &[u8; 8] = b"cxsparse";

/// Largest virtual size qemu opens, in sectors: vpc.c `VHD_MAX_SECTORS` (0xff000000, 2040 GiB);
/// `vpc_open` fails with `EFBIG` above it.
pub const MAX_SECTORS: u64 = 0xff00_0000;

/// The largest CHS geometry, 65535 x 16 x 255 sectors: vpc.c `VHD_MAX_GEOMETRY`. An image with this
/// geometry takes its size from the footer's current size whoever created it.
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;

/// Smallest block size of a dynamic disk: one sector (`vpc_open`: "Invalid block size" below
/// `BDRV_SECTOR_SIZE`). The block size must also be a power of two; being a u32, it is at most 2^31.
pub const MIN_BLOCK_SIZE: u64 = SECTOR_SIZE;

/// Largest block size: the largest power of two a u32 holds (the spec's field is 4 bytes).
pub const MAX_BLOCK_SIZE: u64 = 1 << 31;

/// Most BAT entries qemu accepts: `INT_MAX / 4` (`vpc_open`: "Max Table Entries too large"), so that
/// the table's size in bytes fits an int. vdisk also requires the table to lie inside the file before
/// allocating it, which qemu finds after reading it ("The image has been truncated").
pub const MAX_TABLE_ENTRIES: u64 = (i32::MAX as u64) / 4;

/// Most blocks a virtual disk may span (`vpc_open`: "Too many blocks" when the size divided by the
/// block size exceeds 0xffffffff).
pub const MAX_BLOCKS: u64 = 0xffff_ffff;

/// BAT entry of a block never written (spec: "unused entries ... 0xFFFFFFFF"): reads as zeros.
pub const BAT_UNUSED: u32 = 0xffff_ffff;

/// Bytes of a BAT entry (a big-endian u32 sector number).
pub const BAT_ENTRY_SIZE: u64 = 4;

/// Size of the sector bitmap in front of each block, as vpc.c computes it: one bit per sector,
/// rounded up to whole sectors (`bitmap_size` in `vpc_open`).
pub fn bitmap_size(block_size: u32) -> u64 {
    (u64::from(block_size) / (8 * SECTOR_SIZE)).next_multiple_of(SECTOR_SIZE)
}

/// A file length as qemu's `bdrv_getlength` reports it for a file: rounded up to whole sectors.
/// `vpc_open` locates the fixed-disk footer and checks truncation against this length.
pub fn qemu_file_length(len: u64) -> u64 {
    len.div_ceil(SECTOR_SIZE).saturating_mul(SECTOR_SIZE)
}

/// The largest CHS geometry's parts (vpc.c `VHD_CHS_MAX_C`, `_H`, `_S`): `force_size` images carry
/// it, so that every reader takes their size from the footer's current size.
pub const CHS_MAX_CYLINDERS: u16 = 65535;
pub const CHS_MAX_HEADS: u8 = 16;
pub const CHS_MAX_SECTORS_PER_TRACK: u8 = 255;

/// Block size of the dynamic disks qemu creates (`create_dynamic_disk`: 0x200000).
pub const CREATE_BLOCK_SIZE: u32 = 0x0020_0000;

/// Where `create_dynamic_disk` puts the BAT: after the footer copy (512 bytes) and the dynamic
/// header (1024 bytes), at sector 3.
pub const CREATE_BAT_OFFSET: u64 = 3 * SECTOR_SIZE;

/// The footer's timestamp counts seconds from 2000-01-01 00:00:00 UTC (vpc.c
/// `VHD_TIMESTAMP_BASE`, in Unix time).
pub const TIMESTAMP_BASE: u64 = 946_684_800;

/// The creator version qemu writes: Virtual PC 2007, 5.3 (`vpc_co_create`).
pub const CREATOR_VERSION: u32 = 0x0005_0003;

/// The footer's features field qemu writes: "reserved, must always be set" (0x2).
pub const FEATURES_RESERVED: u32 = 0x0000_0002;

/// The format version of the footer and of the dynamic header (1.0).
pub const FORMAT_VERSION: u32 = 0x0001_0000;
