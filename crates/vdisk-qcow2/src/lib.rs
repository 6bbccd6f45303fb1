//! vdisk-qcow2: reads qcow2 images, versions 2 (compat 0.10) and 3 (compat 1.1), following QEMU's
//! docs/interop/qcow2.txt: plain, zero, compressed (zlib/zstd) and extended-L2 clusters, external
//! data files, internal snapshots, block status as `qemu-img map` reports it, `info` and a read-only
//! `check`. `header` parses and serializes cluster 0 for reuse by a writer.

mod bitmap_dir;
pub mod check;
pub mod compress;
mod compressed_read;
mod crypt;
pub mod header;
pub mod info;
pub mod limits;
pub mod luks;
pub mod measure;
pub mod mutate;
pub mod reader;
pub mod refcount;
pub mod snapshot;
pub mod tables;
pub mod writer;

pub use reader::{open, OpenOptions, Qcow2Reader, SnapshotSel};
