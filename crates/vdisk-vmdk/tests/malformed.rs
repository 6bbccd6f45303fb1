//! Hostile and malformed VMDK input, built by hand in memory: every case must give an error (or read
//! consistently), never panic or allocate without bound.

use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_core::{reader::collect_extents, Error, ExtentKind, ImageReader, MemStorage, Storage};
use vdisk_vmdk::header::{
    Marker, SparseHeader, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, GD_AT_END, MARKER_FOOTER,
};

fn header() -> SparseHeader {
    SparseHeader {
        version: 1,
        flags: FLAG_NL_DETECT,
        capacity: 256,
        grain_size: 8,
        descriptor_offset: 1,
        descriptor_size: 1,
        num_gtes_per_gt: 512,
        rgd_offset: 0,
        gd_offset: 2,
        overhead: 8,
        unclean_shutdown: false,
        compress_algorithm: 0,
    }
}

/// The descriptor of the hand-built sparse files, in sector 1 where qemu reads it: its `CID`
/// and `parentCID` are what qemu needs to open the file.
const DESCRIPTOR: &[u8] = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
    createType=\"monolithicSparse\"\n";

/// Writes [`DESCRIPTOR`] into sector 1 of `img`.
fn put_descriptor(img: &mut [u8]) {
    img[512..512 + DESCRIPTOR.len()].copy_from_slice(DESCRIPTOR);
}

/// A 128 KiB monolithic sparse image with 4 KiB grains: descriptor at sector 1, GD at sector 2,
/// GT at sector 3, grain 1 of the disk stored at sector 8 (pattern 0x5a), everything else
/// unallocated.
fn small_image() -> Vec<u8> {
    let mut img = vec![0u8; 8 * 512 + 4096];
    img[..512].copy_from_slice(&header().to_bytes());
    put_descriptor(&mut img);
    img[1024..1028].copy_from_slice(&3u32.to_le_bytes());
    img[1536 + 4..1536 + 8].copy_from_slice(&8u32.to_le_bytes());
    img[8 * 512..].fill(0x5a);
    img
}

fn open(bytes: Vec<u8>) -> vdisk_core::Result<vdisk_vmdk::VmdkReader> {
    vdisk_vmdk::open(
        Arc::new(MemStorage::new("t.vmdk", bytes)),
        Arc::new(NoFiles),
    )
}

#[test]
fn hand_built_image_reads() {
    let r = open(small_image()).unwrap();
    assert_eq!(r.virtual_size(), 128 * 1024);
    let mut b = vec![0u8; 12288];
    r.read_at(&mut b, 0).unwrap();
    assert!(b[..4096].iter().all(|x| *x == 0) && b[4096..8192].iter().all(|x| *x == 0x5a));
    let ex = collect_extents(&r).unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(
        (ex[1].kind, ex[1].host.as_ref().unwrap().offset),
        (ExtentKind::Data, 4096)
    );
    assert_eq!(r.check().unwrap().exit_code(), 0);
}

#[test]
fn truncated_files_fail() {
    let img = small_image();
    for len in [0usize, 3, 100, 511, 512, 515] {
        assert!(open(img[..len].to_vec()).is_err(), "len {len}");
    }
    // Shorter than the header's overhead: refused as qemu does ("File truncated").
    let e = open(img[..1030].to_vec()).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
    // GT cut off (overhead claims less): opening succeeds, reading the grain fails cleanly.
    let mut h = header();
    h.overhead = 1;
    let mut short = img[..1030].to_vec();
    short[..512].copy_from_slice(&h.to_bytes());
    let r = open(short).unwrap();
    let mut b = vec![0u8; 512];
    assert!(r.read_at(&mut b, 4096).is_err());
    assert!(r.block_status(0, 4096).is_err());
    assert!(r.check().unwrap().exit_code() != 0);
}

#[test]
fn absurd_header_fields_fail() {
    type Tweak = Box<dyn Fn(&mut SparseHeader)>;
    let cases: Vec<(&str, Tweak)> = vec![
        ("huge capacity", Box::new(|h| h.capacity = u64::MAX / 256)),
        (
            "capacity needing a huge GD",
            Box::new(|h| h.capacity = 1 << 50),
        ),
        ("huge grain", Box::new(|h| h.grain_size = 1 << 30)),
        ("zero grain", Box::new(|h| h.grain_size = 0)),
        ("odd grain", Box::new(|h| h.grain_size = 24)),
        ("GD past EOF", Box::new(|h| h.gd_offset = 1 << 40)),
        ("GD at 0", Box::new(|h| h.gd_offset = 0)),
        ("GD overflows", Box::new(|h| h.gd_offset = u64::MAX / 2)),
        ("too many GTEs", Box::new(|h| h.num_gtes_per_gt = 1 << 20)),
        ("version 4", Box::new(|h| h.version = 4)),
        (
            "descriptor too big",
            Box::new(|h| {
                h.descriptor_offset = 1;
                h.descriptor_size = 1 << 40;
            }),
        ),
        (
            "unknown compression",
            Box::new(|h| {
                h.flags |= FLAG_COMPRESSED;
                h.compress_algorithm = 9;
            }),
        ),
        (
            "stream without footer",
            Box::new(|h| h.gd_offset = GD_AT_END),
        ),
    ];
    for (what, f) in cases {
        let mut h = header();
        f(&mut h);
        let mut img = small_image();
        img[..512].copy_from_slice(&h.to_bytes());
        match open(img) {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
        }
    }
}

#[test]
fn garbage_compressed_grain_fails_on_read() {
    let mut h = header();
    h.flags |= FLAG_COMPRESSED | FLAG_MARKERS;
    h.compress_algorithm = 1;
    h.version = 3;
    let mut img = small_image();
    img[..512].copy_from_slice(&h.to_bytes());
    // Marker claims 100 bytes of garbage.
    img[8 * 512..8 * 512 + 12].copy_from_slice(&Marker::grain_header(8, 100));
    let r = open(img.clone()).unwrap();
    let mut b = vec![0u8; 4096];
    let e = r.read_at(&mut b, 4096).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_eq!(
        r.block_status(4096, 4096).unwrap().kind,
        ExtentKind::Compressed
    );
    // Marker claiming more than a grain's worth.
    img[8 * 512..8 * 512 + 12].copy_from_slice(&Marker::grain_header(8, u32::MAX));
    assert!(open(img).unwrap().read_at(&mut b, 4096).is_err());
}

#[test]
fn stream_footer_is_used() {
    let mut h = header();
    h.version = 3;
    h.flags |= FLAG_COMPRESSED | FLAG_MARKERS;
    h.compress_algorithm = 1;
    let mut footer = h.clone();
    h.gd_offset = GD_AT_END;
    let mut img = small_image();
    img[8 * 512..].fill(0);
    // A real compressed grain for guest grain 1.
    let data = vec![0x42u8; 4096];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &data).unwrap();
    let c = z.finish().unwrap();
    img.truncate(8 * 512);
    img.extend_from_slice(&Marker::grain_header(8, c.len() as u32));
    img.extend_from_slice(&c);
    img.resize(img.len().div_ceil(512) * 512, 0);
    footer.gd_offset = 2;
    img[..512].copy_from_slice(&h.to_bytes());
    img.extend_from_slice(&Marker::metadata_sector(1, MARKER_FOOTER));
    img.extend_from_slice(&footer.to_bytes());
    img.extend_from_slice(&[0u8; 512]);
    let r = open(img.clone()).unwrap();
    let mut b = vec![0u8; 4096];
    r.read_at(&mut b, 4096).unwrap();
    assert_eq!(b, data);
    // Damaged end-of-stream or footer marker: refused.
    let n = img.len();
    let mut bad_eos = img.clone();
    bad_eos[n - 512 + 12] = 1;
    assert!(open(bad_eos).is_err());
    img[n - 1536 + 12] = 9;
    assert!(open(img).is_err());
}

#[test]
fn other_sparse_subformats_are_named() {
    let mut cowd = b"COWD".to_vec();
    cowd.resize(2048, 0);
    let e = open(cowd).err().unwrap().to_string();
    assert!(e.contains("vmfsSparse"), "{e}");
    let mut se = 0xcafe_babeu64.to_le_bytes().to_vec();
    se.resize(2048, 0);
    let e = open(se).err().unwrap().to_string();
    assert!(e.contains("seSparse"), "{e}");
    let d = "# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW 8 SESPARSE \"x\"\n";
    // An SESPARSE extent is opened (and here, missing).
    let e = open(d.as_bytes().to_vec()).err().unwrap().to_string();
    assert!(e.contains("Could not open 'x'"), "{e}");
}

#[test]
fn descriptor_problems() {
    let base = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n";
    let bad = [
        format!("{base}createType=\"custom\"\nRW 8 ZERO\n"),
        format!("{base}RW 8 ZERO\n"),
        format!("{base}createType=\"monolithicFlat\"\n"),
        format!("{base}createType=\"monolithicFlat\"\nRW 8 FLAT \"missing.bin\" 0\n"),
        format!(
            "{base}createType=\"monolithicFlat\"\n{}",
            "RW 4611686018427387904 ZERO\n".repeat(3)
        ),
        format!(
            "{base}createType=\"monolithicFlat\"\n{}",
            "RW 1 ZERO\n".repeat(40000)
        ),
        format!("{base}createType=\"monolithicFlat\"\nNOACCESS 8 ZERO\n"),
    ];
    for d in &bad {
        assert!(
            open(d.as_bytes().to_vec()).is_err(),
            "{}",
            &d[..d.len().min(200)]
        );
    }
    let e = open(bad[3].as_bytes().to_vec()).err().unwrap().to_string();
    assert!(e.contains("missing.bin"), "{e}");
    let big = vec![b'#'; 2 << 20];
    assert!(matches!(open(big), Err(Error::Limit { .. })));
}

#[test]
fn zero_extents_read_as_zero() {
    let d = "# Disk DescriptorFile\nversion=1\nCID=00000010\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
             RW 2048 ZERO\nRDONLY 1024 ZERO\n";
    let r = open(d.as_bytes().to_vec()).unwrap();
    assert_eq!(r.virtual_size(), 3072 * 512);
    assert_eq!(r.cid(), 0x10);
    let mut b = vec![1u8; 3072 * 512];
    r.read_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|x| *x == 0));
    let ex = collect_extents(&r).unwrap();
    assert_eq!(
        (ex.len(), ex[0].kind, ex[0].length),
        (1, ExtentKind::Zero, 3072 * 512)
    );
}

#[test]
fn mutated_images_never_panic() {
    let img = small_image();
    for pos in 0..(3 * 512) {
        for val in [0x00u8, 0xff, 0x01, 0x80] {
            let mut m = img.clone();
            if m[pos] == val {
                continue;
            }
            m[pos] = val;
            let st = MemStorage::new("m.vmdk", m);
            let Ok(r) = vdisk_vmdk::open(Arc::new(st), Arc::new(NoFiles)) else {
                continue;
            };
            let size = r.virtual_size().min(1 << 20);
            let mut b = vec![0u8; 4096];
            let mut off = 0;
            while off + 4096 <= size {
                let _ = r.read_at(&mut b, off);
                let _ = r.block_status(off, 1 << 20);
                off += 4096;
            }
            let _ = r.info();
            let _ = r.check();
        }
    }
    let st = MemStorage::new("x", small_image());
    assert!(st.len().unwrap() > 0);
}

#[test]
fn check_finds_overlapping_grains() {
    // Two grain table entries pointing at the same grain, and one pointing into the header.
    let mut img = small_image();
    img[1536 + 8..1536 + 12].copy_from_slice(&8u32.to_le_bytes());
    img[1536 + 12..1536 + 16].copy_from_slice(&2u32.to_le_bytes());
    let rep = open(img).unwrap().check().unwrap();
    assert_eq!(rep.corruptions, 2, "{:?}", rep.messages);
    assert_eq!(rep.exit_code(), 2);
    assert!(
        rep.messages
            .iter()
            .any(|m| m.contains("share host sector 8")),
        "{:?}",
        rep.messages
    );
    assert!(
        rep.messages
            .iter()
            .any(|m| m.contains("overlaps the metadata")),
        "{:?}",
        rep.messages
    );
}

#[test]
fn empty_images_from_our_writer() {
    let s = vdisk_testutil::Scratch::new("vmdk-empty");
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let img = s.join(&format!("e-{sub}.vmdk"));
        let opts = vdisk_core::CreateOptions::parse(&[format!("subformat={sub}")]).unwrap();
        vdisk_vmdk::create(&img, 0, &opts)
            .unwrap()
            .finish()
            .unwrap();
        let st = Arc::new(vdisk_core::FileStorage::open(&img).unwrap());
        let r = vdisk_vmdk::open(st, Arc::new(vdisk_core::storage::HostFiles)).unwrap();
        assert_eq!(r.virtual_size(), 0, "{sub}");
        assert!(collect_extents(&r).unwrap().is_empty());
        assert_eq!(r.check().unwrap().exit_code(), 0);
    }
}

#[test]
fn shared_grain_tables_are_reported_once() {
    // A 1 TiB capacity whose 32768 directory entries all name the same table (in a tiny file).
    let mut h = header();
    h.capacity = 1 << 31;
    h.grain_size = 128;
    h.gd_offset = 2;
    let entries = h.gd_entries() as usize;
    let mut img = vec![0u8; 2 * 512 + entries * 4 + 2048 + 65536];
    img[..512].copy_from_slice(&h.to_bytes());
    put_descriptor(&mut img);
    let gt_sector = (2 * 512 + entries * 4).div_ceil(512) as u32;
    img.resize(gt_sector as usize * 512 + 2048 + 65536, 0);
    for i in 0..entries {
        img[1024 + i * 4..1024 + i * 4 + 4].copy_from_slice(&gt_sector.to_le_bytes());
    }
    let grain_sector = gt_sector + 4;
    let t = gt_sector as usize * 512;
    img[t..t + 4].copy_from_slice(&grain_sector.to_le_bytes());
    let rgd = h.clone();
    let r = open(img.clone()).unwrap();
    let started = std::time::Instant::now();
    let rep = r.check().unwrap();
    assert_eq!(rep.corruptions as usize, entries - 1);
    // The same directory as the redundant one too: still one comparison per distinct pair.
    let mut h2 = rgd;
    h2.rgd_offset = 2;
    h2.flags |= vdisk_vmdk::header::FLAG_RGD;
    img[..512].copy_from_slice(&h2.to_bytes());
    let rep = open(img).unwrap().check().unwrap();
    assert_eq!(rep.corruptions as usize, entries - 1);
    assert!(started.elapsed().as_secs() < 5);
}

/// Hands out one shared in-memory file for every name.
struct SameFile(Arc<dyn Storage>);

impl vdisk_core::storage::FileOpener for SameFile {
    fn open(&self, _path: &std::path::Path) -> vdisk_core::Result<Arc<dyn Storage>> {
        Ok(Arc::clone(&self.0))
    }
}

#[test]
fn many_extents_share_one_memory_budget() {
    // A sparse file of 8 TiB capacity: 262144 directory entries (1 MiB of directory), all zero.
    let mut h = header();
    h.grain_size = 128;
    h.capacity = 262144 * 512 * 128;
    // An extent file: no descriptor, the directory right after the header.
    (h.descriptor_offset, h.descriptor_size, h.gd_offset) = (0, 0, 1);
    let mut img = h.to_bytes().to_vec();
    img.resize(512 + 262144 * 4, 0);
    let file: Arc<dyn Storage> = Arc::new(MemStorage::new("big-s.vmdk", img));
    let desc = |n: usize| {
        format!(
            "# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n{}",
            "RW 1 SPARSE \"s.vmdk\"\n".repeat(n)
        )
    };
    let open_n = |n: usize| {
        let d = MemStorage::new("d.vmdk", desc(n).into_bytes());
        vdisk_vmdk::open(Arc::new(d), Arc::new(SameFile(Arc::clone(&file))))
    };
    let r = open_n(1).unwrap();
    assert_eq!(r.virtual_size(), 8 << 40);
    // One block-status call scans a bounded number of grains; callers loop.
    let e = r.block_status(0, u64::MAX).unwrap();
    assert_eq!((e.kind, e.length), (ExtentKind::Unallocated, 64 << 30));
    assert!(matches!(open_n(129), Err(Error::Limit { .. })));
}

#[test]
fn sparse_extents_loaded_on_use_are_checked_again() {
    // 140 sparse extents over one in-memory file: the first 64 stay loaded from open on, the other
    // 76 are loaded on use into a set of 64, so reading them all evicts some. A file that changes
    // under the reader is then an error when an evicted extent is loaded again, not a panic or a
    // misread; the extents kept loaded still read.
    let file: Arc<dyn Storage> = Arc::new(MemStorage::new("s.vmdk", small_image()));
    let desc = format!(
        "# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n{}",
        "RW 256 SPARSE \"s.vmdk\"\n".repeat(140)
    );
    let d = MemStorage::new("d.vmdk", desc.into_bytes());
    let r = vdisk_vmdk::open(Arc::new(d), Arc::new(SameFile(Arc::clone(&file)))).unwrap();
    let ext = 128 * 1024u64;
    assert_eq!(r.virtual_size(), 140 * ext);
    let mut b = vec![0u8; 4096];
    let read_all = |b: &mut [u8]| -> Vec<(u64, String)> {
        (0..140)
            .filter_map(|i| match r.read_at(b, i * ext + 4096) {
                Ok(()) if b.iter().all(|x| *x == 0x5a) => None,
                Ok(()) => Some((i, "wrong bytes".to_string())),
                Err(e) => Some((i, e.to_string())),
            })
            .collect()
    };
    assert_eq!(read_all(&mut b), vec![]);
    assert_eq!(r.check().unwrap().exit_code(), 0);
    // Twice the capacity: an extent loaded again no longer fits its place in the disk.
    let mut h = header();
    h.capacity = 512;
    file.write_at(&h.to_bytes(), 0).unwrap();
    let failed = read_all(&mut b);
    assert!(!failed.is_empty());
    for (i, msg) in &failed {
        assert!(
            *i >= 64 && msg.contains("capacity changed"),
            "extent {i}: {msg}"
        );
    }
    let rep = r.check().unwrap();
    assert!(rep.check_errors > 0, "{rep:?}");
}

#[test]
fn mutated_descriptors_never_panic() {
    let base = "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
                parentFileNameHint=\"p.vmdk\"\n# Extent description\nRW 2048 ZERO\nRW 4096 FLAT \"f.bin\" 12\n\
                RDONLY 8 ZERO\nddb.adapterType = \"ide\"\n";
    let bytes = base.as_bytes();
    for pos in 0..bytes.len() {
        for val in [b'"', b'\n', b'9', b' ', 0u8, 0xff, b'=', b'#'] {
            let mut m = bytes.to_vec();
            m[pos] = val;
            if let Ok(d) = vdisk_vmdk::descriptor::Descriptor::parse(&m) {
                let _ = vdisk_vmdk::descriptor::Descriptor::parse(d.render().as_bytes());
            }
            let _ = vdisk_vmdk::descriptor::Descriptor::parse_embedded(&m);
            if let Ok(r) = open(m) {
                // Only ZERO extents can open without files.
                let mut b = vec![0u8; 512];
                let _ = r.read_at(&mut b, 0);
                let _ = r.info();
            }
        }
    }
}

/// A small seSparse extent (see tests/read.rs for the qemu-compared one).
fn sesparse_image() -> Vec<u8> {
    use vdisk_vmdk::sesparse::*;
    let mut img = vec![0u8; 83 * 512];
    let mut put = |sector: usize, i: usize, v: u64| {
        let at = sector * 512 + i * 8;
        img[at..at + 8].copy_from_slice(&v.to_le_bytes());
    };
    let fields = [
        (0, vdisk_vmdk::header::SESPARSE_MAGIC),
        (1, SESPARSE_VERSION),
        (2, 8192),
        (3, 8),
        (4, 64),
    ];
    for (i, v) in fields.into_iter().chain([
        (10, 1),
        (16, 2),
        (17, 1),
        (18, 3),
        (19, 64),
        (24, 67),
        (25, 16),
    ]) {
        put(0, i, v);
    }
    put(1, 0, SESPARSE_VOLATILE_MAGIC);
    put(2, 0, 0x1000_0000_0000_0000);
    put(3, 1, encode_cluster(0));
    put(3, 3, encode_cluster(1));
    put(3, 5, 0x2000_0000_0000_0000);
    img[67 * 512..].fill(0x5a);
    img
}

#[test]
fn mutated_sesparse_and_cowd_extents_never_panic() {
    let mut cowd = vec![0u8; 3 * 512];
    cowd[0..4].copy_from_slice(b"COWD");
    for (at, v) in [
        (4usize, 1u32),
        (8, 3),
        (12, 8192),
        (16, 8),
        (20, 2),
        (24, 1),
    ] {
        cowd[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    cowd[1024..1028].copy_from_slice(&3u32.to_le_bytes());
    cowd.resize(3 * 512 + 4096 * 4 + 8192, 0x33);
    cowd[1536..1536 + 4096 * 4].fill(0);
    cowd[1536 + 4..1536 + 8].copy_from_slice(&35u32.to_le_bytes());
    // Mutated bytes: the header's fields, the start of the grain directory and of the grain table.
    let se_spots: Vec<usize> = (0..256).chain(1024..1040).chain(1536..1600).collect();
    let cowd_spots: Vec<usize> = (0..64).chain(1024..1040).chain(1536..1600).collect();
    for (kind, img, spots) in [
        ("SESPARSE", sesparse_image(), se_spots),
        ("VMFSSPARSE", cowd, cowd_spots),
    ] {
        let desc = format!(
            "# Disk DescriptorFile\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW 8192 {kind} \"e.vmdk\"\n"
        );
        let open_with = |bytes: Vec<u8>| {
            let file: Arc<dyn Storage> = Arc::new(MemStorage::new("e.vmdk", bytes));
            vdisk_vmdk::open(
                Arc::new(MemStorage::new("d.vmdk", desc.clone().into_bytes())),
                Arc::new(SameFile(file)),
            )
        };
        let r = open_with(img.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let mut b = vec![0u8; 4096];
        r.read_at(&mut b, 4096).unwrap();
        assert!(b.iter().all(|x| *x == 0x5a || *x == 0x33), "{kind}");
        assert_eq!(
            r.check().unwrap().exit_code(),
            0,
            "{kind}: {:?}",
            r.check().unwrap().messages
        );
        for &pos in &spots {
            for val in [0x00u8, 0xff, 0x30] {
                let mut m = img.clone();
                m[pos] = val;
                let Ok(r) = open_with(m) else { continue };
                for off in (0..r.virtual_size().min(1 << 16)).step_by(4096) {
                    let _ = r.read_at(&mut b, off);
                    let _ = r.block_status(off, 1 << 20);
                }
                let _ = r.check();
                let _ = r.info();
            }
        }
    }
}
