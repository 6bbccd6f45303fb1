//! vdisk-ova: reading OVA packages and their OVF descriptors (DMTF DSP0243, OVF 1.x and 2.x).
//!
//! An OVA is a tar archive whose first file is the OVF descriptor, followed by the manifest and
//! certificate if any, then the files the descriptor references: disk images, ISO images. This
//! crate indexes the archive without reading the files ([`tar`]), parses the descriptor ([`ovf`]) and
//! the manifest ([`manifest`]), and opens each disk in place ([`Package::disk_storage`]): a read-only
//! [`vdisk_core::Storage`] that is the window of the archive holding the disk's file, which any vdisk
//! format reader opens as it would the extracted file. A bare `.ovf` with its files beside it opens
//! too ([`Package::open_ovf`]).
//!
//! Values read from the files are bounded by [`limits`]; nothing is written.

pub mod formats;
pub mod limits;
pub mod manifest;
pub mod member;
pub mod ovf;
mod ovf_hardware;
mod ovf_system;
pub mod package;
mod package_disks;
pub mod tar;
pub mod tar_ext;
pub mod tar_header;
pub mod units;
pub mod xml_guard;

#[cfg(test)]
mod test_support;

pub use ovf::Envelope;
pub use ovf_hardware::resource_type_name;
pub use package::{DiskData, Location, Package, PackageDisk, PackageFile, PackageManifest};
