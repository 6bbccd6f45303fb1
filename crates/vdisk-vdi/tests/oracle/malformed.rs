//! Malformed images: errors, never panics.

use crate::fixtures::*;
use vdisk_core::{ImageReader, MemStorage};
use vdisk_testutil::*;

fn open_mem(bytes: Vec<u8>) -> vdisk_core::Result<vdisk_vdi::VdiReader> {
    vdisk_vdi::open(MemStorage::new("m.vdi", bytes).shared())
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn truncated_and_damaged_headers_are_errors() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-malformed");
    let good = std::fs::read(qemu_vdi(&s, "g.vdi", false)).unwrap();
    // Truncation anywhere in the header or block map.
    for n in (0..0x220).step_by(7) {
        assert!(open_mem(good[..n].to_vec()).is_err(), "truncated at {n}");
    }
    let cases: &[(usize, u32, &str)] = &[
        (0x40, 0, "bad signature"),
        (0x44, 0x0002_0000, "version 2.0"),
        (0x178, 0, "block size 0"),
        (0x178, 0xffff_ffff, "block size 4294967295"),
        (0x180, 0xffff_ffff, "blocks in image"),
        (0x180, 0x0100_0000, "overlaps the block map"),
        (0x154, 0x7fff_fe00, "overlaps the block map"),
        (0x158, 0, "overlaps the block map"),
    ];
    for (off, v, want) in cases {
        let mut b = good.clone();
        put32(&mut b, *off, *v);
        let e = open_mem(b)
            .err()
            .unwrap_or_else(|| panic!("{off:#x}={v:#x} opened"))
            .to_string();
        assert!(e.contains(want), "{off:#x}={v:#x}: {e}");
    }
    // Huge disk size with a block map of matching size claimed.
    let mut b = good.clone();
    b[0x170..0x178].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_mem(b).is_err());
}

#[test]
fn random_corruption_never_panics() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-fuzz");
    let good = std::fs::read(qemu_vdi(&s, "g.vdi", false)).unwrap();
    let mut rng = vdisk_testutil::XorShift64::new(0x1234_5678_9abc_def0);
    let mut next = || rng.next_u64();
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..4 {
            let off = (next() % 0x230) as usize;
            b[off] = next() as u8;
        }
        if let Ok(r) = open_mem(b) {
            let size = r.virtual_size();
            let mut buf = vec![0u8; 4096];
            for off in [0, size / 2, size.saturating_sub(4096)] {
                if off + 4096 <= size {
                    let _ = r.read_at(&mut buf, off);
                    let _ = r.block_status(off, 4096);
                }
            }
            let _ = r.check();
            let _ = r.info();
        }
    }
}
