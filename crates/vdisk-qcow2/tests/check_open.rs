//! Opening images as qemu-img 10 does, compared with it on patched copies of qemu-made images:
//! `check` reads tables past the end of the file as zeros and reports them, refuses encrypted
//! images and accepts one without a refcount table; every command validates the bitmaps, the
//! CRYPTO extension and the snapshot table offset at open; the backing file name ends at a NUL.

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use vdisk_core::ImageReader;
use vdisk_qcow2::OpenOptions;
use vdisk_testutil::*;

const CHECK: OpenOptions = OpenOptions {
    snapshot: None,
    for_check: true,
};

fn patch(p: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// Where the header extensions start: after the header_length bytes of a version 3 header.
fn extensions_start(p: &Path) -> u64 {
    be64(p, 96) & 0xffff_ffff
}

fn be64(p: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

/// (exit code, standard error) of `qemu-img CMD -f qcow2 P`.
fn qemu(cmd: &str, p: &Path) -> (i32, String) {
    let o = Command::new("qemu-img")
        .args([cmd, "-f", "qcow2"])
        .arg(p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap(), err)
}

/// Both open as `info` (default options) and as `check` fail, with qemu-img's message, as qemu-img
/// info and check do.
fn refused_like_qemu(p: &Path, message: &str) {
    for (opts, cmd) in [(OpenOptions::default(), "info"), (CHECK, "check")] {
        let (code, err) = qemu(cmd, p);
        assert!(
            code == 1 && err.contains(message),
            "qemu-img {cmd}: {code} {err}"
        );
        let e = open_path(p, &opts).err().expect("opened");
        assert!(e.to_string().contains(message), "{cmd}: {e}");
    }
}

#[test]
fn check_reads_tables_past_the_end_of_the_file_as_zeros() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-past-end");
    // A file cut inside its header cluster, in the middle of a (made-up, unknown) header
    // extension: QEMU reads zeros from there on (the extension area ends; the L1 and refcount
    // tables are empty).
    let p = make(
        &s,
        "cut.qcow2",
        "cluster_size=4096",
        "1M",
        &["write -P 1 0 8k"],
    );
    let first = extensions_start(&p);
    let mut ext = vec![0x12, 0x34, 0x56, 0x78, 0, 0, 0, 16];
    ext.extend_from_slice(&[0xaa; 16]);
    patch(&p, first, &ext);
    let cut = first + 8 + 8;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let c = check_like_qemu(&p, &CHECK);
    assert_eq!(c.exit_code(), 2);

    // The active L1 table, the refcount table and the snapshot table each moved past the end.
    for (field, name) in [(40u64, "l1"), (48, "reftable"), (64, "snapshots")] {
        let p = make(
            &s,
            &format!("{name}.qcow2"),
            "",
            "1M",
            &["write -P 1 0 64k"],
        );
        if name == "snapshots" {
            qemu_img(&["snapshot", "-c", "s1", p.to_str().unwrap()]);
        }
        patch(&p, field, &(1u64 << 30).to_be_bytes());
        let c = check_like_qemu(&p, &CHECK);
        assert_eq!(c.exit_code(), 2, "{name}");
        // Every open succeeds, as in qemu-img (`info` shows the image); reading guest data
        // through the L1 table past the end is refused, except as `check` opens.
        let r = open_path(&p, &OpenOptions::default()).unwrap();
        assert_eq!(qemu("info", &p).0, 0);
        assert!(r.info().is_ok());
        let mut buf = vec![0u8; 4096];
        if name == "l1" {
            let e = r.read_at(&mut buf, 0).expect_err("read");
            assert!(e.to_string().contains("past the end of the file"), "{e}");
            let e = r.block_status(0, 1 << 20).expect_err("block status");
            assert!(e.to_string().contains("past the end of the file"), "{e}");
            let c = open_path(&p, &CHECK).unwrap();
            c.read_at(&mut buf, 0).unwrap();
            assert!(buf.iter().all(|b| *b == 0));
        }
    }
}

#[test]
fn a_refcount_block_beyond_what_qemu_can_address_is_a_check_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-huge-refblock");
    // Past BDRV_MAX_LENGTH QEMU's block layer fails the read (EIO): "Can't get refcount",
    // exit code 1, where a block merely past the end of the file reads as zeros.
    let p = make(&s, "far.qcow2", "", "1M", &["write -P 1 0 64k"]);
    let rt = be64(&p, 48);
    patch(&p, rt, &0x7fff_ffff_ffff_0000u64.to_be_bytes());
    let c = open_path(&p, &CHECK).unwrap().check().unwrap();
    let (code, err) = qemu("check", &p);
    assert_eq!((c.exit_code(), code), (1, 1), "{err}");
    let ours = c
        .messages
        .iter()
        .filter(|m| m.starts_with("Can't get refcount"))
        .count();
    let theirs = err
        .lines()
        .filter(|l| l.starts_with("Can't get refcount"))
        .count();
    assert!(ours > 0 && ours == theirs, "{ours} vs {theirs}: {err}");
    assert!(c
        .messages
        .iter()
        .any(|m| m == "Can't get refcount for cluster 0: Input/output error"));
}

#[test]
fn bitmaps_are_validated_when_opening_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-bitmaps");
    let fresh = |name: &str| {
        let p = make(&s, name, "", "1M", &["write -P 1 0 64k"]);
        qemu_img(&["bitmap", "--add", p.to_str().unwrap(), "b0"]);
        p
    };
    let find_ext = |p: &Path| {
        let mut at = extensions_start(p);
        loop {
            let w = be64(p, at);
            let (kind, len) = ((w >> 32) as u32, w & 0xffff_ffff);
            assert_ne!(kind, 0, "no bitmaps extension");
            if kind == 0x2385_2875 {
                return at + 8;
            }
            at += 8 + len.next_multiple_of(8);
        }
    };
    let p = fresh("ok.qcow2");
    assert_eq!(qemu("info", &p).0, 0);
    let names: Vec<String> = vdisk_qcow2::info::read_bitmaps(&open_path(&p, &CHECK).unwrap())
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["b0"]);

    let p = fresh("reserved.qcow2");
    patch(&p, find_ext(&p) + 4, &[0, 0, 0, 1]);
    refused_like_qemu(&p, "bitmaps_ext: Reserved field is not zero");

    let p = fresh("zero.qcow2");
    patch(&p, find_ext(&p), &[0; 4]);
    refused_like_qemu(&p, "found bitmaps extension with zero bitmaps");

    // A directory entry with an empty table.
    let p = fresh("entry.qcow2");
    let dir = be64(&p, find_ext(&p) + 16);
    patch(&p, dir + 8, &[0; 4]);
    refused_like_qemu(&p, "Bitmap 'b0' doesn't satisfy the constraints");

    // A bitmap table entry with a reserved bit.
    let p = fresh("table.qcow2");
    let table = be64(&p, be64(&p, find_ext(&p) + 16));
    patch(&p, table, &2u64.to_be_bytes());
    refused_like_qemu(
        &p,
        "Could not read bitmap_table table from image for bitmap 'b0': Invalid argument",
    );

    // With the autoclear bit clear QEMU ignores the extension, however broken.
    let p = fresh("ignored.qcow2");
    patch(&p, find_ext(&p) + 4, &[0, 0, 0, 1]);
    let autoclear = be64(&p, 88);
    patch(&p, 88, &(autoclear & !1).to_be_bytes());
    assert_eq!(qemu("info", &p).0, 0);
    assert!(open_path(&p, &OpenOptions::default()).is_ok());
}

#[test]
fn encryption_and_table_offsets_at_open_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-crypt");
    let p = s.join("luks.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=abc",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        p.to_str().unwrap(),
        "1M",
    ]);
    // `info` opens without the key; `check` needs it, which vdisk cannot use.
    assert_eq!(qemu("info", &p).0, 0);
    assert!(open_path(&p, &OpenOptions::default()).is_ok());
    let (code, err) = qemu("check", &p);
    assert_eq!(code, 1);
    let e = open_path(&p, &CHECK).err().expect("opened for check");
    let key = "Parameter 'encrypt.key-secret' is required for cipher";
    assert!(err.contains(key) && e.to_string().contains(key), "{e}");

    // LUKS without its CRYPTO header extension.
    let p = make(&s, "nocrypto.qcow2", "", "1M", &[]);
    patch(&p, 32, &2u32.to_be_bytes());
    refused_like_qemu(&p, "Missing CRYPTO header for crypt method 2");

    // An unaligned snapshot table offset, even with no snapshots: `info` refuses it; so does
    // vdisk's `check` (qemu-img check fails on it too, exit code 1, "Check failed").
    let p = make(&s, "snapoff.qcow2", "", "1M", &[]);
    patch(&p, 64, &0x1981u64.to_be_bytes());
    assert_eq!(qemu("info", &p).0, 1);
    assert_eq!(qemu("check", &p).0, 1);
    assert!(open_path(&p, &OpenOptions::default()).is_err());
    assert!(open_path(&p, &CHECK).is_err());

    // No refcount table: `info` refuses it, `check` reports every cluster in use.
    let p = make(&s, "noreft.qcow2", "", "1M", &["write -P 1 0 64k"]);
    patch(&p, 56, &[0; 4]);
    assert_eq!(qemu("info", &p).0, 1);
    let e = open_path(&p, &OpenOptions::default())
        .err()
        .expect("opened");
    assert!(e
        .to_string()
        .contains("Image does not contain a reference count table"));
    assert_eq!(check_like_qemu(&p, &CHECK).exit_code(), 2);
}

#[test]
fn the_backing_file_name_ends_at_the_first_nul() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-backing-nul");
    let base = make(&s, "base.qcow2", "", "1M", &[]);
    let p = s.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    // "…/base.qcow2" becomes "…/base\0qcow2": QEMU reads the name up to the NUL.
    let off = be64(&p, 8);
    let name_len = base.to_str().unwrap().len() as u64;
    patch(&p, off + name_len - 6, &[0]);
    let o = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&p)
        .output()
        .unwrap();
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    let ours = r.info().unwrap().backing.unwrap().filename;
    assert_eq!(q["backing-filename"], ours.as_str());
    assert!(ours.ends_with("/base"), "{ours}");
}

#[test]
fn a_missing_data_file_fails_check_and_reads_but_not_info() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-no-data-file");
    let p = s.join("df.qcow2");
    let data = s.join("df.raw");
    let o = format!("data_file={}", data.display());
    qemu_create(&p, "qcow2", &o, "1M");
    std::fs::remove_file(&data).unwrap();
    // qemu-img info opens without I/O (BDRV_O_NO_IO) and never opens the data file; check does.
    assert_eq!(qemu("info", &p).0, 0);
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    assert!(r.info().is_ok());
    let mut buf = [0u8; 512];
    for e in [
        r.read_at(&mut buf, 0).expect_err("read"),
        r.block_status(0, 512).expect_err("block status"),
    ] {
        assert!(e.to_string().contains("df.raw"), "{e}");
    }
    assert_eq!(qemu("check", &p).0, 1);
    let e = open_path(&p, &CHECK).err().map(|e| e.to_string());
    assert!(e.as_ref().is_some_and(|e| e.contains("df.raw")), "{e:?}");
    // Nothing changes an image whose data file is missing.
    let st = std::sync::Arc::new(vdisk_core::FileStorage::open_rw(&p).unwrap());
    assert!(vdisk_qcow2::mutate::resize_in(st, 2 << 20, false).is_err());
}

#[test]
fn an_empty_snapshot_l1_table_beyond_what_qemu_can_address_is_not_read() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-empty-far-l1");
    let p = make(&s, "far.qcow2", "", "1M", &["write -P 1 0 64k"]);
    qemu_img(&["snapshot", "-c", "s1", p.to_str().unwrap()]);
    // The snapshot's L1 table: no entries, at an offset past BDRV_MAX_LENGTH. QEMU reads nothing
    // for an empty table (vdisk's read failed with EIO: a check error and exit code 1).
    let entry = be64(&p, 64);
    patch(&p, entry, &0x7fff_ffff_ffff_0000u64.to_be_bytes());
    patch(&p, entry + 8, &0u32.to_be_bytes());
    let c = check_like_qemu(&p, &CHECK);
    assert_eq!(c.check_errors, 0);
}

#[test]
fn data_file_raw_without_a_data_file_fails_check_but_not_info() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-open-raw-bit");
    let p = make(&s, "raw-bit.qcow2", "", "1M", &["write -P 1 0 64k"]);
    // Autoclear bit 1 (data-file-raw) with no data file: QEMU refuses it when it opens the data
    // file, so `check` fails and `info` (without I/O) does not.
    let autoclear = be64(&p, 88);
    patch(&p, 88, &(autoclear | 2).to_be_bytes());
    assert_eq!(qemu("info", &p).0, 0);
    assert!(open_path(&p, &OpenOptions::default()).is_ok());
    let (code, err) = qemu("check", &p);
    assert_eq!(code, 1);
    let message = "data-file-raw requires a data file";
    assert!(err.contains(message), "{err}");
    let e = open_path(&p, &CHECK).err().map(|e| e.to_string());
    assert!(e.as_ref().is_some_and(|e| e.contains(message)), "{e:?}");
}
