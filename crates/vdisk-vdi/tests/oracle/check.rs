//! `check` against `qemu-img check -f vdi` on good and damaged copies: same exit code, same
//! corruption count, same ERROR lines.

use crate::fixtures::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

fn qemu_check(p: &Path) -> (i32, Vec<String>) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vdi"])
        .arg(p)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .map(str::to_string)
        .collect();
    (out.status.code().unwrap(), lines)
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(bytes, off)
        .unwrap();
}

#[test]
fn check_matches_qemu_on_good_and_damaged_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-check");
    let good = qemu_vdi(&s, "good.vdi", false);
    let bmap = 0x200u64;
    // Entries of the fixture: blocks 0-4 and 6 allocated in order, block 5 free.
    type Edits = Vec<(u64, Vec<u8>)>;
    let damage: &[(&str, Edits)] = &[
        ("clean", vec![]),
        ("dup", vec![(bmap + 8, 0u32.to_le_bytes().to_vec())]),
        ("range", vec![(bmap + 20, 9u32.to_le_bytes().to_vec())]),
        ("count", vec![(0x184, 2u32.to_le_bytes().to_vec())]),
        (
            "zeroed",
            vec![(bmap + 4, 0xffff_fffeu32.to_le_bytes().to_vec())],
        ),
        (
            "several",
            vec![
                (bmap, 3u32.to_le_bytes().to_vec()),
                (bmap + 24, 0x7000_0000u32.to_le_bytes().to_vec()),
            ],
        ),
    ];
    for (name, edits) in damage {
        let p = s.join(&format!("{name}.vdi"));
        std::fs::copy(&good, &p).unwrap();
        for (off, b) in edits {
            patch(&p, *off, b);
        }
        let (code, lines) = qemu_check(&p);
        let report = open(&p).check().unwrap();
        assert_eq!(report.exit_code(), code, "{name}: exit code");
        assert_eq!(
            report.corruptions as usize,
            lines.len(),
            "{name}: {lines:?}"
        );
        assert_eq!(report.messages, lines, "{name}");
        assert_eq!(report.leaks, 0);
    }
}

#[test]
fn bad_pointers_fail_reads_but_not_open() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-badptr");
    let p = qemu_vdi(&s, "r.vdi", false);
    patch(&p, 0x200 + 4, 1000u32.to_le_bytes().as_slice());
    let r = open(&p);
    let mut buf = vec![0u8; 512];
    let e = r.read_at(&mut buf, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("block 1 points to data slot 1000"), "{e}");
    assert!(r.block_status(1 << 20, 4096).is_err());
    r.read_at(&mut buf, 0).unwrap();
    // Truncated data area: the file ends inside block 6's slot.
    let t = s.join("t.vdi");
    std::fs::copy(qemu_vdi(&s, "t0.vdi", false), &t).unwrap();
    let len = std::fs::metadata(&t).unwrap().len();
    // Block 6 is the last slot; keep only its first 512 bytes of the 1536 inside the disk.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(len - (1 << 20) + 512)
        .unwrap();
    let r = open(&t);
    r.read_at(&mut buf, 6 << 20).unwrap();
    let mut two = vec![0u8; 1024];
    let e = r.read_at(&mut two, 6 << 20).unwrap_err().to_string();
    assert!(e.contains("past the end of the file"), "{e}");
    let report = r.check().unwrap();
    assert_eq!(report.corruptions, 1, "{:?}", report.messages);
    assert!(report.messages[0].contains("past the end of the file"));
}
