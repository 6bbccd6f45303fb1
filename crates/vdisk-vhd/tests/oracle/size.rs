//! Virtual sizes and cluster sizes against `qemu-img info`: CHS-exact sizes and sizes qemu-img rounds
//! up to a geometry, `force_size`, and the maximum geometry.

use crate::fixtures::*;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

const SIZES: &[&str] = &[
    "0", "512", "1M", "3000000", "100M", "1G", "127G", "136G", "200G",
];

#[test]
fn sizes_match_qemu_info() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-size");
    for size in SIZES {
        for (tag, opts) in [
            ("d", ""),
            ("ds", "force_size=on"),
            ("f", "subformat=fixed"),
            ("fs", "subformat=fixed,force_size=on"),
        ] {
            let p = create(&s, &format!("{tag}{size}.vhd"), opts, size);
            if *size == "0" && tag.starts_with('f') {
                // A fixed disk of 0 bytes is its footer alone, at offset 0: qemu takes it for a
                // dynamic disk and fails ("Error reading dynamic VHD header"), and so does vdisk.
                assert!(qemu_reads(&p).is_err() && try_open(&p).is_err());
                continue;
            }
            let r = open(&p);
            assert_info_like_qemu(&r, &p);
            if r.virtual_size() > 0 {
                assert_map_like_qemu(&r, &p);
            }
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[test]
fn rounding_and_force_size() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-size-round");
    // 3000000 bytes is no whole geometry: qemu-img create rounds up to the next CHS size.
    let r = open(&create(&s, "r.vhd", "", "3000000"));
    assert!(r.virtual_size() > 3_000_000 && r.virtual_size() % 512 == 0);
    assert_eq!(
        r.virtual_size(),
        r.footer().geometry.total_sectors() * 512,
        "sized by CHS"
    );
    assert_eq!(r.footer().creator_app_text(), "qemu");
    // force_size: creator "qem2", the size asked for (qemu-img create rounds it up to whole sectors)
    // from current_size.
    let r = open(&create(&s, "f.vhd", "force_size=on", "3000000"));
    assert_eq!(r.footer().creator_app_text(), "qem2");
    assert_eq!(r.virtual_size(), 3_000_000u64.next_multiple_of(512));
}
