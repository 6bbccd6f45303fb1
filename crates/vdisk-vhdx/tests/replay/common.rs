//! What the replay tests share: the image layout, `qemu-img check -r` runs, and the comparison of
//! a file vdisk replayed with the one qemu replayed.

use crate::fixtures::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vdisk_testutil::*;
use vdisk_vhdx::RepairOutcome;

/// Where things are in an image.
pub struct Layout {
    pub log: usize,
    pub log_len: usize,
    pub bat: usize,
    pub len: u64,
}

/// The layout of the VHDX image at `p` (which must open).
pub fn layout(p: &Path) -> Layout {
    let r = open(p);
    let h = r.header().1.clone();
    Layout {
        log: h.log_offset as usize,
        log_len: h.log_length as usize,
        bat: r.regions().bat.file_offset as usize,
        len: std::fs::metadata(p).unwrap().len(),
    }
}

/// A qemu-made dynamic image of 8 MiB with 1 MiB blocks, blocks 0 and 3 written (0x11, 0x22):
/// its path and layout.
pub fn base(s: &Scratch) -> (PathBuf, Layout) {
    let p = create(s, "base.vhdx", "block_size=1M", "8M");
    qemu_io(
        "vhdx",
        &p,
        &[
            "write -P 0x11 0 1M",
            &format!("write -P 0x22 {} {}", 3 * MIB, MIB),
        ],
    );
    let l = layout(&p);
    (p, l)
}

/// The file offset of payload block `block` of the image (which must be allocated).
pub fn block_at(file: &[u8], l: &Layout, block: usize) -> u64 {
    let e = le64(file, l.bat + 8 * block);
    assert_eq!(e & 7, 6, "block {block} is allocated");
    e & !0xFFFFF
}

/// `qemu-img check ARGS... P`: exit code, stdout, stderr.
pub fn qemu_check(p: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("qemu-img")
        .arg("check")
        .args(args)
        .arg(p)
        .output()
        .expect("run qemu-img check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `qemu-img check -r all` (and `-r leaks`) prints on stdout after replaying a log on an
/// otherwise clean image (exit code 0).
pub const REPAIRED: &str = "The following inconsistencies were found and repaired:\n\n    \
     0 leaked clusters\n    1 corruptions\n\nDouble checking the fixed image now...\n\
     No errors were found on the image.\n";

/// What `qemu-img check` prints on stdout for a clean image (exit code 0).
pub const CLEAN: &str = "No errors were found on the image.\n";

/// `b` with the bytes two replays legitimately differ in cleared: each header's checksum (bytes
/// 4..8), FileWriteGuid and DataWriteGuid (16..48), all derived from random GUIDs.
pub fn masked(b: &[u8]) -> Vec<u8> {
    let mut m = b.to_vec();
    for h in [64usize << 10, 128 << 10] {
        if m.len() >= h + 48 {
            m[h + 4..h + 8].fill(0);
            m[h + 16..h + 48].fill(0);
        }
    }
    m
}

/// [`masked`] with the headers' sequence numbers (bytes 8..16) cleared too: a replay resumed after
/// a crash counts on from the header update the crash left.
pub fn masked_seq(b: &[u8]) -> Vec<u8> {
    let mut m = masked(b);
    for h in [64usize << 10, 128 << 10] {
        if m.len() >= h + 16 {
            m[h + 8..h + 16].fill(0);
        }
    }
    m
}

/// [`assert_same_bytes`], which walks the bytes one by one to name the first difference, only
/// once a plain comparison found one (it is slow in a debug build).
pub fn same(ours: &[u8], oracle: &[u8], what: &str) {
    if ours != oracle {
        assert_same_bytes(ours, oracle, what);
    }
}

/// Asserts two files are the same apart from [`masked`]'s bytes.
pub fn assert_same_but_guids(ours: &[u8], qemu: &[u8], what: &str) {
    same(&masked(ours), &masked(qemu), what);
}

/// One image replayed both ways: `qemu-img check -r all` on one copy, `vdisk_vhdx::repair` on
/// another.
pub struct Both {
    pub input: Vec<u8>,
    pub qemu_rc: i32,
    pub qemu_out: String,
    pub qemu_err: String,
    pub qemu_path: PathBuf,
    pub ours: Result<RepairOutcome, String>,
    pub our_path: PathBuf,
}

impl Both {
    pub fn qemu_file(&self) -> Vec<u8> {
        std::fs::read(&self.qemu_path).unwrap()
    }
    pub fn our_file(&self) -> Vec<u8> {
        std::fs::read(&self.our_path).unwrap()
    }
}

/// Replays `image` both ways (files named after `name` in `s`).
pub fn both(s: &Scratch, name: &str, image: &[u8]) -> Both {
    let qemu_path = s.join(&format!("{name}.qemu.vhdx"));
    let our_path = s.join(&format!("{name}.vdisk.vhdx"));
    std::fs::write(&qemu_path, image).unwrap();
    std::fs::write(&our_path, image).unwrap();
    let (qemu_rc, qemu_out, qemu_err) = qemu_check(&qemu_path, &["-r", "all"]);
    let ours = vdisk_vhdx::repair(&our_path).map_err(|e| e.to_string());
    Both {
        input: image.to_vec(),
        qemu_rc,
        qemu_out,
        qemu_err,
        qemu_path,
        ours,
        our_path,
    }
}

/// Both replayed the log: qemu exits 0 with [`REPAIRED`], vdisk reports one corruption fixed and
/// none left, the files are the same but for the GUIDs, qemu finds vdisk's clean and reads it as
/// it reads its own. Returns the guest bytes.
pub fn assert_replayed_alike(b: &Both, what: &str) -> Vec<u8> {
    assert_eq!(
        (b.qemu_rc, b.qemu_out.as_str(), b.qemu_err.as_str()),
        (0, REPAIRED, ""),
        "{what}: qemu-img check -r all"
    );
    let ours = b
        .ours
        .as_ref()
        .unwrap_or_else(|e| panic!("{what}: vdisk: {e}"));
    assert!(ours.replayed, "{what}: vdisk replayed nothing");
    assert_eq!(
        (ours.report.corruptions_fixed, ours.report.corruptions),
        (1, 0),
        "{what}"
    );
    assert_same_but_guids(&b.our_file(), &b.qemu_file(), what);
    assert_qemu_check_clean(&b.our_path, "vhdx");
    let guest = qemu_raw_bytes(&b.our_path, Some("vhdx"));
    same(&guest, &qemu_raw_bytes(&b.qemu_path, Some("vhdx")), what);
    guest
}

/// Both refuse: qemu fails the open with EINVAL (exit 1), vdisk fails with `words` in its error
/// and leaves the file as it was.
pub fn assert_refused_alike(b: &Both, words: &str, what: &str) {
    assert_eq!(b.qemu_rc, 1, "{what}: qemu: {}{}", b.qemu_out, b.qemu_err);
    assert!(
        b.qemu_err.contains("Could not open") && b.qemu_err.contains("Invalid argument"),
        "{what}: qemu: {}",
        b.qemu_err
    );
    refused_unchanged(b, words, what);
}

/// vdisk fails with `words` in its error and leaves the file as it was.
pub fn refused_unchanged(b: &Both, words: &str, what: &str) {
    match &b.ours {
        Ok(o) => panic!("{what}: vdisk repaired it: {o:?}"),
        Err(e) => assert!(e.contains(words), "{what}: vdisk: {e}"),
    }
    assert!(b.our_file() == b.input, "{what}: vdisk changed the file");
}

/// Neither finds a log to replay: qemu exits 0 with [`CLEAN`], vdisk replays nothing, and
/// neither changes the file.
pub fn assert_nothing_alike(b: &Both, what: &str) {
    assert_eq!(
        (b.qemu_rc, b.qemu_out.as_str()),
        (0, CLEAN),
        "{what}: {}",
        b.qemu_err
    );
    let ours = b
        .ours
        .as_ref()
        .unwrap_or_else(|e| panic!("{what}: vdisk: {e}"));
    assert!(
        !ours.replayed && ours.report.corruptions_fixed == 0,
        "{what}"
    );
    assert!(b.qemu_file() == b.input, "{what}: qemu changed the file");
    assert!(b.our_file() == b.input, "{what}: vdisk changed the file");
}
