//! Named limits on values read from a qcow2 file, so that no allocation or loop is driven by an
//! unchecked field. Each follows QEMU's docs/interop/qcow2.txt (section named per constant) and the
//! value QEMU's block/qcow2.h enforces when opening an image.

/// Smallest cluster size, as a power of two (qcow2.txt "Header": cluster_bits >= 9).
pub const MIN_CLUSTER_BITS: u32 = 9;

/// Largest cluster size QEMU accepts, 2 MiB (qcow2.txt "Header": "QEMU ... not larger than 2 MB").
pub const MAX_CLUSTER_BITS: u32 = 21;

/// Extended L2 entries need clusters of at least 16 KiB (qcow2.txt "Extended L2 Entries";
/// QEMU refuses smaller ones).
pub const MIN_CLUSTER_BITS_EXTENDED_L2: u32 = 14;

/// Largest refcount_order: 64-bit reference counts (qcow2.txt "Header", refcount_order).
pub const MAX_REFCOUNT_ORDER: u32 = 6;

/// Largest active or snapshot L1 table in bytes, QEMU's QCOW_MAX_L1_SIZE (32 MiB; qcow2.txt
/// "Cluster mapping" bounds only by l1_size being a u32).
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Largest refcount table in bytes, QEMU's QCOW_MAX_REFTABLE_SIZE (8 MiB; qcow2.txt "Host cluster
/// management").
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// Most internal snapshots, QEMU's QCOW_MAX_SNAPSHOTS (qcow2.txt "Snapshots", nb_snapshots).
pub const MAX_SNAPSHOTS: u64 = 65536;

/// Largest snapshot table in bytes, QEMU's QCOW_MAX_SNAPSHOTS_SIZE (1 KiB per snapshot on average).
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 1024 * MAX_SNAPSHOTS;

/// Largest extra data in one snapshot table entry, QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA (qcow2.txt
/// "Snapshots", extra_data_size).
pub const MAX_SNAPSHOT_EXTRA_DATA: u64 = 1024;

/// Longest backing file name, as QEMU reads it into a 1024-byte buffer (qcow2.txt "Header",
/// backing_file_size: "Must not be longer than 1023 bytes").
pub const MAX_BACKING_NAME: u64 = 1023;

/// Longest backing format name: QEMU's 16-byte buffer (qcow2.txt "Header extensions", 0xe2792aca).
pub const MAX_BACKING_FORMAT: u64 = 15;

/// Most bitmaps in the bitmaps extension, QEMU's QCOW2_MAX_BITMAPS (qcow2.txt "Bitmaps extension").
pub const MAX_BITMAPS: u64 = 65535;

/// Largest bitmap directory, QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE (qcow2.txt "Bitmap directory").
pub const MAX_BITMAP_DIRECTORY_BYTES: u64 = 1024 * MAX_BITMAPS;

/// Largest virtual disk size: QEMU keeps sizes in an int64 (qcow2.txt "Header", size).
pub const MAX_VIRTUAL_SIZE: u64 = i64::MAX as u64;

/// Total bytes of L2 tables kept in the reader's cache (an implementation choice; qcow2.txt
/// "Cluster mapping" says nothing about caching).
pub const L2_CACHE_BYTES: u64 = 16 << 20;

/// Number of independently locked shards of the L2 cache.
pub const L2_CACHE_SHARDS: usize = 8;

/// Largest number of host clusters `check` keeps a reference count for (4 bytes each, so at most
/// 512 MiB); bigger images are refused rather than exhausting memory (qcow2.txt "Host cluster
/// management" puts no bound on the file size).
pub const MAX_CHECK_CLUSTERS: u64 = 1 << 27;

/// Largest compressed input for one cluster: the sector count field holds at most
/// 2^(cluster_bits - 8) sectors of 512 bytes, i.e. twice the cluster size (qcow2.txt
/// "Compressed Clusters Descriptor").
pub fn max_compressed_input(cluster_bits: u32) -> u64 {
    (1u64 << (cluster_bits - 8)) * 512
}

/// Largest decompressed output for one cluster: exactly one cluster; more is a decompression bomb
/// (qcow2.txt "Compressed Clusters Descriptor").
pub fn max_decompressed(cluster_bits: u32) -> u64 {
    1u64 << cluster_bits
}

// Limits of changing an image in place (`mutate`).

/// The most L2 tables one resize rewrites to zero or map the added area (each is a cluster held
/// in memory until the commit): 2^12 tables of 64 KiB are 256 MiB. QEMU has no such limit.
pub const MAX_ZEROED_L2_TABLES: u64 = 1 << 12;

/// The most data clusters one preallocating resize allocates: the transaction keeps one
/// reference count per cluster in memory (about 64 bytes each), so 2^22 clusters (256 GiB of
/// 64 KiB clusters) cost a few hundred MiB at most. QEMU has no such limit.
pub const MAX_PREALLOC_CLUSTERS: u64 = 1 << 22;

/// The most bytes of bitmap data vdisk holds in memory for one bitmap it changes: 64 MiB covers
/// a 32 TiB disk at the default 64 KiB granularity. QEMU's own limit (BME_MAX_PHYS_SIZE) is 512 MiB.
pub const MAX_BITMAP_DATA_BYTES: u64 = 64 << 20;
