//! vdisk-convert: streams any [`ImageReader`] into any [`ImageWriter`] the way `qemu-img convert`
//! does (qemu-img.c `img_convert`), and compares images like `qemu-img compare` ([`compare()`]).
//!
//! The conversion is driven by block status: ranges the source reports as zeros are never read;
//! data ranges are read in chunks on a pool of worker threads, scanned for zero runs with qemu's
//! `-S` rules, and handed to the writer (in order unless `-W`) by the calling thread. Memory is a
//! fixed number of chunk buffers whatever the image size. The first error stops the conversion and
//! drops the writer unfinished, so that no output is left behind.

mod chunk;
pub mod compare;
mod engine;
mod granule;
pub mod limits;
mod mapped;
mod plan;
pub mod ratelimit;
pub mod salvage;
// Public (hidden) for the criterion micro-benchmarks in benches/hot_paths.rs.
#[doc(hidden)]
pub mod sparse;

use std::sync::Arc;
use std::time::Duration;
use vdisk_core::{ImageReader, ImageWriter, Result};

pub use compare::{compare, CompareOutcome};
pub use engine::keep_buffers_mapped;
pub use ratelimit::RateLimited;
pub use salvage::Salvage;

/// How to convert. `Default` matches qemu-img convert's defaults.
#[derive(Clone)]
pub struct ConvertOptions {
    /// Worker threads for reading, scanning and encoding (and so the number of reads in flight);
    /// 0 means one per core. Once the source reports compressed data, at most one per core take
    /// tasks (decompressing is CPU work).
    pub workers: usize,
    /// `-W`: write chunks as they complete, when the writer accepts out-of-order writes.
    pub out_of_order: bool,
    /// `-S`: the least run of zero bytes (after data) turned into a gap, a multiple of 512 up to
    /// 16 MiB; default 4096. 0 disables zero detection: every byte is written as data, fully
    /// allocating the output, as qemu does.
    pub min_sparse: u64,
    /// Bytes per read (one buffer); default 2 MiB (qemu's `IO_BUF_SIZE`), at most
    /// [`limits::ENCODED_CHUNK_SIZE`] for writers with an encoder. With plain `-S` zero detection
    /// (no backing image, no encoder, no `-c`) each data extent of the source is read in buffers of
    /// this size from its own start, as qemu-img does, rounded up to 512 bytes; otherwise reads are
    /// whole writer granules and this is rounded up to the writer's granularity.
    pub chunk_size: u64,
    /// `--target-is-zero`: the target already reads as zeros, so zero runs need no write.
    pub target_is_zero: bool,
    /// `-c`: zero detection in whole writer granules, as qemu-img does for compressed output
    /// (`convert_iteration_sectors` rounds to the target's cluster size, and `convert_co_write`
    /// skips a cluster only when it is all zeros, whatever `-S` says). Writers with an encoder
    /// (compressed qcow2, streamOptimized VMDK) get this anyway; it matters for outputs that
    /// accept `-c` but store data uncompressed (sparse VMDK subformats other than
    /// streamOptimized), where qemu-img still takes its compressed path.
    pub compress: bool,
    /// The target's backing image (`-B`): only what differs from it is written (in whole writer
    /// granules); ranges equal to it are left unallocated, zeros over its data are written as zeros.
    /// This compares content, so it is right whatever the source is; qemu-img instead leaves
    /// unallocated what is unallocated in the source's top layer, assuming that the new backing file
    /// matches the source's own backing chain. Each chunk then needs a second buffer for the backing
    /// image's bytes.
    pub backing: Option<Arc<dyn ImageReader>>,
    /// `-C`: data the source stores uncompressed in a host file is copied by the kernel
    /// (`copy_file_range`, [`vdisk_core::HostRange`]) into writers that take copies (raw,
    /// qcow2), with no zero detection, as qemu-img does. A task is offloaded only when all of it
    /// is such data; other tasks, other writers and `-B` take the usual read path.
    pub copy_range: bool,
    /// Data tasks whose bytes a source stores uncompressed and contiguously in a host file are
    /// read through a memory map of that file ([`vdisk_core::FileMap`]) instead of `pread` into a
    /// buffer: one kernel copy fewer. Default on; off reads everything with `pread`. A source file
    /// that another process truncates during the conversion then raises SIGBUS where `pread` would
    /// have returned a short read: the `vdisk` command reports it and exits 1; other programs that
    /// cannot rule it out should turn this off or handle SIGBUS.
    pub map_source: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            workers: 0,
            out_of_order: false,
            min_sparse: 4096,
            chunk_size: 2 << 20,
            target_is_zero: false,
            compress: false,
            backing: None,
            copy_range: false,
            map_source: true,
        }
    }
}

impl std::fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("workers", &self.workers)
            .field("out_of_order", &self.out_of_order)
            .field("min_sparse", &self.min_sparse)
            .field("chunk_size", &self.chunk_size)
            .field("target_is_zero", &self.target_is_zero)
            .field("compress", &self.compress)
            .field("copy_range", &self.copy_range)
            .field("map_source", &self.map_source)
            .field("backing", &self.backing.as_ref().map(|b| b.format_name()))
            .finish()
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Bytes read from the source (data extents only).
    pub bytes_read: u64,
    /// Bytes handed to the writer as data (plain or encoded).
    pub data_bytes_written: u64,
    /// Bytes that read as zeros in the result without being written as data (zero payloads, or
    /// nothing at all on a zero-initialised target).
    pub zero_bytes: u64,
    /// Bytes left unallocated because they equal the backing image (`-B`).
    pub unchanged_bytes: u64,
    /// Bytes of data tasks read through a memory map of their host file (see
    /// [`ConvertOptions::map_source`]) rather than copied into a buffer.
    pub mapped_bytes: u64,
    /// Most tasks in flight at once (each holds at most two chunk buffers).
    pub peak_in_flight: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Converts `src` into `dst` and finishes it. `progress(done, total)` is called from the calling
/// thread with the bytes of the virtual disk completed so far, ending with `done == total`.
///
/// On error the writer is dropped without `finish` (its output vanishes) and the first error is
/// returned.
pub fn convert(
    src: &dyn ImageReader,
    dst: Box<dyn ImageWriter>,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ConvertStats> {
    engine::run(src, dst, opts, progress)
}
