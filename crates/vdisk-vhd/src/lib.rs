//! vdisk-vhd: reading, creating and writing in place Microsoft Virtual PC / Hyper-V VHD images
//! (qemu's format "vpc"), fixed and dynamic, following the "Virtual Hard Disk Image Format
//! Specification" for the layout and QEMU 10's block/vpc.c for every decision qemu-img makes (size
//! rules, what it refuses, how it reads, maps and writes).

pub mod bat;
pub mod dynheader;
pub mod footer;
pub mod geometry;
pub mod inplace;
pub mod limits;
pub mod reader;
#[cfg(test)]
mod testimg;
pub mod writer;

pub use dynheader::DynHeader;
pub use footer::{DiskType, Footer, Geometry};
pub use inplace::{open_writer, open_writer_in};
pub use reader::{open, VhdReader};
pub use writer::{create, VhdWriter, CREATE_OPTIONS};
