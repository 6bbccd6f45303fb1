//! vdisk-vhdx: reading Microsoft VHDX images (qemu's format "vhdx"), dynamic and fixed, following
//! the "[MS-VHDX] Virtual Hard Disk v2 (VHDX) File Format" specification for the layout and QEMU 10's
//! block/vhdx.c and block/vhdx-log.c for every decision qemu-img makes on a read-only open (what it
//! refuses, how it reads each BAT state, what it reports). Opening never writes; [`writer`] creates
//! new images as `qemu-img create -f vhdx` / `convert -O vhdx` do, [`inplace`] writes into an
//! existing one as `convert -n -O vhdx` does (replaying its log first, never writing one),
//! [`replay`] replays a log as qemu's read-write open does, and [`repair`] is `check -r`.

pub mod bat;
pub mod crc32c;
pub mod guid;
pub mod header;
mod header_update;
pub mod inplace;
mod inplace_check;
pub mod limits;
pub mod log;
pub mod metadata;
pub mod pread;
pub mod reader;
mod reader_info;
pub mod region;
pub mod repair;
pub mod replay;
mod replay_walk;
pub mod writer;
pub mod writer_layout;

pub use bat::{Bat, BlockState};
pub use guid::Guid;
pub use header::Header;
pub use inplace::{open_writer, open_writer_in};
pub use reader::{open, open_for_check, VhdxReader};
pub use repair::{repair, repair_in, RepairOutcome};
pub use replay::{replay_log, replay_log_at};
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
