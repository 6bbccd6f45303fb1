//! vdisk opens the VMDK descriptors qemu-img opens and refuses the ones it refuses (QEMU's
//! vmdk_read_cid and vmdk_parent_open: `CID` and `parentCID` must be there as numbers, a
//! `parentFileNameHint` must end with a quote; vmdk_open_desc_file: the first `createType` in the
//! text names a type it reads), on images qemu-img makes and then damaged by hand: a sparse
//! file's embedded descriptor and a monolithicFlat descriptor file. Found by
//! comparing `convert -O raw` with qemu-img on the `probe` fuzz corpus (`fuzz/convert-parity.py`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::FileStorage;
use vdisk_testutil::*;

fn qemu_opens(p: &Path) -> bool {
    Command::new("qemu-img")
        .args(["info", "-f", "vmdk"])
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

fn vdisk_opens(p: &Path) -> Result<(), String> {
    let st = Arc::new(FileStorage::open(p).unwrap());
    vdisk_vmdk::open(st, Arc::new(HostFiles))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Replaces the first `from` in the file by `to` (same length, so a sparse file's layout holds).
fn patch(p: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(p).unwrap();
    let at = b
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in {}", p.display()));
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(p, b).unwrap();
}

/// Writes `text` as a sparse file's embedded descriptor (its first sector, the rest zeros).
fn set_embedded(p: &Path, text: &str) {
    let mut b = std::fs::read(p).unwrap();
    assert!(text.len() <= 512 && b[512..].starts_with(b"# Disk DescriptorFile"));
    b[512..1024].fill(0);
    b[512..512 + text.len()].copy_from_slice(text.as_bytes());
    std::fs::write(p, b).unwrap();
}

/// A 1 MiB VMDK of subformat `sub` made by qemu-img, named after `what`.
fn made(s: &Scratch, what: &str, sub: &str) -> std::path::PathBuf {
    let p = s.join(&format!("{}.vmdk", what.replace([' ', ','], "-")));
    let o = format!("subformat={sub}");
    qemu_create(&p, "vmdk", &o, "1M");
    p
}

const HEAD: &str = "# Disk DescriptorFile\nversion=1\nCID=12345678\n";

#[test]
fn descriptors_open_exactly_when_qemu_opens_them() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-desc-checks");
    // (what is changed, from, to, whether qemu-img opens the result), on both subformats.
    let damage: [(&str, &str, &str, bool); 5] = [
        ("nothing", "", "", true),
        // "CID" is still found, inside "parentCID".
        ("CID key", "CID=", "XYZ=", true),
        ("parentCID key", "parentCID=", "parentXYZ=", false),
        (
            "parentCID value",
            "parentCID=ffffffff",
            "parentCID=zzzzzzzz",
            false,
        ),
        // QEMU skips the byte after the key, whatever it is.
        ("CID line", "\nCID=", "\nCID:", true),
    ];
    for sub in ["monolithicSparse", "monolithicFlat"] {
        for (what, from, to, qemu_ok) in damage {
            let p = made(&s, &format!("{sub}-{what}"), sub);
            if !from.is_empty() {
                patch(&p, from, to);
            }
            same_verdict(&p, qemu_ok, &format!("{sub}, {what}"));
        }
    }
    // A descriptor file's createType is the first one in the text, even in a comment.
    for (what, first_line, qemu_ok) in [
        ("supported type first", "# createType=\"vmfs\"", true),
        ("unknown type first", "# createType=\"custom\"", false),
    ] {
        let p = made(&s, what, "monolithicFlat");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("# Disk DescriptorFile", first_line)).unwrap();
        same_verdict(&p, qemu_ok, what);
    }
    // Parent hints, in a sparse file's descriptor with no other quote.
    let hints = [
        ("closed hint", "parentFileNameHint=\"base.vmdk\"\n", true),
        ("open hint", "parentFileNameHint=\"base.vmdk\n", false),
    ];
    for (what, hint, qemu_ok) in hints {
        let p = made(&s, what, "monolithicSparse");
        set_embedded(
            &p,
            &format!("{HEAD}parentCID=ffffffff\ncreateType=monolithicSparse\n{hint}"),
        );
        same_verdict(&p, qemu_ok, what);
    }
}

/// Asserts that qemu-img opens `p` as `qemu_ok` says, and vdisk too.
fn same_verdict(p: &Path, qemu_ok: bool, what: &str) {
    assert_eq!(qemu_opens(p), qemu_ok, "{what}: qemu-img");
    match vdisk_opens(p) {
        Ok(()) => assert!(qemu_ok, "{what}: vdisk opens what qemu-img refuses"),
        Err(e) => {
            assert!(!qemu_ok, "{what}: vdisk refuses: {e}");
            assert!(
                e.contains("invalid VMDK descriptor") || e.contains("create type"),
                "{what}: {e}"
            );
        }
    }
}
