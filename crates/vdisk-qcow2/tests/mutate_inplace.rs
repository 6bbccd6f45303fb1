//! Writing into existing qcow2 images (`mutate::open_writer`) and emptying them (`make_empty`):
//! qemu-made fixtures, the expected content modelled on qemu's own view before the writes, then
//! `qemu-img check` and qemu's reading of the result; crash tests at every write and sync.

mod mutate_common;

use mutate_common::*;
use std::path::Path;
use vdisk_core::{Payload, Result};
use vdisk_qcow2::mutate;
use vdisk_testutil::*;

/// The writes of one session: (offset, Some(data) | None for zeros, length).
fn plan(size: u64, cs: u64) -> Vec<(u64, Option<Vec<u8>>, u64)> {
    let pat = |n: u64, seed: u64| -> Vec<u8> {
        (0..n).map(|i| ((i * 13 + seed * 7) % 251) as u8).collect()
    };
    let mut v = vec![
        (0, Some(pat(2 * cs, 1)), 2 * cs),
        (4 * cs, None, 3 * cs),
        (8 * cs, Some(pat(cs, 2)), cs),
        // Over the compressed cluster and the zeros qemu-io wrote at 1M / 512k.
        (1 << 20, Some(pat(cs, 3)), cs),
        (512 << 10, Some(pat(cs, 4)), cs),
    ];
    let last = (size - 1) / cs * cs;
    v.push((last, Some(pat(size - last, 5)), size - last));
    v
}

fn apply(model: &mut [u8], plan: &[(u64, Option<Vec<u8>>, u64)]) {
    for (off, d, len) in plan {
        let r = &mut model[*off as usize..(*off + *len) as usize];
        match d {
            Some(d) => r.copy_from_slice(d),
            None => r.fill(0),
        }
    }
}

fn run(
    s: std::sync::Arc<dyn vdisk_core::Storage>,
    plan: &[(u64, Option<Vec<u8>>, u64)],
) -> Result<()> {
    run_with(s, plan, false)
}

/// [`run`] with the plain or the compressing writer (`rebase -c`).
fn run_with(
    s: std::sync::Arc<dyn vdisk_core::Storage>,
    plan: &[(u64, Option<Vec<u8>>, u64)],
    compress: bool,
) -> Result<()> {
    let mut w = if compress {
        mutate::open_compressing_writer_in(s)?
    } else {
        mutate::open_writer_in(s)?
    };
    for (off, d, len) in plan {
        let p = match d {
            Some(d) => Payload::data(d.clone()),
            None => Payload::Zero(*len),
        };
        w.write(*off, p)?;
    }
    w.finish()
}

fn cluster_size(p: &Path) -> u64 {
    qemu_info_json(p)["cluster-size"].as_u64().unwrap()
}

fn write_and_verify(p: &Path) {
    write_and_verify_with(p, false)
}

fn write_and_verify_with(p: &Path, compress: bool) {
    let size = qemu_info_json(p)["virtual-size"].as_u64().unwrap();
    let cs = cluster_size(p);
    let mut pl = plan(size, cs);
    if compress {
        // Over part of a cluster this session stored compressed: its other bytes are read back
        // from the compressed data.
        pl.push((cs + 100, Some(vec![0x5a; 700]), 700));
    }
    let mut model = raw(p);
    apply(&mut model, &pl);
    let snaps: Vec<(String, Vec<u8>)> = {
        let st = state(p);
        qemu_info_json(p)["snapshots"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["name"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .zip(st.2)
            .collect()
    };
    let s = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(p).unwrap());
    run_with(s, &pl, compress).unwrap();
    assert_clean(p);
    assert_same_bytes(&raw(p), &model, "content after the writes");
    for (name, content) in snaps {
        assert_same_bytes(&snapshot_raw(p, &name), &content, "snapshot unchanged");
    }
}

#[test]
fn writes_into_layouts() {
    if !qemu_available() {
        return;
    }
    for (i, opts) in [
        "",
        "cluster_size=4k",
        "extended_l2=on",
        "compat=0.10",
        "refcount_bits=1,cluster_size=1k",
    ]
    .iter()
    .enumerate()
    {
        let d = Scratch::new(&format!("inpl-lay-{i}"));
        let p = qemu_fixture(&d, "img.qcow2", opts, "3071k");
        write_and_verify(&p);
        // A second session over the first one's result.
        write_and_verify(&p);
    }
}

/// The compressing writer of `rebase -c`: whole clusters are stored compressed (the pattern
/// compresses), everything else as by the plain writer.
#[test]
fn compressing_writer_writes_into_layouts() {
    if !qemu_available() {
        return;
    }
    for (i, opts) in [
        "",
        "cluster_size=4k,compression_type=zstd",
        "extended_l2=on",
        "compat=0.10",
        "refcount_bits=1,cluster_size=1k",
    ]
    .iter()
    .enumerate()
    {
        let d = Scratch::new(&format!("inpl-comp-{i}"));
        let p = qemu_fixture(&d, "img.qcow2", opts, "3071k");
        // With 1-bit refcounts a cluster takes one compressed entry, and there are no snapshots.
        if !opts.contains("refcount_bits=1") {
            qemu_img(&["snapshot", "-c", "one", &p.to_string_lossy()]);
        }
        write_and_verify_with(&p, true);
        let map = qemu_map_json(&p, Some("qcow2"));
        let compressed = |at: u64| {
            map.as_array().unwrap().iter().any(|e| {
                let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
                s <= at && at < s + l && e["compressed"] == true
            })
        };
        let cs = cluster_size(&p);
        // Cluster 0 (written whole) and 8 are compressed; cluster 1 was rewritten in part.
        assert!(compressed(0) && compressed(8 * cs), "{opts}: {map}");
        assert!(!compressed(cs), "{opts}: {map}");
        write_and_verify_with(&p, true);
    }
}

#[test]
fn snapshots_keep_their_content() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("inpl-snap");
    let p = qemu_fixture(&d, "img.qcow2", "cluster_size=4k", "2M");
    qemu_img(&["snapshot", "-c", "one", &p.to_string_lossy()]);
    qemu_io("qcow2", &p, &["write -P 0x61 0 20k"]);
    qemu_img(&["snapshot", "-c", "two", &p.to_string_lossy()]);
    write_and_verify(&p);
}

fn overlay(d: &Scratch, opts: &str) -> std::path::PathBuf {
    let base = qemu_fixture(d, "base.qcow2", "", "2M");
    let top = d.join("top.qcow2");
    let o = if opts.is_empty() {
        "backing_fmt=qcow2".to_string()
    } else {
        format!("backing_fmt=qcow2,{opts}")
    };
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &o,
        "-b",
        &base.to_string_lossy(),
        &top.to_string_lossy(),
    ]);
    qemu_io("qcow2", &top, &["write -P 0x77 64k 64k"]);
    top
}

#[test]
fn zeros_hide_the_backing_file() {
    if !qemu_available() {
        return;
    }
    for (i, opts) in ["", "compat=0.10", "extended_l2=on"].iter().enumerate() {
        let d = Scratch::new(&format!("inpl-bk-{i}"));
        let top = overlay(&d, opts);
        let mut model = raw(&top);
        let pl = vec![
            (0u64, None, 128u64 << 10),
            (320 << 10, Some(vec![0x99; 64 << 10]), 64 << 10),
        ];
        apply(&mut model, &pl);
        let s = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&top).unwrap());
        run(s, &pl).unwrap();
        assert_clean(&top);
        assert_same_bytes(&raw(&top), &model, opts);
    }
}

#[test]
fn partial_clusters() {
    if !qemu_available() {
        return;
    }
    // Extended L2 over a backing file: whole subclusters are written, the others keep showing the
    // backing data.
    let d = Scratch::new("inpl-part");
    let top = overlay(&d, "extended_l2=on");
    let mut model = raw(&top);
    let pl = vec![
        (2048u64, Some(vec![0x42; 4096]), 4096u64),
        (8192, None, 2048),
    ];
    apply(&mut model, &pl);
    let s = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&top).unwrap());
    run(s, &pl).unwrap();
    assert_clean(&top);
    assert_same_bytes(&raw(&top), &model, "subclusters");
    // Without a backing file any partial write is a read-modify-write of this layer.
    let p = qemu_fixture(&d, "plain.qcow2", "", "2M");
    let mut model = raw(&p);
    let pl = vec![
        (1000u64, Some(vec![0x24; 3000]), 3000u64),
        ((1 << 20) + 5, None, 100),
    ];
    apply(&mut model, &pl);
    let s = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&p).unwrap());
    run(s, &pl).unwrap();
    assert_clean(&p);
    assert_same_bytes(&raw(&p), &model, "partial");
    // Part of an unallocated cluster over a backing file without subclusters: refused, unchanged.
    let top2 = d.join("top.qcow2");
    let before = raw(&top2);
    let s = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&top2).unwrap());
    let e = run(s, &[(512 << 10, Some(vec![1; 512]), 512)]);
    assert!(e.is_err());
    assert_eq!(raw(&top2), before);
}

#[test]
fn dropped_writer_leaves_the_old_image() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("inpl-drop");
    let p = qemu_fixture(&d, "img.qcow2", "", "2M");
    let before = raw(&p);
    let mut w = mutate::open_writer(&p).unwrap();
    w.write(0, Payload::data(vec![7; 128 << 10])).unwrap();
    drop(w);
    let (code, out) = check(&p);
    assert!(code == 0 || code == 3, "{out}");
    assert_eq!(raw(&p), before);
}

#[test]
fn refuses_what_mutate_refuses() {
    if !qemu_available() {
        return;
    }
    // Bitmaps and external data files are handled now (mutate_bitmaps.rs, mutate_data_file.rs);
    // an image marked corrupt is not written into.
    use std::os::unix::fs::FileExt;
    let d = Scratch::new("inpl-ref");
    let p = qemu_fixture(&d, "c.qcow2", "", "2M");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&2u64.to_be_bytes(), 72)
        .unwrap();
    let before = std::fs::read(&p).unwrap();
    let e = mutate::open_writer(&p)
        .err()
        .expect("corrupt image refused");
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert!(mutate::make_empty(&p).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn make_empty_clears_the_active_state() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("inpl-empty");
    let top = overlay(&d, "");
    qemu_img(&["snapshot", "-c", "s", &top.to_string_lossy()]);
    let snap = snapshot_raw(&top, "s");
    let base_raw = raw(&d.join("base.qcow2"));
    mutate::make_empty(&top).unwrap();
    assert_clean(&top);
    assert_same_bytes(&raw(&top), &base_raw, "reads the backing file");
    assert_same_bytes(&snapshot_raw(&top, "s"), &snap, "snapshot kept");
    let map = qemu_map_json(&top, Some("qcow2"));
    for e in map.as_array().unwrap() {
        assert_ne!(e["depth"].as_u64(), Some(0), "{e}");
    }
}

#[test]
fn crash_inplace_write() {
    if !qemu_available() {
        return;
    }
    for (i, opts) in ["cluster_size=4k", "extended_l2=on"].iter().enumerate() {
        let d = Scratch::new(&format!("inpl-crash-{i}"));
        let p = qemu_fixture(&d, "img.qcow2", opts, "2M");
        qemu_img(&["snapshot", "-c", "one", &p.to_string_lossy()]);
        let cs = cluster_size(&p);
        let pl = plan(2 << 20, cs);
        let n = crash_test(&p, &|s| run(s, &pl));
        eprintln!("{opts}: inplace write: {n} fault points");
    }
    // v2 over a backing file: zeros are written as allocated zero clusters.
    let d = Scratch::new("inpl-crash-v2");
    let base = qemu_fixture(&d, "base.qcow2", "compat=0.10", "2M");
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "-b",
        &base.to_string_lossy(),
        "-F",
        "qcow2",
        &top.to_string_lossy(),
    ]);
    qemu_io("qcow2", &top, &["write -P 0x77 64k 64k"]);
    let pl = vec![
        (0u64, None, 192u64 << 10),
        (1 << 20, Some(vec![3; 64 << 10]), 64 << 10),
    ];
    let n = crash_test(&top, &|s| run(s, &pl));
    eprintln!("v2 over backing: inplace write: {n} fault points");
    // The compressing writer: compressed data packed into clusters past the end.
    let d = Scratch::new("inpl-crash-c");
    let p = qemu_fixture(&d, "img.qcow2", "cluster_size=4k", "2M");
    let pl = plan(2 << 20, 4096);
    let n = crash_test(&p, &|s| run_with(s, &pl, true));
    eprintln!("compressing inplace write: {n} fault points");
    let d = Scratch::new("inpl-crash-e");
    let p = qemu_fixture(&d, "img.qcow2", "", "2M");
    let n = crash_test(&p, &mutate::make_empty_in);
    eprintln!("make_empty: {n} fault points");
}
