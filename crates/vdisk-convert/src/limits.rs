//! Named limits of the conversion engine. None comes from an image file: they bound what a caller may
//! ask for, so that memory stays fixed whatever the image size.

/// Largest `-S` value qemu-img accepts: 32768 sectors (qemu-img.c `MAX_BUF_SECTORS`), i.e. 16 MiB.
pub const MAX_MIN_SPARSE: u64 = 32768 * 512;

/// Largest chunk (one read buffer) the engine accepts: 64 MiB. With the in-flight bound below this
/// caps the engine's buffer memory at a few GiB even on many cores.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// Largest writer granularity honoured (a granule must fit in a chunk): 64 MiB, above any cluster or
/// grain size of the supported formats (qcow2 clusters are at most 2 MiB).
pub const MAX_GRANULARITY: u64 = MAX_CHUNK_SIZE;

/// Most worker threads the engine starts, whatever the caller asks for.
pub const MAX_WORKERS: usize = 256;

/// Largest chunk for writers with an encoder (compressed output): 512 KiB, 8 clusters of 64 KiB.
/// Each task holds its chunk and the encoded clusters, so this bounds that memory per task.
pub const ENCODED_CHUNK_SIZE: u64 = 512 << 10;
