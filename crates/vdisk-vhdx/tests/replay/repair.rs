//! `vdisk_vhdx::repair` on a clean image (nothing written, as qemu writes nothing), read-only
//! opens of a dirty image (never written), and `open_writer` into a target whose log needs
//! replaying (replayed first, as qemu's read-write open does for `convert -n`).

use crate::common::*;
use crate::craft::*;
use crate::fixtures::*;
use std::sync::Arc;
use vdisk_core::{FileStorage, Payload};
use vdisk_testutil::*;

/// The base image with one entry writing sector(0x77) at the start of block 0.
fn dirty(s: &Scratch) -> (std::path::PathBuf, Vec<u8>) {
    let (p, l) = base(s);
    let mut image = std::fs::read(&p).unwrap();
    let b0 = block_at(&image, &l, 0);
    let e = Entry::new(
        6,
        l.len,
        vec![Desc::Data {
            at: b0,
            sector: sector(0x77),
        }],
    );
    set_log_guid(&mut image);
    put_in_log(&mut image, l.log, l.log_len, 0, &e.encode());
    std::fs::write(&p, &image).unwrap();
    (p, image)
}

#[test]
fn check_r_on_a_clean_image_writes_nothing_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-repair-clean");
    let (p, _) = base(&s);
    let image = std::fs::read(&p).unwrap();
    let b = both(&s, "clean", &image);
    assert_nothing_alike(&b, "clean image");
    let ours = b.ours.as_ref().unwrap();
    assert_eq!(ours.report.corruptions, 0);
    for mode in ["leaks", "all"] {
        let (rc, out, _) = qemu_check(&b.qemu_path, &["-r", mode, "--output=json"]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(rc, 0);
        assert!(j.get("corruptions-fixed").is_none(), "{j}");
        assert!(b.qemu_file() == image, "-r {mode} changed the file");
    }
}

#[test]
fn read_only_opens_never_write() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-ro");
    let (p, image) = dirty(&s);
    for check in [false, true] {
        let st = Arc::new(FileStorage::open(&p).unwrap());
        let r = if check {
            vdisk_vhdx::open_for_check(st)
        } else {
            vdisk_vhdx::open(st)
        };
        let e = r.err().expect("refused").to_string();
        assert!(e.contains("needs to be replayed"), "{e}");
    }
    // A replay through a read-only handle fails before writing anything.
    let st = FileStorage::open(&p).unwrap();
    assert!(vdisk_vhdx::replay_log(&st).is_err());
    assert!(std::fs::read(&p).unwrap() == image, "the file changed");
}

#[test]
fn open_writer_replays_the_log_then_writes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-replay-writer");
    let (p, image) = dirty(&s);
    // What the target reads as once replayed (qemu's replay, on a copy).
    let replayed = s.join("replayed.vhdx");
    std::fs::write(&replayed, &image).unwrap();
    assert_eq!(qemu_check(&replayed, &["-r", "all"]).0, 0);
    let mut want = qemu_raw_bytes(&replayed, Some("vhdx"));
    assert_eq!(&want[..4096], &sector(0x77)[..]);
    // vdisk writes into the dirty target: data over block 0's second half and into block 5.
    let mut w = vdisk_vhdx::open_writer(&p).unwrap();
    let m = MIB as usize;
    for (at, len, b) in [(m / 2, 4096, 0x31u8), (5 * m + 512, 1000, 0x32)] {
        w.write(at as u64, Payload::Data(vec![b; len].into()))
            .unwrap();
        want[at..at + len].fill(b);
    }
    w.finish().unwrap();
    assert_qemu_check_clean(&p, "vhdx");
    same(
        &qemu_raw_bytes(&p, Some("vhdx")),
        &want,
        "after open_writer",
    );
    // The same through qemu: convert -n into another dirty copy reads the same.
    let src = s.join("src.raw");
    std::fs::write(&src, &want).unwrap();
    let q = s.join("q.vhdx");
    std::fs::write(&q, &image).unwrap();
    let (srcs, qs) = (src.to_string_lossy(), q.to_string_lossy());
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "vhdx", &srcs, &qs]);
    same(&qemu_raw_bytes(&q, Some("vhdx")), &want, "qemu convert -n");
}
