//! Resize: grown images pass `qemu-img check`, keep their data and read zeros after it
//! (`qemu-img compare` of the old content against the grown image).

use crate::fixtures::*;
use std::path::Path;
use vdisk_core::{CreateOptions, ImageReader, Payload};
use vdisk_testutil::*;

/// Resizes `p` to `new_size` and checks it against `before` (its raw content before the resize).
fn grow_and_verify(s: &Scratch, p: &Path, before: &Path, new_size: u64) -> vdisk_vdi::VdiReader {
    vdisk_vdi::resize(p, new_size).unwrap_or_else(|e| panic!("resize {}: {e}", p.display()));
    assert_qemu_check_clean(p, "vdi");
    // qemu-img compare accepts a longer image whose extra part reads as zeros.
    assert_qemu_compare_equal(before, p);
    let info = qemu_info_json(p);
    assert_eq!(
        info["virtual-size"].as_u64().unwrap(),
        new_size.div_ceil(512) * 512
    );
    let r = open(p);
    assert_eq!(r.check().unwrap().corruptions, 0);
    let old = std::fs::read(before).unwrap();
    let mut head = vec![0u8; old.len() + (2 << 20)];
    let n = (head.len() as u64).min(r.virtual_size()) as usize;
    r.read_at(&mut head[..n], 0).unwrap();
    assert_same_bytes(&head[..old.len()], &old, "old content after resize");
    assert!(
        head[old.len()..n].iter().all(|b| *b == 0),
        "grown part reads as zeros"
    );
    if new_size <= 64 << 20 {
        assert_eq!(vdisk_map_json(&r), qemu_map_json(p, Some("vdi")));
        assert_same_bytes(
            &read_all(&r, 1 << 20),
            &qemu_raw_bytes(p, Some("vdi")),
            "bytes after resize",
        );
    }
    let _ = s;
    r
}

fn snapshot_raw(s: &Scratch, p: &Path, name: &str) -> std::path::PathBuf {
    let out = s.join(name);
    std::fs::write(&out, qemu_raw_bytes(p, Some("vdi"))).unwrap();
    out
}

#[test]
fn grows_qemu_dynamic_image_moving_data_blocks() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-dyn");
    let p = qemu_vdi(&s, "d.vdi", false);
    let before = snapshot_raw(&s, &p, "before.raw");
    let data_before = open(&p).header().offset_data;
    assert_eq!(
        data_before, 0x400,
        "qemu leaves no room for the map to grow"
    );
    // 300 blocks need 1200 bytes of map: one slot moves.
    let r = grow_and_verify(&s, &p, &before, 300 << 20);
    assert_eq!(r.header().offset_data, 0x400 + (1 << 20));
    assert_eq!(r.header().blocks_in_image, 300);
    // Grow again: a second relocation on an image whose data area already moved once.
    let r = grow_and_verify(&s, &p, &before, 700 << 30);
    assert!(r.header().offset_data > 700 * 1024 * 4);
    // Writes by qemu after the resize land in fresh blocks and keep the image clean (the reader
    // closed first: its locks refuse writers).
    drop(r);
    qemu_io("vdi", &p, &["write -P 0x77 100M 64k", "write -P 0x78 0 4k"]);
    assert_qemu_check_clean(&p, "vdi");
    let r = open(&p);
    let mut b = vec![0u8; 4096];
    r.read_at(&mut b, 100 << 20).unwrap();
    assert!(b.iter().all(|x| *x == 0x77));
}

#[test]
fn grows_static_image_with_new_blocks() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-static");
    let p = qemu_vdi(&s, "s.vdi", true);
    let before = snapshot_raw(&s, &p, "before.raw");
    let r = grow_and_verify(&s, &p, &before, 200 << 20);
    assert_eq!(r.header().blocks_allocated, 200);
    assert!(r.block_map().iter().all(|e| *e < 200));
}

#[test]
fn grows_vdisk_image_in_place_and_within_last_block() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-own");
    let p = s.join("w.vdi");
    let size = (3 << 20) + 512;
    let mut w = vdisk_vdi::create(&p, size, &CreateOptions::new()).unwrap();
    w.write(0, Payload::data(vec![0x42; size as usize]))
        .unwrap();
    w.finish().unwrap();
    // Put garbage after the disk end inside the last block: resize must zero it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map(|f| {
            std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 4096], (2 << 20) + (3 << 20) + 512)
        })
        .unwrap()
        .unwrap();
    let before = snapshot_raw(&s, &p, "before.raw");
    let offset_data = open(&p).header().offset_data;
    let r = grow_and_verify(&s, &p, &before, (3 << 20) + 8192);
    assert_eq!(r.header().blocks_in_image, 4);
    let r2 = grow_and_verify(&s, &p, &before, 10 << 30);
    assert_eq!(
        r2.header().offset_data,
        offset_data,
        "the 1 MiB-aligned map had room: nothing moved"
    );
    drop(r);
}

#[test]
fn shrinking_is_refused_and_same_size_is_a_no_op() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-shrink");
    let p = qemu_vdi(&s, "d.vdi", false);
    let orig = std::fs::read(&p).unwrap();
    let e = vdisk_vdi::resize(&p, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("shrinking"), "{e}");
    vdisk_vdi::resize(&p, SIZE).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), orig, "unchanged");
    // A corrupt image is not resized.
    let mut bad = orig.clone();
    bad[0x208..0x20c].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&p, &bad).unwrap();
    let e = vdisk_vdi::resize(&p, 100 << 20).unwrap_err().to_string();
    assert!(e.contains("refusing to resize"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), bad);
}

#[test]
fn grows_when_more_slots_must_move_than_are_allocated() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-few");
    for (name, writes) in [
        ("one.vdi", &["write -P 0x31 3M 4k"][..]),
        ("none.vdi", &[][..]),
    ] {
        let p = s.join(name);
        qemu_create(&p, "vdi", "", "5M");
        if !writes.is_empty() {
            qemu_io("vdi", &p, writes);
        }
        let before = snapshot_raw(&s, &p, "before.raw");
        // 1 TiB needs a 4 MiB map: four slots' worth of room, with at most one slot in use.
        let r = grow_and_verify(&s, &p, &before, 1 << 40);
        assert_eq!(r.header().offset_data, 0x400 + (4 << 20));
        assert!(
            r.block_map().iter().all(|e| *e >= 0xffff_fffe || *e == 0),
            "the moved slot is slot 0 again"
        );
        drop(r); // the reader's locks refuse writers
        qemu_io("vdi", &p, &["write -P 0x32 0 4k"]);
        assert_qemu_check_clean(&p, "vdi");
    }
}

/// Fuzzing finding (vdi_mutate): a static image whose file goes on past its last slot (which
/// `qemu-img check` accepts) gave the new blocks slots inside those bytes, so the grown part read
/// them instead of zeros. qemu-img cannot resize VDI; the grown image must compare equal to the old
/// content followed by zeros.
#[test]
fn grown_static_image_reads_zeros_over_bytes_past_the_last_slot() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-static-tail");
    let p = qemu_vdi(&s, "t.vdi", true);
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, &vec![0xee; 3 << 20]).unwrap();
    drop(f);
    assert_qemu_check_clean(&p, "vdi");
    let before = snapshot_raw(&s, &p, "before.raw");
    // In place (the map has room), and with slots moved for a larger map.
    grow_and_verify(&s, &p, &before, 10 << 20);
    grow_and_verify(&s, &p, &before, 1 << 30);
}

/// Fuzzing finding (vdi_mutate): a block map with more entries than the disk needs may hold data in
/// a block past the disk's end (qemu opens and checks such an image without complaint). Growing the
/// disk over that block showed its old data instead of zeros; only the tail of the block holding
/// the old end was zeroed. qemu-img cannot resize VDI.
#[test]
fn grown_disk_reads_zeros_over_blocks_mapped_past_the_old_end() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-past-end");
    let p = s.join("h.vdi");
    qemu_create(&p, "vdi", "", "4M");
    qemu_io("vdi", &p, &["write -P 0x61 3M 64k", "write -P 0x62 0 4k"]);
    // The disk ends at 2 MiB + 512: block 3 (slot 0) lies wholly past it, block 2 holds the end.
    let mut b = std::fs::read(&p).unwrap();
    b[0x170..0x178].copy_from_slice(&((2u64 << 20) + 512).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert_qemu_check_clean(&p, "vdi");
    let before = snapshot_raw(&s, &p, "before.raw");
    grow_and_verify(&s, &p, &before, 4 << 20);
}

/// Fuzzing finding (vdi_mutate): resize rewrote the whole header from its parsed fields, so the
/// free bytes of the text and description (anything after their NUL, and bytes that are not
/// UTF-8, which became U+FFFD) changed. Only the offsets, disk size and block counts may change.
#[test]
fn resize_keeps_header_bytes_it_does_not_change() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-header-bytes");
    let p = s.join("d.vdi");
    qemu_create(&p, "vdi", "", "4M");
    qemu_io("vdi", &p, &["write -P 0x61 0 64k"]);
    let mut b = std::fs::read(&p).unwrap();
    b[0x3f] = 0x07;
    let desc = b"caf\xe9\0tail";
    b[0x54..0x54 + desc.len()].copy_from_slice(desc);
    std::fs::write(&p, &b).unwrap();
    assert_qemu_check_clean(&p, "vdi");
    let before = snapshot_raw(&s, &p, "before.raw");
    let changed = |i: usize| {
        [0x154..0x15c, 0x170..0x178, 0x180..0x188]
            .iter()
            .any(|r| r.contains(&i))
    };
    // In place, then with the data area moved.
    for size in [8 << 20, 1 << 30] {
        grow_and_verify(&s, &p, &before, size);
        let now = std::fs::read(&p).unwrap();
        for i in (0..0x200).filter(|i| !changed(*i)) {
            assert_eq!(now[i], b[i], "header byte {i:#x} after growing to {size}");
        }
    }
}

/// Fuzzing finding (vdi_mutate): growing a disk whose block map has more entries than the new size
/// needs cut the map down to the new size, dropping the entries past it with their slots, and
/// `qemu-img check` then reported "allocated blocks mismatch". The map never shrinks.
#[test]
fn growing_keeps_block_map_entries_past_the_new_size() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-long-map");
    let p = s.join("m.vdi");
    qemu_create(&p, "vdi", "", "4M");
    qemu_io("vdi", &p, &["write -P 0x61 3M 64k", "write -P 0x62 0 4k"]);
    // Four blocks, the disk ends inside block 2; block 3 holds data past the end.
    let mut b = std::fs::read(&p).unwrap();
    b[0x170..0x178].copy_from_slice(&((2u64 << 20) + 512).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert_qemu_check_clean(&p, "vdi");
    let before = snapshot_raw(&s, &p, "before.raw");
    // Three blocks are enough for 3 MiB; the map keeps its four.
    let r = grow_and_verify(&s, &p, &before, 3 << 20);
    assert_eq!(r.header().blocks_in_image, 4);
    assert_eq!(r.header().blocks_allocated, 2);
}
