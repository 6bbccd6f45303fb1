//! Packages built at test time: disks made by qemu-img and qemu-io, an OVF written by the test,
//! a manifest of `sha256sum` digests, packed by the system's GNU tar.
#![allow(dead_code)]

pub mod samples;
pub mod tarbuild;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_testutil::{qemu_create, qemu_img, qemu_io, run, Scratch};

/// The files of a package before packing, in a scratch directory.
pub struct Fixture {
    pub dir: Scratch,
    /// The disk files' names, in DiskSection order.
    pub disks: Vec<String>,
}

impl Fixture {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A 16 MiB streamOptimized VMDK with patterned data and holes (made from a raw image written by
/// qemu-io, then converted, as qemu-img writes streamOptimized images only by conversion).
pub fn stream_vmdk(dir: &Scratch, name: &str) {
    let raw = dir.join(&format!("{name}.src.raw"));
    qemu_create(&raw, "raw", "", "16M");
    qemu_io(
        "raw",
        &raw,
        &[
            "write -P 0xab 1M 64k",
            "write -P 0xcd 5M 128k",
            "write -P 0x11 15M 4k",
        ],
    );
    let out = dir.join(name);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        &raw.to_string_lossy(),
        &out.to_string_lossy(),
    ]);
    std::fs::remove_file(raw).expect("remove source");
}

/// An 8 MiB qcow2 with patterned data and holes.
pub fn patterned_qcow2(dir: &Scratch, name: &str) {
    let p = dir.join(name);
    qemu_create(&p, "qcow2", "", "8M");
    qemu_io(
        "qcow2",
        &p,
        &[
            "write -P 0x5a 0 4k",
            "write -P 0x77 3M 192k",
            "write -P 0x01 8188k 4k",
        ],
    );
}

/// The manifest of `names` in `dir`: `SHA256(name)= hex` lines from `sha256sum`.
pub fn manifest(dir: &Path, names: &[&str]) -> String {
    let out = run(Command::new("sha256sum").args(names).current_dir(dir));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (hex, name) = l.split_once("  ").expect("sha256sum line");
            format!("SHA256({name})= {hex}\n")
        })
        .collect()
}

/// `tar --format=FORMAT -cf OUT NAMES...` run in `dir` (names in that order).
pub fn pack(dir: &Path, format: &str, extra: &[&str], names: &[&str], out: &Path) {
    run(Command::new("tar")
        .arg(format!("--format={format}"))
        .args(extra)
        .arg("-cf")
        .arg(out)
        .args(names)
        .current_dir(dir));
}

/// GNU tar's `-R` block numbers of each member's header (`tar -R -tf`), by name.
pub fn tar_blocks(pkg: &Path) -> HashMap<String, u64> {
    let out = run(Command::new("tar").arg("-R").arg("-tf").arg(pkg));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("block ")?;
            let (n, name) = rest.split_once(": ")?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// qemu-img's reading of the `driver` image at `offset..offset + size` of `file`, through its raw
/// driver's offset and size options: what `qemu-img convert -O raw` makes of a member in place.
pub fn qemu_raw_in_place(driver: &str, file: &Path, offset: u64, size: u64, out: &Path) -> Vec<u8> {
    let spec = format!(
        r#"json:{{"driver":"{driver}","file":{{"driver":"raw","offset":{offset},"size":{size},"file":{{"driver":"file","filename":"{}"}}}}}}"#,
        file.display()
    );
    qemu_img(&["convert", "-O", "raw", &spec, &out.to_string_lossy()]);
    let bytes = std::fs::read(out).expect("read converted");
    std::fs::remove_file(out).expect("remove converted");
    bytes
}
