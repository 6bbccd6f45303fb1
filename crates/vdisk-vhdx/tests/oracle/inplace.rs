//! Writing into existing VHDX images in place (`convert -n -O vhdx`): images made and filled by
//! qemu-img and qemu-io, written through `vdisk_vhdx::open_writer`, must read as expected to vdisk
//! and to qemu (`convert -O raw`, `compare` against a raw reference), pass `qemu-img check`, open in
//! `qemu-img info` (no log to replay), carry the header update of `vhdx_user_visible_write`,
//! allocate exactly the blocks that received data, and hold the same guest bytes as
//! `qemu-img convert -n -O vhdx` gives (damaged targets: inplace_refuse.rs).

use crate::fixtures::*;
use std::path::{Path, PathBuf};
use vdisk_core::{ImageWriter, Payload};
use vdisk_testutil::*;
use vdisk_vhdx::{header, BlockState};

/// `size` of the 1 MiB-block targets: 7 blocks, the last one 1536 bytes.
const SMALL: u64 = 6 * MIB + 1536;
/// `size` of the default-block (8 MiB) targets: 3 blocks, the last one 4 MiB.
const DEFAULT: u64 = 20 * MIB;

/// Targets: name, `qemu-img create` options, size, filled with the fixture pattern.
const TARGETS: &[(&str, &str, u64, bool)] = &[
    ("dyn-zero-empty.vhdx", "block_size=1M", SMALL, false),
    ("dyn-zero-data.vhdx", "block_size=1M", SMALL, true),
    (
        "dyn-nozero-data.vhdx",
        "block_size=1M,block_state_zero=off",
        SMALL,
        true,
    ),
    ("dyn-default-empty.vhdx", "", DEFAULT, false),
    (
        "dyn-default-data.vhdx",
        "block_state_zero=off",
        DEFAULT,
        true,
    ),
    (
        "fixed-data.vhdx",
        "subformat=fixed,block_size=1M,block_state_zero=off",
        SMALL,
        true,
    ),
    (
        "fixed-zero-data.vhdx",
        "subformat=fixed,block_size=1M",
        SMALL,
        true,
    ),
    (
        "fixed-default.vhdx",
        "subformat=fixed,block_state_zero=off",
        DEFAULT,
        false,
    ),
];

fn target(s: &Scratch, name: &str, opts: &str, size: u64, data: bool) -> PathBuf {
    if data {
        patterned(s, name, opts, &size.to_string())
    } else {
        create(s, name, opts, &size.to_string())
    }
}

/// What the writer is given for block size `b`: offset, length and a byte to fill with (0: a zero
/// run). Partial-block writes, writes spanning blocks, zeros inside and over whole blocks, writes
/// out of order and the last sector of the disk.
fn writes(b: u64, size: u64) -> Vec<(u64, u64, u8)> {
    vec![
        (512, 3584, 0x11),                 // part of block 0
        (b + 4096, 4096, 0),               // zeros inside block 1
        (b + b / 2, 8192, 0x22),           // data inside block 1
        (b - 2048, 4096, 0x33),            // across blocks 0 and 1
        (2 * b - 1024, 2048, 0),           // zeros across blocks 1 and 2
        (2 * b, (size - 2 * b).min(b), 0), // zeros over all of block 2: allocates nothing
        (2 * b + 4096, 512, 0x44),         // then data into it
        (b / 2, b, 0x77),                  // a block's worth across blocks 0 and 1
        (10000, 100, 0x55),                // back to block 0 (out of order)
        (size - 512, 512, 0x66),           // the last sector of the disk
    ]
}

fn payload(len: u64, byte: u8) -> Payload {
    if byte == 0 {
        Payload::Zero(len)
    } else {
        Payload::data(vec![byte; len as usize])
    }
}

/// The payload blocks vdisk reads as FULLY_PRESENT, with their file offsets.
fn present(p: &Path) -> Vec<(u64, u64)> {
    let r = open(p);
    let bat = r.bat();
    (0..bat.payload_blocks)
        .map(|b| (b, bat.payload_entry(b)))
        .filter(|(_, e)| BlockState::of(*e) == BlockState::FullyPresent)
        .map(|(b, e)| (b, vdisk_vhdx::bat::entry_offset(e)))
        .collect()
}

fn blocks(p: &Path) -> Vec<u64> {
    present(p).into_iter().map(|(b, _)| b).collect()
}

/// Both header blocks as stored.
fn headers(p: &Path) -> [Vec<u8>; 2] {
    let f = std::fs::read(p).unwrap();
    [
        f[64 << 10..68 << 10].to_vec(),
        f[128 << 10..132 << 10].to_vec(),
    ]
}

/// What qemu says of an image a writer finished: it opens without a log to replay, check exits 0,
/// and it reads `expect`, as vdisk does.
fn assert_sound(p: &Path, expect: &[u8], what: &str) {
    qemu_opens(p).unwrap_or_else(|e| panic!("{what}: qemu-img info: {e}"));
    assert_qemu_check_clean(p, "vhdx");
    assert_same_bytes(&qemu_raw_bytes(p, Some("vhdx")), expect, what);
    assert_same_bytes(&read_all(&open(p), 1 << 20), expect, what);
}

#[test]
fn writes_into_dynamic_and_fixed_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-inplace");
    for &(name, opts, size, data) in TARGETS {
        let p = target(&s, name, opts, size, data);
        assert_eq!(qemu_size(&p), size, "{name}");
        let r = open(&p);
        let b = u64::from(r.metadata().block_size);
        let old_seq = r.header().1.sequence_number;
        let old_data_guid = r.header().1.data_write_guid;
        drop(r);
        let old_len = std::fs::metadata(&p).unwrap().len();
        let mut want_blocks = blocks(&p);
        let old_present = present(&p);
        let mut expect = qemu_raw_bytes(&p, Some("vhdx"));
        let mut w = vdisk_vhdx::open_writer(&p).unwrap();
        let caps = w.caps();
        assert!(!caps.zero_initialized && caps.out_of_order && caps.granularity == 512);
        for (off, len, byte) in writes(b, size) {
            w.write(off, payload(len, byte)).unwrap();
            expect[off as usize..(off + len) as usize].fill(byte);
            if byte != 0 {
                want_blocks.extend(off / b..=(off + len - 1) / b);
            }
        }
        let past = w.write(size - 512, Payload::data(vec![1u8; 1024]));
        assert!(past.unwrap_err().to_string().contains("past the end"));
        assert!(w.write(size, Payload::Zero(512)).is_err());
        w.finish().unwrap();
        assert_sound(&p, &expect, name);
        let reference = s.join("expect.raw");
        std::fs::write(&reference, &expect).unwrap();
        assert_qemu_compare_equal_as(&p, &reference, &["-f", "vhdx", "-F", "raw"]);
        want_blocks.sort_unstable();
        want_blocks.dedup();
        assert_eq!(blocks(&p), want_blocks, "{name}: zeros allocate nothing");
        // Old blocks stay where they were; new ones follow the old end of the file, 1 MiB aligned,
        // in the order of their first write, and the file ends with the last of them.
        let now = present(&p);
        let mut next = old_len.next_multiple_of(MIB);
        let mut fresh: Vec<(u64, u64)> = now
            .iter()
            .filter(|e| !old_present.iter().any(|o| o.0 == e.0))
            .copied()
            .collect();
        fresh.sort_by_key(|e| e.1);
        for (blk, at) in &fresh {
            assert_eq!(*at, next, "{name}: block {blk}");
            next += b;
        }
        assert!(old_present.iter().all(|o| now.contains(o)), "{name}");
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(len, if fresh.is_empty() { old_len } else { next }, "{name}");
        // The header update: both headers valid, sequence numbers + 1 and + 2, a new DataWriteGuid,
        // the log still empty.
        let h = headers(&p);
        assert!(
            h.iter().all(|b| header::invalid_reason(b).is_none()),
            "{name}"
        );
        let r = open(&p);
        let cur = r.header().1;
        assert_eq!(cur.sequence_number, old_seq + 2, "{name}");
        assert_ne!(cur.data_write_guid, old_data_guid, "{name}");
        assert!(cur.log_guid.is_zero());
        let other = header::Header::parse(&h[1 - r.header().0]);
        assert_eq!(other.sequence_number, old_seq + 1);
        assert_eq!(
            other.fields[16..80],
            cur.fields[16..80],
            "{name}: headers agree"
        );
    }
}

/// Feeds `src` to `w` as the convert engine does, in 64 KiB pieces in guest order, all-zero ones as
/// zero runs.
fn convert_into(mut w: Box<dyn ImageWriter>, src: &[u8]) {
    for (i, piece) in src.chunks(64 << 10).enumerate() {
        let off = i as u64 * (64 << 10);
        let p = if piece.iter().all(|b| *b == 0) {
            Payload::Zero(piece.len() as u64)
        } else {
            Payload::data(piece.to_vec())
        };
        w.write(off, p).unwrap();
    }
    w.finish().unwrap();
}

/// A source: data in part of block 0, in the middle of block 2 and at the very end; zeros
/// everywhere else, over the target's data too.
fn source(b: u64, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for (off, len, byte) in [
        (4096u64, 8192u64, 0x31u8),
        (2 * b + 4096, 4096, 0x32),
        (size - 1024, 1024, 0x34),
    ] {
        v[off as usize..(off + len) as usize].fill(byte);
    }
    v
}

/// The same source converted into copies of the same target by vdisk and by
/// `qemu-img convert -n -O vhdx`: the same guest bytes (`qemu-img compare`). qemu writes zero
/// buffers wherever the source is zero (vhdx has no zero-write of its own), so it allocates every
/// block of the disk; vdisk allocates only blocks receiving data. With `--target-is-zero` on an
/// empty target qemu skips the zeros, and both files hold the same BAT.
#[test]
fn guest_bytes_match_qemu_img_convert_n() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-inplace-convert");
    let cases: &[(&str, &str, u64, bool)] = &[
        ("dyn-empty.vhdx", "block_size=1M", SMALL, false),
        ("dyn-data.vhdx", "block_size=1M", SMALL, true),
        ("dyn-default.vhdx", "block_state_zero=off", DEFAULT, true),
        (
            "fixed.vhdx",
            "subformat=fixed,block_size=1M,block_state_zero=off",
            SMALL,
            true,
        ),
        (
            "fixed-zero.vhdx",
            "subformat=fixed,block_size=1M",
            SMALL,
            true,
        ),
    ];
    for &(name, opts, size, data) in cases {
        let ours = target(&s, name, opts, size, data);
        let theirs = s.join(&format!("qemu-{name}"));
        std::fs::copy(&ours, &theirs).unwrap();
        let b = u64::from(open(&ours).metadata().block_size);
        let n = size.div_ceil(b);
        let old = blocks(&ours);
        let src = source(b, size);
        let src_path = s.join("src.raw");
        std::fs::write(&src_path, &src).unwrap();
        convert_into(vdisk_vhdx::open_writer(&ours).unwrap(), &src);
        let (sp, tp) = (src_path.to_str().unwrap(), theirs.to_str().unwrap());
        let mut args = vec!["convert", "-n", "-f", "raw", "-O", "vhdx"];
        if !data {
            args.push("--target-is-zero");
        }
        args.extend([sp, tp]);
        qemu_img(&args);
        assert_sound(&ours, &src, name);
        assert_sound(&theirs, &src, name);
        assert_qemu_compare_equal_as(&ours, &theirs, &["-f", "vhdx", "-F", "vhdx"]);
        let mut want = old;
        want.extend([0, 2, n - 1]);
        want.sort_unstable();
        want.dedup();
        assert_eq!(
            blocks(&ours),
            want,
            "{name}: vdisk allocates the blocks with data"
        );
        if data {
            assert_eq!(blocks(&theirs), (0..n).collect::<Vec<_>>(), "{name}: qemu");
        } else {
            assert_eq!(present(&ours), present(&theirs), "{name}: the same BAT");
        }
    }
}

#[test]
fn opening_and_dropping_changes_nothing_visible() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-inplace-drop");
    let p = patterned(&s, "d.vhdx", "block_size=1M", &SMALL.to_string());
    let before = std::fs::read(&p).unwrap();
    drop(vdisk_vhdx::open_writer(&p).unwrap());
    vdisk_vhdx::open_writer(&p).unwrap().finish().unwrap();
    let mut w = vdisk_vhdx::open_writer(&p).unwrap();
    // Zeros over a block that reads as zeros write nothing, not even the headers.
    w.write(5 * MIB, Payload::Zero(MIB)).unwrap();
    w.finish().unwrap();
    assert!(std::fs::read(&p).unwrap() == before, "no write, no change");
    // A writer dropped without finish after allocating: the BAT is the old one, the image reads as
    // before and checks clean; the new block is left unreferenced past the old end.
    let old = qemu_raw_bytes(&p, Some("vhdx"));
    let mut w = vdisk_vhdx::open_writer(&p).unwrap();
    w.write(5 * MIB, Payload::data(vec![0x99u8; 4096])).unwrap();
    drop(w);
    assert_sound(&p, &old, "after drop");
    let orphan_end = (before.len() as u64).next_multiple_of(MIB) + MIB;
    assert_eq!(std::fs::metadata(&p).unwrap().len(), orphan_end);
    // The next writer puts its blocks after the orphan and finishes cleanly.
    let mut w = vdisk_vhdx::open_writer(&p).unwrap();
    w.write(5 * MIB, Payload::data(vec![0x98u8; 4096])).unwrap();
    w.finish().unwrap();
    let mut expect = old;
    expect[(5 * MIB) as usize..(5 * MIB + 4096) as usize].fill(0x98);
    assert_sound(&p, &expect, "after reopen");
    assert!(present(&p).contains(&(5, orphan_end)));
}
