//! Fixture images built with qemu-img and qemu-io, and the oracle comparisons shared by the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::*;

pub const MIB: u64 = 1 << 20;

/// `qemu-img create -f vpc [-o OPTIONS] NAME SIZE`.
pub fn create(s: &Scratch, name: &str, options: &str, size: &str) -> PathBuf {
    let p = s.join(name);
    qemu_create(&p, "vpc", options, size);
    p
}

/// qemu-io commands for an image of `size` bytes (2 MiB blocks): data in block 0, a write across the
/// edge of blocks 0 and 1, one sector in block 2 (a block written only in part), explicit zeros over
/// block 3 (the vpc driver writes them as data), block 4 left a hole, and data in the tail; the
/// writes that do not fit a smaller image are left out.
pub fn pattern(size: u64) -> Vec<String> {
    let fits = |c: &String| {
        let w: Vec<u64> = c.rsplit(' ').take(2).map(|n| n.parse().unwrap()).collect();
        w[0] + w[1] <= size
    };
    let mut v: Vec<String> = vec![
        "write -P 0xaa 0 65536".into(),
        format!("write -P 0xbb {} 1024", 2 * MIB - 512),
        format!("write -P 0xcc {} 512", 4 * MIB + 4096),
        format!("write -z {} {}", 6 * MIB, 2 * MIB),
        format!("write -P 0xdd {} 1536", size - 1536),
    ];
    v.retain(fits);
    v
}

/// A patterned image of `size` (qemu-img's syntax) made by qemu-img and written by qemu-io.
pub fn patterned(s: &Scratch, name: &str, options: &str, size: &str) -> PathBuf {
    let p = create(s, name, options, size);
    let v = qemu_size(&p);
    let cmds = pattern(v);
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vpc", &p, &refs);
    p
}

/// `qemu-img info --output=json -f vpc` (a fixed VHD probes as raw, so the format is given).
pub fn info_json(p: &Path) -> serde_json::Value {
    qemu_info_json_as(p, "vpc")
}

/// The virtual size qemu-img reports.
pub fn qemu_size(p: &Path) -> u64 {
    info_json(p)["virtual-size"].as_u64().unwrap()
}

/// Opens an image with vdisk.
pub fn open(p: &Path) -> vdisk_vhd::VhdReader {
    try_open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Opens an image with vdisk, keeping the error.
pub fn try_open(p: &Path) -> vdisk_core::Result<vdisk_vhd::VhdReader> {
    vdisk_vhd::open(Arc::new(FileStorage::open(p).unwrap()))
}

/// Whether qemu-img opens and reads the image (`qemu-img convert -f vpc -O raw` succeeds), and
/// its message when it does not.
pub fn qemu_reads(p: &Path) -> Result<(), String> {
    let out_path = p.with_extension("oracle.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(p)
        .arg(&out_path)
        .output()
        .expect("run qemu-img");
    let _ = std::fs::remove_file(&out_path);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Bytes (in two read sizes), map, virtual size and cluster size against qemu-img.
pub fn assert_like_qemu(p: &Path) {
    let r = open(p);
    let oracle = qemu_raw_bytes(p, Some("vpc"));
    assert_eq!(r.virtual_size(), oracle.len() as u64, "{}", p.display());
    assert_same_bytes(&read_all(&r, MIB as usize), &oracle, "1 MiB reads");
    assert_same_bytes(&read_all(&r, 100_001), &oracle, "odd-sized reads");
    assert_map_like_qemu(&r, p);
    assert_info_like_qemu(&r, p);
}

/// `qemu-img map` against vdisk's block status.
pub fn assert_map_like_qemu(r: &dyn ImageReader, p: &Path) {
    assert_map_like_qemu_as(r, p, "vpc");
}

/// Format, virtual size, cluster size and children against `qemu-img info`.
pub fn assert_info_like_qemu(r: &dyn ImageReader, p: &Path) {
    assert_plain_info_like_qemu(r, p, "vpc");
}
