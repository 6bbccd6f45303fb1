//! In-place writer tests that need its insides or hand-made images: crash simulation (stop after
//! each durable step, or tear a header write, and look at what a crash there leaves with qemu-img;
//! the module comment of `inplace` says what each may leave), the order of writes and syncs, the
//! header update, and damaged images (refused unchanged; random damage never panics).

use super::*;
use crate::header::{invalid_reason, Header};
use crate::limits::{HEADER1_OFFSET, HEADER2_OFFSET};
use std::sync::Mutex;
use vdisk_core::{CreateOptions, ImageReader, MemStorage};
use vdisk_testutil::*;

/// A 6 MiB image with 1 MiB blocks, data in block 0 (qemu-io's), and its content.
fn fixture(s: &Scratch, name: &str) -> (PathBuf, Vec<u8>) {
    let p = s.join(name);
    qemu_create(&p, "vhdx", "block_size=1M", "6M");
    qemu_io("vhdx", &p, &["write -P 0x61 0 64k"]);
    let old = qemu_raw_bytes(&p, Some("vhdx"));
    (p, old)
}

/// Data into allocated block 0 and new blocks 2 and 3; returns the writer and the new content.
fn write_some(p: &Path) -> (InplaceWriter, Vec<u8>) {
    // Read by qemu-img before the writer holds the image's locks.
    let mut new = qemu_raw_bytes(p, Some("vhdx"));
    let mut w = InplaceWriter::open(p).unwrap();
    for (off, len, byte) in [
        (4096u64, 4096u64, 0x71u8),
        (2 * MIB, MIB, 0x72),
        (3 * MIB + 512, 512, 0x73),
    ] {
        w.write(off, Payload::data(vec![byte; len as usize]))
            .unwrap();
        new[off as usize..(off + len) as usize].fill(byte);
    }
    (w, new)
}

/// What qemu makes of a crash point: it opens the image (no log to replay), check exits 0, and it
/// reads `expect`, as vdisk does.
fn assert_state(p: &Path, expect: &[u8], what: &str) {
    let img = p.to_str().unwrap();
    qemu_img(&["info", "-f", "vhdx", img]);
    assert_qemu_check_clean(p, "vhdx");
    assert_same_bytes(&qemu_raw_bytes(p, Some("vhdx")), expect, what);
    let r = crate::open(Arc::new(FileStorage::open(p).unwrap())).unwrap();
    assert_same_bytes(&read_all(&r, 1 << 20), expect, what);
}

fn current_seq(p: &Path) -> u64 {
    let r = crate::open(Arc::new(FileStorage::open(p).unwrap())).unwrap();
    r.header().1.sequence_number
}

#[test]
fn every_crash_point_reads_old_or_new() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vhdx-inplace-crash");
    let m = MIB as usize;
    // (H) stopped after the first header write, then after both: the old content, the headers
    // moved on by one and two.
    for steps in [1u32, 2] {
        let (p, old) = fixture(&s, &format!("h{steps}.vhdx"));
        let seq = current_seq(&p);
        let mut w = InplaceWriter::open(&p).unwrap();
        w.update_headers(steps).unwrap();
        drop(w);
        assert_state(&p, &old, "after the header update");
        assert_eq!(current_seq(&p), seq + u64::from(steps));
    }
    // A torn first header write (half of its sector new): its CRC-32C fails, qemu keeps the old
    // current header; a new writer then works from it.
    let (p, old) = fixture(&s, "torn.vhdx");
    let seq = current_seq(&p);
    let before = std::fs::read(&p).unwrap();
    let w = InplaceWriter::open(&p).unwrap();
    let slot = [HEADER1_OFFSET, HEADER2_OFFSET][1 - w.header.0] as usize;
    let mut w = w;
    w.update_headers(1).unwrap();
    drop(w);
    let mut f = std::fs::read(&p).unwrap();
    f[slot + 40..slot + 80].copy_from_slice(&before[slot + 40..slot + 80]);
    std::fs::write(&p, &f).unwrap();
    assert!(invalid_reason(&f[slot..slot + 4096]).is_some());
    assert_state(&p, &old, "torn header");
    assert_eq!(current_seq(&p), seq);
    let (w, new) = write_some(&p);
    Box::new(w).finish().unwrap();
    assert_state(&p, &new, "written after a torn header");
    // (1) done: block 0 written in place, the new blocks in the file but not referenced.
    let (p, old) = fixture(&s, "c1.vhdx");
    let old_len = std::fs::metadata(&p).unwrap().len();
    let (w, new) = write_some(&p);
    w.commit(1).unwrap();
    drop(w);
    let mut want = old.clone();
    want[..m].copy_from_slice(&new[..m]);
    assert_state(&p, &want, "after (1)");
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        old_len.next_multiple_of(MIB) + 2 * MIB
    );
    // (2) done: the new image.
    let (p, _) = fixture(&s, "c2.vhdx");
    let (w, new) = write_some(&p);
    w.commit(2).unwrap();
    drop(w); // closed before qemu-img looks, as a crashed process's files are
    assert_state(&p, &new, "after (2)");
    // Inside (2): the entry of block 3 still the old one, that of block 2 written.
    let r = crate::open(Arc::new(FileStorage::open(&p).unwrap())).unwrap();
    let at3 = (r.bat().offset + 3 * 8) as usize;
    drop(r);
    let mut f = std::fs::read(&p).unwrap();
    f[at3..at3 + 8].fill(0);
    std::fs::write(&p, &f).unwrap();
    let mut want = new.clone();
    want[3 * m..4 * m].fill(0);
    assert_state(&p, &want, "inside (2)");
}

/// A store that records writes, length changes and syncs in order.
struct Recording {
    inner: MemStorage,
    log: Mutex<Vec<(char, u64, u64)>>,
}

impl Storage for Recording {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(('w', offset, buf.len() as u64));
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.log.lock().unwrap().push(('l', len, 0));
        self.inner.set_len(len)
    }
    fn sync(&self) -> Result<()> {
        self.log.lock().unwrap().push(('s', 0, 0));
        Ok(())
    }
}

/// A 4 MiB dynamic image with 1 MiB blocks made by vdisk's own writer, data in block 1.
fn base_image() -> Vec<u8> {
    let s = Scratch::new("vhdx-inplace-base");
    let p = s.join("b.vhdx");
    let opts = CreateOptions::parse(&["block_size=1M"]).unwrap();
    let mut w = crate::create(&p, 4 * MIB, &opts).unwrap();
    w.write(MIB, Payload::data(vec![0x5a; 4096])).unwrap();
    w.finish().unwrap();
    std::fs::read(&p).unwrap()
}

fn mem(b: Vec<u8>) -> (Arc<MemStorage>, Arc<dyn Storage>) {
    let m = Arc::new(MemStorage::new("m.vhdx", b));
    let d: Arc<dyn Storage> = m.clone();
    (m, d)
}

/// The durable steps in order: both headers (each synced) before any other write, then the data
/// and the file's growth, a sync, then only BAT entries, a sync; no sync with durable commits off.
#[test]
fn headers_then_data_then_bat_each_synced() {
    let img = base_image();
    let r = crate::open(mem(img.clone()).1).unwrap();
    let (bat, cur) = (r.bat().offset, r.header().0);
    drop(r);
    let rec = Arc::new(Recording {
        inner: MemStorage::new("r.vhdx", img),
        log: Mutex::new(Vec::new()),
    });
    let mut w = open_writer_in(rec.clone()).unwrap();
    assert!(rec.log.lock().unwrap().is_empty(), "opening writes nothing");
    w.write(MIB + 512, Payload::data(vec![1u8; 512])).unwrap();
    w.write(3 * MIB, Payload::data(vec![2u8; 4096])).unwrap();
    w.write(0, Payload::Zero(MIB)).unwrap();
    w.finish().unwrap();
    let log = rec.log.lock().unwrap().clone();
    let h = |i: usize| [HEADER1_OFFSET, HEADER2_OFFSET][i];
    assert_eq!(
        log[..4],
        [
            ('w', h(1 - cur), 80),
            ('s', 0, 0),
            ('w', h(cur), 80),
            ('s', 0, 0)
        ]
    );
    let syncs: Vec<usize> = (0..log.len()).filter(|i| log[*i].0 == 's').collect();
    assert_eq!(syncs.len(), 4);
    let (data, tail) = (&log[4..syncs[2]], &log[syncs[2] + 1..syncs[3]]);
    assert!(
        data.iter().all(|e| e.1 >= 4 * MIB || e.0 == 'l'),
        "{data:?}"
    );
    assert!(
        data.iter().any(|e| e.0 == 'l'),
        "the file grows over the new block"
    );
    assert_eq!(tail, [('w', bat + 3 * 8, 8)]);
    let r = crate::open(rec.clone()).unwrap();
    let mut got = vec![0u8; 4 * MIB as usize];
    r.read_at(&mut got, 0).unwrap();
    assert!(got[MIB as usize..][..512].iter().all(|b| *b == 0x5a));
    assert!(got[(MIB + 512) as usize..][..512].iter().all(|b| *b == 1));
    assert!(got[3 * MIB as usize..][..4096].iter().all(|b| *b == 2));
    // With durable commits off (`-t unsafe`): the same writes, no sync at all.
    struct Durable;
    impl Drop for Durable {
        fn drop(&mut self) {
            vdisk_core::writer::set_durable_commit(true);
        }
    }
    let _restore = Durable;
    vdisk_core::writer::set_durable_commit(false);
    let unsafe_rec = Arc::new(Recording {
        inner: MemStorage::new("u.vhdx", base_image()),
        log: Mutex::new(Vec::new()),
    });
    let mut w = open_writer_in(unsafe_rec.clone()).unwrap();
    w.write(3 * MIB, Payload::data(vec![2u8; 4096])).unwrap();
    w.finish().unwrap();
    let log = unsafe_rec.log.lock().unwrap().clone();
    assert!(log.iter().all(|e| e.0 != 's') && log.len() > 3, "{log:?}");
}

/// The header update keeps the other header's reserved bytes and seals both headers; their fields
/// agree apart from the sequence number.
#[test]
fn header_update_keeps_reserved_bytes() {
    let mut img = base_image();
    let r = crate::open(mem(img.clone()).1).unwrap();
    let cur = r.header().0;
    drop(r);
    let other = [HEADER1_OFFSET, HEADER2_OFFSET][1 - cur] as usize;
    img[other + 1000] = 0xab;
    let sum = crate::crc32c::crc32c(&{
        let mut b = img[other..other + 4096].to_vec();
        b[4..8].fill(0);
        b
    });
    img[other + 4..other + 8].copy_from_slice(&sum.to_le_bytes());
    let (m, d) = mem(img);
    let mut w = InplaceWriter::open_in(d).unwrap();
    let seq = u64::from_le_bytes(w.header.1[8..16].try_into().unwrap());
    w.update_headers(u32::MAX).unwrap();
    let f = m.contents();
    assert_eq!(f[other + 1000], 0xab);
    let hs: Vec<Header> = [HEADER1_OFFSET, HEADER2_OFFSET]
        .iter()
        .map(|&at| {
            let b = &f[at as usize..at as usize + 4096];
            assert_eq!(invalid_reason(b), None);
            Header::parse(b)
        })
        .collect();
    assert_eq!(hs[1 - cur].sequence_number, seq + 1);
    assert_eq!(hs[cur].sequence_number, seq + 2);
    assert_eq!(hs[0].fields[16..], hs[1].fields[16..]);
    assert!(hs[0].log_guid.is_zero());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Refused with words naming the problem, the store unchanged; random damage to the BAT and the
/// headers gives an error or a writer, never a panic, and a refused store is never changed.
#[test]
fn damaged_images_are_refused_unchanged() {
    let good = base_image();
    let r = crate::open(mem(good.clone()).1).unwrap();
    let bat = r.bat().offset as usize;
    let block1 = r.bat().payload_entry(1);
    drop(r);
    let cases: [(&str, usize, u64, &str); 5] = [
        ("partially present", 2, 7, "partially-present"),
        ("reserved state", 2, 4, "reserved-4"),
        ("in the header section", 2, 6, "header section"),
        ("overlapping", 2, block1, "overlaps payload block 1"),
        (
            "sequence number at its end",
            usize::MAX,
            0,
            "sequence number",
        ),
    ];
    for (what, index, entry, words) in cases {
        let mut b = good.clone();
        if index == usize::MAX {
            for at in [HEADER1_OFFSET as usize, HEADER2_OFFSET as usize] {
                put64(
                    &mut b,
                    at + 8,
                    u64::MAX - u64::from(at == HEADER2_OFFSET as usize),
                );
                b[at + 4..at + 8].fill(0);
                let sum = crate::crc32c::crc32c(&b[at..at + 4096]);
                b[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
            }
        } else {
            put64(&mut b, bat + 8 * index, entry);
        }
        let (m, d) = mem(b.clone());
        let e = match open_writer_in(d).and_then(|mut w| w.write(0, Payload::data(vec![1; 512]))) {
            Ok(()) => panic!("{what}: written"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(words), "{what}: {e}");
        assert!(m.contents() == b, "{what}: changed");
    }
    let len = good.len() as u64;
    let mut rng = XorShift64::new(0x7668_6478_696e_706c);
    for _ in 0..60 {
        let mut b = good.clone();
        for _ in 0..3 {
            let i = rng.below(6) as usize;
            let e = (rng.below(len.div_ceil(MIB) + 2) << 20) | rng.below(8);
            put64(&mut b, bat + 8 * i, e);
            if rng.below(4) == 0 {
                let at = [HEADER1_OFFSET, HEADER2_OFFSET][rng.below(2) as usize] + rng.below(80);
                b[at as usize] ^= 1 << rng.below(8);
            }
        }
        let (m, d) = mem(b.clone());
        match open_writer_in(d) {
            Err(_) => assert!(m.contents() == b, "refused store changed"),
            Ok(mut w) => {
                let _ = w.write(0, Payload::data(vec![1u8; 5000]));
                let _ = w.write(MIB - 512, Payload::Zero(8192));
                let _ = w.write(2 * MIB, Payload::data(vec![2u8; 512]));
                let _ = w.finish();
            }
        }
    }
}
