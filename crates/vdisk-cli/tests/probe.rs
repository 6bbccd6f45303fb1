//! Format probing against qemu-img's on the same files (QEMU 10 `bdrv_probe_all`): the first
//! 512 bytes, zeros after a shorter file's end, the highest score, qemu's driver order on a tie.
//! Formats qemu-img reads and vdisk does not are named in a clear error, never read as raw data.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{qemu_available, Scratch};

fn format_of(json_text: &str) -> String {
    let v: Value = serde_json::from_str(json_text).expect("JSON");
    v["format"].as_str().expect("format").to_string()
}

/// Files qemu-img probes as raw that vdisk probed otherwise: a fixed VHD (its `conectix` footer is
/// at the end, where qemu does not look; vdisk refused it as VHD) and a qcow2 magic with version
/// 0 (vdisk refused it as a broken qcow2). Both read as qemu-img reads them.
#[test]
fn files_qemu_reads_as_raw_are_raw() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-probe-raw");
    let d = s.path();
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            "f.vhd",
            "1M",
        ],
    );
    qemu_io(d, "vpc", "f.vhd", &["write -P 0x5c 4k 8k"]);
    let mut q0 = b"QFI\xfb\0\0\0\0".to_vec();
    q0.resize(4096, 0x61);
    std::fs::write(d.join("q0.img"), q0).unwrap();
    for name in ["f.vhd", "q0.img"] {
        let theirs = qemu_ok(d, &["info", "--output=json", name]);
        let ours = vdisk_ok(d, &["info", "--output=json", name]);
        assert_eq!(
            (format_of(&ours), format_of(&theirs)),
            ("raw".into(), "raw".into())
        );
        vdisk_ok(d, &["convert", "-O", "qcow2", name, "v.qcow2"]);
        qemu_ok(d, &["compare", "-f", "raw", "-F", "qcow2", name, "v.qcow2"]);
    }
}

/// Formats qemu-img probes and reads that vdisk does not: vdisk read each as raw data (exit 0,
/// the header bytes as the guest's disk); now it names the format qemu-img finds and fails.
#[test]
fn formats_vdisk_does_not_read_are_named_not_read_as_raw() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-probe-others");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "qed", "e.qed", "1M"]);
    qemu_ok(d, &["create", "-q", "-f", "qcow", "e.qcow", "1M"]);
    qemu_ok(d, &["create", "-q", "-f", "parallels", "e.hds", "1M"]);
    qemu_ok(
        d,
        &[
            "create",
            "-q",
            "--object",
            "secret,id=s0,data=pw",
            "-f",
            "luks",
            "-o",
            "key-secret=s0,iter-time=10",
            "e.luks",
            "1M",
        ],
    );
    for (name, format) in [("e.qed", "qed"), ("e.qcow", "qcow"), ("e.hds", "parallels")] {
        let theirs = qemu_ok(d, &["info", "--output=json", name]);
        assert_eq!(format_of(&theirs), format, "qemu-img on {name}");
        let o = vdisk(d, &["info", name]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", out(&o));
        let want = format!("unsupported format '{format}'");
        assert!(err(&o).contains(&want), "{name}: {}", err(&o));
        let o = vdisk(d, &["convert", "-O", "raw", name, "x.raw"]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(!d.join("x.raw").exists(), "{name}: convert left an output");
    }
    // A LUKS volume: probed as luks, its header shown, its data not read (no key).
    let theirs = qemu_ok(d, &["info", "--output=json", "e.luks"]);
    assert_eq!(format_of(&theirs), "luks");
    assert!(vdisk_ok(d, &["info", "e.luks"]).contains("file format: luks"));
    let o = vdisk(d, &["convert", "-O", "raw", "e.luks", "x.raw"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("'key-secret' is required"), "{}", err(&o));
    assert!(!d.join("x.raw").exists(), "convert left an output");
    // DMG is probed by name alone (qemu-img then fails to find its trailer).
    std::fs::write(d.join("h.dmg"), b"hello").unwrap();
    let q = qemu(d, &["info", "h.dmg"]);
    assert_eq!(q.status.code(), Some(1));
    assert!(err(&q).contains("dmg"), "{}", err(&q));
    let o = vdisk(d, &["info", "h.dmg"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unsupported format 'dmg'"), "{}", err(&o));
    // `-f` names them too, and `-f raw` still reads any of them as raw.
    let o = vdisk(d, &["info", "-f", "qed", "e.qed"]);
    assert!(err(&o).contains("unsupported format 'qed'"), "{}", err(&o));
    vdisk_ok(d, &["convert", "-f", "raw", "-O", "raw", "e.qed", "x.raw"]);
    assert_eq!(
        std::fs::read(d.join("x.raw")).unwrap(),
        std::fs::read(d.join("e.qed")).unwrap()
    );
}
