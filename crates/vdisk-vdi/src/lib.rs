//! vdisk-vdi: VirtualBox VDI images (version 1.1, and version 0 for reading): read, create, write
//! in place, grow and check dynamic and static base images, following VirtualBox's `VDICore.h` /
//! `VDI.cpp` and matching what QEMU's block/vdi.c reads, maps and checks.

pub mod bmap;
pub mod check;
pub mod header;
pub mod inplace;
pub mod limits;
pub mod reader;
pub mod resize;
pub mod uuid;
pub mod writer;

pub use header::{Header, Uuid};
pub use inplace::{open_writer, open_writer_in};
pub use reader::{open, VdiReader};
pub use resize::{resize, resize_in};
pub use writer::{create, new_header, VdiWriter, CREATE_OPTIONS};
