//! VHD (qemu's "vpc") through the CLI: a fixed VHD read with `-f vpc` (probing calls it raw, as
//! qemu-img does), the learner's details in `info`, and writing refused with a clear error.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{qemu_available, Scratch};

#[test]
fn fixed_vhd_named_with_f_vpc_reads_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-fixed");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    let o = ["-O", "vpc", "-o", "subformat=fixed"];
    qemu_ok(d, &[&["convert"][..], &o, &["pat.raw", "f.vhd"]].concat());
    for args in [
        &["info", "--output=json", "-f", "vpc", "f.vhd"][..],
        &["map", "--output=json", "-f", "vpc", "f.vhd"],
        &["map", "-f", "vpc", "f.vhd"],
    ] {
        let ours = vdisk_ok(d, args);
        let theirs = qemu_ok(d, args);
        if args[0] == "info" {
            let (mut a, b): (Value, Value) = (
                serde_json::from_str(&ours).unwrap(),
                serde_json::from_str(&theirs).unwrap(),
            );
            let det = a.as_object_mut().unwrap().remove("vdisk-details").unwrap();
            assert_eq!(det["disk-type"], "fixed");
            assert_eq!(det["size-from"], "chs");
            assert_eq!(a, b);
        } else {
            assert_eq!(ours, theirs, "{args:?}");
        }
    }
    vdisk_ok(
        d,
        &["convert", "-f", "vpc", "-O", "raw", "f.vhd", "ours.raw"],
    );
    qemu_ok(
        d,
        &["convert", "-f", "vpc", "-O", "raw", "f.vhd", "theirs.raw"],
    );
    assert!(
        std::fs::read(d.join("ours.raw")).unwrap() == std::fs::read(d.join("theirs.raw")).unwrap()
    );
}

#[test]
fn dynamic_vhd_info_explains_the_layout() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-info");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "vpc", "pat.raw", "p.vhd"]);
    let human = vdisk_ok(d, &["info", "p.vhd"]);
    for key in [
        "file format: vpc",
        "cluster_size: 2097152",
        "disk type: dynamic",
        "footer at: start",
        "creator app: qemu",
        "size from: chs",
        "block size: 2097152",
        "bat entries:",
        "allocated blocks:",
    ] {
        assert!(human.contains(key), "missing {key} in:\n{human}");
    }
}

#[test]
fn writing_vhd_is_refused_without_leaving_a_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vhd-write");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    let o = vdisk(d, &["convert", "-O", "vpc", "pat.raw", "out.vhd"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("'vpc' does not support image creation"),
        "{}",
        err(&o)
    );
    assert!(!d.join("out.vhd").exists());
    let o = vdisk(d, &["create", "-f", "vpc", "new.vhd", "1G"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!d.join("new.vhd").exists());
    // Neither tool resizes a VHD (nor a VMDK): the same words.
    qemu_ok(d, &["convert", "-O", "vpc", "pat.raw", "p.vhd"]);
    qemu_ok(d, &["convert", "-O", "vmdk", "pat.raw", "p.vmdk"]);
    for f in ["p.vhd", "p.vmdk"] {
        let (v, q) = (
            vdisk(d, &["resize", f, "+1M"]),
            qemu(d, &["resize", f, "+1M"]),
        );
        assert_eq!((v.status.code(), q.status.code()), (Some(1), Some(1)));
        assert_eq!(
            err(&v).trim_start_matches("vdisk: "),
            err(&q).trim_start_matches("qemu-img: "),
            "{f}"
        );
    }
}
