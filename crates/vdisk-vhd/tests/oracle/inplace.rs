//! Writing into existing VHD images in place (`convert -n -O vpc`): images made and filled by
//! qemu-img and qemu-io, written through `vdisk_vhd::open_writer`, must read as expected to vdisk
//! and to qemu (`convert -O raw`, `compare` against a raw reference), stay sound VHDs (qemu-img has
//! no `check` for vpc, so [`assert_sound`] checks what it would), allocate exactly the blocks that
//! received data, and lay the file out as `qemu-img convert -n -O vpc` does.

use crate::fixtures::*;
use std::path::{Path, PathBuf};
use vdisk_core::{ImageWriter, Payload};
use vdisk_testutil::*;
use vdisk_vhd::limits::BAT_UNUSED;
use vdisk_vhd::reader::FooterAt;

const B: u64 = 2 * MIB;
/// `qemu-img create -f vpc ... 12M` gives 12603392 bytes (CHS-rounded): 7 blocks, the last one
/// 20480 bytes.
const CHS_12M: u64 = 12_603_392;
/// A `force_size=on` size: 7 blocks, the last one 4608 bytes.
const FORCED: u64 = 6 * B + 4608;

/// What the writer is given: offset, length and a byte to fill with (0 = a zero run). In the
/// patterned images blocks 0, 1, 2, 3 (zeros) and 6 are allocated, 4 and 5 are not.
fn writes(size: u64) -> Vec<(u64, u64, u8)> {
    vec![
        (512, 3584, 0x11),          // part of block 0
        (B + 4096, 4096, 0),        // zeros over part of block 1
        (4 * B, B, 0),              // zeros over all of unallocated block 4: stays unallocated
        (5 * B + 4096, 8192, 0x22), // part of unallocated block 5: allocates it
        (5 * B + 6144, 1024, 0),    // zeros inside the block just allocated
        (3 * B, B, 0),              // zeros over all of allocated block 3: stays allocated
        (4 * B - 4096, 8192, 0),    // zeros across the edge of blocks 3 and 4
        (6 * B - 2048, 4096, 0x44), // across the edge of blocks 5 and 6
        (B - 1024, B + 2048, 0x77), // blocks 0, 1 and 2
        (10000, 100, 0x55),         // back to block 0 (out of order)
        (size - 512, 512, 0x66),    // the last sector of the disk
    ]
}

fn payload(len: u64, byte: u8) -> Payload {
    if byte == 0 {
        Payload::Zero(len)
    } else {
        Payload::data(vec![byte; len as usize])
    }
}

/// The allocated blocks of a dynamic image (BAT index order), as vdisk reads the BAT.
fn allocated(p: &Path) -> Vec<usize> {
    let r = open(p);
    let d = r.dynamic().expect("dynamic");
    let e = d.bat.entries();
    (0..e.len()).filter(|i| e[*i] != BAT_UNUSED).collect()
}

/// What `qemu-img check` would look at, had vpc one: qemu opens the image; a fixed disk ends with
/// its footer right after the data; a dynamic disk ends with a copy of the footer at offset 0, right
/// after the last block (where qemu's `free_data_block_offset` puts the next one), its blocks lie
/// after the BAT without overlapping and each has a bitmap of all ones, as qemu writes them.
fn assert_sound(p: &Path) {
    let size = qemu_size(p);
    let r = open(p);
    let f = std::fs::read(p).unwrap();
    assert_eq!(f.len() % 512, 0, "{}", p.display());
    let tail = &f[f.len() - 512..];
    match r.footer_at() {
        FooterAt::End(at) => {
            assert_eq!((at, size), (f.len() as u64 - 512, at), "fixed layout");
            assert_eq!(&tail[..8], b"conectix");
        }
        FooterAt::Start => {
            assert_eq!(&f[..512], tail, "{}: footer copy at the end", p.display());
            let d = r.dynamic().unwrap();
            let (bs, bm) = (u64::from(d.bat.block_size()), d.bat.bitmap_size());
            let bat_end = d.bat.table_offset() + d.bat.entries().len() as u64 * 4;
            let mut starts: Vec<u64> = d
                .bat
                .entries()
                .iter()
                .filter(|e| **e != BAT_UNUSED)
                .map(|e| u64::from(*e) * 512)
                .collect();
            starts.sort_unstable();
            let mut end = bat_end.next_multiple_of(512);
            for s in starts {
                assert!(s >= end, "{}: block at {s} overlaps", p.display());
                let bitmap = &f[s as usize..(s + bm) as usize];
                assert!(bitmap.iter().all(|b| *b == 0xff), "bitmap at {s}");
                end = s + bm + bs;
            }
            assert_eq!(end, f.len() as u64 - 512, "{}: last block end", p.display());
        }
    }
}

/// A target: `qemu-img create` with `opts`, filled with the fixture pattern unless `empty`.
fn target(s: &Scratch, name: &str, opts: &str, size: u64, empty: bool) -> PathBuf {
    if empty {
        create(s, name, opts, &size.to_string())
    } else {
        patterned(s, name, opts, &size.to_string())
    }
}

const TARGETS: &[(&str, &str, u64, bool)] = &[
    ("dyn-empty.vhd", "", CHS_12M, true),
    ("dyn-data.vhd", "", CHS_12M, false),
    ("dyn-forced.vhd", "force_size=on", FORCED, false),
    ("fixed-empty.vhd", "subformat=fixed", CHS_12M, true),
    ("fixed-data.vhd", "subformat=fixed", CHS_12M, false),
    (
        "fixed-forced.vhd",
        "subformat=fixed,force_size=on",
        FORCED,
        false,
    ),
];

#[test]
fn writes_into_dynamic_and_fixed_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace");
    for &(name, opts, size, empty) in TARGETS {
        let p = target(&s, name, opts, size, empty);
        assert_eq!(qemu_size(&p), size, "{name}");
        let fixed = open(&p).dynamic().is_none();
        let old_blocks = if fixed { vec![] } else { allocated(&p) };
        let mut expect = qemu_raw_bytes(&p, Some("vpc"));
        let mut w = vdisk_vhd::open_writer(&p).unwrap();
        let caps = w.caps();
        assert!(!caps.zero_initialized && caps.out_of_order && caps.granularity == 512);
        let mut data_blocks = old_blocks.clone();
        for (off, len, byte) in writes(size) {
            w.write(off, payload(len, byte)).unwrap();
            expect[off as usize..(off + len) as usize].fill(byte);
            if byte != 0 {
                data_blocks.extend((off / B) as usize..=((off + len - 1) / B) as usize);
            }
        }
        let past = w.write(size - 512, Payload::data(vec![1u8; 1024]));
        assert!(past.unwrap_err().to_string().contains("past the end"));
        assert!(w.write(size, Payload::Zero(512)).is_err());
        w.finish().unwrap();
        assert_same_bytes(&qemu_raw_bytes(&p, Some("vpc")), &expect, name);
        assert_same_bytes(&read_all(&open(&p), 1 << 20), &expect, name);
        let reference = s.join("expect.raw");
        std::fs::write(&reference, &expect).unwrap();
        assert_qemu_compare_equal_as(&p, &reference, &["-f", "vpc", "-F", "raw"]);
        assert_sound(&p);
        if !fixed {
            data_blocks.sort_unstable();
            data_blocks.dedup();
            assert_eq!(allocated(&p), data_blocks, "{name}: zeros allocate nothing");
        }
    }
}

/// Feeds `src` to `w` as the convert engine does, in 64 KiB pieces in guest order, all-zero ones
/// as zero runs.
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

/// A source for `convert -n`: data in part of block 0, the middle of block 2, across blocks 5 and
/// 6 and at the very end; zeros everywhere else, over the target's data too.
fn source(size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for (off, len, byte) in [
        (4096u64, 8192u64, 0x31u8),
        (2 * B + MIB, 4096, 0x32),
        (6 * B - 100_000, 102_000, 0x33),
        (size - 1024, 1024, 0x34),
    ] {
        v[off as usize..(off + len) as usize].fill(byte);
    }
    v
}

/// Turns a dynamic image into a differencing one (disk type 4 in both footer copies).
fn make_differencing(p: &Path) {
    let mut f = std::fs::read(p).unwrap();
    let n = f.len();
    for at in [0, n - 512] {
        let ft = &mut f[at..at + 512];
        ft[60..64].copy_from_slice(&4u32.to_be_bytes());
        ft[64..68].fill(0);
        let sum = !ft.iter().fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
        ft[64..68].copy_from_slice(&sum.to_be_bytes());
    }
    std::fs::write(p, f).unwrap();
}

/// The same source converted into copies of the same target by vdisk and by
/// `qemu-img convert -n -O vpc`: same guest bytes, and the same file where qemu allocates the same
/// blocks (an empty dynamic target with `--target-is-zero`, a fixed target, a differencing one,
/// where zeros allocate); on a dynamic target holding data qemu also allocates the blocks it fills
/// with zeros, vdisk only those receiving data.
#[test]
fn layout_matches_qemu_img_convert_n() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace-layout");
    let cases: &[(&str, &str, u64, bool, bool)] = &[
        // name, options, size, empty, differencing
        ("dyn-empty.vhd", "", CHS_12M, true, false),
        ("dyn-forced.vhd", "force_size=on", FORCED, true, false),
        ("dyn-data.vhd", "", CHS_12M, false, false),
        ("diff.vhd", "", CHS_12M, false, true),
        ("fixed-data.vhd", "subformat=fixed", CHS_12M, false, false),
    ];
    for &(name, opts, size, empty, diff) in cases {
        let ours = target(&s, name, opts, size, empty);
        if diff {
            make_differencing(&ours);
        }
        let theirs = s.join(&format!("qemu-{name}"));
        std::fs::copy(&ours, &theirs).unwrap();
        let old_blocks = open(&ours).dynamic().map(|_| allocated(&ours));
        let src = source(size);
        let src_path = s.join("src.raw");
        std::fs::write(&src_path, &src).unwrap();
        convert_into(vdisk_vhd::open_writer(&ours).unwrap(), &src);
        let (sp, tp) = (src_path.to_str().unwrap(), theirs.to_str().unwrap());
        let mut args = vec!["convert", "-n", "-f", "raw", "-O", "vpc"];
        if empty {
            args.push("--target-is-zero");
        }
        args.extend([sp, tp]);
        qemu_img(&args);
        assert_same_bytes(&qemu_raw_bytes(&ours, Some("vpc")), &src, name);
        assert_same_bytes(&qemu_raw_bytes(&theirs, Some("vpc")), &src, name);
        assert_sound(&ours);
        let same_file = empty || diff || old_blocks.is_none();
        if same_file {
            let (a, b) = (
                std::fs::read(&ours).unwrap(),
                std::fs::read(&theirs).unwrap(),
            );
            assert!(a == b, "{name}: the file differs from qemu-img's");
            continue;
        }
        // qemu allocates every block; vdisk the old ones and those with data (0, 2, 5, 6).
        let mut want = old_blocks.unwrap_or_default();
        want.extend([0, 2, 5, 6]);
        want.sort_unstable();
        want.dedup();
        assert_eq!(allocated(&ours), want, "{name}");
        assert_eq!(allocated(&theirs), (0..7).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn opening_and_dropping_changes_nothing_visible() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace-drop");
    let p = patterned(&s, "d.vhd", "", &CHS_12M.to_string());
    let before = std::fs::read(&p).unwrap();
    drop(vdisk_vhd::open_writer(&p).unwrap());
    vdisk_vhd::open_writer(&p).unwrap().finish().unwrap();
    assert!(std::fs::read(&p).unwrap() == before, "no write, no change");
    // A writer dropped without finish after allocating: the BAT is the old one, the image reads as
    // before and ends with a footer copy; the new block is left unreferenced.
    let old = qemu_raw_bytes(&p, Some("vpc"));
    let mut w = vdisk_vhd::open_writer(&p).unwrap();
    w.write(5 * B, Payload::data(vec![0x99u8; MIB as usize]))
        .unwrap();
    drop(w);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vpc")), &old, "after drop");
    let f = std::fs::read(&p).unwrap();
    assert_eq!(f.len(), before.len() + (B + 512) as usize);
    assert_eq!(&f[f.len() - 512..], &f[..512], "footer copy at the new end");
    // The next writer puts its blocks after the orphan and finishes cleanly.
    let mut w = vdisk_vhd::open_writer(&p).unwrap();
    w.write(5 * B, Payload::data(vec![0x98u8; 4096])).unwrap();
    w.finish().unwrap();
    let mut expect = old;
    expect[(5 * B) as usize..(5 * B + 4096) as usize].fill(0x98);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vpc")), &expect, "after reopen");
    let r = open(&p);
    let e = r.dynamic().unwrap().bat.entries()[5];
    assert_eq!(u64::from(e) * 512, before.len() as u64 - 512 + B + 512);
}
