//! Crash simulation for `resize`: stop after every durable step and check what a crash there would
//! leave: qemu must still read the old content (followed by zeros if the size already changed), and
//! the finished image must pass `qemu-img check`.

use super::*;
use vdisk_testutil::*;

fn assert_reads_old_content(p: &Path, old: &[u8], what: &str) {
    let now = qemu_raw_bytes(p, Some("vdi"));
    assert!(now.len() >= old.len(), "{what}: shorter");
    assert_same_bytes(&now[..old.len()], old, what);
    assert!(
        now[old.len()..].iter().all(|b| *b == 0),
        "{what}: grown part not zero"
    );
}

/// `steps`: how many durable steps the resize takes (the last one writes the header).
fn crash_at_every_step(s: &Scratch, name: &str, create: &[&str], new_size: u64, steps: u32) {
    let base = s.join(name);
    let mut args = vec!["create", "-q", "-f", "vdi"];
    args.extend_from_slice(create);
    let b = base.to_str().unwrap().to_string();
    args.extend([b.as_str(), "5243392"]);
    qemu_img(&args);
    // Data in slot 0 (the one that must move), in the middle, and in the partial last block.
    qemu_io(
        "vdi",
        &base,
        &[
            "write -P 0x61 0 64k",
            "write -P 0x62 2M 4k",
            "write -P 0x63 5M 512",
        ],
    );
    // Garbage past the disk end inside the last block: resize must zero it.
    let f = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
    let slot = crate::open(std::sync::Arc::new(FileStorage::open(&base).unwrap()))
        .unwrap()
        .block_map()[5];
    std::os::unix::fs::FileExt::write_all_at(
        &f,
        &[0xee; 512],
        0x400 + u64::from(slot) * (1 << 20) + 512,
    )
    .unwrap();
    let old = qemu_raw_bytes(&base, Some("vdi"));
    let mut finished = None;
    for stop in 1..=8 {
        let p = s.join(&format!("{name}.{stop}"));
        std::fs::copy(&base, &p).unwrap();
        resize_steps(&p, new_size, stop).unwrap();
        let what = format!("{name} stopped after step {stop}");
        assert_reads_old_content(&p, &old, &what);
        let size = qemu_info_json(&p)["virtual-size"].as_u64().unwrap();
        if size == new_size {
            assert_qemu_check_clean(&p, "vdi");
            finished = Some(stop);
            break;
        }
        assert_eq!(size, old.len() as u64, "{what}: size is old or new");
    }
    assert_eq!(
        finished,
        Some(steps),
        "{name}: the step after which the header was written"
    );
}

#[test]
fn every_crash_point_keeps_data_readable() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-resize-crash");
    // Zero the tail, copy slot 0, switch its entry, write the moved map, write the header.
    crash_at_every_step(&s, "dyn.vdi", &[], 140 << 20, 5);
    crash_at_every_step(&s, "static.vdi", &["-o", "static=on"], 140 << 20, 5);
    // qemu's map (at 0x200, data at 0x400) has room for 128 entries: nothing moves.
    crash_at_every_step(&s, "inplace.vdi", &[], 100 << 20, 3);
}

/// A slot larger than the copy buffer (4 MiB blocks here) moves whole when the grown map needs its
/// room: the copy goes a piece at a time, so every piece must land at its place.
#[test]
fn slots_larger_than_the_copy_buffer_move_whole() {
    use vdisk_core::{ImageReader, MemStorage};
    const BS: u64 = 4 << 20;
    let pattern = |slot: u64, i: u64| ((i * 7 + slot * 13 + i / 4096) % 251) as u8;
    let mut h = crate::writer::new_header(2 * BS, false).unwrap();
    h.block_size = BS as u32;
    h.blocks_in_image = 2;
    h.blocks_allocated = 2;
    h.offset_bmap = 0x200;
    h.offset_data = 0x400;
    let mut b = vec![0u8; 0x400];
    h.write_v1(&mut b).unwrap();
    // Block 0 in slot 1, block 1 in slot 0 (the slot that must move).
    b[0x200..0x204].copy_from_slice(&1u32.to_le_bytes());
    b[0x204..0x208].copy_from_slice(&0u32.to_le_bytes());
    for slot in 0..2 {
        b.extend((0..BS).map(|i| pattern(slot, i)));
    }
    let mem = std::sync::Arc::new(MemStorage::new("big.vdi", b));
    // 200 blocks: an 800-byte map, past the 512 bytes before the data area.
    resize_in(mem.clone(), 200 * BS).unwrap();
    let r = crate::open(MemStorage::new("big.vdi", mem.contents()).shared()).unwrap();
    assert_eq!(r.virtual_size(), 200 * BS);
    let mut got = vec![0u8; (2 * BS) as usize];
    r.read_at(&mut got, 0).unwrap();
    for (block, slot) in [(0u64, 1u64), (1, 0)] {
        let want: Vec<u8> = (0..BS).map(|i| pattern(slot, i)).collect();
        assert!(
            got[(block * BS) as usize..((block + 1) * BS) as usize] == want[..],
            "block {block} (slot {slot}) changed"
        );
    }
}
