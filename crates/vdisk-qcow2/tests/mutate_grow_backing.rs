//! Growing an overlay whose cluster holding the old end still reads (in part) from its backing
//! file, with the backing image opened by the caller (`resize_over`): plain and preallocating
//! grows against qemu-img on twin images (content, check, the map's classification), the
//! refusals qemu makes, the one case where qemu loses data and vdisk does not, and crash tests.

mod mutate_common;

use mutate_common::*;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_qcow2::mutate::{self, Prealloc};
use vdisk_testutil::*;

const MODES: [Prealloc; 4] = [
    Prealloc::Off,
    Prealloc::Metadata,
    Prealloc::Falloc,
    Prealloc::Full,
];

/// The backing image of the test overlays, opened read-only: a raw file, or a qcow2 image
/// without a backing file of its own.
fn open_backing(p: &Path) -> Arc<dyn ImageReader> {
    let st: Arc<dyn vdisk_core::Storage> = Arc::new(FileStorage::open(p).unwrap());
    if p.extension().is_some_and(|e| e == "qcow2") {
        let opener = Arc::new(vdisk_core::storage::NoFiles);
        let opts = vdisk_qcow2::OpenOptions::default();
        Arc::new(vdisk_qcow2::open(st, opener, &opts).unwrap())
    } else {
        Arc::new(vdisk_raw::open(st).unwrap())
    }
}

/// A raw backing file of `size` filled with 0x77, and a qcow2 one of `size` with 0x66 in its
/// second half (a hole in the first).
fn backings(d: &Scratch, size: &str) {
    let b = d.join("b.raw");
    qemu_create(&b, "raw", "", size);
    qemu_io("raw", &b, &[&format!("write -P 0x77 0 {size}")]);
    let q = d.join("b.qcow2");
    qemu_create(&q, "qcow2", "", size);
    let half = parse(size) / 2;
    qemu_io("qcow2", &q, &[&format!("write -P 0x66 {half} {half}")]);
}

fn parse(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.len() - 1);
    n.parse::<u64>().unwrap() << if unit == "M" { 20 } else { 10 }
}

/// Grows a copy of `base` with vdisk (over its opened backing image `bk`) and one with qemu-img
/// in `mode`; both must succeed or fail alike, and on success agree on content, check and map.
fn grow_both(base: &Path, bk: &Path, to: u64, mode: Prealloc, what: &str) {
    let ours = copy(base, "ours.qcow2");
    let theirs = copy(base, "theirs.qcow2");
    let got = mutate::resize_over(&ours, to, false, mode, &|_| Ok(Some(open_backing(bk))));
    let pre = format!("--preallocation={}", mode_name(mode));
    let q = std::process::Command::new("qemu-img")
        .args(["resize", "-q", &pre, &s(&theirs), &to.to_string()])
        .output()
        .unwrap();
    let what = format!("{what} {}", mode_name(mode));
    match got {
        Ok(()) => assert!(q.status.success(), "{what}: qemu-img failed, vdisk did not"),
        Err(e) => {
            let msg = String::from_utf8_lossy(&q.stderr);
            assert!(
                !q.status.success(),
                "{what}: vdisk failed ({e}), qemu-img did not"
            );
            assert!(msg.contains(&e.to_string()), "{what}: {e} vs {msg}");
            return;
        }
    }
    assert_clean(&ours);
    assert_same_bytes(&raw(&ours), &raw(&theirs), &what);
    // Host offsets differ (the refcount structures are placed elsewhere); the kinds must not.
    let strict = qemu_info_json(&theirs)["cluster-size"].as_u64().unwrap() >= 64 << 10;
    assert_eq!(
        map_kinds(&ours, strict),
        map_kinds(&theirs, strict),
        "{what}: map"
    );
}

#[test]
fn grow_over_a_longer_backing_file_copies_the_head_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("grow-backing");
    backings(&d, "4M");
    // (options, backing, old size, qemu-io commands): the old end inside a cluster (or a
    // subcluster) that is unallocated, data, zero or compressed, over a raw or qcow2 backing.
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("", "b.raw", "1000k", &[]),
        ("", "b.raw", "1000k", &["write -P 0x21 900k 70k"]),
        ("", "b.qcow2", "2100k", &["write -P 0x22 0 64k"]),
        (
            "cluster_size=4k",
            "b.raw",
            "1001k",
            &["write -P 0x23 998k 2k"],
        ),
        ("cluster_size=512", "b.raw", "1001k", &[]),
        ("extended_l2=on", "b.raw", "999k", &[]),
        (
            "extended_l2=on",
            "b.raw",
            "999k",
            &["write -P 0x24 960k 10k"],
        ),
        (
            "extended_l2=on",
            "b.raw",
            "999k",
            &["write -P 0x25 997k 2k"],
        ),
        ("extended_l2=on", "b.raw", "999k", &["write -z 990k 9k"]),
        (
            "extended_l2=on",
            "b.qcow2",
            "2047k",
            &["write -P 0x26 2000k 8k"],
        ),
        (
            "extended_l2=on",
            "b.raw",
            "1000k",
            &["write -P 0x27 990k 10k"],
        ),
        // qemu cannot zero subclusters of a compressed cluster: the plain grow fails alike.
        (
            "extended_l2=on",
            "b.raw",
            "999k",
            &["write -c -P 0x28 960k 39k"],
        ),
        // Version 2: no zero clusters, so a plain or metadata grow fails alike.
        ("compat=0.10", "b.raw", "1000k", &["write -P 0x29 960k 10k"]),
    ];
    for (i, (opts, bk, size, cmds)) in cases.iter().enumerate() {
        let fmt = if bk.ends_with("qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        let base = overlay(&d, &format!("o{i}.qcow2"), opts, bk, fmt, size, cmds);
        for mode in MODES {
            // QEMU 10 loses the compressed data there; vdisk keeps it (next test).
            if opts.contains("extended")
                && cmds.iter().any(|c| c.contains("-c"))
                && mode == Prealloc::Metadata
            {
                continue;
            }
            let what = format!("case {i}: {opts} over {bk}, {size} {cmds:?}");
            grow_both(&base, &d.join(bk), 3 << 20, mode, &what);
        }
    }
}

#[test]
fn grow_over_a_backing_file_ending_inside_the_old_end_cluster_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("grow-short-backing");
    backings(&d, "980k");
    for (opts, cmds) in [
        ("", &[][..]),
        ("cluster_size=4k", &["write -P 0x31 960k 8k"][..]),
        ("extended_l2=on", &["write -P 0x32 900k 8k"][..]),
    ] {
        let base = overlay(&d, "o.qcow2", opts, "b.raw", "raw", "1000k", cmds);
        for mode in MODES {
            grow_both(
                &base,
                &d.join("b.raw"),
                3 << 20,
                mode,
                &format!("{opts} short"),
            );
        }
    }
}

#[test]
fn grow_with_a_data_file_over_a_longer_backing_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("grow-backing-data");
    backings(&d, "4M");
    for opts in ["", "extended_l2=on"] {
        for cmds in [&[][..], &["write -P 0x41 990k 9k"][..]] {
            for mode in MODES {
                // Each twin has its own data file, so the images are made twice.
                let mut made = Vec::new();
                for who in ["ours", "theirs"] {
                    let data = s(&d.join(&format!("{who}.data")));
                    let o = [format!("data_file={data}"), opts.to_string()]
                        .into_iter()
                        .filter(|o| !o.is_empty())
                        .collect::<Vec<_>>()
                        .join(",");
                    made.push(overlay(
                        &d,
                        &format!("{who}.qcow2"),
                        &o,
                        "b.raw",
                        "raw",
                        "999k",
                        cmds,
                    ));
                }
                let what = format!("data file {opts} {cmds:?} {}", mode_name(mode));
                mutate::resize_over(&made[0], 3 << 20, false, mode, &|_| {
                    Ok(Some(open_backing(&d.join("b.raw"))))
                })
                .unwrap();
                let pre = format!("--preallocation={}", mode_name(mode));
                qemu_img(&["resize", "-q", &pre, &s(&made[1]), "3M"]);
                assert_clean(&made[0]);
                assert_same_bytes(&raw(&made[0]), &raw(&made[1]), &what);
                assert_eq!(
                    map_kinds(&made[0], true),
                    map_kinds(&made[1], true),
                    "{what}: map"
                );
                let len = |p: &str| std::fs::metadata(d.join(p)).unwrap().len();
                assert_eq!(
                    len("ours.data"),
                    len("theirs.data"),
                    "{what}: data file length"
                );
            }
        }
    }
}

#[test]
fn metadata_grow_keeps_a_compressed_old_end_cluster_where_qemu_loses_it() {
    if !qemu_available() {
        return;
    }
    // QEMU 10's metadata preallocation over a longer backing file, on an image with extended L2
    // entries whose old end lies in a compressed cluster, leaves that cluster's subclusters
    // unallocated, so they read the backing file instead of the data. vdisk keeps the data.
    let d = Scratch::new("grow-compressed-ext");
    backings(&d, "4M");
    let cmds = ["write -c -P 0x51 960k 39k"];
    let base = overlay(
        &d,
        "o.qcow2",
        "extended_l2=on",
        "b.raw",
        "raw",
        "999k",
        &cmds,
    );
    let before = raw(&base);
    let ours = copy(&base, "ours.qcow2");
    mutate::resize_over(&ours, 3 << 20, false, Prealloc::Metadata, &|_| {
        Ok(Some(open_backing(&d.join("b.raw"))))
    })
    .unwrap();
    assert_clean(&ours);
    let after = raw(&ours);
    assert_same_bytes(&after[..before.len()], &before, "old content kept");
    assert!(
        after[before.len()..].iter().all(|&b| b == 0),
        "new area reads as zeros"
    );
}

#[test]
fn grow_that_needs_the_backing_file_is_refused_without_it() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("grow-backing-unopened");
    backings(&d, "4M");
    for opts in ["", "extended_l2=on"] {
        let p = overlay(&d, "o.qcow2", opts, "b.raw", "raw", "999k", &[]);
        let bytes = std::fs::read(&p).unwrap();
        for mode in MODES {
            let e = mutate::resize_with(&p, 3 << 20, false, mode)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("still reads from the backing file"),
                "{opts} {mode:?}: {e}"
            );
            assert_eq!(
                std::fs::read(&p).unwrap(),
                bytes,
                "{opts} {mode:?}: unchanged"
            );
        }
        // Old ends on a cluster boundary need nothing from it.
        let q = overlay(&d, "q.qcow2", opts, "b.raw", "raw", "1M", &[]);
        mutate::resize_with(&q, 3 << 20, false, Prealloc::Off).unwrap();
        assert_clean(&q);
    }
}

#[test]
fn crash_grow_over_a_longer_backing_file_reading_it() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("crash-grow-backing-read");
    backings(&d, "3M");
    for opts in ["cluster_size=4k", "extended_l2=on"] {
        let p = overlay(
            &d,
            "o.qcow2",
            opts,
            "b.raw",
            "raw",
            "1001k",
            &["write -P 0x61 900k 3k"],
        );
        for mode in [Prealloc::Off, Prealloc::Metadata, Prealloc::Full] {
            let bk = open_backing(&d.join("b.raw"));
            let n = crash_test(&p, &|st| {
                mutate::resize_over_in(st, 3 << 20, false, mode, None, Some(Arc::clone(&bk)))
            });
            eprintln!("{opts} {}: {n} fault points", mode_name(mode));
        }
    }
}
