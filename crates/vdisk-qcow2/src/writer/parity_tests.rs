//! Parity with qemu-img's own output: empty and converted images byte for byte, preallocated
//! images mapped alike, and the same `-o help` option list.

use super::tests::{drive, opts, SIZE};
use super::*;
use serde_json::Value;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, qemu_img, qemu_map_json, Scratch};

/// A new preallocated image, with nothing written, maps like the one `qemu-img create` makes (the
/// same kinds of extents at the same offsets) and allocates as many clusters.
#[test]
fn fresh_preallocated_images_map_like_qemus() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-fresh");
    let d = dir.path().display();
    for o in [
        &format!("data_file={d}/d1.raw,extended_l2=on,preallocation=metadata") as &str,
        &format!("data_file={d}/d2.raw,extended_l2=on,data_file_raw=on"),
        &format!("data_file={d}/d3.raw,preallocation=metadata,cluster_size=4k"),
        &format!("data_file={d}/d4.raw,preallocation=full"),
        &format!("data_file={d}/d5.raw"),
        "preallocation=metadata,cluster_size=4k",
        "preallocation=falloc,cluster_size=4k",
        "preallocation=full",
        "preallocation=metadata,extended_l2=on",
        "",
        "compat=0.10",
    ] {
        let (ours, theirs) = (dir.join("ours.qcow2"), dir.join("theirs.qcow2"));
        let _ = std::fs::remove_file(&ours);
        // Each image gets its own data file.
        create(&ours, SIZE, &opts(&o.replace(".raw", "-ours.raw")))
            .unwrap()
            .finish()
            .unwrap();
        let t = theirs.to_string_lossy().into_owned();
        let size = SIZE.to_string();
        let mut args = vec!["create", "-q", "-f", "qcow2", &t, &size];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        qemu_img(&args);
        assert_qemu_check_clean(&ours, "qcow2");
        // qemu's falloc/full layout comes from growing an empty image: same kinds of extents (one
        // contiguous data run), other offsets.
        let map = |p: &std::path::Path| {
            let mut m = qemu_map_json(p, Some("qcow2"));
            if o.contains("falloc") || o.contains("full") {
                m.as_array_mut().unwrap().iter_mut().for_each(|e| {
                    e.as_object_mut().unwrap().remove("offset");
                });
            }
            m
        };
        assert_eq!(map(&ours), map(&theirs), "{o}");
        let check = |p: &std::path::Path| -> Value {
            serde_json::from_str(&qemu_img(&["check", "--output=json", &p.to_string_lossy()]))
                .unwrap()
        };
        let (a, b) = (check(&ours), check(&theirs));
        assert_eq!(a["allocated-clusters"], b["allocated-clusters"], "{o}");
        assert_eq!(a["image-end-offset"], b["image-end-offset"], "{o}");
    }
}

/// `-o help` lists the same options as `qemu-img create -f qcow2 -o help`.
#[test]
fn option_list_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-o", "help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_once('=').map(|(k, _)| k))
        .collect();
    let ours: Vec<&str> = CREATE_OPTIONS.iter().map(|o| o.name).collect();
    assert_eq!(ours, theirs);
    let ours_help = vdisk_core::options::format_help("qcow2", CREATE_OPTIONS);
    for spec in CREATE_OPTIONS {
        assert!(
            text.contains(&format!("{}=<{}>", spec.name, spec.kind)),
            "{}",
            spec.name
        );
        assert!(text.contains(spec.help), "{}", spec.name);
        assert!(ours_help.contains(spec.help));
    }
}

/// A new empty image is byte for byte the one `qemu-img create` writes (when the refcount table,
/// which vdisk reserves at its largest possible size, is one cluster, as qemu's starts).
#[test]
fn empty_images_are_byte_identical_to_qemu_img_create() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-same");
    for (o, size) in [
        ("", "1G"),
        ("compat=0.10", "1G"),
        ("cluster_size=4k,refcount_bits=1", "100M"),
        ("cluster_size=512,refcount_bits=64", "256k"),
        ("lazy_refcounts=on,compression_type=zstd", "10G"),
        ("extended_l2=on,cluster_size=2M", "3T"),
        ("backing_file=base.img,backing_fmt=raw", "1M"),
        ("", "0"),
    ] {
        let (ours, theirs) = (dir.join("ours.qcow2"), dir.join("theirs.qcow2"));
        let bytes = vdisk_core::size::parse_size(size).unwrap();
        create(&ours, bytes, &opts(o)).unwrap().finish().unwrap();
        let t = theirs.to_string_lossy().into_owned();
        let mut args = vec!["create", "-q", "-u", "-f", "qcow2", &t, size];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        qemu_img(&args);
        let (a, b) = (
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{o} {size}: file length");
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!("{o} {size}: first difference at {i:#x}");
        }
    }
}

/// Converting whole-cluster data and zeros gives byte for byte what `qemu-img convert` writes.
#[test]
fn converted_images_are_byte_identical_to_qemu_img_convert() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-conv");
    // Clusters of text-like data, noise and zeros (64 KiB granules).
    let mut src = Vec::new();
    let mut rng = vdisk_testutil::XorShift64::new(0x2545_f491_4f6c_dd1d);
    for i in 0..80u64 {
        let kind = (i * 5 + i / 7) % 4;
        for j in 0..65536u64 {
            let x = rng.next_u64();
            src.push(match kind {
                0 => 0,
                1 => (x % 7) as u8 + b'a',
                2 => x as u8,
                _ => ((j / 5 + i) % 23) as u8,
            });
        }
    }
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &src).unwrap();
    // (Compressed images differ only inside the compressed streams: zlib-rs and qemu's zlib, or two
    // zstd versions, encode differently; their sizes are compared in compress_tests. Images that
    // need a second refcount block differ in where it goes: qemu puts it after the batch of
    // clusters being allocated, vdisk at the first cluster the block covers.)
    for (name, o, compress) in [
        ("plain", "", false),
        ("c4k", "cluster_size=4k", false),
        ("v2", "compat=0.10", false),
        ("extl2", "extended_l2=on", false),
        ("r1", "refcount_bits=1", false),
        ("r64", "refcount_bits=64,cluster_size=16k", false),
    ] {
        let (ours, theirs) = (
            dir.join(&format!("{name}.qcow2")),
            dir.join(&format!("{name}-q.qcow2")),
        );
        let mut w = create_with(&ours, src.len() as u64, &opts(o), compress).unwrap();
        drive(w.as_mut(), &src, |_| true);
        w.finish().unwrap();
        let (r, t) = (
            raw.to_string_lossy().into_owned(),
            theirs.to_string_lossy().into_owned(),
        );
        let mut args = vec!["convert", "-O", "qcow2"];
        if compress {
            args.push("-c");
        }
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        args.extend([r.as_str(), t.as_str()]);
        qemu_img(&args);
        let (a, b) = (
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!(
                "{name}: first difference at {i:#x} (lengths {} and {})",
                a.len(),
                b.len()
            );
        }
        assert_eq!(a.len(), b.len(), "{name}: file length");
    }
}

/// `formatting_options` prints what qemu-img's "Formatting" line shows.
#[test]
fn formatting_line_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-fmtline");
    let t = dir.join("f.qcow2").to_string_lossy().into_owned();
    for (o, size) in [
        ("", "1048576"),
        ("compat=v2", "1000"),
        ("lazy_refcounts=yes,extended_l2=true", "1048576"),
        ("cluster_size=128k,extended_l2=on,preallocation=metadata,compression_type=zstd,compat=1.1,refcount_bits=8,lazy_refcounts", "1048576"),
        ("backing_file=a.qcow2,backing_fmt=qcow2", "1048576"),
    ] {
        let mut args = vec!["create", "-u", "-f", "qcow2"];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        args.extend([t.as_str(), size]);
        let out = qemu_img(&args);
        let theirs = out.lines().next().unwrap().split_once(", ").unwrap().1;
        let ours = formatting_options(size.parse().unwrap(), &opts(o));
        assert_eq!(ours, theirs, "{o}");
    }
}
