//! `vdisk convert -n -O vdi` into existing VDI images that already hold other data, against
//! qemu-img doing the same conversion into a copy; and damaged targets refused untouched.

mod common;
use common::*;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, qemu_raw_bytes, Scratch};

/// Data where the source has data, zeros and holes, and in the last block.
const OLD: &[&str] = &[
    "write -P 0xee 0 8M",
    "write -P 0x5a 30M 3M",
    "write -P 0x77 63M 1M",
];

#[test]
fn convert_n_into_existing_vdi_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vdi");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "qcow2", "pat.raw", "src.qcow2"]);
    for opts in ["static=off", "static=on"] {
        for name in ["ours.vdi", "theirs.vdi"] {
            let _ = std::fs::remove_file(d.join(name));
            qemu_ok(d, &["create", "-q", "-f", "vdi", "-o", opts, name, "64M"]);
            qemu_io(d, "vdi", name, OLD);
        }
        vdisk_ok(d, &["convert", "-n", "-O", "vdi", "src.qcow2", "ours.vdi"]);
        qemu_ok(
            d,
            &["convert", "-n", "-O", "vdi", "src.qcow2", "theirs.vdi"],
        );
        for name in ["ours.vdi", "theirs.vdi"] {
            assert_qemu_check_clean(&d.join(name), "vdi");
            let cmp = qemu(d, &["compare", "src.qcow2", name]);
            assert_eq!(cmp.status.code(), Some(0), "{opts} {name}: {}", out(&cmp));
        }
        assert!(
            qemu_raw_bytes(&d.join("ours.vdi"), Some("vdi"))
                == qemu_raw_bytes(&d.join("theirs.vdi"), Some("vdi")),
            "{opts}: vdisk and qemu-img results differ"
        );
    }
}

#[test]
fn convert_n_refuses_damaged_vdi_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-n-vdi-bad");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["create", "-q", "-f", "vdi", "t.vdi", "64M"]);
    qemu_io(d, "vdi", "t.vdi", OLD);
    let mut bytes = std::fs::read(d.join("t.vdi")).unwrap();
    // blocks_allocated far above the number of blocks in the map.
    bytes[0x184..0x188].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(d.join("t.vdi"), &bytes).unwrap();
    let o = vdisk(d, &["convert", "-n", "-O", "vdi", "pat.raw", "t.vdi"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("allocated blocks mismatch") && err(&o).contains("refusing to write"),
        "{}",
        err(&o)
    );
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    assert!(
        std::fs::read(d.join("t.vdi")).unwrap() == bytes,
        "file changed"
    );
}
