//! Writing into existing VDI images in place (`convert -n`): images made and filled by qemu-img and
//! qemu-io, written through `vdisk_vdi::open_writer`, must read as expected to qemu, pass
//! `qemu-img check`, and allocate exactly the blocks that received data.

use crate::fixtures::open;
use std::path::{Path, PathBuf};
use vdisk_core::Payload;
use vdisk_testutil::*;
use vdisk_vdi::limits::BLOCK_FREE;

const M: u64 = 1 << 20;
/// Nine blocks, the last one partial.
const SIZE: u64 = 8 * M + 1536;

/// Blocks 0, 1, 3, 4 and 8 hold data; 2, 5, 6 and 7 are unallocated in a dynamic image.
const BEFORE: &[&str] = &[
    "write -P 0xaa 0 64k",
    "write -P 0xbb 1052672 8k",
    "write -P 0xcc 4193792 1k",
    "write -P 0xdd 8M 1536",
];

/// What the writer is given: offset, length and a byte to fill with (0 = a zero run).
const WRITES: &[(u64, u64, u8)] = &[
    (512, 3584, 0x11),          // part of allocated block 0
    (M + 4096, 4096, 0),        // zeros over part of allocated block 1
    (2 * M, M, 0),              // zeros over unallocated block 2: stays unallocated
    (5 * M + 4096, 8192, 0x22), // part of unallocated block 5: allocates it
    (5 * M + 6144, 1024, 0),    // zeros inside the block just allocated
    (6 * M, M, 0x33),           // all of unallocated block 6
    (3 * M, M, 0),              // zeros over all of allocated block 3: stays allocated
    (8 * M - 2048, 3584, 0x44), // end of unallocated block 7, start of allocated block 8
    (10000, 100, 0x55),         // back to block 0 (out of order)
    (SIZE - 512, 512, 0x66),    // the last sector of the disk
];

fn make(s: &Scratch, name: &str, is_static: bool, cmds: &[&str]) -> PathBuf {
    let p = s.join(name);
    let ps = p.to_str().unwrap().to_string();
    let size = SIZE.to_string();
    let mut args = vec!["create", "-q", "-f", "vdi"];
    if is_static {
        args.extend(["-o", "static=on"]);
    }
    args.extend([ps.as_str(), size.as_str()]);
    qemu_img(&args);
    if !cmds.is_empty() {
        qemu_io("vdi", &p, cmds);
    }
    p
}

/// Runs `WRITES` through the in-place writer and returns the bytes expected afterwards.
fn write_all(p: &Path) -> Vec<u8> {
    let mut expect = qemu_raw_bytes(p, Some("vdi"));
    let mut w = vdisk_vdi::open_writer(p).unwrap();
    let caps = w.caps();
    assert!(!caps.zero_initialized && caps.out_of_order && caps.granularity == M);
    for &(off, len, byte) in WRITES {
        let payload = if byte == 0 {
            Payload::Zero(len)
        } else {
            Payload::data(vec![byte; len as usize])
        };
        w.write(off, payload).unwrap();
        expect[off as usize..(off + len) as usize].fill(byte);
    }
    let past = w.write(SIZE - 512, Payload::data(vec![1u8; 1024]));
    assert!(past.unwrap_err().to_string().contains("past the end"));
    assert!(w.write(SIZE, Payload::Zero(512)).is_err());
    w.finish().unwrap();
    expect
}

#[test]
fn writes_into_dynamic_and_static_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-inplace");
    for (name, is_static, cmds) in [
        ("dyn.vdi", false, BEFORE),
        ("empty.vdi", false, &[][..]),
        ("fixed.vdi", true, BEFORE),
    ] {
        let p = make(&s, name, is_static, cmds);
        let old = open(&p);
        let (old_map, old_count) = (old.block_map().to_vec(), old.header().blocks_allocated);
        let expect = write_all(&p);
        assert_same_bytes(&qemu_raw_bytes(&p, Some("vdi")), &expect, name);
        assert_qemu_check_clean(&p, "vdi");
        let r = open(&p);
        let (map, count) = (r.block_map(), r.header().blocks_allocated);
        if is_static {
            assert_eq!((map, count), (&old_map[..], old_count), "{name}");
            continue;
        }
        // Blocks 5, 6 and 7 got the next slots, in the order they were written; every other
        // entry is unchanged (block 2 among them, still unallocated). In the empty image blocks 0
        // and 8 get data too, while the zeros over 1 and 3 allocate nothing.
        let newly: Vec<usize> = (0..9).filter(|b| old_map[*b] == BLOCK_FREE).collect();
        let allocated: Vec<usize> = newly
            .iter()
            .copied()
            .filter(|b| map[*b] != BLOCK_FREE)
            .collect();
        let expected_new: Vec<usize> = if cmds.is_empty() {
            vec![0, 5, 6, 7, 8]
        } else {
            vec![5, 6, 7]
        };
        assert_eq!(allocated, expected_new, "{name}");
        assert_eq!(map[2], BLOCK_FREE, "{name}: zeros allocate nothing");
        assert_eq!(count, old_count + expected_new.len() as u32, "{name}");
        for b in 0..9 {
            if old_map[b] != BLOCK_FREE {
                assert_eq!(map[b], old_map[b], "{name}: block {b} keeps its slot");
            }
        }
        let mut new_slots: Vec<u32> = expected_new.iter().map(|b| map[*b]).collect();
        new_slots.sort_unstable();
        let want: Vec<u32> = (old_count..count).collect();
        assert_eq!(new_slots, want, "{name}: slots follow the old ones");
    }
}

#[test]
fn opening_and_dropping_changes_nothing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-inplace-drop");
    let p = make(&s, "d.vdi", false, BEFORE);
    let before = std::fs::read(&p).unwrap();
    drop(vdisk_vdi::open_writer(&p).unwrap());
    vdisk_vdi::open_writer(&p).unwrap().finish().unwrap();
    assert!(std::fs::read(&p).unwrap() == before, "no write, no change");
    // A writer dropped without finish after allocating: the map and count are the old ones, the
    // image is clean and reads as before in the block that was being allocated.
    let old = qemu_raw_bytes(&p, Some("vdi"));
    let mut w = vdisk_vdi::open_writer(&p).unwrap();
    w.write(5 * M, Payload::data(vec![0x99u8; M as usize]))
        .unwrap();
    drop(w);
    assert_qemu_check_clean(&p, "vdi");
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vdi")), &old, "after drop");
    // The next writer reuses the slot and finishes cleanly.
    let expect = write_all(&p);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vdi")), &expect, "after reuse");
    assert_qemu_check_clean(&p, "vdi");
}

fn put32(b: &mut [u8], off: u64, v: u32) {
    b[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
}

/// Hostile images: `open_writer` refuses them with a clear error, never panics, and leaves the file
/// as it was.
#[test]
fn damaged_images_are_refused_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-inplace-bad");
    let good_path = make(&s, "good.vdi", false, BEFORE);
    let good = std::fs::read(&good_path).unwrap();
    let h = open(&good_path).header().clone();
    let (bmap, data) = (h.offset_bmap, h.offset_data);
    let slot = |block: u64| {
        u32::from_le_bytes(good[(bmap + block * 4) as usize..][..4].try_into().unwrap())
    };
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut b = good.clone();
    put32(&mut b, bmap + 4, 0x1000);
    cases.push(("entry past the map", b, "too large"));
    let mut b = good.clone();
    put32(&mut b, 0x184, 0x4000);
    cases.push(("count above the map", b, "allocated blocks mismatch"));
    let mut b = good.clone();
    put32(&mut b, bmap + 4, slot(0));
    cases.push(("two blocks in one slot", b, "also used by"));
    let mut b = good.clone();
    b.truncate((data + M + 512) as usize);
    cases.push(("truncated in the data area", b, "past the end of the file"));
    cases.push((
        "truncated in the map",
        good[..(bmap + 8) as usize].to_vec(),
        "past the end",
    ));
    cases.push(("truncated header", good[..0x100].to_vec(), "truncated"));
    // Slots not numbered 0..count: the next slot (= count) would be one in use.
    let mut b = good.clone();
    put32(&mut b, bmap + 8 * 4, 8);
    b.resize((data + 9 * M) as usize, 0);
    cases.push(("sparse slot numbers", b, "not numbered densely"));
    for (what, bytes, want) in &cases {
        let p = s.join("bad.vdi");
        std::fs::write(&p, bytes).unwrap();
        let e = match vdisk_vdi::open_writer(&p) {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{what}: {e}");
        assert!(std::fs::read(&p).unwrap() == *bytes, "{what}: file changed");
    }
    // The undamaged image opens (the cases above fail for their damage alone).
    vdisk_vdi::open_writer(&good_path)
        .unwrap()
        .finish()
        .unwrap();
    // Random damage in the header and map: an error or a writer, never a panic; a refused file
    // is left as it was.
    let mut rng = XorShift64::new(0x7664_6b69_6e70_6c63);
    for _ in 0..200 {
        let mut b = good.clone();
        for _ in 0..3 {
            let off = if rng.below(2) == 0 {
                rng.below(0x200)
            } else {
                bmap + rng.below(9 * 4)
            };
            b[off as usize] = rng.next_u64() as u8;
        }
        let p = s.join("fuzz.vdi");
        std::fs::write(&p, &b).unwrap();
        if vdisk_vdi::open_writer(&p).is_err() {
            assert!(std::fs::read(&p).unwrap() == b, "refused file changed");
        }
    }
}
