//! Writing into existing VMDK images in place (`convert -n`): images of the four writable
//! subformats made and filled by qemu-img and qemu-io, written through `vdisk_vmdk::open_writer`,
//! must read as expected to qemu (`qemu-img compare` with the expected raw bytes), pass
//! `qemu-img check` and vdisk's check (redundant tables included), and allocate exactly the grains
//! that received data.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{FileStorage, ImageReader, Payload};
use vdisk_testutil::*;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;
/// Small images: two grain tables (32 MiB each) and a half grain.
const SMALL: u64 = 40 * M + 32 * K;
/// Split images need more than 2 GiB to have a second extent.
const SPLIT: u64 = 2 * G + 3 * M;

/// Grains of 64 KiB: 0 (0..64k), 16 (1M..), 48 (3M..) and the one across 2000k hold data.
const BEFORE: &[&str] = &[
    "write -P 0xaa 0 64k",
    "write -P 0xbb 1052672 8k",
    "write -P 0xcc 3M 64k",
    "write -P 0xcd 2000k 10k",
];

/// What the writer is given: offset, length and a byte to fill with (0 = a zero run).
const WRITES: &[(u64, u64, u8)] = &[
    (512, 3584, 0x11),            // part of allocated grain 0
    (M + 5 * K, 2 * K, 0),        // zeros over part of allocated grain 16
    (2 * M + 128 * K, M, 0),      // zeros over unallocated grains: stay unallocated
    (5 * M + 4 * K, 8 * K, 0x22), // part of unallocated grain 80: allocates it
    (5 * M + 6 * K, K, 0),        // zeros inside the grain just allocated
    (6 * M, 256 * K, 0x33),       // four whole unallocated grains
    (3 * M, 64 * K, 0),           // zeros over all of allocated grain 48: stays allocated
    (7 * M - 2 * K, 4 * K, 0x44), // across two unallocated grains
    (10000, 100, 0x55),           // back to grain 0 (out of order)
];

/// Writes at the end of the disk, and for split images around the 2 GiB extent boundary.
fn tail_writes(size: u64) -> Vec<(u64, u64, u8)> {
    let mut w = vec![(size - 512, 512, 0x66)];
    if size > 2 * G {
        w.push((2 * G - 64 * K, 128 * K, 0)); // zeros across the boundary over allocated grains
        w.push((2 * G - 4 * K, 8 * K, 0x77)); // data across the boundary
        w.push((2 * G + M, 4 * K, 0x78)); // an unallocated grain of the second extent
    }
    w
}

fn make(s: &Scratch, sub: &str, size: u64) -> PathBuf {
    let p = s.join(&format!("{sub}.vmdk"));
    let o = format!("subformat={sub}");
    qemu_create(&p, "vmdk", &o, &size.to_string());
    let mut cmds: Vec<String> = BEFORE.iter().map(|c| c.to_string()).collect();
    if size > 2 * G {
        cmds.push(format!("write -P 0xce {} 64k", 2 * G - 32 * K));
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vmdk", &p, &refs);
    p
}

/// Whether qemu-img map says guest byte `off` of `p` holds data.
fn allocated(p: &Path, off: u64) -> bool {
    let map = qemu_map_json(p, Some("vmdk"));
    let e = map
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            s <= off && off < s + l
        })
        .unwrap_or_else(|| panic!("no map entry at {off}"));
    e["data"].as_bool().unwrap()
}

/// Copies `p` to a raw file, applies `writes` to it and returns it (the expected content).
fn expected(s: &Scratch, p: &Path, writes: &[(u64, u64, u8)]) -> PathBuf {
    let raw = s.join(&format!(
        "{}.expect.raw",
        p.file_name().unwrap().to_string_lossy()
    ));
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        p.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    for &(off, len, byte) in writes {
        f.write_all_at(&vec![byte; len as usize], off).unwrap();
    }
    raw
}

fn write_all(p: &Path, writes: &[(u64, u64, u8)], size: u64) {
    let mut w = vdisk_vmdk::open_writer(p).unwrap();
    let caps = w.caps();
    assert!(!caps.zero_initialized && caps.out_of_order && caps.granularity == 64 * K);
    for &(off, len, byte) in writes {
        let payload = if byte == 0 {
            Payload::Zero(len)
        } else {
            Payload::data(vec![byte; len as usize])
        };
        w.write(off, payload).unwrap();
    }
    let past = w.write(size - 512, Payload::data(vec![1u8; 1024]));
    assert!(past.unwrap_err().to_string().contains("past the end"));
    assert!(w.write(size, Payload::Zero(512)).is_err());
    w.finish().unwrap();
}

fn cid(p: &Path) -> u32 {
    vdisk_vmdk::open(Arc::new(FileStorage::open(p).unwrap()), Arc::new(HostFiles))
        .unwrap()
        .cid()
}

fn vdisk_check_clean(p: &Path) {
    let r = vdisk_vmdk::open(Arc::new(FileStorage::open(p).unwrap()), Arc::new(HostFiles)).unwrap();
    let rep = r.check().unwrap();
    assert_eq!(rep.exit_code(), 0, "{}: {rep:?}", p.display());
}

#[test]
fn writes_into_each_writable_subformat() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace");
    for (sub, size) in [
        ("monolithicSparse", SMALL),
        ("monolithicFlat", SMALL),
        ("twoGbMaxExtentSparse", SPLIT),
        ("twoGbMaxExtentFlat", SPLIT),
    ] {
        let p = make(&s, sub, size);
        let mut writes = WRITES.to_vec();
        writes.extend(tail_writes(size));
        let raw = expected(&s, &p, &writes);
        let cid_before = cid(&p);
        write_all(&p, &writes, size);
        assert_qemu_compare_equal(&raw, &p);
        // A new CID, as QEMU gives on the first write.
        assert_ne!(cid(&p), cid_before, "{sub}: CID");
        assert_qemu_check_clean(&p, "vmdk");
        vdisk_check_clean(&p);
        if sub.ends_with("Flat") {
            continue;
        }
        // Grains that got data are allocated; zeros allocated nothing.
        for off in [5 * M, 6 * M + 192 * K, 7 * M - K, 7 * M, size - 1] {
            assert!(allocated(&p, off), "{sub}: {off} allocated");
        }
        for off in [2 * M + 128 * K, 3 * M - 1, 5 * M + 64 * K, 6 * M + 256 * K] {
            assert!(!allocated(&p, off), "{sub}: {off} not allocated");
        }
        assert!(allocated(&p, 3 * M), "{sub}: zeroed grain stays allocated");
        if size > 2 * G {
            assert!(allocated(&p, 2 * G + M), "{sub}: second extent grain");
            assert!(!allocated(&p, 2 * G + 2 * M), "{sub}: second extent hole");
        }
    }
}

#[test]
fn opening_and_dropping_changes_nothing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-drop");
    let p = make(&s, "monolithicSparse", SMALL);
    let before = std::fs::read(&p).unwrap();
    drop(vdisk_vmdk::open_writer(&p).unwrap());
    vdisk_vmdk::open_writer(&p).unwrap().finish().unwrap();
    assert!(std::fs::read(&p).unwrap() == before, "no write, no change");
    // Dropped without finish after allocating: the tables are the old ones, the image is clean
    // and reads as before.
    let old = qemu_raw_bytes(&p, Some("vmdk"));
    let mut w = vdisk_vmdk::open_writer(&p).unwrap();
    w.write(5 * M, Payload::data(vec![0x99u8; 64 * K as usize]))
        .unwrap();
    drop(w);
    assert_qemu_check_clean(&p, "vmdk");
    vdisk_check_clean(&p);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vmdk")), &old, "after drop");
}

/// Images this writer refuses by name, left as they were.
#[test]
fn other_subformats_and_parents_are_refused_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-refuse");
    let base = make(&s, "monolithicSparse", SMALL);
    let stream = s.join("stream.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        base.to_str().unwrap(),
        stream.to_str().unwrap(),
    ]);
    let child = s.join("child.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "vmdk",
        child.to_str().unwrap(),
    ]);
    // Descriptors qemu-img does not create: a vmfs disk, a ZERO extent, a read-only extent.
    std::fs::write(s.join("flat.img"), vec![0u8; 1 << 20]).unwrap();
    let descriptor = |name: &str, create_type: &str, extent: &str| {
        let p = s.join(name);
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
             createType=\"{create_type}\"\n\n# Extent description\n{extent}\n"
        );
        std::fs::write(&p, text).unwrap();
        p
    };
    let vmfs = descriptor("vmfs.vmdk", "vmfs", "RW 2048 VMFS \"flat.img\"");
    let zero = descriptor(
        "zero.vmdk",
        "monolithicFlat",
        "RW 2048 FLAT \"flat.img\" 0\nRW 2048 ZERO",
    );
    let fifo = s.join("fifo.img");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo_desc = descriptor("fifo.vmdk", "monolithicFlat", "RW 2048 FLAT \"fifo.img\" 0");
    let ro = descriptor(
        "ro.vmdk",
        "monolithicFlat",
        "RDONLY 2048 FLAT \"flat.img\" 0",
    );
    for (p, want) in [
        (&stream, "subformat streamOptimized"),
        (&child, "parent"),
        (&vmfs, "subformat vmfs"),
        (&zero, "ZERO extent"),
        (&ro, "not RW"),
        (&fifo_desc, "not a regular file"),
    ] {
        let before = std::fs::read(p).unwrap();
        let e = match vdisk_vmdk::open_writer(p) {
            Ok(_) => panic!("{want}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{want}: {e}");
        assert!(std::fs::read(p).unwrap() == before, "{want}: file changed");
    }
}

/// Random damage in the header, directories and tables of a sparse image: an error or a writer,
/// never a panic; a refused file is left as it was.
#[test]
fn damaged_sparse_images_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-fuzz");
    let good_path = make(&s, "monolithicSparse", SMALL);
    let good = std::fs::read(&good_path).unwrap();
    // The undamaged image opens (what is refused below is refused for its damage).
    vdisk_vmdk::open_writer(&good_path)
        .unwrap()
        .finish()
        .unwrap();
    // The redundant directory's first entry naming the primary first table: check finds the
    // tables equal, but committing would write that table twice.
    let u64_at = |at: usize| u64::from_le_bytes(good[at..at + 8].try_into().unwrap()) as usize;
    let (rgd, gd) = (u64_at(48) * 512, u64_at(56) * 512);
    let mut b = good.clone();
    let first_table: [u8; 4] = good[gd..gd + 4].try_into().unwrap();
    b[rgd..rgd + 4].copy_from_slice(&first_table);
    let p = s.join("shared.vmdk");
    std::fs::write(&p, &b).unwrap();
    let e = vdisk_vmdk::open_writer(&p)
        .err()
        .expect("opened")
        .to_string();
    assert!(e.contains("overlaps"), "{e}");
    assert!(std::fs::read(&p).unwrap() == b, "refused file changed");
    // A grain directory entry without a table (in both directories): check has nothing against
    // it, but qemu-img and VMware create every table, so it is refused rather than allocated.
    let mut b = good.clone();
    b[gd + 4..gd + 8].fill(0);
    b[rgd + 4..rgd + 8].fill(0);
    std::fs::write(&p, &b).unwrap();
    let e = vdisk_vmdk::open_writer(&p)
        .err()
        .expect("opened")
        .to_string();
    assert!(e.contains("entry 1 has no grain table"), "{e}");
    assert!(std::fs::read(&p).unwrap() == b, "refused file changed");
    let overhead = 128 * 512;
    let mut rng = XorShift64::new(0x766d_646b_696e_706c);
    for _ in 0..200 {
        let mut b = good.clone();
        for _ in 0..3 {
            let off = if rng.below(2) == 0 {
                rng.below(0x60)
            } else {
                21 * 512 + rng.below(overhead - 21 * 512)
            };
            b[off as usize] = rng.next_u64() as u8;
        }
        let p = s.join("fuzz.vmdk");
        std::fs::write(&p, &b).unwrap();
        if vdisk_vmdk::open_writer(&p).is_err() {
            assert!(std::fs::read(&p).unwrap() == b, "refused file changed");
        }
    }
}

/// With `zeroed_grain=on`, grain table entry 1 is a zeroed grain: zeros over it leave it so, data
/// into it allocates a grain as for an unallocated one.
#[test]
fn zeroed_grains_read_as_zeros_until_written() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-zeroed");
    let p = s.join("z.vmdk");
    qemu_create(&p, "vmdk", "zeroed_grain=on", &SMALL.to_string());
    qemu_io(
        "vmdk",
        &p,
        &["write -P 0x11 0 128k", "write -z 0 64k", "write -z 1M 128k"],
    );
    let writes = [
        (M, 64 * K, 0),
        (4 * K, 4 * K, 0x21),
        (M + 64 * K + 512, 512, 0x22),
    ];
    let raw = expected(&s, &p, &writes);
    write_all(&p, &writes, SMALL);
    assert_qemu_compare_equal(&raw, &p);
    assert_qemu_check_clean(&p, "vmdk");
    vdisk_check_clean(&p);
    assert!(
        allocated(&p, 0) && allocated(&p, M + 64 * K),
        "written zeroed grains"
    );
    assert!(!allocated(&p, M), "zeros over a zeroed grain");
}

/// The CID keeps its number of hex digits (QEMU writes `%x`, so a CID starting with zeros has
/// fewer than eight) and the descriptor its length.
#[test]
fn short_cid_is_replaced_in_place() {
    let s = Scratch::new("vmdk-inplace-cid");
    std::fs::write(s.join("f.img"), vec![0u8; 1 << 20]).unwrap();
    let p = s.join("d.vmdk");
    let text = "# Disk DescriptorFile\nversion=1\nCID=abc\nparentCID=ffffffff\n\
                createType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"f.img\" 0\n";
    std::fs::write(&p, text).unwrap();
    let mut w = vdisk_vmdk::open_writer(&p).unwrap();
    w.write(0, Payload::data(vec![7u8; 512])).unwrap();
    w.finish().unwrap();
    let after = std::fs::read_to_string(&p).unwrap();
    assert_eq!(after.len(), text.len(), "{after}");
    let line = after.lines().find(|l| l.starts_with("CID=")).unwrap();
    let v = u32::from_str_radix(&line[4..], 16).unwrap();
    assert!(line.len() == 7 && v != 0xabc, "{line}");
    assert_eq!(cid(&p), v);
    assert_eq!(std::fs::read(s.join("f.img")).unwrap()[..512], [7u8; 512]);
}
