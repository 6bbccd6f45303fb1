//! vdisk: read, create, convert and check virtual-machine disk images (raw, qcow2, VMDK, VDI).
//!
//! This facade ties the format crates together: [`open_image`] probes a file, opens it with the right
//! reader and stacks its backing chain; [`create_image`] starts a writer for a new image; the
//! conversion engine and the format crates are re-exported for direct use.

pub mod chain;
pub mod fstab;
pub mod guest;
pub mod luks;
pub mod ops;
pub mod ova;
pub mod registry;

pub use chain::{open_backing_for, open_image, Layer, OpenRequest, OpenedImage, MAX_BACKING_DEPTH};
pub use registry::{
    compression, create_image, create_options, open_existing_writer, open_layer, Compression,
};
pub use vdisk_convert as convert;
pub use vdisk_core as core;
pub use vdisk_core::{Error, Format, ImageReader, ImageWriter, Result};
pub use vdisk_fs as fs;
pub use vdisk_lvm as lvm;
pub use vdisk_ova as ova_package;
pub use vdisk_part as part;
pub use vdisk_qcow2 as qcow2;
pub use vdisk_raw as raw;
pub use vdisk_vdi as vdi;
pub use vdisk_vhd as vhd;
pub use vdisk_vhdx as vhdx;
pub use vdisk_vmdk as vmdk;
