//! `vdisk dd` against `qemu-img dd` on the same input: output size, content and allocation, the
//! sizes qemu-img gives `count` and `skip` (count from the input's start), and its errors.

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, qemu_map_json, Scratch};

/// An 8 MiB qcow2 overlay over a raw base: data in both layers, holes, explicit zeros.
fn input(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "raw", "base.raw", "8M"]);
    qemu_io(
        d,
        "raw",
        "base.raw",
        &["write -P 0x11 0 1M", "write -P 0x44 6M 1M"],
    );
    qemu_overlay(d, "base.raw", "raw", "in.qcow2", None);
    qemu_io(
        d,
        "qcow2",
        "in.qcow2",
        &[
            "write -P 0x22 512k 1M",
            "write -z 6M 64k",
            "write -P 0x33 7M 4k",
        ],
    );
}

/// Runs `qemu-img dd` and `vdisk dd` with `operands` (`of=` added: q.FMT and v.FMT) and checks
/// that they agree; returns the two outputs.
fn both(d: &Path, fmt: &str, operands: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let (q, v) = (format!("q.{fmt}"), format!("v.{fmt}"));
    for f in [&q, &v] {
        let _ = std::fs::remove_file(d.join(f));
    }
    let run = |tool: &str, out: &str| {
        let of = format!("of={out}");
        let mut args = vec!["dd", "-O", fmt, "if=in.qcow2", of.as_str()];
        args.extend_from_slice(operands);
        if tool == "qemu" {
            qemu(d, &args)
        } else {
            vdisk(d, &args)
        }
    };
    let (qo, vo) = (run("qemu", &q), run("vdisk", &v));
    assert_eq!(
        (vo.status.code(), err(&vo).replace("vdisk: ", "")),
        (qo.status.code(), err(&qo).replace("qemu-img: ", "")),
        "{fmt} {operands:?}"
    );
    let (q, v) = (d.join(q), d.join(v));
    let (qi, vi) = (
        vdisk_testutil::qemu_info_json(&q),
        vdisk_testutil::qemu_info_json(&v),
    );
    assert_eq!(qi["virtual-size"], vi["virtual-size"], "{fmt} {operands:?}");
    qemu_ok(
        d,
        &["compare", "-s", q.to_str().unwrap(), v.to_str().unwrap()],
    );
    (q, v)
}

#[test]
fn dd_copies_what_qemu_img_dd_copies() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-dd");
    let d = s.path();
    input(d);
    // The whole input, every byte written: raw outputs are as allocated as qemu-img's, but for
    // one 4 KiB block of ext4's extent tree when vdisk's output has more than the four extents
    // an inode holds (its blocks are allocated write by write: vdisk_core::allocahead). A hole
    // would make vdisk's output smaller.
    let (q, v) = both(d, "raw", &[]);
    let (qa, va) = (allocated(&q), allocated(&v));
    assert!(
        va == qa || va == qa + 4096,
        "qemu-img {qa} bytes, vdisk {va}"
    );
    // count counts from the input's start: 4 blocks, 2 skipped, 2 copied.
    both(d, "raw", &["bs=1M", "count=4", "skip=2"]);
    both(d, "raw", &["bs=3000", "count=5", "skip=1"]);
    both(d, "raw", &["bs=64k", "skip=3"]);
    both(d, "raw", &["count=0"]);
    // Skipping past the end: an empty output, qemu-img's message, success.
    both(d, "raw", &["bs=1M", "skip=9"]);
    both(d, "raw", &["bs=1M", "count=2", "skip=3"]);
    // Fully allocated qcow2, as qemu-img writes it.
    let (q, v) = both(d, "qcow2", &["bs=1M", "count=7", "skip=1"]);
    assert_eq!(qemu_map_json(&q, None), qemu_map_json(&v, None));
    assert_qemu_check_clean(&v, "qcow2");
    let (_, v) = both(d, "vmdk", &["bs=64k", "count=100"]);
    assert_qemu_check_clean(&v, "vmdk");
    let (_, v) = both(d, "vdi", &["bs=64k", "count=100"]);
    assert_qemu_check_clean(&v, "vdi");
}

#[test]
fn dd_refuses_what_qemu_img_dd_refuses() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-dd-errors");
    let d = s.path();
    input(d);
    let cases: &[&[&str]] = &[
        &["dd", "bs=0", "if=in.qcow2", "of=x.raw"],
        &["dd", "bs=1x", "if=in.qcow2", "of=x.raw"],
        &["dd", "bs=4294967296", "if=in.qcow2", "of=x.raw"],
        &["dd", "count=-1", "if=in.qcow2", "of=x.raw"],
        &["dd", "skip=-1", "if=in.qcow2", "of=x.raw"],
        &["dd", "foo=1", "if=in.qcow2", "of=x.raw"],
        &["dd", "if=in.qcow2", "of=x.raw", "extra"],
        &["dd", "if=in.qcow2"],
        &["dd", "of=x.raw"],
    ];
    for args in cases {
        let (q, v) = (qemu(d, args), vdisk(d, args));
        assert_eq!(q.status.code(), Some(1), "{args:?}");
        assert_eq!(v.status.code(), Some(1), "{args:?}: {}", err(&v));
        let first = |e: String| e.lines().next().unwrap_or("").to_string();
        assert_eq!(
            first(err(&v)).replace("vdisk: ", ""),
            first(err(&q)).replace("qemu-img: ", ""),
            "{args:?}"
        );
        assert!(!d.join("x.raw").exists(), "{args:?}");
    }
    // A missing input: exit 1 and no output (qemu-img names the file twice in its message).
    let args = ["dd", "if=missing.qcow2", "of=x.raw"];
    assert_eq!(qemu(d, &args).status.code(), Some(1));
    assert_eq!(vdisk(d, &args).status.code(), Some(1));
    assert!(!d.join("x.raw").exists());
}
