//! File names that are not UTF-8 inside VMDK descriptors (an extent's file, a delta's
//! `parentFileNameHint`), read as qemu-img reads them: the bytes, opened byte for byte. JSON
//! output escapes what is not ASCII as qemu-img does (`\uFFFD` for each byte that is not UTF-8).

mod common;
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use vdisk_testutil::{qemu_available, Scratch};

/// `info --output=json` of both tools: vdisk's stdout as text, and both parsed, vdisk's without
/// its own `vdisk-details`.
fn info_json(dir: &Path, image: &str) -> (String, Value, Value) {
    let ours = vdisk_ok(dir, &["info", "--output=json", image]);
    let mut v: Value = serde_json::from_str(&ours).expect("vdisk JSON");
    if let Some(m) = v.as_object_mut() {
        m.remove("vdisk-details");
    }
    let q: Value =
        serde_json::from_str(&qemu_ok(dir, &["info", "--output=json", image])).expect("qemu JSON");
    (ours, v, q)
}

fn assert_converts_like_qemu(dir: &Path, image: &str) {
    vdisk_ok(dir, &["convert", "-O", "raw", image, "v.raw"]);
    qemu_ok(dir, &["convert", "-O", "raw", image, "q.raw"]);
    let (v, q) = (
        std::fs::read(dir.join("v.raw")).unwrap(),
        std::fs::read(dir.join("q.raw")).unwrap(),
    );
    assert!(v == q, "{image}: vdisk's raw differs from qemu-img's");
}

/// A monolithicFlat descriptor naming a Latin-1 "café-flat.vmdk": vdisk looked for the U+FFFD
/// spelling and failed ("No such file or directory").
#[test]
fn flat_extent_named_in_latin1_is_read_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("latin1-extent");
    let name = OsStr::from_bytes(b"caf\xe9-flat.vmdk");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.path().join(name), data).unwrap();
    let desc = [
        &b"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
        createType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \""[..],
        name.as_bytes(),
        b"\" 0\n",
    ]
    .concat();
    std::fs::write(d.join("a.vmdk"), desc).unwrap();
    assert_converts_like_qemu(d.path(), "a.vmdk");
    let (text, ours, qemu) = info_json(d.path(), "a.vmdk");
    assert_eq!(ours, qemu);
    assert!(
        text.contains(r#""filename": "caf\uFFFD-flat.vmdk""#),
        "{text}"
    );
}

/// A delta disk whose parent is a Latin-1 "café.vmdk": the parent is found by the name's bytes
/// and shown with qemu-img's fields (`backing-filename-format` "vmdk" included).
#[test]
fn parent_named_in_latin1_is_opened_like_qemu() {
    if !qemu_available() {
        return;
    }
    let d = Scratch::new("latin1-parent");
    let name = OsStr::from_bytes(b"caf\xe9.vmdk");
    let parent = d.path().join(name);
    vdisk_testutil::qemu_create(&parent, "vmdk", "", "1M");
    vdisk_testutil::qemu_io("vmdk", &parent, &["write -P 0x5a 0 64k"]);
    let top = d.join("top.vmdk");
    vdisk_testutil::run(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "vmdk", "-F", "vmdk", "-b"])
            .arg(name)
            .arg(&top),
    );
    qemu_io(d.path(), "vmdk", "top.vmdk", &["write -P 0x11 128k 64k"]);
    assert_converts_like_qemu(d.path(), "top.vmdk");
    let (text, ours, qemu) = info_json(d.path(), "top.vmdk");
    assert_eq!(ours, qemu);
    assert!(
        text.contains(r#""backing-filename": "caf\uFFFD.vmdk""#),
        "{text}"
    );
}
