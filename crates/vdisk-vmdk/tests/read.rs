//! Reading VMDK images made by qemu-img, compared with qemu as the oracle: bytes, map, info, check.

use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::*;
use vdisk_vmdk::VmdkReader;

/// 5 MiB + 512: data at the start, a run that is not grain aligned, explicit zeros, a small write far
/// in, and a tail sector that is not grain aligned.
const RAW_SIZE: u64 = 5 * 1024 * 1024 + 512;

fn patterned_raw(s: &Scratch) -> std::path::PathBuf {
    let raw = s.join("p.raw");
    qemu_create(&raw, "raw", "", &RAW_SIZE.to_string());
    qemu_io(
        "raw",
        &raw,
        &[
            "write -P 0xaa 0 64k",
            "write -P 0xbb 200k 100k",
            "write -z 1M 128k",
            "write -P 0xcc 3M 4k",
            "write -P 0xdd 5242880 512",
        ],
    );
    raw
}

fn open_path(p: &Path) -> VmdkReader {
    let st = Arc::new(FileStorage::open(p).unwrap());
    vdisk_vmdk::open(st, Arc::new(HostFiles))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Compares bytes, map, format-specific info, children and check with qemu.
fn compare_with_qemu(img: &Path, create_type: &str) {
    let r = open_path(img);
    assert_same_bytes(
        &read_all(&r, 100_000),
        &qemu_raw_bytes(img, Some("vmdk")),
        create_type,
    );
    assert_eq!(
        vdisk_map_json(&r),
        qemu_map_json(img, Some("vmdk")),
        "{create_type}: map"
    );
    let qi = qemu_info_json(img);
    let info = r.info().unwrap();
    let (ty, data) = info.format_specific.clone().unwrap();
    assert_eq!(ty, "vmdk");
    assert_eq!(
        data, qi["format-specific"]["data"],
        "{create_type}: format-specific"
    );
    assert_eq!(data["create-type"], create_type);
    assert_eq!(info.virtual_size, qi["virtual-size"].as_u64().unwrap());
    assert_eq!(
        info.cluster_size,
        qi["cluster-size"].as_u64(),
        "{create_type}: cluster size"
    );
    let ours: Vec<(String, String)> = info
        .children
        .iter()
        .map(|c| (c.name.clone(), c.path.to_string_lossy().into_owned()))
        .collect();
    let theirs: Vec<(String, String)> = qi["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["info"]["filename"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ours, theirs, "{create_type}: children");
    let rep = r.check().unwrap();
    assert_eq!(rep.exit_code(), 0, "{create_type}: {:?}", rep.messages);
    assert_eq!(
        r.cid(),
        qi["format-specific"]["data"]["cid"].as_u64().unwrap() as u32
    );
}

#[test]
fn every_subformat_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-read");
    let raw = patterned_raw(&s);
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let img = s.join(&format!("{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        compare_with_qemu(&img, sub);
        let r = open_path(&img);
        assert_same_bytes(&read_all(&r, 4096), &std::fs::read(&raw).unwrap(), sub);
    }
}

#[test]
fn zeroed_grains_and_compat6() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-zero");
    let img = s.join("z.vmdk");
    qemu_create(&img, "vmdk", "zeroed_grain=on", "4M");
    qemu_io(
        "vmdk",
        &img,
        &[
            "write -P 1 0 128k",
            "write -z 64k 128k",
            "write -z 1M 64k",
            "write -P 2 3000k 1k",
        ],
    );
    compare_with_qemu(&img, "monolithicSparse");
    let r = open_path(&img);
    let e = r.block_status(1 << 20, 1 << 20).unwrap();
    assert_eq!((e.kind, e.length), (vdisk_core::ExtentKind::Zero, 65536));
    let c6 = s.join("c6.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "compat6=on,adapter_type=lsilogic",
        c6.to_str().unwrap(),
        "2M",
    ]);
    qemu_io("vmdk", &c6, &["write -P 3 512 1536"]);
    compare_with_qemu(&c6, "monolithicSparse");
    assert_eq!(
        open_path(&c6).descriptor().ddb_value("adapterType"),
        Some("lsilogic")
    );
}

#[test]
fn multi_extent_5g_sparse_and_flat() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-big");
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let img = s.join(&format!("big-{sub}.vmdk"));
        qemu_create(&img, "vmdk", &format!("subformat={sub}"), "5G");
        qemu_io(
            "vmdk",
            &img,
            &[
                "write -P 0x11 0 64k",
                "write -P 0x22 2147450880 64k",
                "write -P 0x33 5368643584 65536",
            ],
        );
        let r = open_path(&img);
        assert_eq!(r.virtual_size(), 5 << 30);
        assert_eq!(
            vdisk_map_json(&r),
            qemu_map_json(&img, Some("vmdk")),
            "{sub}: map"
        );
        let qi = qemu_info_json(&img);
        assert_eq!(
            r.info().unwrap().format_specific.unwrap().1,
            qi["format-specific"]["data"]
        );
        // Spot-check the bytes around the extent boundary and the end against qemu-io's pattern.
        let mut b = vec![0u8; 128 * 1024];
        r.read_at(&mut b, 2147450880).unwrap();
        assert!(b[..65536].iter().all(|x| *x == 0x22) && b[65536..].iter().all(|x| *x == 0));
        r.read_at(&mut b[..65536], 5368643584).unwrap();
        assert!(b[..65536].iter().all(|x| *x == 0x33));
        assert_eq!(r.check().unwrap().exit_code(), 0);
    }
}

#[test]
fn twogb_sparse_disk_of_70_extents_matches_qemu() {
    // 140 GiB in 70 qemu-made extents of 2 GiB: more than the 64 sparse extents kept loaded from
    // open on, so the last six are loaded on use. Data in the first extent, a run across the
    // boundary of extents 65 and 66, written zeros in 67 and data in the last.
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-70");
    let img = s.join("big.vmdk");
    let path = img.to_str().unwrap();
    qemu_create(&img, "vmdk", "subformat=twoGbMaxExtentSparse", "140G");
    let g = 2u64 << 30;
    qemu_io(
        "vmdk",
        &img,
        &[
            "write -P 0x11 1M 64k",
            &format!("write -P 0x77 {} 64k", 66 * g - 32768),
            &format!("write -z {} 128k", 67 * g),
            &format!("write -P 0x22 {} 64k", 69 * g + (5 << 20)),
        ],
    );
    let r = open_path(&img);
    assert_eq!(r.virtual_size(), 70 * g);
    let map = vdisk_map_json(&r);
    assert_eq!(map, qemu_map_json(&img, Some("vmdk")), "map");
    let (_, ours) = r.info().unwrap().format_specific.unwrap();
    assert_eq!(ours, qemu_info_json(&img)["format-specific"]["data"]);
    assert_eq!(ours["extents"].as_array().map(Vec::len), Some(70));
    // qemu's raw output is a sparse file: compare each data run with 64 KiB on either side, and the
    // start of every extent, forwards then backwards (extents are evicted and loaded again).
    let raw = s.join("big.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        path,
        raw.to_str().unwrap(),
    ]);
    let oracle = std::fs::File::open(&raw).unwrap();
    let mut ranges: Vec<(u64, u64)> = (0..70).map(|k| (k * g, 65536)).collect();
    for e in map.as_array().unwrap().iter().filter(|e| e["data"] == true) {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let from = start.saturating_sub(65536);
        ranges.push((from, (start + len + 65536).min(70 * g) - from));
    }
    assert!(ranges.len() >= 74, "{ranges:?}");
    for &(off, len) in ranges.iter().chain(ranges.iter().rev()) {
        let (mut ours, mut theirs) = (vec![0u8; len as usize], vec![0u8; len as usize]);
        r.read_at(&mut ours, off).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&oracle, &mut theirs, off).unwrap();
        assert_same_bytes(&ours, &theirs, &format!("{len} bytes at {off}"));
    }
    assert_eq!(r.check().unwrap().exit_code(), 0);
}

#[test]
fn delta_disk_exposes_parent() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-delta");
    let base = s.join("base.vmdk");
    let top = s.join("top.vmdk");
    qemu_create(&base, "vmdk", "", "2M");
    qemu_io("vmdk", &base, &["write -P 7 0 1M"]);
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        top.to_str().unwrap(),
    ]);
    qemu_io("vmdk", &top, &["write -P 8 64k 64k"]);
    let b = open_path(&base);
    let t = open_path(&top);
    assert_eq!(t.parent_cid(), b.cid());
    let info = t.info().unwrap();
    let backing = info.backing.clone().unwrap();
    let qi = qemu_info_json(&top);
    // qemu opens a VMDK's parent as a VMDK and says so.
    assert_eq!(
        (backing.filename.as_str(), backing.format.as_deref()),
        ("base.vmdk", qi["backing-filename-format"].as_str())
    );
    assert_eq!(backing.format.as_deref(), Some("vmdk"));
    assert_eq!(
        info.format_specific.unwrap().1,
        qi["format-specific"]["data"]
    );
    // This layer alone: only the grain written in the top is present.
    let e = t.block_status(0, 2 << 20).unwrap();
    assert_eq!(
        (e.kind, e.length),
        (vdisk_core::ExtentKind::Unallocated, 65536)
    );
    // Through a chain it reads what qemu reads.
    let chain = vdisk_core::Chain::new(Arc::new(t), Arc::new(b));
    assert_same_bytes(
        &read_all(&chain, 65536),
        &qemu_raw_bytes(&top, None),
        "delta chain",
    );
}

#[test]
fn hand_written_descriptor_flat_offsets_and_vmfs() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-desc");
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(s.join("f1.bin"), &data).unwrap();
    let sp = s.join("s1.vmdk");
    qemu_create(&sp, "vmdk", "", "1M");
    qemu_io("vmdk", &sp, &["write -P 5 0 64k"]);
    let desc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
        createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\nRW 1024 FLAT \"f1.bin\" 1024\nRW 2048 SPARSE \"s1.vmdk\"\n\
        RW 512 VMFS \"f1.bin\"\n";
    let img = s.join("mix.vmdk");
    std::fs::write(&img, desc).unwrap();
    compare_with_qemu(&img, "twoGbMaxExtentSparse");
    let r = open_path(&img);
    let mut b = vec![0u8; 512 * 1024];
    r.read_at(&mut b, 0).unwrap();
    assert_eq!(&b[..], &data[512 * 1024..]);
}

#[test]
fn missing_extent_is_named() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-missing");
    let img = s.join("m.vmdk");
    qemu_create(&img, "vmdk", "subformat=twoGbMaxExtentSparse", "1M");
    std::fs::remove_file(s.join("m-s001.vmdk")).unwrap();
    let st = Arc::new(FileStorage::open(&img).unwrap());
    let err = vdisk_vmdk::open(st, Arc::new(HostFiles))
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("m-s001.vmdk") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn corrupted_grain_pointer_is_reported_by_check() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-chk");
    let img = s.join("c.vmdk");
    qemu_create(&img, "vmdk", "", "4M");
    qemu_io("vmdk", &img, &["write -P 1 0 64k"]);
    // Point the first grain table entry far past the end of the file.
    let r = open_path(&img);
    let gde = {
        let st = FileStorage::open(&img).unwrap();
        let h = vdisk_vmdk::sparse::read_header(&st, 0).unwrap();
        let mut b = [0u8; 4];
        vdisk_core::Storage::read_exact_at(&st, &mut b, h.gd_offset * 512).unwrap();
        u32::from_le_bytes(b)
    };
    drop(r);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &f,
        &0x00ff_ffffu32.to_le_bytes(),
        u64::from(gde) * 512,
    )
    .unwrap();
    drop(f);
    let rep = open_path(&img).check().unwrap();
    let q = std::process::Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        rep.exit_code(),
        q.status.code().unwrap(),
        "{:?}",
        rep.messages
    );
    assert!(
        rep.messages
            .iter()
            .any(|m| m.contains("cluster offset for sector 0 points after EOF")),
        "{:?}",
        rep.messages
    );
    // The redundant grain table still has the old entry: reported too.
    assert!(
        rep.messages
            .iter()
            .any(|m| m.contains("redundant grain table 0")),
        "{:?}",
        rep.messages
    );
}

#[test]
fn concurrent_reads_agree_with_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-threads");
    let raw = patterned_raw(&s);
    for sub in ["streamOptimized", "twoGbMaxExtentSparse"] {
        let img = s.join(&format!("t-{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let want = qemu_raw_bytes(&img, Some("vmdk"));
        let r = Arc::new(open_path(&img));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let r = Arc::clone(&r);
                let want = want.clone();
                std::thread::spawn(move || {
                    // Each thread walks the disk with a different odd chunk size and start.
                    let chunk = 4096 + 512 * (t as usize * 7 + 1);
                    let mut off = (t * 1536) as usize;
                    let mut buf = vec![0u8; chunk];
                    while off + chunk <= want.len() {
                        r.read_at(&mut buf, off as u64).unwrap();
                        assert!(buf == want[off..off + chunk], "thread {t} at {off}");
                        off += chunk * 3;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

#[test]
fn short_flat_extent_reads_zeros_past_its_end() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-shortflat");
    let img = s.join("tf.vmdk");
    qemu_create(&img, "vmdk", "subformat=monolithicFlat", "1M");
    qemu_io("vmdk", &img, &["write -P 1 0 1M"]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.join("tf-flat.vmdk"))
        .unwrap();
    f.set_len(300_000).unwrap();
    drop(f);
    let r = open_path(&img);
    assert_same_bytes(
        &read_all(&r, 65536),
        &qemu_raw_bytes(&img, Some("vmdk")),
        "short flat",
    );
    assert_eq!(vdisk_map_json(&r), qemu_map_json(&img, Some("vmdk")));
}

/// An ESX vmfsSparse (COWD) extent of `sectors` sectors with 8-sector grains: grain directory at
/// sector 4, one grain table after it, and grains 1 and 3 allocated (patterns 0x5a and 0x6b).
fn cowd_extent(sectors: u32) -> Vec<u8> {
    let gtes = 4096u32;
    let gran = 8u32;
    let gd_entries = sectors.div_ceil(gtes * gran);
    let mut img = vec![0u8; 2048 + 512];
    img[0..4].copy_from_slice(b"COWD");
    for (at, v) in [
        (4usize, 1u32),
        (8, 3),
        (12, sectors),
        (16, gran),
        (20, 4),
        (24, gd_entries),
    ] {
        img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    let gt_sector = 4 + (gd_entries * 4).div_ceil(512);
    img[2048..2052].copy_from_slice(&gt_sector.to_le_bytes());
    img.resize(gt_sector as usize * 512 + gtes as usize * 4, 0);
    let grain_sector = gt_sector + gtes * 4 / 512;
    let gt = gt_sector as usize * 512;
    img[gt + 4..gt + 8].copy_from_slice(&grain_sector.to_le_bytes());
    img[gt + 12..gt + 16].copy_from_slice(&(grain_sector + gran).to_le_bytes());
    img.resize(grain_sector as usize * 512, 0);
    img.extend(std::iter::repeat_n(0x5au8, 4096));
    img.extend(std::iter::repeat_n(0x6bu8, 4096));
    img
}

#[test]
fn vmfs_sparse_cowd_extents_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-cowd");
    std::fs::write(s.join("d-delta.vmdk"), cowd_extent(8192)).unwrap();
    let desc = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n\n\
                # Extent description\nRW 8192 VMFSSPARSE \"d-delta.vmdk\"\n";
    let img = s.join("cowd.vmdk");
    std::fs::write(&img, desc).unwrap();
    compare_with_qemu(&img, "vmfsSparse");
    let r = open_path(&img);
    let mut b = vec![0u8; 8192];
    r.read_at(&mut b, 4096).unwrap();
    assert!(b[..4096].iter().all(|x| *x == 0x5a) && b[4096..].iter().all(|x| *x == 0));
    // The COWD file on its own is refused by name (qemu cannot open it either).
    let st = Arc::new(FileStorage::open(&s.join("d-delta.vmdk")).unwrap());
    let e = vdisk_vmdk::open(st, Arc::new(HostFiles))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("vmfsSparse"), "{e}");
}

#[test]
fn sparse_file_create_type_and_descriptor_wrapper_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-ct");
    // qemu ignores the createType of a sparse file's embedded descriptor.
    let img = s.join("ct.vmdk");
    qemu_create(&img, "vmdk", "", "1M");
    let mut bytes = std::fs::read(&img).unwrap();
    let from = b"createType=\"monolithicSparse\"";
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + from.len()].copy_from_slice(b"createType=\"twoGbMaxExtentFl\"");
    std::fs::write(&img, &bytes).unwrap();
    compare_with_qemu(&img, "monolithicSparse");
    // A sparse header of capacity 0 wrapping a descriptor that names a flat extent.
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.join("w-flat.bin"), &data).unwrap();
    let h = vdisk_vmdk::header::SparseHeader {
        version: 1,
        flags: 1,
        capacity: 0,
        grain_size: 128,
        descriptor_offset: 1,
        descriptor_size: 1,
        num_gtes_per_gt: 512,
        rgd_offset: 0,
        gd_offset: 0,
        overhead: 0,
        unclean_shutdown: false,
        compress_algorithm: 0,
    };
    let mut w = h.to_bytes().to_vec();
    w.extend_from_slice(
        b"# Disk DescriptorFile\nCID=00000001\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n\
          # Extent description\nRW 128 FLAT \"w-flat.bin\" 0\n",
    );
    w.resize(1024, 0);
    let wrapped = s.join("w.vmdk");
    std::fs::write(&wrapped, &w).unwrap();
    compare_with_qemu(&wrapped, "monolithicFlat");
    assert_same_bytes(&read_all(&open_path(&wrapped), 4096), &data, "wrapped flat");
}

/// An seSparse extent of 8192 sectors laid out as ESXi does: constant header, volatile header at
/// sector 1, grain directory at 2, one grain table at 3, grains from sector 67. Grains 1 and 3 hold
/// data (0x5a, 0x6b), grain 5 is a zero grain, grain 6 is SCSI-unmapped.
fn sesparse_extent() -> Vec<u8> {
    use vdisk_vmdk::sesparse::*;
    let mut img = vec![0u8; 83 * 512];
    let mut put = |sector: usize, i: usize, v: u64| {
        let at = sector * 512 + i * 8;
        img[at..at + 8].copy_from_slice(&v.to_le_bytes());
    };
    for (i, v) in [
        (0, vdisk_vmdk::header::SESPARSE_MAGIC),
        (1, SESPARSE_VERSION),
        (2, 8192),
        (3, 8),
        (4, 64),
        (10, 1),
        (11, 1),
        (16, 2),
        (17, 1),
        (18, 3),
        (19, 64),
        (24, 67),
        (25, 16),
    ] {
        put(0, i, v);
    }
    put(1, 0, SESPARSE_VOLATILE_MAGIC);
    put(2, 0, 0x1000_0000_0000_0000);
    put(3, 1, encode_cluster(0));
    put(3, 3, encode_cluster(1));
    put(3, 5, 0x2000_0000_0000_0000);
    put(3, 6, 0x1000_0000_0000_0000);
    img[67 * 512..75 * 512].fill(0x5a);
    img[75 * 512..83 * 512].fill(0x6b);
    img
}

#[test]
fn sesparse_extents_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-sesparse");
    std::fs::write(s.join("d-sesparse.vmdk"), sesparse_extent()).unwrap();
    let desc = "# Disk DescriptorFile\nversion=1\nCID=0000abcd\nparentCID=ffffffff\ncreateType=\"seSparse\"\n\n\
                # Extent description\nRW 8192 SESPARSE \"d-sesparse.vmdk\"\n";
    let img = s.join("ses.vmdk");
    std::fs::write(&img, desc).unwrap();
    compare_with_qemu(&img, "seSparse");
    let r = open_path(&img);
    let e = r.block_status(5 * 4096, 8192).unwrap();
    assert_eq!((e.kind, e.length), (vdisk_core::ExtentKind::Zero, 8192));
    // A malformed table entry makes reads of that grain fail, not panic.
    let mut bad = sesparse_extent();
    bad[3 * 512 + 16..3 * 512 + 24].copy_from_slice(&0x4000_0000_0000_0000u64.to_le_bytes());
    std::fs::write(s.join("d-sesparse.vmdk"), bad).unwrap();
    let r = open_path(&img);
    let mut b = vec![0u8; 4096];
    assert!(r.read_at(&mut b, 2 * 4096).is_err());
    assert!(r.check().unwrap().exit_code() != 0);
}
