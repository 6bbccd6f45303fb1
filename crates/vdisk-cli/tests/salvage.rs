//! `convert --salvage` against qemu-img's on damaged images: sectors that cannot be read become
//! zeros, one warning each, exit 0; without it the conversion fails; `-C` is refused with it.

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The L1 table offset and the first L2 table's offset of the qcow2 image `bytes`.
fn first_l2(bytes: &[u8]) -> (usize, usize) {
    let l1 = be64(bytes, 40) as usize;
    (l1, (be64(bytes, l1) & 0x00ff_ffff_ffff_fe00) as usize)
}

/// A 2 MiB zlib-compressed qcow2 (64 KiB clusters) whose fourth cluster's stream is garbage.
fn damaged_compressed(d: &Path) {
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 7 + i / 65536) as u8).collect();
    std::fs::write(d.join("src.raw"), data).unwrap();
    qemu_ok(d, &["convert", "-c", "-O", "qcow2", "src.raw", "c.qcow2"]);
    let mut b = std::fs::read(d.join("c.qcow2")).unwrap();
    let (_, l2) = first_l2(&b);
    let entry = be64(&b, l2 + 3 * 8);
    assert_eq!(entry >> 62, 1, "cluster 3 is compressed");
    // 64 KiB clusters: the host offset is the low 62 - (16 - 8) = 54 bits.
    let host = (entry & ((1 << 54) - 1)) as usize;
    b[host..host + 64].fill(0xff);
    std::fs::write(d.join("c.qcow2"), b).unwrap();
}

fn warnings(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("warning: error while reading offset"))
        .count()
}

#[test]
fn unreadable_sectors_become_zeros_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-salvage");
    let d = s.path();
    damaged_compressed(d);
    for args in [
        ["convert", "-O", "raw", "c.qcow2", "x.raw"],
        ["convert", "-O", "qcow2", "c.qcow2", "x.qcow2"],
    ] {
        assert_eq!(qemu(d, &args).status.code(), Some(1));
        assert_eq!(vdisk(d, &args).status.code(), Some(1));
    }
    let q = qemu(
        d,
        &["convert", "--salvage", "-O", "raw", "c.qcow2", "q.raw"],
    );
    let v = vdisk(
        d,
        &["convert", "--salvage", "-O", "raw", "c.qcow2", "v.raw"],
    );
    assert_eq!((q.status.code(), v.status.code()), (Some(0), Some(0)));
    let (qb, vb) = (
        std::fs::read(d.join("q.raw")).unwrap(),
        std::fs::read(d.join("v.raw")).unwrap(),
    );
    assert!(qb == vb, "salvaged bytes differ from qemu-img's");
    assert!(qb[3 << 16..4 << 16].iter().all(|b| *b == 0));
    // One warning per 512-byte sector of the bad cluster, as qemu-img prints them.
    assert_eq!((warnings(&err(&q)), warnings(&err(&v))), (128, 128));
    // Into qcow2 as well (the zeros become a hole); -q drops the warnings.
    let v = vdisk(
        d,
        &[
            "convert",
            "-q",
            "--salvage",
            "-O",
            "qcow2",
            "c.qcow2",
            "v.qcow2",
        ],
    );
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(err(&v), "");
    qemu_ok(
        d,
        &["compare", "-f", "raw", "-F", "qcow2", "q.raw", "v.qcow2"],
    );
    vdisk_testutil::assert_qemu_check_clean(&d.join("v.qcow2"), "qcow2");
    // qemu-img's refusal, word for word.
    let v = vdisk(
        d,
        &[
            "convert",
            "-C",
            "--salvage",
            "-O",
            "raw",
            "c.qcow2",
            "y.raw",
        ],
    );
    assert_eq!(v.status.code(), Some(1));
    assert!(err(&v).contains("Cannot use copy offloading in salvaging mode"));
}

/// An L2 table past the end of the file: qemu-img reads zeros there, vdisk refuses (README); with
/// --salvage vdisk writes qemu-img's bytes.
#[test]
fn salvage_reads_a_table_past_the_end_as_qemu_reads_it() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-salvage-l2");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "l.qcow2", "4M"]);
    qemu_io(
        d,
        "qcow2",
        "l.qcow2",
        &["write -P 0x33 0 128k", "write -P 0x44 3M 64k"],
    );
    let mut b = std::fs::read(d.join("l.qcow2")).unwrap();
    let (l1, _) = first_l2(&b);
    let past = (b.len() as u64).next_multiple_of(1 << 16) + (16 << 16);
    b[l1..l1 + 8].copy_from_slice(&((1u64 << 63) | past).to_be_bytes());
    std::fs::write(d.join("l.qcow2"), b).unwrap();
    qemu_ok(d, &["convert", "-O", "raw", "l.qcow2", "q.raw"]);
    let args = ["convert", "-O", "raw", "l.qcow2", "v.raw"];
    assert_eq!(vdisk(d, &args).status.code(), Some(1));
    vdisk_ok(
        d,
        &[
            "convert",
            "-q",
            "--salvage",
            "-O",
            "raw",
            "l.qcow2",
            "v.raw",
        ],
    );
    let (qb, vb) = (
        std::fs::read(d.join("q.raw")).unwrap(),
        std::fs::read(d.join("v.raw")).unwrap(),
    );
    assert!(qb == vb, "salvaged bytes differ from qemu-img's");
}

/// An external data file that is gone: qemu-img fails to open the image for I/O, with --salvage
/// too; vdisk finds out when it reads, and must not salvage that into a disk of zeros.
#[test]
fn salvage_does_not_hide_a_missing_data_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-salvage-datafile");
    let d = s.path();
    // The data file's name is opened from the working directory: give it whole.
    let data = d.join("d.raw");
    let opt = format!("data_file={}", data.display());
    qemu_ok(
        d,
        &["create", "-q", "-f", "qcow2", "-o", &opt, "x.qcow2", "1M"],
    );
    qemu_io(d, "qcow2", "x.qcow2", &["write -P 0x5a 0 64k"]);
    std::fs::remove_file(&data).unwrap();
    let args = ["convert", "--salvage", "-O", "raw", "x.qcow2", "o.raw"];
    assert_eq!(qemu(d, &args).status.code(), Some(1));
    let v = vdisk(d, &args);
    assert_eq!(v.status.code(), Some(1), "{}", err(&v));
    assert!(!d.join("o.raw").exists());
}

/// A descriptor naming a directory as its extent (found by `convert-parity.py` with --salvage on
/// the vmdk_open corpus): qemu-img's file driver refuses it when it opens the image; vdisk opened
/// it, showed it in `info`, and `convert --salvage` wrote zeros for its failed reads.
#[test]
fn an_extent_that_is_a_directory_is_refused_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-salvage-dir");
    let d = s.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(
        d.join("dir.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\nRW 2048 FLAT \"sub\" 0\n",
    )
    .unwrap();
    for args in [
        &["info", "dir.vmdk"][..],
        &["convert", "--salvage", "-O", "raw", "dir.vmdk", "o.raw"],
    ] {
        let (q, v) = (qemu(d, args), vdisk(d, args));
        assert_eq!(
            (q.status.code(), v.status.code()),
            (Some(1), Some(1)),
            "{args:?}"
        );
        let want = "'file' driver requires";
        assert!(
            err(&q).contains(want) && err(&v).contains(want),
            "{}",
            err(&v)
        );
    }
    assert!(!d.join("o.raw").exists());
}

/// The raw data file bit without a data file (found by `convert-parity.py` with --salvage on the
/// qcow2_mutate corpus): qemu-img shows the image (`info`) but refuses to read it; vdisk read it
/// as if the bit were clear (convert, map and compare succeeded), and salvaged what else failed.
#[test]
fn data_file_raw_without_a_data_file_is_refused_for_io_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-salvage-dfr");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "r.qcow2", "1M"]);
    qemu_io(d, "qcow2", "r.qcow2", &["write -P 0x5a 0 64k"]);
    let mut b = std::fs::read(d.join("r.qcow2")).unwrap();
    // autoclear_features (header byte 88), bit 1: data-file-raw.
    b[95] |= 2;
    std::fs::write(d.join("r.qcow2"), b).unwrap();
    qemu_ok(d, &["info", "r.qcow2"]);
    vdisk_ok(d, &["info", "r.qcow2"]);
    for args in [
        &["convert", "-O", "raw", "r.qcow2", "o.raw"][..],
        &["convert", "--salvage", "-O", "raw", "r.qcow2", "o.raw"],
        &["map", "r.qcow2"],
        &["compare", "r.qcow2", "r.qcow2"],
    ] {
        let (q, v) = (qemu(d, args), vdisk(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
        assert_ne!(q.status.code(), Some(0), "{args:?}");
        let want = "data-file-raw requires a data file";
        assert!(
            err(&q).contains(want) && err(&v).contains(want),
            "{}",
            err(&v)
        );
    }
    assert!(!d.join("o.raw").exists());
}
