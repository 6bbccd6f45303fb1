//! vdisk-vhdx: reading Microsoft VHDX images (qemu's format "vhdx"), dynamic and fixed, following
//! the "[MS-VHDX] Virtual Hard Disk v2 (VHDX) File Format" specification for the layout and QEMU 10's
//! block/vhdx.c and block/vhdx-log.c for every decision qemu-img makes on a read-only open (what it
//! refuses, how it reads each BAT state, what it reports). Nothing here ever writes to an existing
//! image; [`writer`] creates new ones as `qemu-img create -f vhdx` / `convert -O vhdx` do.

pub mod bat;
pub mod crc32c;
pub mod guid;
pub mod header;
pub mod limits;
pub mod log;
pub mod metadata;
pub mod pread;
pub mod reader;
mod reader_info;
pub mod region;
pub mod writer;
pub mod writer_layout;

pub use bat::{Bat, BlockState};
pub use guid::Guid;
pub use header::Header;
pub use reader::{open, open_for_check, VhdxReader};
pub use writer::{create, create_params, VhdxWriter, CREATE_OPTIONS};

use std::path::Path;

/// Why qemu refuses an image, with the errno it fails with: EINVAL ("Invalid argument") for a
/// damaged structure, ENOTSUP ("Operation not supported") for a feature it does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Invalid(String),
    Unsupported(String),
}

impl Refusal {
    /// The vdisk error for `path`: a corruption or an unsupported feature.
    pub fn into_error(self, path: &Path) -> vdisk_core::Error {
        match self {
            Refusal::Invalid(m) => vdisk_core::Error::corrupt(path, None, m),
            Refusal::Unsupported(m) => vdisk_core::Error::unsupported(path, m),
        }
    }
}
