//! VDI through the CLI: resize (which qemu-img cannot do for VDI) and the VirtualBox details in `info`.

mod common;
use common::*;
use serde_json::Value;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

#[test]
fn resize_grows_vdi_and_keeps_data() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vdi-resize");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    for (name, opts) in [("dyn.vdi", "static=off"), ("fixed.vdi", "static=on")] {
        qemu_ok(d, &["convert", "-O", "vdi", "-o", opts, "pat.raw", name]);
        // qemu-img itself refuses this.
        assert_ne!(qemu(d, &["resize", name, "+64M"]).status.code(), Some(0));
        assert_eq!(vdisk_ok(d, &["resize", name, "+64M"]), "Image resized.\n");
        assert_qemu_check_clean(&d.join(name), "vdi");
        let info: Value =
            serde_json::from_str(&qemu_ok(d, &["info", "--output=json", name])).unwrap();
        assert_eq!(info["virtual-size"], 128u64 << 20, "{name}");
        // Old content, then zeros.
        qemu_ok(d, &["convert", "-O", "raw", name, "back.raw"]);
        let back = std::fs::read(d.join("back.raw")).unwrap();
        let pat = std::fs::read(d.join("pat.raw")).unwrap();
        assert!(back[..pat.len()] == pat[..], "{name}: old content kept");
        assert!(
            back[pat.len()..].iter().all(|b| *b == 0),
            "{name}: new space reads as zeros"
        );
        let o = vdisk(d, &["resize", name, "-1M"]);
        assert_eq!(o.status.code(), Some(1), "{name}: shrinking is refused");
        assert!(err(&o).contains("Shrinking"), "{}", err(&o));
    }
}

#[test]
fn info_shows_virtualbox_details() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-vdi-info");
    let d = s.path();
    make_pattern_raw(d, "pat.raw", 0);
    qemu_ok(d, &["convert", "-O", "vdi", "pat.raw", "p.vdi"]);
    let human = vdisk_ok(d, &["info", "p.vdi"]);
    for key in [
        "uuid:",
        "parent uuid:",
        "image type: dynamic",
        "block size: 1048576",
        "allocated blocks:",
        "total blocks: 64",
    ] {
        assert!(human.contains(key), "missing {key} in:\n{human}");
    }
    let j: Value = serde_json::from_str(&vdisk_ok(d, &["info", "--output=json", "p.vdi"])).unwrap();
    let det = &j["vdisk-details"];
    assert_eq!(det["total-blocks"], 64);
    assert_eq!(det["image-type"], "dynamic");
    let uuid = det["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
}
