//! Crafted damage to each format: tables pointing past the end of the file or into metadata,
//! overlapping tables, compressed clusters past the end and decompression bombs, absurd VMDK
//! descriptors, VDI block maps with duplicate or out-of-range entries, every truncation of small
//! images and headers whose size fields are all at their maximum.

use crate::util::{
    assert_fails, assert_never_wrong, attempt, attempt_mem, be64, copy, le32, patch,
    qcow2_l2_of_first_entry, qemu,
};
use std::path::{Path, PathBuf};
use vdisk_testutil::{qemu_available, qemu_io, Scratch};

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

/// A 4 MiB qcow2 image with 4 KiB clusters: data at 0 and 2 MiB (so two L2 tables), zeros at 64k.
fn qcow2_fixture(s: &Scratch, extra: &str) -> PathBuf {
    let p = s.join("f.qcow2");
    let opts = format!("cluster_size=4096{extra}");
    qemu(
        s.path(),
        &["create", "-f", "qcow2", "-o", &opts, "f.qcow2", "4M"],
    );
    qemu_io(
        "qcow2",
        &p,
        &[
            "write -P 0xaa 0 16k",
            "write -z 64k 8k",
            "write -P 0x55 2M 8k",
        ],
    );
    p
}

fn set_l2_entry(img: &Path, index: u64, entry: u64) {
    let (_, l2) = qcow2_l2_of_first_entry(img);
    patch(img, l2 + index * 8, &entry.to_be_bytes());
}

#[test]
fn qcow2_l2_entry_past_eof_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-l2-eof");
    let img = qcow2_fixture(&s, "");
    set_l2_entry(&img, 0, COPIED | (1 << 40));
    assert_fails(&img, s.path());
}

#[test]
fn qcow2_l2_entry_unaligned_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-l2-unaligned");
    let img = qcow2_fixture(&s, "");
    let (_, l2) = qcow2_l2_of_first_entry(&img);
    set_l2_entry(&img, 1, COPIED | (l2 + 512));
    assert_fails(&img, s.path());
}

#[test]
fn qcow2_l1_entry_past_eof_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-l1-eof");
    let img = qcow2_fixture(&s, "");
    let d = std::fs::read(&img).expect("read");
    patch(&img, be64(&d, 40), &(COPIED | (1 << 44)).to_be_bytes());
    assert_fails(&img, s.path());
}

#[test]
fn qcow2_l2_entries_into_the_header_and_tables_read_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-l2-meta");
    let img = qcow2_fixture(&s, "");
    let d = std::fs::read(&img).expect("read");
    let (_, l2) = qcow2_l2_of_first_entry(&img);
    // Guest clusters 0..3 map the header (via the refcount table cluster), the L1 table and the
    // L2 table itself; qemu reads them as data, and its check reports the damage.
    set_l2_entry(&img, 0, COPIED | be64(&d, 48));
    set_l2_entry(&img, 1, COPIED | be64(&d, 40));
    set_l2_entry(&img, 2, COPIED | l2);
    let ours = assert_never_wrong(&img);
    assert!(matches!(ours, Ok(Some(_))), "{ours:?}");
    let req = vdisk::OpenRequest::default();
    let r = vdisk::open_image(&img, &req).expect("open");
    let report = r.image.check().expect("check");
    assert!(
        report.corruptions > 0,
        "check missed L2 entries into metadata: {report:?}"
    );
}

#[test]
fn qcow2_overlapping_tables_never_panic_and_never_lie() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-overlap");
    let img = qcow2_fixture(&s, "");
    let d = std::fs::read(&img).expect("read");
    // Two L1 entries sharing one L2 table: the second 2 MiB read as the first.
    let l1 = be64(&d, 40);
    let shared = copy(&img, "shared.qcow2");
    patch(&shared, l1 + 8, &be64(&d, l1).to_be_bytes());
    assert!(matches!(assert_never_wrong(&shared), Ok(Some(_))));
    // The L1 table placed on the refcount table, and on the header.
    let on_reftable = copy(&img, "l1-on-reftable.qcow2");
    patch(&on_reftable, 40, &be64(&d, 48).to_be_bytes());
    let _ = assert_never_wrong(&on_reftable);
    let on_header = copy(&img, "l1-on-header.qcow2");
    patch(&on_header, 40, &0u64.to_be_bytes());
    let _ = assert_never_wrong(&on_header);
    // The snapshot table on the L1 table with a count of 1.
    let snap = copy(&img, "snap-on-l1.qcow2");
    patch(&snap, 60, &1u32.to_be_bytes());
    patch(&snap, 64, &l1.to_be_bytes());
    let _ = assert_never_wrong(&snap);
}

/// A compressed qcow2 image (4 KiB clusters) and the index and value of its first compressed entry.
fn compressed_fixture(s: &Scratch, kind: &str) -> (PathBuf, u64, u64) {
    let raw = s.join("src.raw");
    qemu(s.path(), &["create", "-f", "raw", "src.raw", "1M"]);
    qemu_io("raw", &raw, &["write -P 0x5a 0 64k"]);
    let opts = format!("cluster_size=4096,compression_type={kind}");
    qemu(
        s.path(),
        &[
            "convert", "-c", "-O", "qcow2", "-o", &opts, "src.raw", "c.qcow2",
        ],
    );
    let img = s.join("c.qcow2");
    let d = std::fs::read(&img).expect("read");
    let (_, l2) = qcow2_l2_of_first_entry(&img);
    let e = be64(&d, l2);
    assert!(
        e & COMPRESSED != 0,
        "fixture cluster 0 is not compressed: {e:#x}"
    );
    (img, 0, e)
}

/// A compressed L2 entry for 4 KiB clusters: offset and number of additional 512-byte sectors.
fn compressed_entry(offset: u64, extra_sectors: u64) -> u64 {
    // cluster_bits 12: the offset has 62 - (12 - 8) = 58 bits, the sector count 4 bits.
    COMPRESSED | (extra_sectors << 58) | offset
}

#[test]
fn qcow2_compressed_cluster_past_eof_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-comp-eof");
    let (img, idx, _) = compressed_fixture(&s, "zlib");
    let len = std::fs::metadata(&img).expect("stat").len();
    let far = copy(&img, "far.qcow2");
    set_l2_entry(&far, idx, compressed_entry(len + (1 << 20), 1));
    assert_fails(&far, s.path());
}

#[test]
fn qcow2_compressed_cluster_length_past_eof_never_lies() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-comp-len");
    let (img, idx, e) = compressed_fixture(&s, "zlib");
    let len = std::fs::metadata(&img).expect("stat").len();
    // The stream starts 512 bytes before the end of the file but claims 16 sectors.
    let d = std::fs::read(&img).expect("read");
    let offset = e & ((1 << 58) - 1);
    let tail = copy(&img, "tail.qcow2");
    let stream: Vec<u8> = d[offset as usize..(offset + 512).min(len) as usize].to_vec();
    let at = len.next_multiple_of(512);
    patch(&tail, at, &stream);
    set_l2_entry(&tail, idx, compressed_entry(at, 15));
    let _ = assert_never_wrong(&tail);
}

/// Raw deflate of `len` bytes of `byte` (what qemu stores for a compressed zlib cluster).
fn deflate(byte: u8, len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![byte; len]).expect("deflate");
    z.finish().expect("deflate")
}

fn bomb_image(s: &Scratch, kind: &str, stream: &[u8]) -> PathBuf {
    let (img, idx, _) = compressed_fixture(s, kind);
    let at = std::fs::metadata(&img)
        .expect("stat")
        .len()
        .next_multiple_of(512);
    patch(&img, at, stream);
    let sectors = (stream.len() as u64).div_ceil(512);
    assert!(
        sectors <= 16,
        "bomb stream too long for one 4 KiB cluster entry"
    );
    set_l2_entry(&img, idx, compressed_entry(at, sectors - 1));
    img
}

#[test]
fn qcow2_deflate_bomb_is_cut_at_the_cluster() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-deflate-bomb");
    // 4 MiB of 0x5a squeezed into 4 KiB, for a 4 KiB cluster (the largest stream its entry holds).
    let img = bomb_image(&s, "zlib", &deflate(0x5a, 4 << 20)[..]);
    let ours = assert_never_wrong(&img);
    if let Ok(Some(bytes)) = &ours {
        assert!(bytes[..4096].iter().all(|b| *b == 0x5a));
    }
}

#[test]
fn qcow2_zstd_frame_with_a_huge_window_is_bounded() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-zstd-window");
    // A frame header asking for a 128 MiB window (zstd's default decoding limit) and no content
    // size, then one RLE block of 4096 bytes of 0x5a: a decoder that sizes its buffers from the
    // header reserves the whole window for a 4 KiB cluster. (libzstd allocates in C, unseen by this
    // suite's allocator; measured by hand, `vdisk convert` of such an image peaks at 7 MiB RSS.)
    // The bytes must be qemu's, within the attempt's time limit.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (27 - 10) << 3];
    let block = 1u32 | (1 << 1) | (4096 << 3);
    frame.extend_from_slice(&block.to_le_bytes()[..3]);
    frame.push(0x5a);
    let img = bomb_image(&s, "zstd", &frame);
    let _ = assert_never_wrong(&img);
}

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
        ("q.img", b"QFI\xfb"),
        ("k.img", b"KDMV"),
        ("v.img", &vdi),
        ("c.img", b"COWD"),
        ("d.img", b"# Disk DescriptorFile\ncreateType=\"vmfs\"\n"),
    ];
    for (name, bytes) in cases {
        std::fs::write(s.join(name), bytes).expect("write");
        assert_fails(&s.join(name), s.path());
    }
    std::fs::write(s.join("empty.img"), b"").expect("write");
    assert!(
        attempt(&s.join("empty.img")).is_ok(),
        "an empty file is an empty raw disk"
    );
}
