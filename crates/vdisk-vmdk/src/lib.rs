//! vdisk-vmdk: VMware VMDK images, following VMware's "Virtual Disk Format 1.1" and "5.0" technical
//! notes. Reads hosted sparse files (monolithicSparse, streamOptimized, version 1-3, zeroed grains,
//! compressed grains with markers) and text descriptors with SPARSE, FLAT, VMFS, VMFSSPARSE (ESX
//! `COWD`), SESPARSE and ZERO extents (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs, vmfsSparse,
//! seSparse). Delta disks expose their parent as the backing file (the facade opens it). Writes the
//! monolithic, split and stream-optimized subformats.

pub mod check;
pub mod cowd;
pub mod desc_checks;
pub mod descriptor;
pub mod header;
pub mod info;
mod inplace;
pub mod limits;
mod open;
mod pool;
pub mod reader;
pub mod sesparse;
pub mod sparse;
pub mod sparse_out;
pub mod stream;
pub mod stream_out;
pub mod writer;

pub use inplace::{open_writer, open_writer_in};
pub use reader::{open, VmdkReader};
pub use writer::{create, CREATE_OPTIONS};
