//! Named limits and fixed sizes of the VDI format, each with its source: VirtualBox's
//! `src/VBox/Storage/VDICore.h` (structure sizes, `VDI_DATA_ALIGN`) and `VDI.cpp` (`vdiValidateHeader`),
//! and QEMU's `block/vdi.c` (`VDI_BLOCKS_IN_IMAGE_MAX`, sector size checks in `vdi_open`).

/// Size of the pre-header: 64 bytes of text, the signature and the version (`VDIPREHEADER`).
pub const PRE_HEADER_SIZE: u64 = 0x48;

/// Size of the text at the start of the file (`VDIPREHEADER.szFileInfo`).
pub const TEXT_SIZE: usize = 64;

/// Size of the image description (`VDI_IMAGE_COMMENT_SIZE`).
pub const COMMENT_SIZE: usize = 256;

/// Smallest header size of a version 1.x image: `sizeof(VDIHEADER1)`; `vdiValidateHeader` refuses less.
pub const MIN_HEADER_SIZE_V1: u32 = 0x180;

/// `sizeof(VDIHEADER1PLUS)`, the header VirtualBox writes (VDIHEADER1 plus the LCHS geometry).
pub const HEADER_SIZE_V1_PLUS: u32 = 0x190;

/// `sizeof(VDIHEADER0)`, the header of version 0 images, whose block map follows it directly
/// (`getImageBlocksOffset` in VDICore.h).
pub const HEADER_SIZE_V0: u64 = 348;

/// The only sector size VDI knows (`VDI_GEOMETRY_SECTOR_SIZE`); QEMU refuses other values.
pub const SECTOR_SIZE: u64 = 512;

/// The default and, for QEMU, the only block size (`VDI_IMAGE_DEFAULT_BLOCK_SIZE`, `DEFAULT_CLUSTER_SIZE`).
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Smallest block size vdisk accepts: one sector (VDICore.h requires a power of two; smaller blocks
/// could not hold a sector).
pub const MIN_BLOCK_SIZE: u64 = SECTOR_SIZE;

/// Largest block size vdisk accepts. VirtualBox's `AllocationBlockSize` is a free u32 but only the
/// 1 MiB default is used in practice; 256 MiB bounds the buffers the writer and `resize` allocate.
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;

/// Largest per-block extra data (`cbBlockExtra`, VDICore.h: "should be a power of 2"), bounded like a
/// block.
pub const MAX_BLOCK_EXTRA: u64 = MAX_BLOCK_SIZE;

/// Most blocks an image may have: QEMU's `VDI_BLOCKS_IN_IMAGE_MAX`, (INT_MAX + 1 - 512) / 4, so that
/// the block map rounded up to a sector fits an int. The map is read whole into memory (4 bytes a
/// block: at most 2 GiB, as in QEMU) and must also lie inside the file, which bounds what is read.
pub const MAX_BLOCKS: u64 = 0x1fff_ff80;

/// Largest disk size QEMU opens or creates (`VDI_DISK_SIZE_MAX`: [`MAX_BLOCKS`] blocks of 1 MiB),
/// whatever the block size of the image.
pub const MAX_DISK_SIZE: u64 = MAX_BLOCKS * DEFAULT_BLOCK_SIZE;

/// Alignment VirtualBox uses for the block map and the data area of new images (`VDI_DATA_ALIGN`).
pub const DATA_ALIGN: u64 = 1 << 20;

/// Block map entry of a block never written (`VDI_IMAGE_BLOCK_FREE`): reads as zeros in a base image.
pub const BLOCK_FREE: u32 = 0xffff_ffff;

/// Block map entry of a block known to be zero (`VDI_IMAGE_BLOCK_ZERO`, QEMU's `VDI_DISCARDED`).
pub const BLOCK_ZERO: u32 = 0xffff_fffe;
