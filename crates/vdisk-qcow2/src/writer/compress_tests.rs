//! Compressed images (`convert -c`) against qemu: clean checks, compressed clusters in the map, and
//! file sizes no more than 5% above what `qemu-img convert -c` writes for the same data.

use super::tests::{drive, opts, write_and_verify};
use super::*;
use serde_json::Value;
use vdisk_testutil::{
    assert_qemu_check_clean, assert_qemu_compare_equal, qemu_available, qemu_img, qemu_map_json,
    Scratch,
};

#[test]
fn compressed_images_pass_check_and_use_compressed_clusters() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-compress");
    for (name, o) in [
        ("z64k", ""),
        ("z4k", "cluster_size=4k"),
        ("zr1", "cluster_size=4k,refcount_bits=1"),
        ("zr2", "cluster_size=512,refcount_bits=2"),
        ("zstd", "compression_type=zstd"),
        ("zv2", "compat=0.10"),
        ("zextl2", "extended_l2=on,cluster_size=16k"),
    ] {
        let img = write_and_verify(&dir, name, o, true);
        let map = qemu_map_json(&img, Some("qcow2"));
        assert!(
            map.as_array()
                .unwrap()
                .iter()
                .any(|e| e["compressed"] == true),
            "{o}: {map}"
        );
        let check: Value = serde_json::from_str(&qemu_img(&[
            "check",
            "--output=json",
            &img.to_string_lossy(),
        ]))
        .unwrap();
        assert!(
            check["compressed-clusters"].as_u64().unwrap() > 0,
            "{o}: {check}"
        );
        // qemu keeps writing into the image cleanly, packing after our compressed clusters.
        vdisk_testutil::qemu_io(
            "qcow2",
            &img,
            &["write -P 0x77 0 192k", "write -c -P 0x78 1M 64k"],
        );
        assert_qemu_check_clean(&img, "qcow2");
    }
}

/// Text-like data (compressible, but not trivially), some incompressible noise, and zero runs.
pub(super) fn mixed_corpus(size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "qcow2",
        "cluster",
        "refcount",
        "table",
        "the",
        "of",
        "image",
        "backing",
        "guest",
        "host",
        "offset",
        "data",
        "zero",
        "a",
        "is",
        "compressed",
        "sector",
        "and",
        "L2",
        "entry",
        "header",
        "snapshot",
    ];
    let mut x = vdisk_testutil::XorShift64::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || x.next_u64();
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        let block = v.len() / 65536;
        let end = (v.len() + 65536).min(size);
        match block % 8 {
            3 => v.resize(end, 0),
            // Short periodic patterns (deflate's weak spot at zlib-rs's lower levels).
            5 => {
                while v.len() < end {
                    let j = v.len() as u64;
                    v.push(((j * 7 + block as u64) % 251) as u8);
                }
            }
            6 => {
                while v.len() < end {
                    v.push(next() as u8);
                }
            }
            _ => {
                while v.len() < end {
                    let w = WORDS[(next() % WORDS.len() as u64) as usize];
                    v.extend_from_slice(w.as_bytes());
                    v.push(if next() % 9 == 0 { b'\n' } else { b' ' });
                    if next() % 5 == 0 {
                        v.extend_from_slice(format!("{}", next() % 100000).as_bytes());
                    }
                }
                v.truncate(end);
            }
        }
    }
    v
}

#[test]
fn compressed_size_is_within_five_percent_of_qemu() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-ratio");
    // The mixed corpus, and one that compresses everywhere (no noise, no zeros), so that the file
    // sizes measure the compressed streams rather than the clusters stored plain.
    let mixed = mixed_corpus(6 << 20);
    let compressible: Vec<u8> = mixed_corpus(8 << 20)
        .chunks(65536)
        .enumerate()
        .filter(|(i, _)| !matches!(i % 8, 3 | 6))
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let periodic: Vec<u8> = (0..2u64 << 20)
        .map(|j| ((j * 7 + j / 65536) % 251) as u8)
        .collect();
    for (name, o, src) in [
        ("zlib64k-p", "", &periodic),
        ("zlib64k", "", &mixed),
        ("zlib4k", "cluster_size=4k", &mixed),
        ("zstd64k", "compression_type=zstd", &mixed),
        ("zstd2m", "compression_type=zstd,cluster_size=2M", &mixed),
        ("zlib64k-c", "", &compressible),
        ("zlib16k-c", "cluster_size=16k", &compressible),
        ("zstd64k-c", "compression_type=zstd", &compressible),
    ] {
        let raw = dir.join(&format!("{name}.raw"));
        std::fs::write(&raw, src).unwrap();
        let theirs = dir.join(&format!("{name}-qemu.qcow2"));
        let mut args = vec!["convert", "-c", "-O", "qcow2"];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        let (raw_s, theirs_s) = (
            raw.to_string_lossy().into_owned(),
            theirs.to_string_lossy().into_owned(),
        );
        args.extend([raw_s.as_str(), theirs_s.as_str()]);
        qemu_img(&args);
        let ours = dir.join(&format!("{name}.qcow2"));
        let mut w = create_with(&ours, src.len() as u64, &opts(o), true).unwrap();
        drive(w.as_mut(), src, |_| true);
        w.finish().unwrap();
        assert_qemu_check_clean(&ours, "qcow2");
        assert_qemu_compare_equal(&raw, &ours);
        let (a, b) = (
            std::fs::metadata(&ours).unwrap().len(),
            std::fs::metadata(&theirs).unwrap().len(),
        );
        let ratio = a as f64 / b as f64;
        eprintln!("{name}: vdisk {a} bytes, qemu-img {b} bytes, ratio {ratio:.4}");
        assert!(ratio <= 1.05, "{name}: vdisk {a} bytes vs qemu-img {b}");
        let c = |p: &std::path::Path| -> Value {
            serde_json::from_str(&qemu_img(&["check", "--output=json", &p.to_string_lossy()]))
                .unwrap()
        };
        assert_eq!(
            c(&ours)["compressed-clusters"],
            c(&theirs)["compressed-clusters"],
            "{name}"
        );
    }
}
