//! Backing chains that loop or never end, and sources that vdisk must never modify.

use crate::util::{assert_fails, cli_fails, cli_fails_with, cli_run, qemu, snapshot_dir};
use std::sync::Arc;
use vdisk::convert::{compare, convert, ConvertOptions};
use vdisk::core::reader::collect_extents;
use vdisk::{open_image, Format, OpenRequest};
use vdisk_testutil::{qemu_available, qemu_io, Scratch};

fn overlay(dir: &std::path::Path, name: &str, backing: &str) {
    qemu(
        dir,
        &[
            "create", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2", name, "1M",
        ],
    );
}

#[test]
fn backing_chain_a_b_a_is_refused() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-loop2");
    overlay(s.path(), "a.qcow2", "b.qcow2");
    overlay(s.path(), "b.qcow2", "a.qcow2");
    let msg = assert_fails(&s.join("a.qcow2"), s.path());
    assert!(msg.contains("loop"), "{msg}");
    cli_fails(&s.join("a.qcow2"), s.path(), &["info", "--backing-chain"]);
    cli_fails_with(
        &s.join("a.qcow2"),
        s.path(),
        &["compare", "<IMG>", "b.qcow2"],
        2,
    );
}

#[test]
fn backing_chain_self_loop_is_refused() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-loop1");
    // qemu-img refuses to create such an image: name another file, then patch the name.
    for (name, other) in [("a.qcow2", "b.qcow2"), ("c.qcow2", "./d.qcow2")] {
        overlay(s.path(), name, other);
        let p = s.join(name);
        let d = std::fs::read(&p).expect("read");
        let at = crate::util::be64(&d, 8);
        let own = if other.starts_with("./") {
            format!("./{name}")
        } else {
            name.to_string()
        };
        crate::util::patch(&p, at, own.as_bytes());
        let msg = assert_fails(&p, s.path());
        assert!(msg.contains("loop"), "{msg}");
        cli_fails(&p, s.path(), &["info", "--backing-chain"]);
    }
}

#[test]
fn backing_chain_deeper_than_the_limit_is_refused() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-deep");
    let n = vdisk::MAX_BACKING_DEPTH + 2;
    qemu(s.path(), &["create", "-f", "qcow2", "l0.qcow2", "1M"]);
    for i in 1..=n {
        overlay(
            s.path(),
            &format!("l{i}.qcow2"),
            &format!("l{}.qcow2", i - 1),
        );
    }
    let msg = assert_fails(&s.join(&format!("l{n}.qcow2")), s.path());
    assert!(msg.contains("backing chain depth"), "{msg}");
    // A chain exactly at the limit still opens.
    let top = s.join(&format!("l{}.qcow2", vdisk::MAX_BACKING_DEPTH));
    let req = OpenRequest {
        follow_backing: true,
        ..Default::default()
    };
    assert!(open_image(&top, &req).is_ok());
}

#[test]
fn backing_file_that_is_missing_or_a_directory_is_an_error() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-missing");
    overlay(s.path(), "a.qcow2", "nowhere.qcow2");
    let msg = assert_fails(&s.join("a.qcow2"), s.path());
    assert!(msg.contains("nowhere.qcow2"), "{msg}");
    std::fs::create_dir(s.join("dir.qcow2")).expect("mkdir");
    overlay(s.path(), "b.qcow2", "dir.qcow2");
    assert_fails(&s.join("b.qcow2"), s.path());
}

/// Every image kind the suite reads, in one directory, with a chain and an extent file.
fn sources(s: &Scratch) {
    let d = s.path();
    qemu(d, &["create", "-f", "qcow2", "base.qcow2", "4M"]);
    qemu_io("qcow2", &s.join("base.qcow2"), &["write -P 0x11 0 1M"]);
    qemu(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
            "4M",
        ],
    );
    qemu_io(
        "qcow2",
        &s.join("top.qcow2"),
        &["write -P 0x22 512k 1M", "write -z 3M 64k"],
    );
    qemu(d, &["snapshot", "-c", "snap", "top.qcow2"]);
    qemu(d, &["convert", "-O", "vmdk", "top.qcow2", "sparse.vmdk"]);
    qemu(
        d,
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            "top.qcow2",
            "flat.vmdk",
        ],
    );
    qemu(d, &["convert", "-O", "vdi", "top.qcow2", "disk.vdi"]);
    qemu(d, &["convert", "-O", "vpc", "top.qcow2", "disk.vhd"]);
    qemu(d, &["convert", "-O", "vhdx", "top.qcow2", "disk.vhdx"]);
    qemu(d, &["convert", "-O", "raw", "top.qcow2", "disk.raw"]);
}

#[test]
fn sources_are_never_modified() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("hostile-readonly");
    sources(&s);
    let out = Scratch::new("hostile-readonly-out");
    let before = snapshot_dir(s.path());
    let images = [
        "top.qcow2",
        "sparse.vmdk",
        "flat.vmdk",
        "disk.vdi",
        "disk.vhd",
        "disk.vhdx",
        "disk.raw",
    ];
    let req = OpenRequest {
        follow_backing: true,
        ..Default::default()
    };
    for name in images {
        let path = s.join(name);
        let img = open_image(&path, &req).expect("open");
        img.image.info().expect("info");
        collect_extents(img.image.as_ref()).expect("map");
        let _ = img.image.check();
        let other = open_image(&s.join("disk.raw"), &req).expect("open raw");
        compare(img.image.as_ref(), other.image.as_ref(), false).expect("compare");
        let dst = out.join(&format!("{name}.raw"));
        let w = vdisk::create_image(
            Format::Raw,
            &dst,
            img.image.virtual_size(),
            &Default::default(),
            false,
        )
        .expect("create raw");
        convert(
            img.image.as_ref(),
            w,
            &ConvertOptions::default(),
            &|_, _| {},
        )
        .expect("convert");
        let _ = Arc::clone(&img.image);
        for args in [
            vec!["info", "<IMG>"],
            vec!["info", "--backing-chain", "--output=json", "<IMG>"],
            vec!["map", "--output=json", "<IMG>"],
            vec!["check", "<IMG>"],
            vec!["compare", "<IMG>", "disk.raw"],
            vec!["snapshot", "-l", "<IMG>"],
        ] {
            let _ = cli_run(&path, s.path(), &args);
        }
        let dst = out.join(&format!("{name}.cli.qcow2"));
        let _ = cli_run(
            &path,
            s.path(),
            &["convert", "-O", "vdi", "<IMG>", dst.to_str().unwrap_or("x")],
        );
    }
    assert_eq!(snapshot_dir(s.path()), before, "a source file changed");
}

#[test]
fn vmdk_delta_naming_itself_as_parent_is_refused() {
    if !qemu_available() {
        return;
    }
    // qemu-img itself loops forever on this image (its VMDK parent is itself).
    let s = Scratch::new("hostile-vmdk-loop");
    qemu(s.path(), &["create", "-f", "vmdk", "base.vmdk", "1M"]);
    let args = [
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        "kid1.vmdk",
    ];
    qemu(s.path(), &args);
    let p = s.join("kid1.vmdk");
    let d = std::fs::read(&p).expect("read");
    let hint = b"parentFileNameHint=\"base.vmdk\"";
    let at = d
        .windows(hint.len())
        .position(|w| w == hint)
        .expect("parent hint");
    crate::util::patch(&p, at as u64, b"parentFileNameHint=\"kid1.vmdk\"");
    let msg = assert_fails(&p, s.path());
    assert!(msg.contains("loop"), "{msg}");
}
