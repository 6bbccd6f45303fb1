//! vdisk-vhd: reading Microsoft Virtual PC / Hyper-V VHD images (qemu's format "vpc"), fixed and
//! dynamic, following the "Virtual Hard Disk Image Format Specification" for the layout and QEMU 10's
//! block/vpc.c for every decision qemu-img makes (size rules, what it refuses, how it reads and maps).

pub mod bat;
pub mod dynheader;
pub mod footer;
pub mod limits;
pub mod reader;
#[cfg(test)]
mod testimg;

pub use dynheader::DynHeader;
pub use footer::{DiskType, Footer, Geometry};
pub use reader::{open, VhdReader};
