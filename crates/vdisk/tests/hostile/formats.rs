//! Crafted damage to VMDK and VDI images (tables past the end of the file, absurd descriptors,
//! block maps with duplicate or out-of-range entries), every truncation of small images of every
//! format, headers whose size fields are at their maximum, and bare magic numbers.

use crate::util::{
    assert_fails, assert_never_wrong, attempt, attempt_mem, copy, le32, patch, qemu,
};
use std::path::PathBuf;
use vdisk_testutil::{qemu_available, qemu_io, Scratch};

/// A 1 MiB monolithicSparse VMDK with data at 0 and 512 KiB.
fn vmdk_fixture(s: &Scratch) -> PathBuf {
    qemu(s.path(), &["create", "-f", "raw", "v.raw", "1M"]);
    qemu_io(
        "raw",
        &s.join("v.raw"),
        &["write -P 0x61 0 8k", "write -P 0x62 512k 4k"],
    );
    qemu(s.path(), &["convert", "-O", "vmdk", "v.raw", "v.vmdk"]);
    s.join("v.vmdk")
}

#[test]
fn vmdk_grain_table_entries_past_eof_never_lie() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-vmdk-gte");
    let img = vmdk_fixture(&s);
    let d = std::fs::read(&img).expect("read");
    // gdOffset (sector) at byte 56; GD[0] is the sector of the first grain table.
    let gd = u64::from_le_bytes(d[56..64].try_into().expect("8")) * 512;
    let gt = u64::from(le32(&d, gd)) * 512;
    // qemu reads a grain past the end of the file, or a grain table there, as zeros: so must vdisk,
    // or fail; it must never return anything else.
    let grain = copy(&img, "grain.vmdk");
    patch(&grain, gt, &0x7fff_fff0u32.to_le_bytes());
    let _ = assert_never_wrong(&grain);
    let table = copy(&img, "table.vmdk");
    patch(&table, gd, &0x7fff_fff0u32.to_le_bytes());
    let _ = assert_never_wrong(&table);
    // A grain or table sector whose byte offset overflows.
    let wrap = copy(&img, "wrap.vmdk");
    patch(&wrap, gt, &u32::MAX.to_le_bytes());
    patch(&wrap, gd + 4, &u32::MAX.to_le_bytes());
    let _ = assert_never_wrong(&wrap);
}

fn descriptor(extents: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n{extents}\nddb.virtualHWVersion = \"4\"\n"
    )
}

#[test]
fn vmdk_descriptors_with_absurd_extents_are_errors() {
    let s = Scratch::new("hostile-vmdk-desc");
    std::fs::write(s.join("flat.bin"), vec![7u8; 4096]).expect("write extent");
    let many: String = (0..40_000).map(|_| "RW 1 ZERO\n").collect();
    let huge = u64::MAX;
    let cases = [
        ("many", many),
        ("huge-zero", format!("RW {huge} ZERO\n")),
        ("huge-flat", format!("RW {huge} FLAT \"flat.bin\" 0\n")),
        (
            "sum-overflows",
            format!("RW {} ZERO\nRW {} ZERO\n", huge / 2, huge / 2),
        ),
        (
            "past-8-eib",
            format!("RW {} ZERO\n", (i64::MAX as u64) / 512 + 1),
        ),
        (
            "flat-offset-huge",
            format!("RW 8 FLAT \"flat.bin\" {huge}\n"),
        ),
        ("no-extents", String::new()),
        ("extent-is-a-directory", "RW 8 FLAT \".\" 0\n".to_string()),
        (
            "extent-missing",
            "RW 8 SPARSE \"nothere.vmdk\"\n".to_string(),
        ),
        (
            "long-line",
            format!("RW 8 FLAT \"{}\" 0\n", "x".repeat(1 << 16)),
        ),
    ];
    for (name, extents) in cases {
        let p = s.join(&format!("{name}.vmdk"));
        std::fs::write(&p, descriptor(&extents)).expect("write descriptor");
        assert_fails(&p, s.path());
    }
    // A flat extent starting past the end of its file reads as zeros (as in qemu).
    let p = s.join("flat-offset-past-eof.vmdk");
    std::fs::write(&p, descriptor("RW 8 FLAT \"flat.bin\" 1000000000\n")).expect("write");
    match attempt(&p) {
        Ok(Some(bytes)) => assert!(bytes.len() == 4096 && bytes.iter().all(|b| *b == 0)),
        other => panic!("flat extent past the end of its file: {other:?}"),
    }
    // A descriptor file past the descriptor size limit.
    let p = s.join("big.vmdk");
    let pad = "#".repeat(2 << 20);
    std::fs::write(&p, descriptor(&format!("RW 8 ZERO\n{pad}\n"))).expect("write");
    assert_fails(&p, s.path());
}

/// A 3 MiB dynamic VDI image with blocks 0 and 2 allocated (slots 0 and 1).
fn vdi_fixture(s: &Scratch) -> (PathBuf, u64) {
    qemu(s.path(), &["create", "-f", "vdi", "d.vdi", "3M"]);
    let p = s.join("d.vdi");
    qemu_io("vdi", &p, &["write -P 0x31 0 4k", "write -P 0x32 2M 4k"]);
    let d = std::fs::read(&p).expect("read");
    (p, u64::from(le32(&d, 0x154)))
}

#[test]
fn vdi_block_map_with_duplicate_entries_reads_like_qemu_and_fails_check() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-vdi-dup");
    let (img, bmap) = vdi_fixture(&s);
    // Block 1 (free) and block 2 both point to slot 0.
    patch(&img, bmap + 4, &0u32.to_le_bytes());
    patch(&img, bmap + 8, &0u32.to_le_bytes());
    assert!(matches!(assert_never_wrong(&img), Ok(Some(_))));
    let r = vdisk::open_image(&img, &Default::default()).expect("open");
    let report = r.image.check().expect("check");
    assert!(
        report.corruptions > 0,
        "duplicate VDI slots not reported: {report:?}"
    );
}

#[test]
fn vdi_block_map_with_out_of_range_entries_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-vdi-range");
    let (img, bmap) = vdi_fixture(&s);
    for (i, v) in [3u32, 0x3fff_ffff, 0xffff_fffd].into_iter().enumerate() {
        let p = copy(&img, &format!("range{i}.vdi"));
        patch(&p, bmap, &v.to_le_bytes());
        assert_fails(&p, s.path());
    }
}

/// Every truncation length of `data` on a 512-byte grid, plus odd lengths around the header.
fn truncations(data: &[u8]) -> Vec<usize> {
    let mut v: Vec<usize> = (0..data.len()).step_by(512).collect();
    v.extend([
        1, 3, 7, 8, 63, 64, 71, 72, 73, 103, 104, 105, 511, 513, 1023, 1025,
    ]);
    v.extend((0..data.len()).step_by(4096).map(|n| n.saturating_sub(1)));
    v.retain(|n| *n < data.len());
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn truncated_images_of_every_format_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-trunc");
    let d = s.path();
    qemu(d, &["create", "-f", "raw", "t.raw", "512k"]);
    qemu_io(
        "raw",
        &s.join("t.raw"),
        &["write -P 0x71 0 40k", "write -P 0x72 300k 4k"],
    );
    let mut images: Vec<(&'static str, &str)> = vec![];
    for (fmt, name, opts) in [
        ("qcow2", "t.qcow2", "cluster_size=512"),
        (
            "qcow2",
            "tc.qcow2",
            "cluster_size=512,compression_type=zstd",
        ),
        ("qcow2", "te.qcow2", "cluster_size=16384,extended_l2=on"),
        ("vmdk", "t.vmdk", "subformat=monolithicSparse"),
        ("vmdk", "ts.vmdk", "subformat=streamOptimized"),
        ("vdi", "t.vdi", "static=off"),
    ] {
        let mut args = vec!["convert", "-O", fmt, "-o", opts];
        if name == "tc.qcow2" {
            args.push("-c");
        }
        args.extend(["t.raw", name]);
        qemu(d, &args);
        images.push((fmt, name));
    }
    qemu(d, &["snapshot", "-c", "s1", "t.qcow2"]);
    for (fmt, name) in images {
        let data = std::fs::read(s.join(name)).expect("read");
        for n in truncations(&data) {
            let what = format!("{name} truncated to {n} bytes");
            let r = attempt_mem(fmt, &what, data[..n].to_vec());
            if n < 72 {
                assert!(r.is_err(), "{what}: opened");
            }
        }
    }
}

/// (offset, width) of each size, count or offset field of a header, little or big endian.
struct Fields {
    format: &'static str,
    big_endian: bool,
    fields: &'static [(u64, usize)],
}

const HEADER_FIELDS: &[Fields] = &[
    Fields {
        format: "qcow2",
        big_endian: true,
        fields: &[
            (8, 8),   // backing_file_offset
            (16, 4),  // backing_file_size
            (20, 4),  // cluster_bits
            (24, 8),  // size
            (36, 4),  // l1_size
            (40, 8),  // l1_table_offset
            (48, 8),  // refcount_table_offset
            (56, 4),  // refcount_table_clusters
            (60, 4),  // nb_snapshots
            (64, 8),  // snapshots_offset
            (96, 4),  // refcount_order
            (100, 4), // header_length
            (108, 4), // first extension's length
        ],
    },
    Fields {
        format: "vmdk",
        big_endian: false,
        fields: &[
            (12, 8), // capacity
            (20, 8), // grainSize
            (28, 8), // descriptorOffset
            (36, 8), // descriptorSize
            (44, 4), // numGTEsPerGT
            (48, 8), // rgdOffset
            (56, 8), // gdOffset
            (64, 8), // overHead
        ],
    },
    Fields {
        format: "vdi",
        big_endian: false,
        fields: &[
            (0x44, 4),  // version
            (0x48, 4),  // header size
            (0x154, 4), // block map offset
            (0x158, 4), // data offset
            (0x15c, 4), // legacy cylinders
            (0x160, 4), // legacy heads
            (0x164, 4), // legacy sectors
            (0x168, 4), // sector size
            (0x170, 8), // disk size
            (0x178, 4), // block size
            (0x17c, 4), // block extra
            (0x180, 4), // blocks in image
            (0x184, 4), // blocks allocated
        ],
    },
];

#[test]
fn maximal_header_fields_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-max");
    let d = s.path();
    qemu(d, &["create", "-f", "raw", "m.raw", "4M"]);
    qemu_io(
        "raw",
        &s.join("m.raw"),
        &["write -P 0x71 0 64k", "write -P 0x72 3M 4k"],
    );
    qemu(
        d,
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "m.raw",
            "m.qcow2",
        ],
    );
    qemu(d, &["convert", "-O", "vmdk", "m.raw", "m.vmdk"]);
    qemu(d, &["convert", "-O", "vdi", "m.raw", "m.vdi"]);
    for set in HEADER_FIELDS {
        let name = format!("m.{}", set.format);
        let data = std::fs::read(s.join(&name)).expect("read");
        for &(off, width) in set.fields {
            for value in [u64::MAX, u64::MAX >> 1, 1 << (width * 8 - 1), 0] {
                let v = if width == 8 {
                    value
                } else {
                    value & 0xffff_ffff
                };
                let field = if set.big_endian {
                    v.to_be_bytes()[8 - width..].to_vec()
                } else {
                    v.to_le_bytes()[..width].to_vec()
                };
                let mut img = data.clone();
                img[off as usize..off as usize + width].copy_from_slice(&field);
                let what = format!("{name} with the field at {off:#x} = {v:#x}");
                let _ = attempt_mem(set.format, &what, img);
            }
        }
        // Every field at its maximum at once.
        let mut img = data.clone();
        for &(off, width) in set.fields {
            img[off as usize..off as usize + width].fill(0xff);
        }
        assert!(attempt_mem(set.format, &format!("{name} all maximal"), img).is_err());
    }
}

#[test]
fn hostile_files_through_the_facade_probe() {
    if !qemu_available() {
        return;
    }
    // A file that is only a magic number, for every format the prober knows, and one that is empty.
    let s = Scratch::new("hostile-magic");
    let mut vdi = b"<<< Oracle VM VirtualBox Disk Image >>>\n".to_vec();
    vdi.resize(0x40, 0);
    vdi.extend_from_slice(&0xbeda_107fu32.to_le_bytes());
    let cases: [(&str, &[u8]); 5] = [
        // The version too: QEMU probes qcow2 only from version 2 on (zeros after a short file).
        ("q.img", b"QFI\xfb\0\0\0\x03"),
        ("k.img", b"KDMV"),
        ("v.img", &vdi),
        ("c.img", b"COWD"),
        // `version=1` first: without it QEMU (and vdisk) probe the text as raw.
        (
            "d.img",
            b"# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\n",
        ),
    ];
    for (name, bytes) in cases {
        std::fs::write(s.join(name), bytes).expect("write");
        assert_fails(&s.join(name), s.path());
    }
    // The magic alone reads version 0: raw to QEMU, a disk of one sector.
    std::fs::write(s.join("magic.img"), b"QFI\xfb").expect("write");
    let raw = attempt(&s.join("magic.img")).expect("raw, as qemu-img reads it");
    let mut want = b"QFI\xfb".to_vec();
    want.resize(512, 0);
    assert_eq!(raw, Some(want));
    std::fs::write(s.join("empty.img"), b"").expect("write");
    assert!(
        attempt(&s.join("empty.img")).is_ok(),
        "an empty file is an empty raw disk"
    );
}
