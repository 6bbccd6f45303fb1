//! Crash simulation for the in-place writer: stop the commit after each durable step and look at
//! what a crash there would leave (the module comment of `inplace` says what each step may leave).

use super::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::FileStorage;
use vdisk_core::ImageReader;
use vdisk_testutil::*;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;

fn open_path(p: &Path) -> InplaceWriter {
    let (storage, files) = super::open::host_rw(p).unwrap();
    InplaceWriter::open(storage, files).unwrap()
}

fn fixture(s: &Scratch, name: &str) -> (PathBuf, Vec<u8>) {
    let p = s.join(name);
    qemu_create(&p, "vmdk", "", "4M");
    qemu_io("vmdk", &p, &["write -P 0x61 0 64k", "write -P 0x62 3M 4k"]);
    let old = qemu_raw_bytes(&p, Some("vmdk"));
    (p, old)
}

/// Writes data into allocated grain 0 and unallocated grains at 1M and 2M, then commits `steps`
/// steps.
fn write_and_stop(p: &Path, steps: u32) -> Vec<u8> {
    // Read by qemu-img before the writer holds the image's locks.
    let mut new = qemu_raw_bytes(p, Some("vmdk"));
    let mut w = open_path(p);
    for (off, len, byte) in [
        (4096u64, 4096u64, 0x71u8),
        (M, 64 * K, 0x72),
        (2 * M + 512, 512, 0x73),
    ] {
        w.write(off, Payload::data(vec![byte; len as usize]))
            .unwrap();
        new[off as usize..(off + len) as usize].fill(byte);
    }
    w.commit(steps).unwrap();
    new
}

fn vdisk_check(p: &Path) -> vdisk_core::CheckReport {
    let r = crate::open(Arc::new(FileStorage::open(p).unwrap()), Arc::new(HostFiles)).unwrap();
    r.check().unwrap()
}

#[test]
fn every_crash_point_reads_old_or_new() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-crash");
    let m = M as usize;
    // After (1): new grains unreferenced: clean, old content in them, the in-place write into
    // grain 0 already visible.
    let (p, old) = fixture(&s, "a.vmdk");
    let new = write_and_stop(&p, 1);
    assert_qemu_check_clean(&p, "vmdk");
    assert_eq!(vdisk_check(&p).exit_code(), 0);
    let now = qemu_raw_bytes(&p, Some("vmdk"));
    assert_same_bytes(&now[..m], &new[..m], "grain 0 written in place");
    assert_same_bytes(&now[m..], &old[m..], "new grains not yet visible");
    // After (2): the redundant tables point at the new grains, the primary ones do not: qemu
    // reads (and checks) the primary ones, so the old content and a clean check; vdisk's check
    // sees the redundant tables differ.
    let (p, _) = fixture(&s, "b.vmdk");
    write_and_stop(&p, 2);
    assert_qemu_check_clean(&p, "vmdk");
    let rep = vdisk_check(&p);
    assert!(
        rep.messages
            .iter()
            .any(|m| m.contains("redundant grain table 0 does not match")),
        "{rep:?}"
    );
    let now = qemu_raw_bytes(&p, Some("vmdk"));
    assert_same_bytes(&now[m..], &old[m..], "after the redundant tables");
    // After (3): the new image.
    let (p, _) = fixture(&s, "c.vmdk");
    let new = write_and_stop(&p, 3);
    assert_qemu_check_clean(&p, "vmdk");
    assert_eq!(vdisk_check(&p).exit_code(), 0);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vmdk")), &new, "committed");
}

/// With room for one grain table, every write into another table commits the changed one first:
/// grains allocated before such a commit are found again (and written in place) afterwards.
#[test]
fn commits_when_the_table_cache_is_full() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-inplace-tables");
    let p = s.join("t.vmdk");
    // Each grain table covers 512 grains of 64 KiB: 32 MiB.
    qemu_create(&p, "vmdk", "", "100M");
    qemu_io("vmdk", &p, &["write -P 0x61 40M 64k"]);
    let mut new = qemu_raw_bytes(&p, Some("vmdk"));
    let mut w = open_path(&p);
    w.max_tables = 1;
    for (off, len, byte) in [
        (M, 4 * K, 0x71u8),
        (33 * M, 64 * K, 0x72),
        (70 * M + 512, 512, 0x73),
        (M + 8 * K, 4 * K, 0x74),
        (40 * M, 512, 0x75),
        (34 * M, 64 * K, 0x76),
    ] {
        w.write(off, Payload::data(vec![byte; len as usize]))
            .unwrap();
        new[off as usize..(off + len) as usize].fill(byte);
    }
    Box::new(w).finish().unwrap();
    assert_qemu_check_clean(&p, "vmdk");
    assert_eq!(vdisk_check(&p).exit_code(), 0);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vmdk")), &new, "after finish");
    // The four grains allocated (the one at 1M written twice) lie at four distinct places.
    let r = crate::open(
        Arc::new(FileStorage::open(&p).unwrap()),
        Arc::new(HostFiles),
    )
    .unwrap();
    let sp = r.sparse_extent(0).unwrap();
    let grains: Vec<u64> = [M, 33 * M, 70 * M, 34 * M]
        .iter()
        .map(|o| match sp.lookup(*o).unwrap() {
            crate::sparse::Grain::Data(at) => at,
            g => panic!("{o}: {g:?}"),
        })
        .collect();
    let mut sorted = grains.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "distinct grains {grains:?}");
}
