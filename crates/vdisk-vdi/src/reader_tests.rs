//! Reader unit tests on hand-built images: block sizes other than 1 MiB, block extra data, and bad
//! pointers (qemu refuses such images, so there is no oracle for them).

use super::*;
use crate::limits::{BLOCK_FREE, BLOCK_ZERO};
use vdisk_core::MemStorage;

const BS: u64 = 4096;
const EXTRA: u64 = 512;

/// 4 blocks of 4 KiB with 512 bytes of extra data per slot; disk size ends inside block 3.
fn image(map: [u32; 4], slots: usize) -> Vec<u8> {
    let mut h = crate::writer::new_header(1 << 20, false).unwrap();
    h.block_size = BS as u32;
    h.block_extra = EXTRA as u32;
    h.blocks_in_image = 4;
    h.blocks_allocated = map.iter().filter(|e| **e < BLOCK_ZERO).count() as u32;
    h.disk_size = 4 * BS - 512;
    h.offset_bmap = 0x200;
    h.offset_data = 0x400;
    let mut b = vec![0u8; 0x400];
    h.write_v1(&mut b).unwrap();
    for (i, e) in map.iter().enumerate() {
        b[0x200 + i * 4..0x204 + i * 4].copy_from_slice(&e.to_le_bytes());
    }
    for s in 0..slots {
        b.extend(std::iter::repeat_n(0xee, EXTRA as usize));
        b.extend(std::iter::repeat_n(0x10 + s as u8, BS as usize));
    }
    b
}

fn open_mem(b: Vec<u8>) -> VdiReader {
    open(MemStorage::new("m.vdi", b).shared()).unwrap()
}

#[test]
fn small_blocks_with_extra_data() {
    let r = open_mem(image([1, BLOCK_FREE, 0, BLOCK_ZERO], 2));
    assert_eq!(r.virtual_size(), 4 * BS - 512);
    assert_eq!(r.info().unwrap().cluster_size, Some(BS));
    let mut buf = vec![9u8; r.virtual_size() as usize];
    r.read_at(&mut buf, 0).unwrap();
    let bs = BS as usize;
    assert!(
        buf[..bs].iter().all(|b| *b == 0x11),
        "block 0 in slot 1, after its extra data"
    );
    assert!(buf[bs..2 * bs].iter().all(|b| *b == 0));
    assert!(buf[2 * bs..3 * bs].iter().all(|b| *b == 0x10));
    assert!(buf[3 * bs..].iter().all(|b| *b == 0));
    let e = r.block_status(100, 1 << 20).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Data, BS - 100));
    assert_eq!(e.host.unwrap().offset, 0x400 + (BS + EXTRA) + EXTRA + 100);
    let e = r.block_status(BS, 1 << 20).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Zero, BS));
    let e = r.block_status(3 * BS, 1 << 20).unwrap();
    assert_eq!(
        (e.kind, e.length),
        (ExtentKind::Zero, BS - 512),
        "clipped to the disk end"
    );
    assert!(r.block_status(4 * BS, 1).is_err());
    assert_eq!(r.check().unwrap(), CheckReport::default());
}

#[test]
fn bad_pointers_are_errors_not_panics() {
    // Slot 7 is beyond the 4 slots; slot 3 is in range but past the end of the file.
    let r = open_mem(image([7, 3, u32::MAX - 2, 0], 1));
    let mut buf = vec![0u8; 512];
    for off in [0, BS, 2 * BS] {
        assert!(r.read_at(&mut buf, off).is_err(), "read at {off}");
        assert!(r.block_status(off, 512).is_err(), "status at {off}");
    }
    r.read_at(&mut buf, 3 * BS).unwrap();
    let report = r.check().unwrap();
    assert_eq!(report.corruptions, 4, "{:?}", report.messages);
    assert_eq!(report.exit_code(), 2);
}
