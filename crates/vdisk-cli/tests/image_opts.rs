//! `--image-opts`: FILENAME as QEMU's option string. Each command that takes it gives the same
//! output and exit code as qemu-img for the same string, and what vdisk cannot honour is refused.

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

fn fixtures(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 0x11 0 1M"]);
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 0x22 2M 64k"]);
    qemu_ok(d, &["convert", "-O", "raw", "top.qcow2", "top.raw"]);
}

#[test]
fn option_strings_name_the_image_as_for_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-image-opts");
    let d = s.path();
    fixtures(d);
    let top = "driver=qcow2,file.driver=file,file.filename=top.qcow2,cache.direct=off";
    let probed = "file.filename=top.qcow2";
    let raw = "driver=raw,file.filename=top.qcow2";
    for args in [
        &["info", "--image-opts", top][..],
        &["info", "--output=json", "--image-opts", probed],
        &["info", "--image-opts", raw],
        &["info", "--backing-chain", "--image-opts", top],
        &["map", "--output=json", "--image-opts", top],
        &["check", "--image-opts", top],
        &[
            "compare",
            "--image-opts",
            top,
            "driver=raw,file.filename=top.raw",
        ],
        &["measure", "-O", "qcow2", "--image-opts", top],
        &["snapshot", "-l", "--image-opts", top],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
        assert_eq!(qemu_view(&out(&v)), qemu_view(&out(&q)), "{args:?}");
    }
    vdisk_ok(
        d,
        &["convert", "--image-opts", top, "-O", "raw", "ours.raw"],
    );
    qemu_ok(d, &["compare", "ours.raw", "top.raw"]);
    vdisk_ok(d, &["resize", "--image-opts", top, "8M"]);
    vdisk_ok(
        d,
        &["amend", "--image-opts", top, "-o", "lazy_refcounts=on"],
    );
    assert!(qemu_ok(d, &["info", "top.qcow2"]).contains("virtual size: 8 MiB"));
}

#[test]
fn what_vdisk_cannot_honour_is_refused() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-image-opts-refused");
    let d = s.path();
    fixtures(d);
    // Refused by both, with the same words.
    for args in [
        &[
            "info",
            "-f",
            "qcow2",
            "--image-opts",
            "driver=qcow2,file.filename=top.qcow2",
        ][..],
        &["info", "--image-opts", "driver=qcow2"],
        &["info", "--image-opts", "top.qcow2"],
        &[
            "info",
            "--image-opts",
            "driver=nope,file.filename=top.qcow2",
        ],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), Some(1), "{args:?}");
        assert_eq!(q.status.code(), Some(1), "{args:?}");
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{args:?}");
    }
    // An option vdisk does not know is named, never ignored (qemu-img takes it).
    let o = vdisk(
        d,
        &[
            "info",
            "--image-opts",
            "driver=qcow2,file.filename=top.qcow2,backing.driver=raw",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("option 'backing.driver'"), "{}", err(&o));
}

#[test]
fn convert_target_image_opts_writes_into_the_image_named() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-target-image-opts");
    let d = s.path();
    fixtures(d);
    // Into an existing qcow2 (format named, then probed) and raw: the same content as the source,
    // and the qcow2 checks clean.
    for (target, create) in [
        ("driver=qcow2,file.filename=t1.qcow2", "t1.qcow2"),
        ("file.driver=file,file.filename=t2.qcow2", "t2.qcow2"),
        ("driver=raw,file.filename=t3.raw", "t3.raw"),
    ] {
        let fmt = if create.ends_with(".raw") {
            "raw"
        } else {
            "qcow2"
        };
        qemu_ok(d, &["create", "-q", "-f", fmt, create, "4M"]);
        vdisk_ok(
            d,
            &["convert", "--target-image-opts", "-n", "top.qcow2", target],
        );
        qemu_ok(d, &["compare", "top.qcow2", create]);
        if fmt == "qcow2" {
            qemu_ok(d, &["check", create]);
        }
    }
    // A raw target found by probing: written, with the warning qemu-img prints for it.
    qemu_ok(d, &["create", "-q", "-f", "raw", "t5.raw", "4M"]);
    let args = [
        "convert",
        "--target-image-opts",
        "-n",
        "top.qcow2",
        "file.filename=t5.raw",
    ];
    let (v, q) = (vdisk(d, &args), qemu(d, &args));
    assert_eq!(v.status.code(), Some(0), "{}", err(&v));
    assert_eq!(q.status.code(), Some(0), "{}", err(&q));
    assert_eq!(unprefixed_lines(&err(&v)), unprefixed_lines(&err(&q)));
    qemu_ok(d, &["compare", "top.qcow2", "t5.raw"]);
    // What qemu-img refuses, vdisk refuses with its words and exit code, the target unchanged.
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "t4.qcow2", "4M"]);
    let before = std::fs::read(d.join("t4.qcow2")).unwrap();
    for args in [
        &[
            "convert",
            "--target-image-opts",
            "top.qcow2",
            "driver=qcow2,file.filename=t4.qcow2",
        ][..],
        &[
            "convert",
            "--target-image-opts",
            "-n",
            "-O",
            "qcow2",
            "top.qcow2",
            "driver=qcow2,file.filename=t4.qcow2",
        ],
        &[
            "convert",
            "--target-image-opts",
            "-n",
            "top.qcow2",
            "t4.qcow2",
        ],
        &[
            "convert",
            "-n",
            "-o",
            "compat=1.1",
            "-O",
            "qcow2",
            "top.qcow2",
            "t4.qcow2",
        ],
        &["convert", "-n", "-o", "help", "top.qcow2", "t4.qcow2"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), Some(1), "{args:?}");
        assert_eq!(q.status.code(), Some(1), "{args:?}");
        assert_eq!(first_message(&err(&v)), first_message(&err(&q)), "{args:?}");
        assert!(out(&v).is_empty(), "{args:?}: {}", out(&v));
    }
    assert!(std::fs::read(d.join("t4.qcow2")).unwrap() == before);
}
