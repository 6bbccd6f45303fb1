//! Shared by the lvm2 oracle tests: lvm2 run on loop devices over byte ranges of scratch files
//! (activation off, no backups), its reports parsed into facts, patterned volume contents
//! written where lvm2 says they lie and read back through vdisk-lvm.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use vdisk_core::{Concat, FileStorage, ImageReader, MemStorage, Window};
use vdisk_lvm::label::{calc_crc, metadata_pieces, Area, RawLocation, INITIAL_CRC};
use vdisk_lvm::{LogicalVolume, PhysicalVolume};
pub const TOOLS: &[&str] = &[
    "pvcreate",
    "vgcreate",
    "lvcreate",
    "lvextend",
    "lvconvert",
    "lvremove",
    "lvs",
    "pvs",
    "vgs",
    "losetup",
];

pub use vdisk_testutil::tools::{lvm, num, report, Loop};

/// Whether lvm2 and losetup are there and we are root (loop devices). Under `CI` their absence
/// is a failure, not a skip.
pub fn tools_available() -> bool {
    vdisk_testutil::tools::tools_available(
        TOOLS,
        true,
        "apt-get install lvm2 util-linux; run as root",
    )
}

/// One segment as `lvs` reports it.
#[derive(Debug, Clone)]
pub struct Seg {
    pub segtype: String,
    /// The volume's first extent in the segment.
    pub start: u64,
    /// Per stripe (one when linear): the device and its first and last extent.
    pub ranges: Vec<(String, u64, u64)>,
    pub stripe_size: u64,
}

/// What lvm2 says of one logical volume.
#[derive(Debug, Clone)]
pub struct LvFacts {
    pub size: u64,
    pub uuid: String,
    pub segs: Vec<Seg>,
}

/// What lvm2 says of a volume group and its visible volumes.
#[derive(Debug)]
pub struct VgFacts {
    pub uuid: String,
    pub seqno: u64,
    pub extent: u64,
    pub lvs: BTreeMap<String, LvFacts>,
    /// By device: its UUID without dashes, and its first extent (bytes from its start).
    pub pvs: BTreeMap<String, (String, u64)>,
}

pub fn facts(devs: &[&Loop], vg: &str) -> VgFacts {
    let v = report("vgs", devs, "vg_uuid,vg_seqno,vg_extent_size", &[vg]);
    assert_eq!(v.len(), 1, "{v:?}");
    let mut lvs = BTreeMap::new();
    for r in report("lvs", devs, "lv_name,lv_size,lv_uuid", &[vg]) {
        lvs.insert(
            r[0].clone(),
            LvFacts {
                size: num(&r[1]),
                uuid: r[2].clone(),
                segs: Vec::new(),
            },
        );
    }
    let fields = "lv_name,segtype,seg_start_pe,seg_pe_ranges,stripes,stripe_size";
    for r in report("lvs", devs, fields, &[vg]) {
        let ranges: Vec<(String, u64, u64)> = r[3]
            .split_whitespace()
            .map(|x| {
                let (dev, span) = x.rsplit_once(':').unwrap();
                let (a, b) = span.split_once('-').unwrap();
                (dev.to_string(), num(a), num(b))
            })
            .collect();
        let seg = Seg {
            segtype: r[1].clone(),
            start: num(&r[2]),
            stripe_size: num(&r[5]),
            ranges,
        };
        if matches!(seg.segtype.as_str(), "linear" | "striped") {
            assert_eq!(seg.ranges.len() as u64, num(&r[4]), "{r:?}");
        }
        lvs.get_mut(&r[0]).unwrap().segs.push(seg);
    }
    for lv in lvs.values_mut() {
        lv.segs.sort_by_key(|s| s.start);
    }
    let pvs = report("pvs", devs, "pv_name,pv_uuid,pe_start", &[])
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].replace('-', ""), num(&r[2]))))
        .collect();
    VgFacts {
        uuid: v[0][0].clone(),
        seqno: num(&v[0][1]),
        extent: num(&v[0][2]),
        lvs,
        pvs,
    }
}

/// The bytes of the volume tagged `tag` at `at..at + len`: little-endian words holding the tag
/// and the word's number in the volume, so that every 8 bytes of every volume differ.
pub fn lv_bytes(tag: u64, at: u64, len: usize) -> Vec<u8> {
    let first = at / 8;
    let last = (at + len as u64).div_ceil(8);
    let mut v = vec![0u8; ((last - first) * 8) as usize];
    for (w, c) in (first..).zip(v.chunks_exact_mut(8)) {
        c.copy_from_slice(&((tag << 48) | w).to_le_bytes());
    }
    let skip = (at - first * 8) as usize;
    v.drain(..skip);
    v.truncate(len);
    v
}

/// Where lvm2 says the volume's bytes lie in the file: (file offset, volume offset, length).
pub fn placement(vg: &VgFacts, lv: &LvFacts, loops: &[&Loop]) -> Vec<(u64, u64, u64)> {
    let at = |dev: &str, pe: u64| {
        let l = loops.iter().find(|l| l.dev == dev).unwrap();
        let (_, pe_start) = &vg.pvs[dev];
        let off = pe_start + pe * vg.extent;
        assert!(off < l.size);
        l.offset + off
    };
    let mut out = Vec::new();
    let mut next = 0;
    for s in &lv.segs {
        let seg_at = s.start * vg.extent;
        assert_eq!(seg_at, next, "lvs reports a gap before {s:?}");
        let n = s.ranges.len() as u64;
        let per = s.ranges[0].2 - s.ranges[0].1 + 1;
        assert!(s.ranges.iter().all(|r| r.2 - r.1 + 1 == per), "{s:?}");
        let bytes = n * per * vg.extent;
        if n == 1 {
            out.push((at(&s.ranges[0].0, s.ranges[0].1), seg_at, bytes));
        } else {
            let chunk = s.stripe_size;
            assert!(chunk > 0 && (per * vg.extent) % chunk == 0, "{s:?}");
            for k in 0..bytes / chunk {
                let r = &s.ranges[(k % n) as usize];
                out.push((at(&r.0, r.1) + (k / n) * chunk, seg_at + k * chunk, chunk));
            }
        }
        next = seg_at + bytes;
    }
    assert_eq!(next, lv.size, "segments of {lv:?}");
    out
}

/// Writes each volume's pattern (tagged 1, 2, ... in `names` order) where lvm2 says it lies.
pub fn write_patterns(file: &Path, vg: &VgFacts, names: &[&str], loops: &[&Loop]) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for (i, name) in names.iter().enumerate() {
        for (file_at, lv_at, len) in placement(vg, &vg.lvs[*name], loops) {
            f.write_all_at(&lv_bytes(i as u64 + 1, lv_at, len as usize), file_at)
                .unwrap();
        }
    }
}

/// Reads the whole volume (and a few reads across its segment boundaries) and compares it with
/// the pattern tagged `tag`.
pub fn check_bytes(lv: &LogicalVolume, tag: u64, facts: &LvFacts, extent: u64) {
    let r = lv
        .reader
        .as_ref()
        .unwrap_or_else(|e| panic!("{}: {e}", lv.name));
    assert_eq!(r.virtual_size(), facts.size, "{}", lv.name);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < facts.size {
        let n = buf.len().min((facts.size - at) as usize);
        r.read_at(&mut buf[..n], at).unwrap();
        let want = lv_bytes(tag, at, n);
        if buf[..n] == want[..] {
            at += n as u64;
            continue;
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            let w = (at + i as u64) & !7;
            let mut got = [0u8; 8];
            r.read_at(&mut got, w).unwrap();
            let got = u64::from_le_bytes(got);
            panic!(
                "{}: byte {} differs: the word at {w} is volume {}'s word at {}, not volume {tag}'s",
                lv.name,
                at + i as u64,
                got >> 48,
                (got & ((1 << 48) - 1)) * 8
            );
        }
        at += n as u64;
    }
    // Unaligned reads across each segment boundary (and across stripe chunks within them).
    for s in &facts.segs[1..] {
        let b = s.start * extent;
        for (back, len) in [(3u64, 10usize), (70_000, 150_000), (1, 1)] {
            let from = b.saturating_sub(back);
            let len = len.min((facts.size - from) as usize);
            let mut v = vec![0u8; len];
            r.read_at(&mut v, from).unwrap();
            assert_eq!(v, lv_bytes(tag, from, len), "{} at {from}", lv.name);
        }
    }
    let mut one = [0u8; 1];
    assert!(
        r.read_at(&mut one, facts.size).is_err(),
        "a read past the end"
    );
}

pub fn reader(file: &Path) -> Arc<dyn ImageReader> {
    Arc::new(vdisk_raw::open(Arc::new(FileStorage::open(file).unwrap())).unwrap())
}

pub fn window(r: &Arc<dyn ImageReader>, l: &Loop) -> Arc<dyn ImageReader> {
    Arc::new(Window::new(r.clone(), l.offset, l.size).unwrap())
}

/// The PV on `dev`, which must be one.
pub fn pv(dev: &Arc<dyn ImageReader>) -> (Arc<dyn ImageReader>, PhysicalVolume) {
    let pv = vdisk_lvm::read_pv(dev.as_ref())
        .expect("read_pv")
        .expect("an LVM label");
    (dev.clone(), pv)
}

pub fn sparse(file: &Path, size: u64) {
    std::fs::File::create(file).unwrap().set_len(size).unwrap();
}

pub fn names(lvs: &[LogicalVolume]) -> Vec<&str> {
    lvs.iter().map(|l| l.name.as_str()).collect()
}

pub fn by_name<'a>(lvs: &'a [LogicalVolume], name: &str) -> &'a LogicalVolume {
    lvs.iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no volume {name} in {:?}", names(lvs)))
}

pub const MIB: u64 = 1 << 20;

/// `base` with the bytes at each offset replaced (in memory; the patches may not overlap).
pub fn patched(base: &Arc<dyn ImageReader>, patches: &[(u64, Vec<u8>)]) -> Arc<dyn ImageReader> {
    let mut ps: Vec<&(u64, Vec<u8>)> = patches.iter().collect();
    ps.sort_by_key(|p| p.0);
    let mut parts: Vec<Arc<dyn ImageReader>> = Vec::new();
    let mut at = 0;
    for (off, bytes) in ps {
        assert!(*off >= at, "overlapping patches");
        if *off > at {
            parts.push(Arc::new(Window::new(base.clone(), at, off - at).unwrap()));
        }
        // A raw reader rounds its size up to whole sectors: cut it to the patch.
        let mem = MemStorage::new("patch", bytes.clone()).shared();
        let mem: Arc<dyn ImageReader> = Arc::new(vdisk_raw::open(mem).unwrap());
        parts.push(Arc::new(Window::new(mem, 0, bytes.len() as u64).unwrap()));
        at = off + bytes.len() as u64;
    }
    let size = base.virtual_size();
    assert!(at <= size);
    if at < size {
        parts.push(Arc::new(Window::new(base.clone(), at, size - at).unwrap()));
    }
    Arc::new(Concat::new(parts).unwrap())
}

/// [`patched`], then given the checksums lvm2 would have written: the label's (sector 1), and
/// for the metadata area `area` its text's (when the header's raw_locn lies inside the area)
/// and its header's. What a test damages then reaches the parsers behind the checksums.
pub fn sealed(
    base: &Arc<dyn ImageReader>,
    patches: &[(u64, Vec<u8>)],
    area: Area,
) -> Arc<dyn ImageReader> {
    let dev = patched(base, patches);
    let crc = |b: &[u8]| calc_crc(INITIAL_CRC, b).to_le_bytes();
    let mut label = vec![0u8; 512];
    dev.read_at(&mut label, 512).unwrap();
    let c = crc(&label[20..]);
    label[16..20].copy_from_slice(&c);
    let mut hdr = vec![0u8; 512];
    dev.read_at(&mut hdr, area.offset).unwrap();
    let (offset, size) = (u64_at(&hdr, 40), u64_at(&hdr, 48));
    if offset >= 512 && offset < area.size && size > 0 && size <= area.size - 512 {
        let loc = RawLocation {
            offset,
            size,
            checksum: 0,
        };
        let mut text = Vec::new();
        for (at, len) in metadata_pieces(loc, area.size) {
            let start = text.len();
            text.resize(start + len as usize, 0);
            dev.read_at(&mut text[start..], area.offset + at).unwrap();
        }
        let c = crc(&text);
        hdr[56..60].copy_from_slice(&c);
    }
    let c = crc(&hdr[4..]);
    hdr[..4].copy_from_slice(&c);
    patched(&dev, &[(512, label), (area.offset, hdr)])
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
