//! Reading: bytes, map and info of dynamic and fixed images of every block size and option
//! against qemu-img.

use crate::fixtures::*;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

#[test]
fn dynamic_images_of_every_block_size() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-dyn");
    for bs in ["1M", "2M", "8M", "32M", "256M"] {
        for zero in ["on", "off"] {
            let name = format!("d-{bs}-{zero}.vhdx");
            let opts = format!("block_size={bs},block_state_zero={zero}");
            let p = patterned(&s, &name, &opts, "6M");
            assert_like_qemu(&p);
        }
    }
}

#[test]
fn default_options_and_odd_sizes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-odd");
    for (i, size) in ["1M", "5000000", "7340544", "10485761", "24M"]
        .iter()
        .enumerate()
    {
        let p = patterned(&s, &format!("o{i}.vhdx"), "", size);
        assert_like_qemu(&p);
    }
}

#[test]
fn fixed_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-fixed");
    for (name, opts) in [
        ("f.vhdx", "subformat=fixed"),
        ("fz.vhdx", "subformat=fixed,block_state_zero=off"),
        (
            "f1.vhdx",
            "subformat=fixed,block_size=1M,block_state_zero=off",
        ),
        ("fl.vhdx", "subformat=fixed,log_size=4M,block_size=2M"),
    ] {
        let p = patterned(&s, name, opts, "6M");
        assert_like_qemu(&p);
        assert!(open(&p).metadata().leave_blocks_allocated(), "{name}");
    }
    // Unwritten fixed blocks are FULLY_PRESENT over the file's holes: zeros.
    let p = create(
        &s,
        "empty.vhdx",
        "subformat=fixed,block_state_zero=off",
        "3M",
    );
    assert_like_qemu(&p);
    let r = open(&p);
    assert_eq!(r.bat().state_counts[6], r.bat().payload_blocks);
}

#[test]
fn log_sizes_and_dynamic_details() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-log");
    let p = patterned(&s, "l.vhdx", "log_size=8M,block_size=1M", "6M");
    assert_like_qemu(&p);
    let r = open(&p);
    assert_eq!(r.header().1.log_length, 8 << 20);
    assert!(!r.metadata().leave_blocks_allocated());
    assert_eq!(r.metadata().block_size, 1 << 20);
    assert_eq!(r.bat().payload_blocks, 6);
    let d = r.info().unwrap().details;
    let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("subformat").unwrap(), "dynamic");
    assert_eq!(get("log").unwrap(), "empty (log GUID is zero)");
    assert_eq!(get("logical-sector-size").unwrap(), 512);
}

#[test]
fn images_converted_by_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-conv");
    let src = s.join("src.raw");
    qemu_create(&src, "raw", "", "9M");
    let cmds = pattern(9 * MIB);
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("raw", &src, &refs);
    let raw = std::fs::read(&src).unwrap();
    for (name, opts) in [
        ("c.vhdx", "subformat=dynamic,block_state_zero=off"),
        ("cf.vhdx", "subformat=fixed"),
        ("c1.vhdx", "block_size=1M,block_state_zero=off"),
    ] {
        let p = s.join(name);
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            opts,
            src.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        assert_like_qemu(&p);
        assert_same_bytes(&read_all(&open(&p), MIB as usize), &raw, name);
    }
}

#[test]
fn data_at_every_block_edge() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-read-edges");
    let p = create(&s, "e.vhdx", "block_size=1M", "12M");
    let mut cmds = Vec::new();
    for b in 1..12u64 {
        let edge = b * MIB;
        cmds.push(format!("write -P {} {} 512", 0x10 + b, edge - 512));
        if b % 3 == 0 {
            cmds.push(format!("write -P {} {} 1536", 0x80 + b, edge));
        }
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vhdx", &p, &refs);
    assert_like_qemu(&p);
}

#[test]
fn large_sparse_image_with_bitmap_entries() {
    if !qemu_available() {
        return;
    }
    // 1 MiB blocks: a sector bitmap entry after every 4096 payload entries, so blocks past 4 GiB
    // are found only by skipping them.
    let s = Scratch::new("vhdx-read-large");
    let p = create(&s, "l.vhdx", "block_size=1M", "20G");
    qemu_io(
        "vhdx",
        &p,
        &[
            "write -P 0x5a 0 4k",
            "write -P 0x6b 4294967296 1M",
            "write -P 0x7c 17179869184 2k",
            "write -P 0x3c 21474835456 1k",
        ],
    );
    let r = open(&p);
    assert_eq!(r.virtual_size(), 20 << 30);
    assert_eq!(r.bat().chunk_ratio, 4096);
    assert_map_like_qemu(&r, &p);
    assert_info_like_qemu(&r, &p);
    // What qemu-io reads there (`read -P` fails on any other byte) and what vdisk reads.
    for (off, len, pat) in [
        (0u64, 4096usize, 0x5a),
        (4096, 8192, 0),
        ((4 << 30) - 4096, 4096, 0),
        (4 << 30, 1 << 20, 0x6b),
        (16 << 30, 2048, 0x7c),
        ((20 << 30) - 1024, 1024, 0x3c),
    ] {
        let cmd = format!("read -P {pat} {off} {len}");
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "vhdx", "-c", &cmd])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("verification failed"), "qemu: {cmd}: {text}");
        let mut ours = vec![1u8; len];
        r.read_at(&mut ours, off).unwrap();
        assert!(ours.iter().all(|b| *b == pat), "vdisk: {cmd}");
    }
}

#[test]
fn check_agrees_with_qemu_img_check() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-check");
    let p = patterned(&s, "c.vhdx", "block_size=1M", "5M");
    assert!(qemu_result(&["check", "-f", "vhdx"], &p).is_ok());
    let rep = open(&p).check().unwrap();
    assert_eq!(rep.exit_code(), 0);
    assert_eq!(rep.corruptions, 0);
}

/// The extents `copy_status` gives over the whole disk.
fn copy_extents(r: &dyn ImageReader) -> Vec<vdisk_core::Extent> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < r.virtual_size() {
        let e = vdisk_core::reader::checked_copy_status(r, pos, r.virtual_size() - pos).unwrap();
        pos = e.end();
        out.push(e);
    }
    out
}

#[test]
fn copy_status_calls_zero_only_what_reads_as_zero() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-copy-status");
    for opts in [
        "block_size=1M,block_state_zero=on",
        "block_size=1M,block_state_zero=off",
        "subformat=fixed,block_size=1M,block_state_zero=off",
        "subformat=fixed,block_size=1M",
    ] {
        let p = patterned(&s, "c.vhdx", opts, "9M");
        let r = open(&p);
        let oracle = qemu_raw_bytes(&p, Some("vhdx"));
        let extents = copy_extents(&r);
        for e in &extents {
            if e.kind == vdisk_core::ExtentKind::Zero {
                let (a, b) = (e.offset as usize, e.end() as usize);
                assert!(oracle[a..b].iter().all(|x| *x == 0), "{opts}: {e:?}");
            }
        }
        let zero = extents
            .iter()
            .any(|e| e.kind == vdisk_core::ExtentKind::Zero);
        // Every block of a fixed image with block_state_zero=off is present: all data.
        assert_eq!(
            zero,
            opts != "subformat=fixed,block_size=1M,block_state_zero=off",
            "{opts}"
        );
        // qemu-img map still shows everything as data.
        assert_map_like_qemu(&r, &p);
    }
    // A sparse 20 GiB image: a few extents, not one per block.
    let p = create(&s, "l.vhdx", "block_size=1M", "20G");
    qemu_io("vhdx", &p, &["write -P 0x5a 0 4k", "write -P 0x6b 10G 1M"]);
    let extents = copy_extents(&open(&p));
    assert_eq!(extents.len(), 4, "{extents:?}");
}
