//! Header features on qemu-made images: dirty and corrupt bits, unknown incompatible bits,
//! persistent bitmaps, LUKS encryption; and mutated images that must fail cleanly, never panic.

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::NoFiles;
use vdisk_core::{ImageReader, MemStorage};
use vdisk_qcow2::OpenOptions;
use vdisk_testutil::*;

fn or_byte(p: &Path, at: u64, bits: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] | bits], at).unwrap();
}

#[test]
fn dirty_and_corrupt_bits_open_read_only() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-flags");
    let d = make(&s, "dirty.qcow2", "lazy_refcounts=on", "2M", PATTERN);
    or_byte(&d, 79, 1);
    verify(&d);
    assert!(
        open_path(&d, &OpenOptions::default())
            .unwrap()
            .info()
            .unwrap()
            .dirty
    );
    let c = make(&s, "corrupt.qcow2", "", "2M", PATTERN);
    or_byte(&c, 79, 2);
    verify(&c);
}

#[test]
fn unknown_incompatible_bit_is_named() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-unk");
    let p = make(&s, "u.qcow2", "", "1M", &[]);
    or_byte(&p, 78, 0x80);
    let e = open_path(&p, &OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("qcow2 feature(s): Unknown incompatible feature: 8000"),
        "{e}"
    );
    let q = std::process::Command::new("qemu-img")
        .arg("info")
        .arg(&p)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&q.stderr).contains("Unknown incompatible feature: 8000"));
}

#[test]
fn bitmaps_are_listed_and_counted() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-bitmaps");
    let p = make(&s, "b.qcow2", "", "4M", PATTERN);
    let ps = p.to_str().unwrap();
    qemu_img(&["bitmap", "--add", ps, "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "128k", "--disable", ps, "other"]);
    qemu_io("qcow2", &p, &["write -P 7 1M 512k"]);
    verify(&p);
}

#[test]
fn luks_encryption_reports_but_refuses_reads() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-luks");
    let p = s.join("enc.qcow2");
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
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    let info = r.info().unwrap();
    assert!(info.encrypted);
    assert_eq!(info.format_specific.unwrap().1["encrypt"]["format"], "luks");
    let mut buf = vec![0u8; 512];
    let e = r.read_at(&mut buf, 0).unwrap_err().to_string();
    assert!(
        e.contains("Parameter 'encrypt.key-secret' is required for cipher"),
        "{e}"
    );
    let opts = format!(
        "driver=qcow2,file.filename={},encrypt.key-secret=sec0",
        p.display()
    );
    let out = qemu_img(&[
        "check",
        "--output=json",
        "--object",
        "secret,id=sec0,data=abc",
        "--image-opts",
        &opts,
    ]);
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = r.check().unwrap();
    assert_eq!(c.exit_code(), 0);
    assert_eq!(c.image_end_offset, q["image-end-offset"].as_u64());
    assert_eq!(c.total_clusters, q["total-clusters"].as_u64());
}

#[test]
fn mutated_images_never_panic() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-mut");
    let src = make(
        &s,
        "m.qcow2",
        "cluster_size=4k",
        "1M",
        &["write -P 1 0 20k", "write -z 100k 8k"],
    );
    let c = s.join("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        src.to_str().unwrap(),
        c.to_str().unwrap(),
    ]);
    qemu_img(&["snapshot", "-c", "s1", c.to_str().unwrap()]);
    let sub = ["write -P 1 4k 4k", "write -z 40k 4k", "write -P 2 64k 64k"];
    let el2 = make(
        &s,
        "m-el2.qcow2",
        "extended_l2=on,cluster_size=16k",
        "1M",
        &sub,
    );
    let bm = make(
        &s,
        "m-bm.qcow2",
        "cluster_size=4k,refcount_bits=1",
        "1M",
        &sub,
    );
    qemu_img(&["bitmap", "--add", bm.to_str().unwrap(), "b0"]);
    for img in [src, c, el2, bm] {
        let orig = std::fs::read(&img).unwrap();
        let mut rng = vdisk_testutil::XorShift64::new(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.next_u64();
        // QCOW2_MUTATIONS=N runs a longer campaign by hand.
        let n: usize = std::env::var("QCOW2_MUTATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        for _ in 0..n {
            let mut b = orig.clone();
            for _ in 0..1 + next() % 4 {
                // Mostly metadata: the first 64 KiB hold header, tables and snapshot table.
                let at = (next() % (b.len().min(65536) as u64)) as usize;
                b[at] = next() as u8;
            }
            let st = Arc::new(MemStorage::new("mut.qcow2", b));
            let Ok(r) = vdisk_qcow2::open(st, Arc::new(NoFiles), &OpenOptions::default()) else {
                continue;
            };
            let mut buf = vec![0u8; 64 << 10];
            let mut off = 0;
            while off < r.virtual_size().min(1 << 20) {
                let n = (r.virtual_size() - off).min(buf.len() as u64) as usize;
                let _ = r.read_at(&mut buf[..n], off);
                if let Ok(e) = r.block_status(off, n as u64) {
                    assert!(e.length > 0 && e.offset == off);
                }
                off += n as u64;
            }
            let _ = r.info();
            let _ = r.check();
        }
    }
}

#[test]
fn aes_encryption_info_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-aes");
    let p = s.join("aes.qcow2");
    let ps = p.to_str().unwrap();
    let secret = "secret,id=sec0,data=abc";
    let o = "encrypt.format=aes,encrypt.key-secret=sec0";
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "--object", secret, "-o", o, ps, "1M",
    ]);
    let r = open_path(&p, &OpenOptions::default()).unwrap();
    verify_info(&r, &p);
    let mut buf = [0u8; 512];
    assert!(r.read_at(&mut buf, 0).is_err());
    // Nothing is allocated, yet qemu-img without the key converts and maps nothing of it:
    // block status is refused too, so `convert` cannot write the unallocated disk as zeros.
    let e = r.block_status(0, 1 << 20).unwrap_err().to_string();
    assert!(
        e.contains("Parameter 'encrypt.key-secret' is required for cipher"),
        "{e}"
    );
    let q = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", ps])
        .arg(s.join("aes.raw"))
        .output()
        .unwrap();
    assert_eq!(
        q.status.code(),
        Some(1),
        "qemu-img convert without the key fails"
    );
}
