//! `vdisk convert -n -O vpc` and `-O vhdx` into existing VHD and VHDX images (dynamic and fixed)
//! that already hold other data, against qemu-img doing the same conversion into a copy: the same
//! guest bytes as the source and as qemu-img's result, a file qemu-img still opens (and for VHDX
//! checks clean); and a damaged VHD target refused untouched.

mod common;
use common::*;
use vdisk_testutil::{qemu_available, qemu_raw_bytes, Scratch};

/// Data where the source has data, zeros and holes, and in the last block.
const OLD: &[&str] = &[
    "write -P 0xee 0 3M",
    "write -P 0x5a 30M 3M",
    "write -P 0x77 60M 1M",
];

#[test]
fn convert_n_into_existing_vhd_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vhd");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "src.qcow2"]);
    for opts in [
        "subformat=dynamic",
        "subformat=fixed",
        "subformat=dynamic,force_size=on",
    ] {
        for name in ["ours.vhd", "theirs.vhd", "empty.vhd"] {
            let _ = std::fs::remove_file(d.join(name));
            qemu_ok(d, &["create", "-q", "-f", "vpc", "-o", opts, name, "64M"]);
        }
        for name in ["ours.vhd", "theirs.vhd"] {
            qemu_io(d, "vpc", name, OLD);
        }
        vdisk_ok(d, &["convert", "-n", "-O", "vpc", "src.qcow2", "ours.vhd"]);
        vdisk_ok(d, &["convert", "-n", "-O", "vpc", "src.qcow2", "empty.vhd"]);
        qemu_ok(
            d,
            &["convert", "-n", "-O", "vpc", "src.qcow2", "theirs.vhd"],
        );
        let theirs = qemu_raw_bytes(&d.join("theirs.vhd"), Some("vpc"));
        for name in ["ours.vhd", "empty.vhd"] {
            // Probed as qemu-img probes it (a fixed VHD probes as raw, as in QEMU).
            let info = qemu_ok(d, &["info", "-f", "vpc", name]);
            assert!(info.contains("file format: vpc"), "{opts} {name}: {info}");
            let cmp = qemu(
                d,
                &["compare", "-f", "qcow2", "-F", "vpc", "src.qcow2", name],
            );
            assert_eq!(cmp.status.code(), Some(0), "{opts} {name}: {}", out(&cmp));
            assert!(
                qemu_raw_bytes(&d.join(name), Some("vpc")) == theirs,
                "{opts} {name}: vdisk and qemu-img results differ"
            );
        }
    }
}

#[test]
fn convert_n_refuses_damaged_vhd_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vhd-bad");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["create", "-q", "-f", "vpc", "t.vhd", "64M"]);
    qemu_io(d, "vpc", "t.vhd", OLD);
    let mut bytes = std::fs::read(d.join("t.vhd")).unwrap();
    // The BAT starts at 1536 (the footer copy, then the dynamic header): point the first block
    // into the dynamic header.
    bytes[1536..1540].copy_from_slice(&2u32.to_be_bytes());
    std::fs::write(d.join("t.vhd"), &bytes).unwrap();
    let o = vdisk(
        d,
        &[
            "convert", "-n", "-f", "raw", "-O", "vpc", "pat.raw", "t.vhd",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(err(&o).contains("overlaps"), "{}", err(&o));
    assert!(
        std::fs::read(d.join("t.vhd")).unwrap() == bytes,
        "the target was written"
    );
}

#[test]
fn convert_n_into_existing_vhdx_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vhdx");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "src.qcow2"]);
    for opts in [
        "subformat=dynamic",
        "subformat=fixed,block_size=1M",
        "block_state_zero=off,block_size=1M",
    ] {
        for name in ["ours.vhdx", "theirs.vhdx"] {
            let _ = std::fs::remove_file(d.join(name));
            qemu_ok(d, &["create", "-q", "-f", "vhdx", "-o", opts, name, "64M"]);
            qemu_io(d, "vhdx", name, OLD);
        }
        vdisk_ok(
            d,
            &["convert", "-n", "-O", "vhdx", "src.qcow2", "ours.vhdx"],
        );
        qemu_ok(
            d,
            &["convert", "-n", "-O", "vhdx", "src.qcow2", "theirs.vhdx"],
        );
        let check = qemu(d, &["check", "-f", "vhdx", "ours.vhdx"]);
        assert_eq!(check.status.code(), Some(0), "{opts}: {}", out(&check));
        let cmp = qemu(
            d,
            &[
                "compare",
                "-f",
                "qcow2",
                "-F",
                "vhdx",
                "src.qcow2",
                "ours.vhdx",
            ],
        );
        assert_eq!(cmp.status.code(), Some(0), "{opts}: {}", out(&cmp));
        assert!(
            qemu_raw_bytes(&d.join("ours.vhdx"), Some("vhdx"))
                == qemu_raw_bytes(&d.join("theirs.vhdx"), Some("vhdx")),
            "{opts}: vdisk and qemu-img results differ"
        );
    }
}
