//! In-place writer tests that need its insides or hand-built images: crash simulation (stop `finish`
//! after each durable step, or cut the file inside one, and look at what a crash there leaves; the
//! module comment of `inplace` says what each may leave), bitmaps and tiny blocks against qemu-io,
//! where new blocks go, and hostile images.

use super::*;
use crate::testimg::{dynamic, footer};
use vdisk_core::MemStorage;
use vdisk_testutil::*;

const M: u64 = 1 << 20;
const B: u64 = 2 * M;

/// A 6M image (6301696 bytes: blocks 0 to 3, the last one partial) with data in blocks 0 and 3.
fn fixture(s: &Scratch, name: &str) -> (PathBuf, Vec<u8>) {
    let p = s.join(name);
    qemu_create(&p, "vpc", "", "6M");
    qemu_io("vpc", &p, &["write -P 0x61 0 64k", "write -P 0x62 6M 4k"]);
    let old = qemu_raw_bytes(&p, Some("vpc"));
    (p, old)
}

/// Writes data into allocated block 0 and unallocated blocks 1 and 2, then commits `steps` steps.
fn write_and_stop(p: &Path, steps: u32) -> Vec<u8> {
    // Read by qemu-img before the writer holds the image's locks.
    let mut new = qemu_raw_bytes(p, Some("vpc"));
    let mut w = InplaceWriter::open(p).unwrap();
    for (off, len, byte) in [
        (4096u64, 4096u64, 0x71u8),
        (B, M, 0x72),
        (2 * B + 512, 512, 0x73),
    ] {
        w.write(off, Payload::data(vec![byte; len as usize]))
            .unwrap();
        new[off as usize..(off + len) as usize].fill(byte);
    }
    w.commit(steps).unwrap();
    new
}

fn ends_with_footer(p: &Path) -> bool {
    let f = std::fs::read(p).unwrap();
    f[f.len() - 512..] == f[..512]
}

#[test]
fn every_crash_point_reads_old_or_new() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace-crash");
    let half = B as usize;
    // After (1): the new blocks are unreferenced, the file ends with the footer copy; block 0 was
    // written in place already.
    let (p, old) = fixture(&s, "a.vhd");
    let new = write_and_stop(&p, 1);
    let now = qemu_raw_bytes(&p, Some("vpc"));
    assert_same_bytes(&now[..half], &new[..half], "block 0 written in place");
    assert_same_bytes(&now[half..], &old[half..], "new blocks not yet visible");
    assert!(ends_with_footer(&p));
    // After (2): the new image.
    let (p, _) = fixture(&s, "b.vhd");
    let new = write_and_stop(&p, 2);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vpc")), &new, "committed");
    assert!(ends_with_footer(&p));
    // Inside (1): the first new block's bitmap has overwritten the old footer copy and nothing else
    // reached the disk. qemu opens the image by its footer at offset 0 and reads the old content;
    // the next writer appends after the cut and leaves a sound image.
    let (p, old) = fixture(&s, "c.vhd");
    let old_len = std::fs::metadata(&p).unwrap().len();
    write_and_stop(&p, 0);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(old_len).unwrap();
    assert!(!ends_with_footer(&p));
    let now = qemu_raw_bytes(&p, Some("vpc"));
    assert_same_bytes(&now[half..], &old[half..], "torn allocation");
    let mut w = open_writer(&p).unwrap();
    w.write(B, Payload::data(vec![0x74u8; 4096])).unwrap();
    w.finish().unwrap();
    let mut want = now;
    want[half..half + 4096].fill(0x74);
    assert_same_bytes(&qemu_raw_bytes(&p, Some("vpc")), &want, "written after");
    assert!(ends_with_footer(&p));
}

/// Writes the same requests through vdisk and qemu-io into two copies of `img`; returns both files.
fn both(s: &Scratch, img: &[u8], ours: &[(u64, u64, u8)]) -> (Vec<u8>, Vec<u8>, PathBuf) {
    let (a, b) = (s.join("ours.vhd"), s.join("qemu.vhd"));
    std::fs::write(&a, img).unwrap();
    std::fs::write(&b, img).unwrap();
    let mut w = open_writer(&a).unwrap();
    let mut cmds = Vec::new();
    for &(off, len, byte) in ours {
        if byte == 0 {
            w.write(off, Payload::Zero(len)).unwrap();
            cmds.push(format!("write -z {off} {len}"));
        } else {
            w.write(off, Payload::data(vec![byte; len as usize]))
                .unwrap();
            cmds.push(format!("write -P {byte} {off} {len}"));
        }
    }
    w.finish().unwrap();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vpc", &b, &refs);
    (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), a)
}

/// Blocks whose bitmap is all zeros (as other tools leave it) get an all-ones bitmap when written
/// into, as `get_image_offset` writes it; the new block is laid out as `alloc_block` lays it out:
/// the file is qemu-io's, byte for byte.
#[test]
fn bitmaps_and_new_blocks_as_qemu_writes_them() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace-bitmap");
    let img = dynamic(4 * 4096, 4096, &[Some(0x11), None, Some(0x33), None]);
    let w = [(100, 200, 0xa1), (4608, 1024, 0xa2), (8192 + 512, 512, 0)];
    let (ours, qemu, _) = both(&s, &img, &w);
    assert!(ours == qemu, "the file differs from qemu-io's");
}

/// Blocks of 2 KiB have no bitmap, so a new block's data starts over the old footer copy: qemu
/// leaves the footer's bytes in the part not written (they become guest data), vdisk zeros them.
#[test]
fn tiny_blocks_read_zeros_where_qemu_leaves_the_old_footer() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhd-inplace-tiny");
    let img = dynamic(4 * 2048, 2048, &[Some(0x11), None, None, None]);
    let (ours, qemu, a) = both(&s, &img, &[(2048 + 1024, 512, 0xa2)]);
    assert_eq!(ours.len(), qemu.len());
    let b = s.join("qemu.vhd");
    let (mine, theirs) = (
        qemu_raw_bytes(&a, Some("vpc")),
        qemu_raw_bytes(&b, Some("vpc")),
    );
    assert_eq!(
        &theirs[2048..2056],
        b"conectix",
        "qemu's guest sees the old footer"
    );
    assert!(mine[2048..3072].iter().all(|b| *b == 0));
    assert_eq!(mine[3072..], theirs[3072..]);
    let r = crate::reader::open(Arc::new(FileStorage::open(&a).unwrap())).unwrap();
    assert_same_bytes(&read_all(&r, 4096), &mine, "vdisk reads what qemu reads");
}

fn mem(b: Vec<u8>) -> (Arc<MemStorage>, Arc<dyn Storage>) {
    let m = Arc::new(MemStorage::new("m.vhd", b));
    let d: Arc<dyn Storage> = m.clone();
    (m, d)
}

/// Bytes the BAT does not describe (a parent locator between the BAT and the footer, junk after
/// the footer) are not overwritten: new blocks go after them.
#[test]
fn new_blocks_go_after_everything_in_the_file() {
    let img = dynamic(4 * 4096, 4096, &[None, Some(0x22), None, None]);
    let n = img.len();
    let (f, locator) = (&img[n - 512..], [0xabu8; 512]);
    let mut gap = img[..n - 512].to_vec();
    gap.extend_from_slice(&locator);
    gap.extend_from_slice(f);
    let mut junk = img.clone();
    junk.extend_from_slice(&[0xcd; 100]);
    for (what, b) in [("locator", gap), ("junk", junk)] {
        let (m, d) = mem(b.clone());
        let mut w = open_writer_in(d.clone()).unwrap();
        w.write(0, Payload::data(vec![0x44; 4096])).unwrap();
        w.finish().unwrap();
        let after = m.contents();
        let keep = if what == "locator" { n } else { b.len() };
        // All but the BAT entry of block 0, at 1536.
        let diff = (0..keep).find(|i| !(1536..1540).contains(i) && after[*i] != b[*i]);
        assert_eq!(diff, None, "{what}: nothing overwritten");
        let r = crate::reader::open(d).unwrap();
        let got = read_all(&r, 4096);
        assert!(got[..4096].iter().all(|x| *x == 0x44), "{what}");
        assert_eq!(
            after[after.len() - 512..],
            after[..512],
            "{what}: footer at the end"
        );
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Hostile images: refused with a clear error, the store left as it was; random damage gives an
/// error or a writer, never a panic.
#[test]
fn damaged_images_are_refused_unchanged() {
    let good = dynamic(4 * 4096, 4096, &[Some(0x11), None, Some(0x33), None]);
    let bat = 1536;
    let entry = |b: &[u8], i: usize| u32::from_be_bytes(b[bat + 4 * i..][..4].try_into().unwrap());
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    for (sector, name) in [
        (0, "the footer"),
        (1, "the dynamic disk header"),
        (3, "the BAT"),
    ] {
        let mut b = good.clone();
        put32(&mut b, bat + 4, sector);
        cases.push(("block on metadata", b, name));
    }
    let mut b = good.clone();
    put32(&mut b, bat + 4, entry(&good, 0) + 1);
    cases.push(("blocks overlapping", b, "overlaps block"));
    // The BAT moved into the header's reserved (zero) bytes: entries of 0, which Bat::read takes.
    let mut b = good.clone();
    put32(&mut b, 512 + 16 + 4, 1520);
    cases.push(("BAT on the header", b, "the BAT overlaps"));
    let mut b = good.clone();
    b[..512].copy_from_slice(&footer(b"win ", (1, 1, 1), 4 * 4096, 2, 512));
    cases.push(("fixed type at offset 0", b, "disk type fixed"));
    let f = footer(b"win ", (1, 1, 1), 8192, 2, u64::MAX);
    let mut b = vec![0u8; 4096];
    b.extend_from_slice(&f);
    cases.push(("fixed size past its footer", b, "extends over its footer"));
    let mut b = good.clone();
    b[..512].copy_from_slice(&footer(b"win ", (1, 1, 1), 4 * 4096, 5, 512));
    cases.push(("reserved disk type", b, "unknown (5)"));
    cases.push(("truncated", good[..good.len() - 1024].to_vec(), "truncated"));
    for (what, bytes, want) in cases {
        let (m, d) = mem(bytes.clone());
        let e = match open_writer_in(d) {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{what}: {e}");
        assert!(m.contents() == bytes, "{what}: changed");
    }
    let mut rng = XorShift64::new(0x7668_6469_6e70_6c63);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..3 {
            let off = rng.below(bat as u64 + 16) as usize;
            b[off] = rng.next_u64() as u8;
        }
        let (m, d) = mem(b.clone());
        match open_writer_in(d) {
            Err(_) => assert!(m.contents() == b, "refused store changed"),
            Ok(mut w) => {
                let _ = w.write(0, Payload::data(vec![1u8; 5000]));
                let _ = w.write(4096, Payload::Zero(8192));
                let _ = w.finish();
            }
        }
    }
}
