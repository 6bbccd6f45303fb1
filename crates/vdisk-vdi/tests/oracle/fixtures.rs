//! Fixture images built with qemu-img and qemu-io.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::{qemu_create, qemu_img, qemu_io, Scratch};

/// Guest size of the patterned fixtures: 6 MiB and an odd 3-sector tail (a partial last block).
pub const SIZE: u64 = (6 << 20) + 1536;

/// qemu-io commands: data, explicit zeros, a write across a block boundary, a hole (5M..6M) and data
/// in the partial tail block.
pub const PATTERN: &[&str] = &[
    "write -P 0xaa 0 64k",
    "write -P 0xbb 1052672 8k",
    "write -z 2M 1M",
    "write -P 0xcc 4193792 1k",
    "write -P 0xdd 6M 1536",
];

/// A patterned raw image.
pub fn raw(s: &Scratch) -> PathBuf {
    let p = s.join("src.raw");
    qemu_create(&p, "raw", "", &SIZE.to_string());
    qemu_io("raw", &p, PATTERN);
    p
}

/// A VDI made by `qemu-img create -f vdi [-o static=on]` and written with qemu-io.
pub fn qemu_vdi(s: &Scratch, name: &str, is_static: bool) -> PathBuf {
    let p = s.join(name);
    let mut args = vec!["create", "-q", "-f", "vdi"];
    if is_static {
        args.extend(["-o", "static=on"]);
    }
    let ps = p.to_str().unwrap().to_string();
    let size = SIZE.to_string();
    args.extend([ps.as_str(), size.as_str()]);
    qemu_img(&args);
    qemu_io("vdi", &p, PATTERN);
    p
}

/// A VDI converted by qemu-img from `src` (a raw file).
pub fn converted(s: &Scratch, src: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let p = s.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "vdi"];
    args.extend_from_slice(opts);
    args.extend([src.to_str().unwrap(), p.to_str().unwrap()]);
    qemu_img(&args);
    p
}

/// Opens an image with vdisk.
pub fn open(p: &Path) -> vdisk_vdi::VdiReader {
    vdisk_vdi::open(Arc::new(FileStorage::open(p).unwrap()))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Opens an image and returns it as a trait object.
pub fn open_dyn(p: &Path) -> Box<dyn ImageReader> {
    Box::new(open(p))
}
