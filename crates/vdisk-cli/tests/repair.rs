//! `vdisk check -r leaks|all` beside `qemu-img check -r` on qcow2 images damaged by hand: the
//! exit code, standard output (but the image end offset: vdisk's repair is shadow-paged, so its
//! tables may end later) and standard error, line for line: the findings, "Repairing cluster ..."
//! for each refcount fixed, the COPIED flags against the fixed refcounts, and the findings of the
//! double check. Also `check` of an image whose backing file is missing.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

const COPIED: u64 = 1 << 63;
const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;

fn be64(f: &std::fs::File, at: u64) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    u64::from_be_bytes(b)
}

/// An image file opened to be damaged, with where its first L2 table and refcount block are.
struct Damage {
    f: std::fs::File,
    l2: u64,
    block: u64,
}

impl Damage {
    fn open(p: &Path) -> Damage {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        let l2 = be64(&f, be64(&f, 40)) & OFFSET;
        let block = be64(&f, be64(&f, 48));
        Damage { f, l2, block }
    }

    /// L2 entry `i` of the first table.
    fn entry(&self, i: u64) -> u64 {
        be64(&self.f, self.l2 + 8 * i)
    }

    fn set_entry(&self, i: u64, v: u64) {
        self.f
            .write_all_at(&v.to_be_bytes(), self.l2 + 8 * i)
            .unwrap();
    }

    /// Sets the 16-bit refcount of host cluster `c` (64 KiB clusters).
    fn refcount(&self, c: u64, v: u16) {
        self.f
            .write_all_at(&v.to_be_bytes(), self.block + 2 * c)
            .unwrap();
    }

    /// Sets the refcount of the cluster L2 entry `i` maps.
    fn refcount_of(&self, i: u64, v: u16) {
        self.refcount((self.entry(i) & OFFSET) >> 16, v);
    }
}

fn without_end_offset(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Image end offset:") && !l.contains("\"image-end-offset\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Repairs copies of `img` in `d` with vdisk and qemu-img in both modes and compares them.
fn repair_like_qemu(d: &Path, img: &str) {
    for mode in ["leaks", "all"] {
        std::fs::copy(d.join(img), d.join("ours.qcow2")).unwrap();
        std::fs::copy(d.join(img), d.join("theirs.qcow2")).unwrap();
        let o = vdisk(d, &["check", "-r", mode, "ours.qcow2"]);
        let t = qemu(d, &["check", "-r", mode, "theirs.qcow2"]);
        let what = format!("{img}, -r {mode}");
        assert_eq!(o.status.code(), t.status.code(), "{what}: {}", err(&t));
        assert_eq!(
            without_end_offset(&out(&o)),
            without_end_offset(&out(&t)),
            "{what}"
        );
        assert_eq!(err(&o), err(&t), "{what}: standard error");
    }
}

#[test]
fn check_repair_prints_what_qemu_img_prints() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-repair-log");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "8M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 1 0 256k"]);

    // A leaked cluster past the data, inside the file.
    std::fs::copy(d.join("base.qcow2"), d.join("leak.qcow2")).unwrap();
    let x = Damage::open(&d.join("leak.qcow2"));
    x.refcount(12, 1);
    x.f.write_all_at(&[0], 13 * 65536 - 1).unwrap();
    drop(x);
    repair_like_qemu(d, "leak.qcow2");

    // A cluster at refcount 2 with one reference and no COPIED flag: the leak fix makes the flag
    // wrong, and both modes repair it.
    std::fs::copy(d.join("base.qcow2"), d.join("shared.qcow2")).unwrap();
    let x = Damage::open(&d.join("shared.qcow2"));
    x.refcount_of(1, 2);
    x.set_entry(1, x.entry(1) & !COPIED);
    drop(x);
    repair_like_qemu(d, "shared.qcow2");

    // A COPIED flag missing on a cluster at refcount 1, and nothing else.
    std::fs::copy(d.join("base.qcow2"), d.join("flag.qcow2")).unwrap();
    let x = Damage::open(&d.join("flag.qcow2"));
    x.set_entry(2, x.entry(2) & !COPIED);
    drop(x);
    repair_like_qemu(d, "flag.qcow2");

    // With a snapshot: a shared cluster at refcount 1 of 2 references (a corruption only -r all
    // fixes, so -r leaks leaves the COPIED flags alone), and a cluster written after the snapshot
    // at refcount 2 of 1 reference without its COPIED flag.
    std::fs::copy(d.join("base.qcow2"), d.join("snap.qcow2")).unwrap();
    qemu_ok(d, &["snapshot", "-c", "s", "snap.qcow2"]);
    qemu_io(d, "qcow2", "snap.qcow2", &["write -P 2 1M 64k"]);
    let x = Damage::open(&d.join("snap.qcow2"));
    x.refcount_of(0, 1);
    x.refcount_of(16, 2);
    x.set_entry(16, x.entry(16) & !COPIED);
    drop(x);
    repair_like_qemu(d, "snap.qcow2");
}

#[test]
fn check_fails_like_qemu_img_when_the_backing_file_is_missing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-check-no-backing");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"]);
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    std::fs::remove_file(d.join("base.qcow2")).unwrap();
    // qemu-img check opens the backing chain (qemu-img info does not): exit 1.
    for args in [
        &["check", "top.qcow2"][..],
        &["check", "-r", "all", "top.qcow2"],
    ] {
        let o = vdisk(d, args);
        let t = qemu(d, args);
        assert_eq!(t.status.code(), Some(1), "{}", err(&t));
        assert_eq!(o.status.code(), t.status.code(), "{args:?}: {}", err(&o));
        assert!(
            err(&o).contains("Could not open backing file"),
            "{args:?}: {}",
            err(&o)
        );
    }
}

#[test]
fn check_reads_an_l1_table_past_the_end_of_the_file_like_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-check-l1-past-end");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "l1.qcow2", "1M"]);
    qemu_io(d, "qcow2", "l1.qcow2", &["write -P 1 0 64k"]);
    let x = Damage::open(&d.join("l1.qcow2"));
    x.f.write_all_at(&(1u64 << 30).to_be_bytes(), 40).unwrap();
    drop(x);
    // qemu-img check reads the table as zeros and reports it (exit 2); so does vdisk check, with
    // the same output. Reading the image is still refused (a documented difference).
    let args = ["check", "l1.qcow2"];
    let o = vdisk(d, &args);
    let t = qemu(d, &args);
    assert_eq!(t.status.code(), Some(2), "{}", err(&t));
    assert_eq!(o.status.code(), t.status.code(), "{}", err(&o));
    assert_eq!(out(&o), out(&t));
    assert_eq!(err(&o), err(&t));
    let o = vdisk(d, &["convert", "-O", "raw", "l1.qcow2", "l1.raw"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("past the end of the file"), "{}", err(&o));
}

#[test]
fn check_repair_with_an_l2_table_past_the_end_like_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-repair-l2-past-end");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "l2.qcow2", "8M"]);
    qemu_io(
        d,
        "qcow2",
        "l2.qcow2",
        &["write -P 1 0 64k", "write -P 2 4M 64k"],
    );
    // L1 entry 0 points past the end of the file: QEMU reads that L2 table as zeros, repairs
    // what else is wrong (here the refcount of the table it no longer reaches, a leak) and
    // reports the entry again. vdisk's repair stopped reading the table ("L2 table extends past
    // the end of the file", exit 1).
    let x = Damage::open(&d.join("l2.qcow2"));
    let l1 = be64(&x.f, 40);
    x.f.write_all_at(&((1u64 << 30) | COPIED).to_be_bytes(), l1)
        .unwrap();
    drop(x);
    repair_like_qemu(d, "l2.qcow2");
}

#[test]
fn check_prints_qemu_img_advice_after_a_refcount_overflow() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-check-overflow");
    let d = s.path();
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "refcount_bits=1",
            "o.qcow2",
            "1M",
        ],
    );
    qemu_io(d, "qcow2", "o.qcow2", &["write -P 1 0 64k"]);
    // Two L2 entries map one cluster whose refcount cannot go past 1.
    let x = Damage::open(&d.join("o.qcow2"));
    x.set_entry(1, x.entry(0));
    drop(x);
    let o = vdisk(d, &["check", "o.qcow2"]);
    let t = qemu(d, &["check", "o.qcow2"]);
    assert!(err(&t).contains("Use qemu-img amend"), "{}", err(&t));
    assert_eq!(o.status.code(), t.status.code());
    assert_eq!(out(&o), out(&t));
    assert_eq!(err(&o), err(&t));
}
