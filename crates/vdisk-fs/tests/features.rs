//! What vdisk-fs refuses, and says so: incompatible features it does not read (compression,
//! dirdata, unknown bits), encrypted files; and what it accepts: a journal flagged as needing
//! recovery with nothing in it, `ext4dev`'s test flag named as blkid names it, devices that
//! hold no filesystem.

mod common;

use common::{raw_reader, run, tools_available, truncate};
use std::process::Command;
use vdisk_fs::OpenOptions;
use vdisk_testutil::Scratch;

fn patch_u32(img: &std::path::Path, at: u64, f: impl Fn(u32) -> u32) {
    let mut b = std::fs::read(img).unwrap();
    let a = at as usize;
    let v = f(u32::from_le_bytes(b[a..a + 4].try_into().unwrap()));
    b[a..a + 4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(img, b).unwrap();
}

#[test]
fn journal_recovery_and_refused_features() {
    if !tools_available(&["mkfs.ext4", "debugfs", "blkid"]) {
        return;
    }
    let d = Scratch::new("fs-features");
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data\n").unwrap();
    let img = d.join("j.img");
    truncate(&img, 16 << 20);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^metadata_csum"])
        .arg("-d")
        .arg(&src)
        .arg(&img));
    // A filesystem not cleanly unmounted, with an empty journal (debugfs sets the flag the
    // kernel sets, the journal's s_start is 0): the kernel's recovery replays nothing, and
    // vdisk-fs reads it as it is on disk (journal replay itself: tests/journal.rs).
    run(Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&img));
    for opts in [
        OpenOptions::default(),
        OpenOptions {
            ignore_journal_recovery: true,
        },
    ] {
        let fs = vdisk_fs::open_with(raw_reader(&img), &opts).unwrap();
        let f = vdisk_fs::resolve(fs.as_ref(), b"/f", false).unwrap();
        assert_eq!(vdisk_fs::read_all(fs.as_ref(), &f, 100).unwrap(), b"data\n");
    }
    run(Command::new("debugfs")
        .args(["-w", "-R", "feature ^needs_recovery"])
        .arg(&img));
    assert!(vdisk_fs::open(raw_reader(&img)).is_ok());

    // Incompatible features vdisk-fs does not read (s_feature_incompat at 0x460).
    for (bit, name) in [
        (0x1u32, "compression"),
        (0x1000, "dirdata"),
        (0x8000_0000, "unknown incompat bits 0x80000000"),
    ] {
        let m = d.join("m.img");
        std::fs::copy(&img, &m).unwrap();
        patch_u32(&m, 1024 + 0x60, |v| v | bit);
        let e = vdisk_fs::open(raw_reader(&m)).err().unwrap().to_string();
        assert!(
            e.contains("unsupported ext4 feature") && e.contains(name),
            "{e}"
        );
    }
    // The test flag: blkid and vdisk-fs both say ext4dev (s_flags at 0x160).
    let m = d.join("dev.img");
    std::fs::copy(&img, &m).unwrap();
    patch_u32(&m, 1024 + 0x160, |v| v | 4);
    let out = run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(&m));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ext4dev");
    assert_eq!(vdisk_fs::open(raw_reader(&m)).unwrap().kind(), "ext4dev");
    // Encrypted files: their bytes are refused (i_flags 0x800 set by debugfs).
    run(Command::new("debugfs")
        .args(["-w", "-R", "sif /f flags 0x80800"])
        .arg(&img));
    let fs = vdisk_fs::open(raw_reader(&img)).unwrap();
    let f = vdisk_fs::resolve(fs.as_ref(), b"/f", false).unwrap();
    let e = vdisk_fs::read_all(fs.as_ref(), &f, 100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("encrypted"), "{e}");
    // A blank device holds no filesystem.
    let blank = d.join("blank.img");
    truncate(&blank, 1 << 20);
    assert_eq!(vdisk_fs::probe(raw_reader(&blank).as_ref()).unwrap(), None);
    assert!(vdisk_fs::open(raw_reader(&blank))
        .err()
        .unwrap()
        .to_string()
        .contains("no ext2/ext3/ext4, XFS or FAT"));
}
