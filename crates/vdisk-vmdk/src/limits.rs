//! Named limits on values read from VMDK files, so that no hostile header or descriptor can make vdisk
//! allocate or loop without bound. Each limit names the part of VMware's "Virtual Disk Format 1.1/5.0"
//! technical note (or qemu's block/vmdk.c behaviour) it comes from.
//!
//! Memory of an opened image, whatever its descriptor lists (issue 9; measured and asserted by
//! tests/extent_memory.rs): about 110 bytes per extent line (the parsed line, 48 bytes, and the
//! placed extent, 64, plus its file name), for at most [`MAX_EXTENTS`] lines in at most
//! [`MAX_DESCRIPTOR_BYTES`]; one name per distinct file; at most `2 * MAX_OPEN_FILES` open files
//! and `2 * MAX_OPEN_SPARSE` loaded sparse extents (see [`MAX_OPEN_FILES`], [`SPARSE_SHARE`]),
//! whose grain directories hold at most `2 * GD_CACHE_ENTRIES` entries (8 bytes each; a single
//! larger directory, up to [`MAX_GD_ENTRIES`], is held alone), whose grain tables share
//! [`GT_CACHE_TOTAL_BYTES`] and whose decompressed grains share [`GRAIN_CACHE_TOTAL_BYTES`]. A
//! reading thread may in addition hold one extent evicted while it reads. `info` builds qemu's
//! per-extent list on top of this: about 600 bytes per extent (an ordered JSON object and a child
//! file entry), 20 MiB for [`MAX_EXTENTS`].

/// Bytes in a VMDK sector: every offset and size in a sparse header and a descriptor counts these
/// ("Hosted Sparse Extent Header": all sizes are in sectors of 512 bytes).
pub const SECTOR: u64 = 512;

/// Largest text descriptor, embedded or standalone. The spec says a descriptor is "a few hundred bytes"
/// and VMware reserves 20 sectors for the embedded one; qemu refuses standalone descriptors of 1 MiB or
/// more ("File too large").
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// Most extent lines in one descriptor ("Extent Descriptions": a twoGbMaxExtent disk of the largest
/// hosted size, 62 TiB, needs 31744 extents of 2 GiB).
pub const MAX_EXTENTS: usize = 32768;

/// Largest grain ("Hosted Sparse Extent Header", grainSize: a power of 2 greater than 8 sectors; VMware
/// writes 128 sectors = 64 KiB). Grains are decompressed into buffers of this size, so it is capped at
/// 16 MiB.
pub const MAX_GRAIN_SECTORS: u64 = 32768;

/// Smallest grain accepted (the spec requires grainSize > 8 sectors but qemu accepts 1; ESXi seSparse
/// uses 8). A grain of at least one sector.
pub const MIN_GRAIN_SECTORS: u64 = 1;

/// Grain table entries per grain table. The spec fixes numGTEsPerGT at 512; qemu refuses larger values
/// ("L2 table size too big").
pub const MAX_GTES_PER_GT: u32 = 512;

/// Grain table entries per grain table of an ESX `COWD` extent ("ESX Server Sparse Extents": fixed at
/// 4096).
pub const COWD_GTES_PER_GT: u32 = 4096;

/// Largest virtual size of one extent or of the whole disk, in bytes: qemu's INT64_MAX image limit.
pub const MAX_VIRTUAL_BYTES: u64 = i64::MAX as u64;

/// Most grain directory entries read into memory for one extent (8 bytes each in memory: 128 MiB).
/// With 64 KiB grains and 512 entries per table this covers 512 PiB; the directory must also lie
/// inside the file.
pub const MAX_GD_ENTRIES: u64 = 1 << 24;

/// Most bytes read for one compressed grain ("Stream-Optimized Compressed Sparse Extents", grain
/// marker size field): deflate never expands data by more than a few bytes per 16 KiB block, so
/// anything beyond the grain size plus this slack is corrupt.
pub const COMPRESSED_SLACK_BYTES: u64 = 4096;

/// Bytes of grain tables kept in the reader's caches, shared out among the sparse extents of an image
/// that can be loaded at once (8192 hosted tables of 2 KiB, or 512 seSparse tables of 32 KiB): each
/// loaded extent caches `GT_CACHE_TOTAL_BYTES / table size / min(sparse extents, SPARSE_SHARE)`
/// tables, at least [`GT_CACHE_MIN`].
pub const GT_CACHE_TOTAL_BYTES: u64 = 16 << 20;

/// Fewest grain tables cached per loaded sparse extent. With [`SPARSE_SHARE`] this still keeps the
/// total within [`GT_CACHE_TOTAL_BYTES`] (128 extents x 4 seSparse tables of 32 KiB = 16 MiB).
pub const GT_CACHE_MIN: usize = 4;

/// Most sparse extents loaded at once (grain directory, grain-table cache, open file) while the
/// image is open ("Extent Descriptions": a twoGbMaxExtentSparse disk has one per 2 GiB). The first
/// [`MAX_OPEN_SPARSE`] sparse extents whose directories fit in [`GD_CACHE_ENTRIES`] stay loaded from
/// open on; the others are loaded on first use into a least-recently-used set of [`MAX_OPEN_SPARSE`]
/// extents and [`GD_CACHE_ENTRIES`] directory entries (one larger directory is kept alone). The
/// caches are divided among this many extents.
pub const SPARSE_SHARE: usize = 2 * MAX_OPEN_SPARSE;

/// Sparse extents kept loaded from open on, and the size of the set of extents loaded on use
/// (see [`SPARSE_SHARE`]): 64 extents of 2 GiB cover a 128 GiB twoGbMaxExtentSparse disk with no
/// reloading.
pub const MAX_OPEN_SPARSE: usize = 64;

/// Grain directory entries held by the sparse extents kept loaded from open on, and separately by
/// those loaded on use (8 bytes each in memory: 32 MiB each). A 2 GiB extent with 64 KiB grains has
/// 64 entries.
pub const GD_CACHE_ENTRIES: u64 = 1 << 22;

/// Distinct extent files kept open from open on ("Extent Descriptions": every extent line names a
/// file; twoGbMaxExtent disks have one file per 2 GiB). Every file is opened once when the image is
/// opened, so that a missing one is an open error as in qemu; beyond this many, handles are closed
/// and reopened on use through a least-recently-used set of as many. With the sparse extents
/// (which hold their file) at most `2 * MAX_OPEN_FILES + 2 * MAX_OPEN_SPARSE` = 384 descriptors are
/// open, below the usual soft limit of 1024 however many extents the descriptor lists.
pub const MAX_OPEN_FILES: usize = 128;

/// Most bytes of decompressed grains kept (one per compressed extent) across an image.
pub const GRAIN_CACHE_TOTAL_BYTES: u64 = 64 << 20;

/// Most grain directory entries summed over all extents of one image. Each sparse extent is read
/// once when the image is opened (header and grain directory checked, as qemu does), so this bounds
/// the work of opening; what stays in memory is bounded by [`GD_CACHE_ENTRIES`]. A 62 TiB disk of
/// 64 KiB grains has 2^21 entries in all.
pub const MAX_TOTAL_GD_ENTRIES: u64 = 1 << 24;

/// Most grains one block-status call scans ("Grain Tables": 2^20 grains is 64 GiB with 64 KiB grains),
/// so one call never runs long on a huge hostile capacity; callers loop.
pub const MAX_STATUS_GRAINS: u64 = 1 << 20;

/// Longest descriptor line accepted, as read and as written back: room for the longest
/// `parentFileNameHint` QEMU opens (4095 bytes, `desc_checks`) with its key and quotes, 4115
/// bytes, which `qemu-img create -b` and `vdisk create -b` write for a backing path that long
/// (4096 refused those images, session 24), rounded up to 8 KiB.
pub const MAX_DESCRIPTOR_LINE: usize = 8192;
