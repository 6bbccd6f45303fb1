//! `resize --preallocation=metadata|falloc|full` against qemu-img on twin images: content, check,
//! info fields and the map's classification (present/zero/data per byte range; host offsets and
//! the disk size differ because the refcount structures are placed elsewhere), plus crash tests.

mod mutate_common;

use mutate_common::*;
use std::path::Path;
use vdisk_qcow2::mutate::{self, Prealloc};
use vdisk_testutil::*;

/// A qemu fixture cut (by qemu-img) to `size`, which may end inside a cluster.
fn odd_fixture(d: &Scratch, opts: &str, size: u64) -> std::path::PathBuf {
    let p = qemu_fixture(d, "base.qcow2", opts, "2M");
    if size != 2 << 20 {
        qemu_img(&["resize", "-q", "--shrink", &s(&p), &size.to_string()]);
    }
    p
}

/// vdisk on one copy, qemu-img on the other: everything qemu shows must agree.
fn grow_both(base: &Path, size: u64, mode: Prealloc) {
    let ours = copy(base, "ours.qcow2");
    let theirs = copy(base, "theirs.qcow2");
    mutate::resize_with(&ours, size, false, mode).unwrap();
    let pre = format!("--preallocation={}", mode_name(mode));
    qemu_img(&["resize", "-q", &pre, &s(&theirs), &size.to_string()]);
    let what = format!("{} {size} {}", base.display(), mode_name(mode));
    assert_clean(&ours);
    assert_same_bytes(&raw(&ours), &raw(&theirs), &what);
    assert_eq!(info_summary(&ours), info_summary(&theirs), "{what}");
    assert_eq!(snapshots(&ours), snapshots(&theirs), "{what}");
    let strict = qemu_info_json(&theirs)["cluster-size"].as_u64().unwrap() >= 4096;
    assert_eq!(
        map_kinds(&ours, strict),
        map_kinds(&theirs, strict),
        "{what}: map"
    );
    let alloc = |p: &Path| {
        let (_, out) = check(p);
        out.lines()
            .find(|l| l.contains("allocated"))
            .map(|l| l.split(" = ").next().unwrap_or("").to_string())
    };
    assert_eq!(alloc(&ours), alloc(&theirs), "{what}: allocated clusters");
    // The file covers every cluster: a write past the old end lands and reads back.
    qemu_io("qcow2", &ours, &["write -P 0x3c 2100k 8k"]);
    qemu_io("qcow2", &theirs, &["write -P 0x3c 2100k 8k"]);
    assert_clean(&ours);
    assert_same_bytes(&raw(&ours), &raw(&theirs), &format!("{what} then written"));
}

#[test]
fn resize_preallocation_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let modes = [Prealloc::Metadata, Prealloc::Falloc, Prealloc::Full];
    // (layout, old size): cluster-aligned and not, with a compressed cluster holding the old end
    // (1M + 64k), data in it (2047k), and a snapshot sharing it.
    let cases: [(&str, u64); 5] = [
        ("", 2 << 20),
        ("cluster_size=4k", 2096640),
        ("extended_l2=on", 2096640),
        ("compat=0.10,cluster_size=1k", 1126912),
        ("refcount_bits=8", 1085440),
    ];
    for (i, (opts, size)) in cases.iter().enumerate() {
        let d = Scratch::new(&format!("mut-prealloc-{i}"));
        let base = odd_fixture(&d, opts, *size);
        if i == 1 {
            qemu_img(&["snapshot", "-c", "sn", &s(&base)]);
        }
        for (k, mode) in modes.iter().enumerate() {
            // Across an L2 boundary for the small clusters.
            let to = if k == 0 { (3 << 20) + 512 } else { 5 << 20 };
            grow_both(&base, to, *mode);
        }
    }
}

#[test]
fn resize_preallocation_errors_match_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-prealloc-err");
    let base = qemu_fixture(&d, "base.qcow2", "", "2M");
    let bytes = std::fs::read(&base).unwrap();
    for (size, shrink) in [(1u64 << 20, true), (1 << 20, false), (2 << 20, false)] {
        let e = mutate::resize_with(&base, size, shrink, Prealloc::Metadata).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Preallocation can only be used for growing images"
        );
    }
    let e = mutate::parse_prealloc("bogus").unwrap_err();
    assert_eq!(e.to_string(), "Invalid preallocation mode 'bogus'");
    assert_eq!(std::fs::read(&base).unwrap(), bytes, "nothing written");
    // qemu's check, in the same order.
    let o = std::process::Command::new("qemu-img")
        .args(["resize", "--preallocation=metadata", "--shrink"])
        .arg(&base)
        .arg("1M")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Preallocation can only be used for growing images"));
    // A v2 image with snapshots cannot be resized at all (qemu: its snapshot table has no sizes).
    let v2 = qemu_fixture(&d, "v2.qcow2", "compat=0.10", "2M");
    qemu_img(&["snapshot", "-c", "s", &s(&v2)]);
    for mode in [Prealloc::Off, Prealloc::Full] {
        let e = mutate::resize_with(&v2, 4 << 20, false, mode).unwrap_err();
        assert_eq!(e.to_string(), "Can't resize a v2 image which has snapshots");
    }
    let o = std::process::Command::new("qemu-img")
        .args(["resize"])
        .arg(&v2)
        .arg("4M")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Can't resize a v2 image which has snapshots")
    );
}

#[test]
fn crash_resize_preallocation() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-prealloc");
    let p = odd_fixture(&d, "cluster_size=4k", 2096640);
    qemu_img(&["snapshot", "-c", "sn", &s(&p)]);
    for mode in [Prealloc::Metadata, Prealloc::Full] {
        let n = crash_test(&p, &|st| {
            mutate::resize_with_in(st, (2 << 20) + (300 << 10), false, mode, None)
        });
        eprintln!(
            "resize --preallocation={}: {n} fault points",
            mode_name(mode)
        );
    }
}

#[test]
fn resize_over_a_longer_backing_file_zeroes_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-grow-backing");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "4M");
    qemu_io("raw", &b, &["write -P 0x77 0 4M"]);
    let bq = d.join("b.qcow2");
    qemu_img(&["convert", "-q", "-O", "qcow2", &s(&b), &s(&bq)]);
    let short = d.join("short.raw");
    qemu_create(&short, "raw", "", "1M");
    let cases = [
        // (options, backing, its format, old size, qemu-io commands, new size)
        (
            "",
            "b.raw",
            "raw",
            "1M",
            &["write -P 0x11 0 64k"][..],
            4u64 << 20,
        ),
        (
            "",
            "b.qcow2",
            "qcow2",
            "1000k",
            &["write -P 0x12 960k 8k"][..],
            3 << 20,
        ),
        (
            "",
            "b.raw",
            "raw",
            "1000k",
            &["write -c -P 0x13 960k 40k"][..],
            5 << 20,
        ),
        (
            "",
            "b.raw",
            "raw",
            "1000k",
            &["write -z 960k 40k"][..],
            5 << 20,
        ),
        (
            "extended_l2=on",
            "b.raw",
            "raw",
            "1000k",
            &["write -P 0x14 900k 8k"][..],
            4 << 20,
        ),
        (
            "cluster_size=4k",
            "b.raw",
            "raw",
            "3M",
            &["write -P 0x15 0 8k"][..],
            8 << 20,
        ),
        // A backing file ending before the old end: nothing to hide, nothing zeroed.
        (
            "",
            "short.raw",
            "raw",
            "1M",
            &["write -P 0x16 0 4k"][..],
            4 << 20,
        ),
    ];
    for (i, (opts, bk, fmt, size, cmds, to)) in cases.iter().enumerate() {
        let base = overlay(&d, &format!("o{i}.qcow2"), opts, bk, fmt, size, cmds);
        let ours = copy(&base, "ours.qcow2");
        let theirs = copy(&base, "theirs.qcow2");
        mutate::resize(&ours, *to, false).unwrap();
        qemu_img(&["resize", "-q", &s(&theirs), &to.to_string()]);
        let what = format!("case {i}: {opts} over {bk}, {size} -> {to}");
        assert_clean(&ours);
        assert_same_bytes(&raw(&ours), &raw(&theirs), &what);
        assert_eq!(
            map_without_offsets(&ours),
            map_without_offsets(&theirs),
            "{what}: map"
        );
    }
    // Version 2 has no zero clusters: qemu-img fails, and so does vdisk, with its message.
    let v2 = overlay(&d, "v2.qcow2", "compat=0.10", "b.raw", "raw", "1M", &[]);
    let e = mutate::resize(&v2, 4 << 20, false).unwrap_err().to_string();
    let o = std::process::Command::new("qemu-img")
        .arg("resize")
        .arg(&v2)
        .arg("4M")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        e,
        "Failed to zero out new clusters: Operation not supported"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&e));
}

#[test]
fn crash_resize_over_a_longer_backing_file() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-grow-backing");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "3M");
    qemu_io("raw", &b, &["write -P 0x77 0 3M"]);
    let p = overlay(
        &d,
        "o.qcow2",
        "cluster_size=4k",
        "b.raw",
        "raw",
        "1001k",
        &["write -P 0x21 998k 3k"],
    );
    let n = crash_test(&p, &|st| mutate::resize_in(st, 3 << 20, false));
    eprintln!("resize over a backing file: {n} fault points");
    let n = crash_test(&p, &|st| {
        mutate::resize_with_in(st, 3 << 20, false, Prealloc::Metadata, None)
    });
    eprintln!("preallocating resize over a backing file: {n} fault points");
}

#[test]
fn resize_preallocation_over_a_backing_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("mut-prealloc-backing");
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", "4M");
    qemu_io("raw", &b, &["write -P 0x77 0 4M"]);
    let short = d.join("short.raw");
    qemu_create(&short, "raw", "", "512k");
    qemu_io("raw", &short, &["write -P 0x78 0 512k"]);
    // (options, backing, old size, qemu-io commands): a backing file reaching past the old end
    // (the new area is zeroed) or not; the old end on a cluster boundary or inside a data cluster.
    let cases = [
        ("", "b.raw", "1M", &["write -P 0x11 0 64k"][..]),
        ("", "b.raw", "1000k", &["write -P 0x12 960k 40k"][..]),
        (
            "cluster_size=4k",
            "b.raw",
            "1M",
            &["write -P 0x13 100k 8k"][..],
        ),
        ("", "short.raw", "1M", &["write -P 0x14 0 4k"][..]),
    ];
    for (i, (opts, bk, size, cmds)) in cases.iter().enumerate() {
        let base = overlay(&d, &format!("p{i}.qcow2"), opts, bk, "raw", size, cmds);
        for mode in [Prealloc::Metadata, Prealloc::Falloc, Prealloc::Full] {
            let to = 3u64 << 20;
            let ours = copy(&base, "ours.qcow2");
            let theirs = copy(&base, "theirs.qcow2");
            mutate::resize_with(&ours, to, false, mode).unwrap();
            let pre = format!("--preallocation={}", mode_name(mode));
            qemu_img(&["resize", "-q", &pre, &s(&theirs), &to.to_string()]);
            let what = format!("case {i}: {opts} over {bk}, {size} {}", mode_name(mode));
            assert_clean(&ours);
            assert_same_bytes(&raw(&ours), &raw(&theirs), &what);
            let strict = !opts.contains("4k");
            assert_eq!(
                map_kinds(&ours, strict),
                map_kinds(&theirs, strict),
                "{what}: map"
            );
        }
    }
}

/// `qemu-img map` of a qcow2 image without its host offsets (which depend on the layout).
fn map_without_offsets(p: &std::path::Path) -> Option<Vec<[serde_json::Value; 5]>> {
    qemu_map_json(p, Some("qcow2")).as_array().map(|a| {
        a.iter()
            .map(|e| ["start", "length", "depth", "zero", "data"].map(|k| e[k].clone()))
            .collect()
    })
}
