//! Reading: bytes, map and info of dynamic and fixed images against qemu-img.

use crate::fixtures::*;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

#[test]
fn dynamic_image_written_by_qemu_io() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-read-dyn");
    let p = patterned(&s, "d.vhd", "", "11M");
    assert_like_qemu(&p);
    // The driver allocated blocks 0-3 and the tail block; block 4 stays a hole.
    let r = open(&p);
    let d = r.dynamic().unwrap();
    assert_eq!(d.bat.allocated(), 5);
    assert_eq!(d.bat.data_offset(4), None);
}

#[test]
fn fixed_image_written_by_qemu_io() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-read-fixed");
    let p = patterned(&s, "f.vhd", "subformat=fixed", "11M");
    assert_like_qemu(&p);
    let r = open(&p);
    assert_eq!(
        r.footer_at(),
        vdisk_vhd::reader::FooterAt::End(std::fs::metadata(&p).unwrap().len() - 512)
    );
}

#[test]
fn images_converted_by_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-read-conv");
    let src = s.join("src.raw");
    qemu_create(&src, "raw", "", "9M");
    let cmds = pattern(9 * MIB);
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("raw", &src, &refs);
    for (name, opts) in [
        ("c.vhd", "subformat=dynamic"),
        ("cf.vhd", "subformat=fixed"),
        ("cs.vhd", "force_size=on"),
        ("cfs.vhd", "subformat=fixed,force_size=on"),
    ] {
        let p = s.join(name);
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            opts,
            src.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        assert_like_qemu(&p);
        if opts.contains("force_size") {
            // The exact size: the raw file comes back byte for byte.
            assert_same_bytes(
                &read_all(&open(&p), MIB as usize),
                &std::fs::read(&src).unwrap(),
                name,
            );
        }
    }
}

#[test]
fn data_at_every_block_edge() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-read-edges");
    let p = create(&s, "e.vhd", "", "16M");
    let size = qemu_size(&p);
    let mut cmds = Vec::new();
    for b in 1..(size / (2 * MIB)) {
        let edge = b * 2 * MIB;
        cmds.push(format!("write -P {} {} 512", 0x10 + b, edge - 512));
        if b % 2 == 0 {
            cmds.push(format!("write -P {} {} 1536", 0x80 + b, edge));
        }
    }
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vpc", &p, &refs);
    assert_like_qemu(&p);
}

#[test]
fn large_sparse_image() {
    if !qemu_available() {
        return;
    }
    // 200G is past the largest CHS geometry: qemu stores 65535/16/255 and sizes by current_size.
    let s = Scratch::new("vhd-read-large");
    let p = create(&s, "l.vhd", "", "200G");
    qemu_io(
        "vpc",
        &p,
        &[
            "write -P 0x5a 0 4k",
            "write -P 0x6b 107374182400 1M",
            "write -P 0x7c 214748362752 2k",
        ],
    );
    let r = open(&p);
    assert_eq!(r.virtual_size(), 200 << 30);
    assert_eq!(r.footer().geometry.total_sectors(), 65535 * 16 * 255);
    assert_map_like_qemu(&r, &p);
    assert_info_like_qemu(&r, &p);
    let mut b = vec![0u8; 3 * MIB as usize];
    r.read_at(&mut b, (100 << 30) - MIB).unwrap();
    let m = MIB as usize;
    assert!(b[..m].iter().all(|x| *x == 0));
    assert!(b[m..2 * m].iter().all(|x| *x == 0x6b));
    assert!(b[2 * m..].iter().all(|x| *x == 0));
    let mut t = vec![0u8; 4096];
    r.read_at(&mut t, (200 << 30) - 4096).unwrap();
    assert!(t[..2048].iter().all(|x| *x == 0) && t[2048..].iter().all(|x| *x == 0x7c));
}

#[test]
fn a_quarter_gib_with_scattered_writes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-read-scatter");
    let p = create(&s, "sc.vhd", "", "256M");
    let size = qemu_size(&p);
    let mut rng = XorShift64::new(0x5eed_0f0b_ad00);
    let cmds: Vec<String> = (0..40)
        .map(|i| {
            let len = 512 * (1 + rng.below(300));
            let off = 512 * rng.below((size - len) / 512);
            format!("write -P {} {off} {len}", 1 + i)
        })
        .collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vpc", &p, &refs);
    assert_like_qemu(&p);
}

#[test]
fn check_is_not_supported_as_in_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-check");
    let p = create(&s, "c.vhd", "", "1M");
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", "vpc"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(63));
    let e = open(&p).check().unwrap_err();
    assert!(matches!(e, vdisk_core::Error::Unsupported { .. }), "{e}");
}
