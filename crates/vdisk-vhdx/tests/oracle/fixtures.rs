//! Fixture images built with qemu-img and qemu-io, and the oracle comparisons shared by the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::*;

pub const MIB: u64 = 1 << 20;

/// `qemu-img create -f vhdx [-o OPTIONS] NAME SIZE`.
pub fn create(s: &Scratch, name: &str, options: &str, size: &str) -> PathBuf {
    let p = s.join(name);
    qemu_create(&p, "vhdx", options, size);
    p
}

/// qemu-io commands for an image of `size` bytes: data at the start, a write across the first
/// 1 MiB edge, one sector at 2 MiB + 4 KiB, explicit zeros over 3..4 MiB, data over 4..5 MiB then
/// discarded in part, and data in the tail; the writes that do not fit a smaller image are left out.
pub fn pattern(size: u64) -> Vec<String> {
    let fits = |c: &String| {
        let w: Vec<u64> = c.rsplit(' ').take(2).map(|n| n.parse().unwrap()).collect();
        w[0] + w[1] <= size
    };
    let mut v: Vec<String> = vec![
        "write -P 0xaa 0 65536".into(),
        format!("write -P 0xbb {} 1024", MIB - 512),
        format!("write -P 0xcc {} 512", 2 * MIB + 4096),
        format!("write -z {} {}", 3 * MIB, MIB),
        format!("write -P 0xee {} {}", 4 * MIB, MIB),
        format!("discard {} {}", 4 * MIB, MIB / 2),
        format!("write -P 0xdd {} 1536", size - 1536),
    ];
    v.retain(fits);
    v
}

/// A patterned image of `size` made by qemu-img and written by qemu-io.
pub fn patterned(s: &Scratch, name: &str, options: &str, size: &str) -> PathBuf {
    let p = create(s, name, options, size);
    let cmds = pattern(qemu_size(&p));
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vhdx", &p, &refs);
    p
}

/// `qemu-img info --output=json -f vhdx`.
pub fn info_json(p: &Path) -> serde_json::Value {
    qemu_info_json_as(p, "vhdx")
}

/// The virtual size qemu-img reports.
pub fn qemu_size(p: &Path) -> u64 {
    info_json(p)["virtual-size"].as_u64().unwrap()
}

/// Opens an image with vdisk.
pub fn open(p: &Path) -> vdisk_vhdx::VhdxReader {
    try_open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Opens an image with vdisk, keeping the error.
pub fn try_open(p: &Path) -> vdisk_core::Result<vdisk_vhdx::VhdxReader> {
    vdisk_vhdx::open(Arc::new(FileStorage::open(p).unwrap()))
}

/// Runs qemu-img with `args` (the image last): success, or its stderr.
pub fn qemu_result(args: &[&str], p: &Path) -> Result<(), String> {
    let out = Command::new("qemu-img")
        .args(args)
        .arg(p)
        .output()
        .expect("run qemu-img");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether `qemu-img info -f vhdx` opens the image.
pub fn qemu_opens(p: &Path) -> Result<(), String> {
    qemu_result(&["info", "-f", "vhdx"], p)
}

/// Whether qemu-img reads the whole image (`convert -f vhdx -O raw` succeeds).
pub fn qemu_reads(p: &Path) -> Result<(), String> {
    let out_path = p.with_extension("oracle.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
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

/// Bytes, map, virtual size and cluster size against qemu-img.
pub fn assert_like_qemu(p: &Path) {
    let r = open(p);
    let oracle = qemu_raw_bytes(p, Some("vhdx"));
    assert_eq!(r.virtual_size(), oracle.len() as u64, "{}", p.display());
    // Odd-sized reads cross every block edge at a different place (one pass: the debug build's
    // byte loops are slow).
    assert_same_bytes(&read_all(&r, 100_001), &oracle, "odd-sized reads");
    assert_map_like_qemu(&r, p);
    assert_info_like_qemu(&r, p);
}

/// `qemu-img map` against vdisk's block status.
pub fn assert_map_like_qemu(r: &dyn ImageReader, p: &Path) {
    assert_map_like_qemu_as(r, p, "vhdx");
}

/// Format, virtual size, cluster size and children against `qemu-img info`.
pub fn assert_info_like_qemu(r: &dyn ImageReader, p: &Path) {
    assert_plain_info_like_qemu(r, p, "vhdx");
}

/// Little-endian field access and CRC resealing for damaging images.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC-32C at `at + 4` over `len` bytes from `at`.
pub fn reseal(b: &mut [u8], at: usize, len: usize) {
    put32(b, at + 4, 0);
    let sum = vdisk_vhdx::crc32c::crc32c(&b[at..at + len]);
    put32(b, at + 4, sum);
}
