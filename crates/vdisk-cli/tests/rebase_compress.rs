//! `rebase -c`: the clusters a safe rebase copies into the image are stored compressed, as
//! qemu-img stores them. vdisk rebases one copy and qemu-img another; both must check clean, read
//! the same, and map the same ranges as compressed, plain data, zeros and holes.

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

/// `qemu-img map --output=json` as (start, length, data, zero, compressed) per range, with
/// neighbours of the same kind joined (qemu-img splits plain data where the host offsets of two
/// clusters do not follow each other, which depends on the layout).
fn map_kinds(d: &Path, file: &str) -> Vec<(u64, u64, bool, bool, bool)> {
    let v: Value = serde_json::from_str(&qemu_ok(d, &["map", "--output=json", file])).unwrap();
    let mut out: Vec<(u64, u64, bool, bool, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let k = (
            e["start"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["data"].as_bool().unwrap(),
            e["zero"].as_bool().unwrap(),
            e["compressed"].as_bool().unwrap(),
        );
        match out.last_mut() {
            Some(p) if (p.2, p.3, p.4) == (k.2, k.3, k.4) && p.0 + p.1 == k.0 => p.1 += k.1,
            _ => out.push(k),
        }
    }
    out
}

/// Bytes that do not compress (xorshift), so that qemu-img and vdisk both store them plain.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// base.raw (the pattern, with noise at 20 MiB and `tail` odd bytes) under top.qcow2 (created
/// with `opts`), which has data of its own; then `rebase -c -b ""` by both tools. With extended L2
/// entries, top.qcow2 gets no write of less than a cluster: qemu-img 10 then fails an assertion
/// (`img_rebase`: "!bdrv_is_allocated(...)") on the cluster that is allocated in part.
fn rebase_both(d: &Path, opts: &str, tail: u64) {
    make_pattern_raw(d, "base.raw", tail);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("base.raw"))
        .unwrap();
    f.write_all_at(&noise(192 << 10), 20 << 20).unwrap();
    let size = ((64u64 << 20) + tail).to_string();
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            "-b",
            "base.raw",
            "-F",
            "raw",
            "top.qcow2",
            &size,
        ],
    );
    let mut writes = vec!["write -P 0x77 8M 128k", "write -z 1M 128k"];
    if !opts.contains("extended_l2=on") {
        writes.push("write -P 0x78 2M 512");
    }
    qemu_io(d, "qcow2", "top.qcow2", &writes);
    for f in ["ours.qcow2", "theirs.qcow2"] {
        std::fs::copy(d.join("top.qcow2"), d.join(f)).unwrap();
    }
    vdisk_ok(d, &["rebase", "-c", "-b", "", "ours.qcow2"]);
    qemu_ok(d, &["rebase", "-c", "-b", "", "theirs.qcow2"]);
}

#[test]
fn compressed_rebase_stores_clusters_as_qemu_does() {
    if !qemu_available() {
        return;
    }
    for (opts, tail) in [
        ("cluster_size=65536", 0),
        ("compression_type=zstd", 3 * 512),
        ("extended_l2=on,cluster_size=131072", 0),
        ("compat=0.10,cluster_size=4096", 512),
        // A cluster takes one compressed entry: its refcount cannot count two.
        ("refcount_bits=1,cluster_size=1024", 0),
    ] {
        let s = Scratch::new("cli-rebase-c");
        let d = s.path();
        rebase_both(d, opts, tail);
        assert_qemu_check_clean(&d.join("ours.qcow2"), "qcow2");
        qemu_ok(d, &["compare", "ours.qcow2", "theirs.qcow2"]);
        qemu_ok(d, &["compare", "ours.qcow2", "top.qcow2"]);
        let ours = map_kinds(d, "ours.qcow2");
        assert_eq!(ours, map_kinds(d, "theirs.qcow2"), "{opts}");
        // The noise is stored plain, the pattern compressed: both kinds are there.
        assert!(ours.iter().any(|e| e.2 && e.4), "{opts}: {ours:?}");
        assert!(
            ours.iter().any(|e| e.0 >= 20 << 20 && e.2 && !e.4),
            "{opts}: {ours:?}"
        );
        let info: Value =
            serde_json::from_str(&qemu_ok(d, &["info", "--output=json", "ours.qcow2"])).unwrap();
        assert!(info.get("backing-filename").is_none(), "{opts}");
    }
}

#[test]
fn compressed_rebase_refuses_an_external_data_file_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-rebase-c-df");
    let d = s.path();
    make_pattern_raw(d, "base.raw", 0);
    for (img, data) in [("ours.qcow2", "ours.data"), ("theirs.qcow2", "theirs.data")] {
        let o = format!("data_file={data}");
        qemu_ok(
            d,
            &[
                "create", "-q", "-f", "qcow2", "-o", &o, "-b", "base.raw", "-F", "raw", img,
            ],
        );
    }
    let ours = vdisk(d, &["rebase", "-c", "-b", "", "ours.qcow2"]);
    let theirs = qemu(d, &["rebase", "-c", "-b", "", "theirs.qcow2"]);
    assert_eq!(ours.status.code(), theirs.status.code());
    assert_eq!(ours.status.code(), Some(1));
    let msg = "Error while writing to COW image: Operation not supported";
    assert!(err(&theirs).contains(msg), "{}", err(&theirs));
    assert!(err(&ours).contains(msg), "{}", err(&ours));
    // Nothing was switched: the image still reads through its backing file. (Checked from `d`:
    // qemu-img opens a relative data file name from its working directory.)
    assert!(qemu_ok(d, &["check", "ours.qcow2"]).contains("No errors were found"));
    qemu_ok(d, &["compare", "ours.qcow2", "base.raw"]);
}

#[test]
fn compress_with_unsafe_rebase_writes_no_data_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-rebase-cu");
    let d = s.path();
    make_pattern_raw(d, "base.raw", 0);
    qemu_overlay(d, "base.raw", "raw", "ours.qcow2", None);
    std::fs::copy(d.join("ours.qcow2"), d.join("theirs.qcow2")).unwrap();
    vdisk_ok(d, &["rebase", "-c", "-u", "-b", "", "ours.qcow2"]);
    qemu_ok(d, &["rebase", "-c", "-u", "-b", "", "theirs.qcow2"]);
    assert_eq!(map_kinds(d, "ours.qcow2"), map_kinds(d, "theirs.qcow2"));
    assert!(map_kinds(d, "ours.qcow2").iter().all(|e| !e.2));
}
