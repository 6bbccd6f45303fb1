//! Reading: bytes, map and info against qemu-img.

use crate::fixtures::*;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

fn assert_reads_like_qemu(p: &std::path::Path) {
    let r = open_dyn(p);
    let oracle = qemu_raw_bytes(p, Some("vdi"));
    assert_eq!(r.virtual_size(), oracle.len() as u64);
    assert_same_bytes(&read_all(r.as_ref(), 1 << 20), &oracle, "1 MiB reads");
    assert_same_bytes(&read_all(r.as_ref(), 100_001), &oracle, "odd-sized reads");
    assert_eq!(
        vdisk_map_json(r.as_ref()),
        qemu_map_json(p, Some("vdi")),
        "map of {}",
        p.display()
    );
    let mut buf = vec![0u8; 2];
    assert!(
        r.read_at(&mut buf, r.virtual_size() - 1).is_err(),
        "read past the end"
    );
}

#[test]
fn dynamic_image_written_by_qemu_io() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-dyn");
    assert_reads_like_qemu(&qemu_vdi(&s, "d.vdi", false));
}

#[test]
fn static_image_written_by_qemu_io() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-static");
    assert_reads_like_qemu(&qemu_vdi(&s, "s.vdi", true));
}

#[test]
fn images_converted_by_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-conv");
    let src = raw(&s);
    for (name, opts) in [("c.vdi", &[][..]), ("cs.vdi", &["-o", "static=on"][..])] {
        let p = converted(&s, &src, name, opts);
        assert_reads_like_qemu(&p);
        assert_same_bytes(
            &read_all(open_dyn(&p).as_ref(), 1 << 20),
            &std::fs::read(&src).unwrap(),
            name,
        );
    }
}

#[test]
fn empty_and_zero_sized_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-empty");
    for size in ["0", "1M", "3146700"] {
        let p = s.join(&format!("e{size}.vdi"));
        qemu_create(&p, "vdi", "", size);
        let r = open_dyn(&p);
        let info = qemu_info_json(&p);
        assert_eq!(r.virtual_size(), info["virtual-size"].as_u64().unwrap());
        if r.virtual_size() > 0 {
            assert_reads_like_qemu(&p);
        }
    }
}

#[test]
fn info_matches_qemu_and_shows_vdi_details() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-info");
    let p = qemu_vdi(&s, "d.vdi", false);
    let r = open(&p);
    let info = r.info().unwrap();
    let q = qemu_info_json(&p);
    assert_eq!(info.format, q["format"].as_str().unwrap());
    assert_eq!(info.virtual_size, q["virtual-size"].as_u64().unwrap());
    assert_eq!(info.cluster_size, q["cluster-size"].as_u64());
    assert!(q.get("format-specific").is_none() && info.format_specific.is_none());
    assert_eq!(info.children.len(), 1);
    assert_eq!(info.children[0].name, "file");
    let d: std::collections::HashMap<_, _> = info.details.iter().cloned().collect();
    // qemu-io allocated blocks 0, 1, 2 (explicit zeros are written as data by the vdi driver), 3, 4, 6.
    let allocated = r.block_map().iter().filter(|e| **e < 0xffff_fffe).count() as u64;
    assert_eq!(d["allocated-blocks"], allocated);
    assert_eq!(d["total-blocks"], 7);
    assert_eq!(d["image-type"], "dynamic");
    assert_eq!(d["block-size"], 1 << 20);
    assert_eq!(
        (d["block-map-offset"].as_u64(), d["data-offset"].as_u64()),
        (Some(0x200), Some(0x400))
    );
    assert_eq!(d["header-version"], "1.1");
    // The UUID as VirtualBox prints it: the first three fields of the stored bytes are little-endian.
    let raw = std::fs::read(&p).unwrap();
    let want = format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
        raw[0x18b],
        raw[0x18a],
        raw[0x189],
        raw[0x188],
        raw[0x18d],
        raw[0x18c],
        raw[0x18f],
        raw[0x18e]
    );
    let uuid = d["uuid"].as_str().unwrap();
    assert!(uuid.starts_with(&want), "{uuid} vs {want}");
    assert_eq!(&uuid[14..15], "4", "qemu writes version-4 UUIDs: {uuid}");
    assert_eq!(d["parent-uuid"], "00000000-0000-0000-0000-000000000000");
}

#[test]
fn zero_entries_and_concurrent_reads() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-zero");
    let p = qemu_vdi(&s, "z.vdi", false);
    // Mark block 3 as a zero block (VDI_IMAGE_BLOCK_ZERO) and fix the allocated count.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &0xffff_fffeu32.to_le_bytes(), 0x200 + 12)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &5u32.to_le_bytes(), 0x184).unwrap();
    assert_reads_like_qemu(&p);
    let oracle = qemu_raw_bytes(&p, Some("vdi"));
    let r = std::sync::Arc::new(open(&p));
    assert_eq!(r.check().unwrap().corruptions, 0);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let r = std::sync::Arc::clone(&r);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut off = t * 12_345;
                while off + 70_000 <= r.virtual_size() {
                    let mut b = vec![0u8; 70_000];
                    r.read_at(&mut b, off).unwrap();
                    out.push((off, b));
                    off += 4 * 70_000;
                }
                out
            })
        })
        .collect();
    for t in threads {
        for (off, b) in t.join().unwrap() {
            assert_same_bytes(
                &b,
                &oracle[off as usize..off as usize + b.len()],
                "threaded read",
            );
        }
    }
}

#[test]
fn odd_disk_size_rounds_up_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-read-odd");
    let p = qemu_vdi(&s, "o.vdi", false);
    // VBoxManage convertfromraw can store sizes that are not sector multiples; qemu rounds them up.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &((5u64 << 20) + 1001).to_le_bytes(), 0x170)
        .unwrap();
    let r = open(&p);
    assert_eq!(r.virtual_size(), (5 << 20) + 1024);
    assert_reads_like_qemu(&p);
}
