//! Crash simulation for the in-place writer: stop `finish` after each durable step and look at what
//! a crash there would leave (the module comment of `inplace` says what each step may leave).

use super::*;
use vdisk_testutil::*;

const M: u64 = 1 << 20;

fn fixture(s: &Scratch, name: &str) -> (PathBuf, Vec<u8>) {
    let p = s.join(name);
    qemu_create(&p, "vdi", "", "4M");
    qemu_io("vdi", &p, &["write -P 0x61 0 64k", "write -P 0x62 3M 4k"]);
    let old = qemu_raw_bytes(&p, Some("vdi"));
    (p, old)
}

/// Writes data into allocated block 0 and unallocated blocks 1 and 2, then commits `steps` steps.
fn write_and_stop(p: &Path, steps: u32) -> Vec<u8> {
    // Read by qemu-img before the writer holds the image's locks.
    let mut new = qemu_raw_bytes(p, Some("vdi"));
    let mut w = InplaceWriter::open(p).unwrap();
    for (off, len, byte) in [
        (4096u64, 4096u64, 0x71u8),
        (M, M, 0x72),
        (2 * M + 512, 512, 0x73),
    ] {
        w.write(off, Payload::data(vec![byte; len as usize]))
            .unwrap();
        new[off as usize..(off + len) as usize].fill(byte);
    }
    w.commit(steps).unwrap();
    new
}

fn qemu_check(p: &Path) -> (bool, String) {
    let o = output_past_forks(
        std::process::Command::new("qemu-img")
            .args(["check", "-f", "vdi"])
            .arg(p),
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

#[test]
fn every_crash_point_reads_old_or_new() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-inplace-crash");
    // After (1): new slots unreferenced: clean, old content in the new blocks, the in-place
    // write into block 0 already visible.
    let (p, old) = fixture(&s, "a.vdi");
    let new = write_and_stop(&p, 1);
    assert_qemu_check_clean(&p, "vdi");
    let now = qemu_raw_bytes(&p, Some("vdi"));
    assert_same_bytes(
        &now[..M as usize],
        &new[..M as usize],
        "block 0 written in place",
    );
    assert_same_bytes(
        &now[M as usize..],
        &old[M as usize..],
        "new blocks not yet visible",
    );
    // After (2): the count is 2 higher than the entries; qemu-img check says only that; every
    // block still reads as before the commit.
    let (p, _) = fixture(&s, "b.vdi");
    write_and_stop(&p, 2);
    let (ok, text) = qemu_check(&p);
    assert!(
        !ok && text.contains("allocated blocks mismatch, is 2, should be 4"),
        "{text}"
    );
    let now = qemu_raw_bytes(&p, Some("vdi"));
    assert_same_bytes(&now[M as usize..], &old[M as usize..], "after the count");
    // After (3): the new image.
    let (p, _) = fixture(&s, "c.vdi");
    let new = write_and_stop(&p, 3);
    assert_qemu_check_clean(&p, "vdi");
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vdi")), &new, "committed");
}
