//! vdisk-raw: the raw format, a disk image that is its own content byte for byte, as qemu's `raw`
//! format driver over the `file` protocol (block/raw-format.c, block/file-posix.c) presents it.
//!
//! * [`open`] reads a raw file or block device; holes of a sparse file are reported as zero extents
//!   (found with `SEEK_DATA`/`SEEK_HOLE`), exactly as `qemu-img map --output=json` shows them.
//! * [`create`] makes a new raw image (`qemu-img create -f raw`, options [`CREATE_OPTIONS`]) and returns
//!   an [`vdisk_core::ImageWriter`] that keeps zero runs as holes.
//! * [`open_writer`] writes into an existing file or device in place (`convert -n`).
//! * [`resize`] grows or shrinks a raw image (`qemu-img resize -f raw`).

mod reader;
mod resize;
mod sys;
mod writer;

pub use reader::{open, RawReader};
pub use resize::resize;
pub use writer::{create, open_writer, Prealloc, RawWriter, CREATE_OPTIONS};

/// qemu's sector size: the virtual size of a raw image is its file length rounded up to this, and new
/// images are created with sizes rounded up to it.
pub const SECTOR_SIZE: u64 = 512;

/// Rounds `n` up to a whole number of sectors, saturating at the largest multiple of 512.
pub(crate) fn round_up_sector(n: u64) -> u64 {
    match n.checked_add(SECTOR_SIZE - 1) {
        Some(v) => v & !(SECTOR_SIZE - 1),
        None => !(SECTOR_SIZE - 1),
    }
}
