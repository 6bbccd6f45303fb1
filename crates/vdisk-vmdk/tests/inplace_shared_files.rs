//! The in-place writer refuses a descriptor that names one file for two extents, or its own file
//! as an extent, as `qemu-img convert -n` does (it fails to take the second write lock, and so
//! does vdisk for its own descriptor): a write
//! through one extent would change what the other reads (found by the `vmdk_mutate` fuzz target).

use std::path::Path;
use std::process::Command;
use vdisk_core::Payload;
use vdisk_testutil::*;

/// A monolithicFlat image of 128 KiB made by qemu-img whose descriptor then gets `extents` instead
/// of its own extent line.
fn flat_with(s: &Scratch, name: &str, extents: &str) -> std::path::PathBuf {
    let p = s.join(name);
    qemu_create(&p, "vmdk", "subformat=monolithicFlat", "128K");
    let text = std::fs::read_to_string(&p).unwrap();
    let stem = name.trim_end_matches(".vmdk");
    let line = format!("RW 256 FLAT \"{stem}-flat.vmdk\" 0");
    assert!(text.contains(&line), "{text}");
    std::fs::write(&p, text.replace(&line, extents)).unwrap();
    p
}

fn qemu_convert_n_fails(p: &Path, src: &Path) -> bool {
    !Command::new("qemu-img")
        .args(["convert", "-n", "-O", "vmdk"])
        .arg(src)
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn vmdk_inplace_refuses_extents_sharing_a_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-shared");
    let src = s.join("src.raw");
    qemu_create(&src, "raw", "", "256K");
    let cases = [
        // The same bytes twice: a write at 128K changes what 0.. reads.
        (
            "same.vmdk",
            "RW 256 FLAT \"same-flat.vmdk\" 0\nRW 256 FLAT \"same-flat.vmdk\" 0",
        ),
        // The same file apart: QEMU refuses it as well.
        (
            "apart.vmdk",
            "RW 256 FLAT \"apart-flat.vmdk\" 0\nRW 256 FLAT \"apart-flat.vmdk\" 256",
        ),
        // The same file under another name.
        (
            "alias.vmdk",
            "RW 256 FLAT \"alias-flat.vmdk\" 0\nRW 256 FLAT \"./alias-flat.vmdk\" 0",
        ),
        // The descriptor file itself as the second extent.
        (
            "own.vmdk",
            "RW 256 FLAT \"own-flat.vmdk\" 0\nRW 256 FLAT \"own.vmdk\" 0",
        ),
    ];
    for (name, extents) in cases {
        let p = flat_with(&s, name, extents);
        assert!(
            qemu_convert_n_fails(&p, &src),
            "{name}: qemu-img convert -n accepted it"
        );
        let flat = p.with_file_name(format!("{}-flat.vmdk", name.trim_end_matches(".vmdk")));
        let before = (std::fs::read(&p).unwrap(), std::fs::read(&flat).unwrap());
        match vdisk_vmdk::open_writer(&p) {
            Ok(mut w) => {
                let _ = w.write(128 * 1024, Payload::data(vec![0x5a; 4096]));
                let _ = w.finish();
                panic!("{name}: opened for writing");
            }
            Err(e) => {
                // Its own descriptor as an extent is refused when the second read-write open
                // meets the first one's image locks, as in qemu-img.
                let e = e.to_string();
                let locked = name == "own.vmdk" && e.contains("Failed to get \"write\" lock");
                assert!(e.contains("shares its file") || locked, "{name}: {e}");
            }
        }
        let after = (std::fs::read(&p).unwrap(), std::fs::read(&flat).unwrap());
        assert!(before == after, "{name}: files changed");
    }
    // One extent of its own still opens.
    let p = flat_with(&s, "one.vmdk", "RW 256 FLAT \"one-flat.vmdk\" 0");
    vdisk_vmdk::open_writer(&p).unwrap().finish().unwrap();
}
