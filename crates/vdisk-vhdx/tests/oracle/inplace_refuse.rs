//! Damaged targets for the in-place writer (`vdisk_vhdx::open_writer`), made from a qemu-made image:
//! what `vhdx_co_writev` cannot write into (PARTIALLY_PRESENT, state 4, a block in the header
//! section: EIO / EFAULT in qemu), blocks sharing file bytes, a log whose replay qemu fails (a
//! data descriptor without its data sector), no valid header, a truncated file. Each is refused with words naming it, the file unchanged.

use crate::fixtures::*;
use vdisk_testutil::*;

/// Edits of a qemu-made image that the writer refuses, each with words of its error: the file is
/// left as it was, byte for byte.
#[test]
fn damaged_targets_are_refused_unchanged() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-inplace-damaged");
    let good = std::fs::read(patterned(&s, "g.vhdx", "block_size=1M", "3M")).unwrap();
    let r = open(&s.join("g.vhdx"));
    let bat = r.regions().bat.file_offset as usize;
    let log = r.header().1.log_offset as usize;
    drop(r);
    let block0 = le64(&good, bat);
    assert_eq!(block0 & 7, 6, "block 0 allocated by the pattern");
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "partially present",
            Box::new(move |b| put64(b, bat + 8, 7)),
            "partially-present",
        ),
        (
            "reserved state 4",
            Box::new(move |b| put64(b, bat + 8, 4)),
            "reserved-4",
        ),
        (
            "block in the header section",
            Box::new(move |b| put64(b, bat + 8, (512 << 10) | 6)),
            "header section",
        ),
        (
            "blocks overlapping",
            Box::new(move |b| put64(b, bat + 8, block0)),
            "overlaps payload block 0",
        ),
        (
            "log whose replay fails in qemu",
            Box::new(move |b| log_entry(b, log)),
            "ends before a data sector",
        ),
        (
            "no valid header",
            Box::new(|b| b[(64 << 10) + 200] ^= 1),
            "",
        ),
        (
            "truncated",
            Box::new(|b| b.truncate(b.len() - 4096)),
            "truncated",
        ),
    ];
    for (name, edit, words) in cases {
        let mut b = good.clone();
        edit(&mut b);
        if name == "no valid header" {
            b[(128 << 10) + 200] ^= 1;
        }
        let p = s.join("t.vhdx");
        std::fs::write(&p, &b).unwrap();
        let e = match vdisk_vhdx::open_writer(&p) {
            Ok(_) => panic!("{name}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(words), "{name}: {e}");
        assert!(std::fs::read(&p).unwrap() == b, "{name}: the file changed");
    }
}

/// A valid one-sector log entry at the log's start, with both headers' log GUID set to match: a
/// log qemu finds and tries to replay, but its data descriptor has no data sector, so the replay
/// fails (EINVAL) and so does the open.
fn log_entry(b: &mut [u8], log: usize) {
    let g = [0x42u8; 16];
    for h in [64 << 10, 128 << 10] {
        b[h + 48..h + 64].copy_from_slice(&g);
        reseal(b, h, 4096);
    }
    b[log..log + 4096].fill(0);
    b[log..log + 4].copy_from_slice(b"loge");
    put32(b, log + 8, 4096);
    put64(b, log + 16, 7);
    put32(b, log + 24, 1);
    b[log + 32..log + 48].copy_from_slice(&g);
    b[log + 64..log + 68].copy_from_slice(b"desc");
    put64(b, log + 64 + 16, 0x40_0000);
    put64(b, log + 64 + 24, 7);
    reseal(b, log, 4096);
}
