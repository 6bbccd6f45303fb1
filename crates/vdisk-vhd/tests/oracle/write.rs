//! Writing: images made by `vdisk_vhd::create` + `write` + `finish` against the same images made by
//! `qemu-img create -f vpc` + qemu-io writes of the same data (and by `qemu-img convert -O vpc`):
//! `qemu-img info`, `map` and content must agree, vdisk must read its image back as qemu reads
//! qemu's, and the files must be the same bytes except the footer's timestamp, UUID and checksum
//! and the dynamic header's checksum.

use crate::fixtures::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_core::{CreateOptions, ImageReader, Payload};
use vdisk_testutil::*;

/// One write, in guest order.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `len` bytes of `fill` at `off`.
    Data(u64, u64, u8),
    /// `len` zero bytes at `off`: `Payload::Zero` for vdisk, nothing for qemu (qemu-img convert
    /// skips zeros on a new image; qemu-io's `write -z` would allocate the block).
    Zero(u64, u64),
}

impl Op {
    fn range(self) -> (u64, u64) {
        match self {
            Op::Data(o, l, _) | Op::Zero(o, l) => (o, o + l),
        }
    }
}

/// The writes for a disk of `size` bytes (2 MiB blocks): data in block 0, a write across the edge
/// of blocks 0 and 1, zeros over the rest of block 1 and all of block 2, block 3 written in several
/// pieces (sector-aligned and not), zeros over most of block 4, one write spanning three blocks,
/// a few sectors in the middle of the disk, a write across the last block edge and a partial sector
/// at the very end. Writes that do not fit, or overlap an earlier one, are left out.
fn ops(size: u64) -> Vec<Op> {
    let b = 2 * MIB;
    let mid = (size / 2) & !511;
    let last_edge = (size.saturating_sub(1) / b) * b;
    let mut v = vec![
        Op::Data(0, 65536, 0xaa),
        Op::Data(b - 512, 1024, 0xbb),
        Op::Zero(b + 512, 2 * b - 512),
        Op::Data(3 * b, 4096, 0x11),
        Op::Data(3 * b + 4096, 512, 0x12),
        Op::Data(3 * b + 8192 + 100, 300, 0x13),
        Op::Data(3 * b + MIB, MIB, 0x14),
        Op::Zero(4 * b, b - 4096),
        Op::Data(5 * b - 4096, b + 8192, 0x41),
        Op::Data(mid, 1536, 0x21),
        Op::Data(last_edge.saturating_sub(1024), 2048, 0x31),
        Op::Data(size.saturating_sub(700), 700, 0xdd),
    ];
    v.sort_by_key(|o| o.range().0);
    let mut out: Vec<Op> = Vec::new();
    let mut end = 0;
    for o in v {
        let (s, e) = o.range();
        if s >= end && e <= size && e > s {
            out.push(o);
            end = e;
        }
    }
    out
}

/// qemu's image: `qemu-img create -f vpc -o OPTS NAME SIZE` and qemu-io writes of the data.
fn qemu_image(s: &Scratch, name: &str, opts: &str, size: u64, ops: &[Op]) -> PathBuf {
    let p = create(s, name, opts, &size.to_string());
    let cmds: Vec<String> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Data(off, len, fill) => Some(format!("write -q -P {fill} {off} {len}")),
            Op::Zero(..) => None,
        })
        .collect();
    if !cmds.is_empty() {
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io("vpc", &p, &refs);
    }
    p
}

/// vdisk's image of the same request.
fn vdisk_image(s: &Scratch, name: &str, opts: &str, size: u64, ops: &[Op]) -> PathBuf {
    let p = s.join(name);
    let o = CreateOptions::parse(&[opts]).unwrap();
    let mut w = vdisk_vhd::create(&p, size, &o).unwrap();
    let caps = w.caps();
    assert_eq!(caps.granularity, 512);
    assert!(caps.zero_initialized && !caps.out_of_order && !caps.copy_range);
    for op in ops {
        match *op {
            Op::Data(off, len, fill) => w
                .write(off, Payload::data(vec![fill; len as usize]))
                .unwrap(),
            Op::Zero(off, len) => w.write(off, Payload::Zero(len)).unwrap(),
        }
    }
    assert!(!p.exists(), "the image must appear only on finish");
    w.finish().unwrap();
    p
}

/// Footer fields that differ between any two creations: timestamp, checksum, UUID.
fn mask_footer(b: &mut [u8]) {
    b[24..28].fill(0);
    b[64..84].fill(0);
}

fn timestamp(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[24..28].try_into().unwrap())
}

/// The files are the same bytes apart from the masked fields (for a fixed disk: the footer and the
/// length; its data area is compared by content and by map, which shows its holes).
fn assert_same_file(ours: &Path, theirs: &Path, dynamic: bool) {
    let what = ours.display();
    let (lo, lt) = (
        std::fs::metadata(ours).unwrap().len(),
        std::fs::metadata(theirs).unwrap().len(),
    );
    assert_eq!(lo, lt, "{what}: file length");
    assert!(lo >= 512);
    let (mut a, mut b) = if dynamic {
        (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap())
    } else {
        let tail = |p: &Path| {
            let f = std::fs::File::open(p).unwrap();
            let mut v = vec![0u8; 512];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut v, lo - 512).unwrap();
            v
        };
        (tail(ours), tail(theirs))
    };
    let n = a.len();
    let ts = (timestamp(&a[n - 512..]), timestamp(&b[n - 512..]));
    assert!(ts.0.abs_diff(ts.1) < 600, "{what}: timestamps {ts:?}");
    assert_ne!(a[n - 512 + 68..n - 512 + 84], b[n - 512 + 68..n - 512 + 84]);
    for x in [&mut a, &mut b] {
        mask_footer(&mut x[n - 512..]);
        if dynamic {
            mask_footer(&mut x[..512]);
            // The dynamic header's checksum.
            x[512 + 36..512 + 40].fill(0);
        }
    }
    assert_same_bytes(&a, &b, &format!("{what}: file bytes (masked)"));
}

/// Info, map and content of vdisk's image against qemu's; vdisk reads back its own image as qemu
/// reads qemu's.
fn assert_like_qemus(ours: &Path, theirs: &Path, ops: &[Op]) {
    let (qo, qt) = (info_json(ours), info_json(theirs));
    for k in ["format", "virtual-size", "cluster-size"] {
        assert_eq!(qo[k], qt[k], "{}: info {k}", ours.display());
    }
    let map = qemu_map_json(theirs, Some("vpc"));
    assert_eq!(
        qemu_map_json(ours, Some("vpc")),
        map,
        "map of {}",
        ours.display()
    );
    let r = open(ours);
    assert_eq!(vdisk_map_json(&r), map, "vdisk's map of {}", ours.display());
    let size = r.virtual_size();
    assert_eq!(size, qt["virtual-size"].as_u64().unwrap());
    if size <= 128 * MIB {
        let oracle = qemu_raw_bytes(theirs, Some("vpc"));
        assert_same_bytes(&qemu_raw_bytes(ours, Some("vpc")), &oracle, "qemu reads");
        assert_same_bytes(&read_all(&r, MIB as usize), &oracle, "vdisk reads");
    } else {
        // A fixed VHD would probe as raw, footer included.
        assert_qemu_compare_equal_as(ours, theirs, &["-f", "vpc", "-F", "vpc"]);
        // vdisk reads what was written where it was written (and zeros elsewhere).
        for op in ops {
            let (s, e) = op.range();
            let mut got = vec![0u8; (e - s + 1024).min(size - s) as usize];
            r.read_at(&mut got, s).unwrap();
            let fill = match op {
                Op::Data(_, _, f) => *f,
                Op::Zero(..) => 0,
            };
            let n = (e - s) as usize;
            assert!(got[..n].iter().all(|x| *x == fill), "{op:?}");
        }
    }
}

const SIZES: &[u64] = &[
    1 << 20,
    3_000_000,
    100 << 20,
    1 << 30,
    127 << 30,
    // Past the largest CHS geometry: sized by the current size even without force_size.
    130 << 30,
];

const OPTIONS: &[(&str, &str)] = &[
    ("d", ""),
    ("ds", "force_size=on"),
    ("f", "subformat=fixed"),
    ("fs", "subformat=fixed,force_size=on"),
];

#[test]
fn written_images_match_qemus() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-write");
    for size in SIZES {
        for (tag, opts) in OPTIONS {
            let ours = vdisk_image(&s, &format!("o{tag}{size}.vhd"), opts, *size, &[]);
            let virt = open(&ours).virtual_size();
            let ops = ops(virt);
            let _ = std::fs::remove_file(&ours);
            let ours = vdisk_image(&s, &format!("o{tag}{size}.vhd"), opts, *size, &ops);
            let theirs = qemu_image(&s, &format!("q{tag}{size}.vhd"), opts, *size, &ops);
            assert_like_qemus(&ours, &theirs, &ops);
            assert_same_file(&ours, &theirs, !tag.starts_with('f'));
            let _ = std::fs::remove_file(&ours);
            let _ = std::fs::remove_file(&theirs);
        }
    }
}

#[test]
fn empty_images_match_qemus() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-write-empty");
    for size in [0u64, 1, 512, 34816, 10 << 20, 2040 << 30] {
        for (tag, opts) in OPTIONS {
            let ours = vdisk_image(&s, &format!("o{tag}{size}.vhd"), opts, size, &[]);
            let theirs = qemu_image(&s, &format!("q{tag}{size}.vhd"), opts, size, &[]);
            let fixed = tag.starts_with('f');
            assert_same_file(&ours, &theirs, !fixed);
            if size == 0 && fixed {
                // The footer alone, at offset 0: neither qemu nor vdisk opens it (see size.rs).
                assert!(qemu_reads(&ours).is_err() && try_open(&ours).is_err());
            } else if size == 0 {
                // qemu-img map lists one empty extent for an empty disk; compare the rest.
                let (qo, qt) = (info_json(&ours), info_json(&theirs));
                assert_eq!(qo["virtual-size"], qt["virtual-size"]);
                assert_eq!(qo["cluster-size"], qt["cluster-size"]);
                assert_eq!(open(&ours).virtual_size(), 0);
            } else {
                assert_eq!(
                    qemu_map_json(&ours, Some("vpc")),
                    qemu_map_json(&theirs, Some("vpc"))
                );
                let (qo, qt) = (info_json(&ours), info_json(&theirs));
                assert_eq!(qo["virtual-size"], qt["virtual-size"]);
                assert_eq!(qo["cluster-size"], qt["cluster-size"]);
                assert_eq!(
                    vdisk_map_json(&open(&ours)),
                    qemu_map_json(&theirs, Some("vpc"))
                );
            }
            let _ = std::fs::remove_file(&ours);
            let _ = std::fs::remove_file(&theirs);
        }
    }
}

/// qemu-img's message for a refused `create`, without its "qemu-img: PATH: " prefix.
fn qemu_create_error(p: &Path, opts: &str, size: &str) -> String {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vpc", "-o", opts])
        .arg(p)
        .arg(size)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "qemu-img create {opts} {size} succeeded"
    );
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let prefix = format!("qemu-img: {}: ", p.display());
    msg.strip_prefix(&prefix).unwrap_or(&msg).to_string()
}

#[test]
fn refused_requests_fail_as_in_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-write-refuse");
    let p = s.join("r.vhd");
    for (opts, size) in [
        ("subformat=dynamic", (2040u64 << 30) + 1),
        ("force_size=on", 2041 << 30),
        ("subformat=fixed", 3000 << 30),
        ("subformat=fixed,force_size=on", 1 << 50),
        ("subformat=foo", 1 << 20),
        ("force_size=maybe", 1 << 20),
        ("bogus=1", 1 << 20),
    ] {
        let want = qemu_create_error(&p, opts, &size.to_string());
        let _ = std::fs::remove_file(&p);
        let o = CreateOptions::parse(&[opts]).unwrap();
        let got = match vdisk_vhd::create(&p, size, &o) {
            Ok(_) => panic!("vdisk accepted {opts} {size}"),
            Err(e) => e.to_string(),
        };
        // qemu's message, or (for a bad boolean and an unknown option, which the option parser
        // shared by all formats words) its first words.
        let head: String = want.split(['\n', ',']).next().unwrap().to_string();
        assert!(
            got.contains(&want) || got.contains(&head),
            "{opts} {size}: vdisk said {got:?}, qemu {want:?}"
        );
        assert!(!p.exists());
    }
}

#[test]
fn dropped_writer_leaves_no_file() {
    let s = Scratch::new("vhd-write-drop");
    for opts in ["", "subformat=fixed"] {
        let p = s.join("d.vhd");
        let o = CreateOptions::parse(&[opts]).unwrap();
        let mut w = vdisk_vhd::create(&p, 10 * MIB, &o).unwrap();
        w.write(0, Payload::data(vec![1u8; 4096])).unwrap();
        w.write(4 * MIB, Payload::data(vec![2u8; 4096])).unwrap();
        drop(w);
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 0);
    }
}

/// A raw source with data at 4 KiB granules: a little in block 0, across the edge of blocks 1 and
/// 2, a lone granule in block 4, and the last granule (qemu-img's zero detection then splits it
/// the same way as a 4 KiB granule split does).
fn raw_source(s: &Scratch, size: u64) -> (PathBuf, Vec<u8>) {
    let mut d = vec![0u8; size as usize];
    let mut fill = |at: u64, len: u64, v: u8| {
        for (i, x) in d[at as usize..(at + len) as usize].iter_mut().enumerate() {
            *x = v ^ (i as u8);
        }
    };
    fill(4096, 8192, 0x10);
    fill(4 * MIB - 8192, 16384, 0x20);
    fill(8 * MIB + 65536, 4096, 0x30);
    fill(size - 4096, 4096, 0x40);
    let p = s.join("src.raw");
    std::fs::write(&p, &d).unwrap();
    (p, d)
}

#[test]
fn converted_images_match_qemu_img_convert() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-write-convert");
    let size = 10 * MIB + 3 * 4096;
    let (src, data) = raw_source(&s, size);
    for (tag, opts) in OPTIONS {
        let theirs = s.join(&format!("q{tag}.vhd"));
        let mut args = vec!["convert", "-f", "raw", "-O", "vpc"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let (a, b) = (src.to_str().unwrap(), theirs.to_str().unwrap());
        args.extend([a, b]);
        qemu_img(&args);
        // Fed as the conversion engine feeds a zero-initialised writer: zero granules as zeros.
        let ours = s.join(&format!("o{tag}.vhd"));
        let o = CreateOptions::parse(&[opts]).unwrap();
        let mut w = vdisk_vhd::create(&ours, size, &o).unwrap();
        for (i, g) in data.chunks(4096).enumerate() {
            let off = i as u64 * 4096;
            if g.iter().all(|x| *x == 0) {
                w.write(off, Payload::Zero(g.len() as u64)).unwrap();
            } else {
                w.write(off, Payload::data(g.to_vec())).unwrap();
            }
        }
        w.finish().unwrap();
        assert_like_qemus(&ours, &theirs, &[]);
        assert_same_file(&ours, &theirs, !tag.starts_with('f'));
        let r = open(&ours);
        let back = read_all(&r, 100_001);
        assert_same_bytes(&back[..data.len()], &data, "the source's bytes");
        assert!(back[data.len()..].iter().all(|x| *x == 0));
    }
}
