//! Descriptors with tens of thousands of extents (issue 9): the memory vdisk holds is measured with a
//! counting global allocator (this test binary's own, so no other test's allocations count) while it
//! opens such a descriptor, reads every byte, walks block status over the whole disk and builds
//! `info`; the bounds are asserted. The same layouts with fewer extents (qemu is quadratic in the
//! extent count) are compared with qemu byte for byte, map for map and info for info. Sparse extent
//! files are made by qemu-img; flat extent files are plain files with patterned bytes.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vdisk_core::storage::HostFiles;
use vdisk_core::{FileStorage, ImageReader};
use vdisk_testutil::*;
use vdisk_vmdk::VmdkReader;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes live and the most live since the last [`measure`].
struct Counting;

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only add and
// subtract the sizes of successful allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests here run one at a time: the counters are global.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes an operation held: at most at once, and still after it returned (with its result).
#[derive(Debug, Clone, Copy)]
struct Held {
    peak: usize,
    kept: usize,
}

/// Runs `f` and returns its result with the bytes it held beyond what was live before.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Held) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let held = Held {
        peak: PEAK.load(Ordering::Relaxed).saturating_sub(base),
        kept: LIVE.load(Ordering::Relaxed).saturating_sub(base),
    };
    (r, held)
}

/// Flat extent files: this many, of this many sectors each.
const FLAT_FILES: usize = 4;
const FLAT_SECTORS: u64 = 2048;

/// The byte at `pos` of flat file `k`.
fn flat_byte(k: usize, pos: u64) -> u8 {
    (pos.wrapping_mul(7) ^ (pos >> 9) ^ (k as u64 * 0x35)) as u8
}

/// One extent line of a test descriptor.
#[derive(Clone, Copy)]
enum Line {
    Flat {
        file: usize,
        sectors: u64,
        offset: u64,
    },
    Zero {
        sectors: u64,
    },
    Sparse {
        file: usize,
    },
}

/// A test descriptor: `n` extent lines, `sparse` sparse extent files of `sparse_sectors` each (some
/// stream-optimized when `compressed`), ZERO extents when `zero`.
///
/// qemu differs from the VMware spec in ways that the qemu-compared layouts avoid: it skips ZERO
/// extent lines (the extents after them move up), it fails reading a compressed sparse extent that
/// another extent follows ("Invalid argument"), and it reads a sparse extent smaller than its grain
/// up to the end of the grain, over the extents that follow.
#[derive(Clone, Copy)]
struct Layout {
    n: usize,
    sparse: usize,
    sparse_sectors: u64,
    compressed: bool,
    zero: bool,
}

/// Extent `i` of a layout: FLAT extents of 1-8 sectors at varying offsets (some running past the end
/// of their file, which reads as zeros), ZERO extents, and one sparse extent in three.
fn line(i: usize, l: Layout) -> Line {
    if l.sparse > 0 && i % 3 == 0 {
        return Line::Sparse {
            file: (i / 3) % l.sparse,
        };
    }
    if l.zero && i % 7 == 3 {
        return Line::Zero {
            sectors: 1 + (i % 5) as u64,
        };
    }
    Line::Flat {
        file: i % FLAT_FILES,
        sectors: 1 + (i % 8) as u64,
        offset: (i as u64 * 37) % (FLAT_SECTORS + 12),
    }
}

fn descriptor(l: Layout) -> String {
    let mut s = String::from(
        "# Disk DescriptorFile\nversion=1\nCID=0badcafe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\n",
    );
    for i in 0..l.n {
        let text = match line(i, l) {
            Line::Flat {
                file,
                sectors,
                offset,
            } => format!("RW {sectors} FLAT \"f{file}.bin\" {offset}\n"),
            Line::Zero { sectors } => format!("RW {sectors} ZERO\n"),
            Line::Sparse { file } => format!("RW {} SPARSE \"s{file}.vmdk\"\n", l.sparse_sectors),
        };
        s += &text;
    }
    s + "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n"
}

/// The test's own model of the disk: what each extent reads as.
struct Model {
    flat: Vec<Vec<u8>>,
    sparse: Vec<Vec<u8>>,
}

impl Model {
    /// The disk's bytes, fed to `sink` extent by extent.
    fn each_extent(&self, l: Layout, mut sink: impl FnMut(&[u8])) {
        let zeros = vec![0u8; 4096];
        for i in 0..l.n {
            match line(i, l) {
                Line::Flat {
                    file,
                    sectors,
                    offset,
                } => {
                    let data = &self.flat[file];
                    let (at, len) = ((offset * 512) as usize, (sectors * 512) as usize);
                    let end = (at + len).min(data.len());
                    let have = data.get(at..end).unwrap_or(&[]);
                    sink(have);
                    sink(&zeros[..len - have.len()]);
                }
                Line::Zero { sectors } => sink(&zeros[..(sectors * 512) as usize]),
                Line::Sparse { file } => sink(&self.sparse[file]),
            }
        }
    }
}

/// Writes the flat files and the layout's small sparse files made by qemu: data, an explicit zero
/// write, an empty one, and with `compressed` one in four stream-optimized. Returns the model.
fn fixtures(s: &Scratch, l: Layout) -> Model {
    let flat: Vec<Vec<u8>> = (0..FLAT_FILES)
        .map(|k| (0..FLAT_SECTORS * 512).map(|p| flat_byte(k, p)).collect())
        .collect();
    for (k, data) in flat.iter().enumerate() {
        std::fs::write(s.join(&format!("f{k}.bin")), data).unwrap();
    }
    let mut model = Model {
        flat,
        sparse: Vec::new(),
    };
    for k in 0..l.sparse {
        let p = s.join(&format!("s{k}.vmdk"));
        let size = (l.sparse_sectors * 512).to_string();
        let writes = [
            format!("write -P {:#x} 0 4k", 0x50 + k),
            format!("write -P {:#x} 1k 512", 0x90 + k),
        ];
        if l.compressed && k % 4 == 3 {
            // Compressed grains: convert a raw file into streamOptimized.
            let raw = s.join(&format!("s{k}.raw"));
            qemu_create(&raw, "raw", "", &size);
            qemu_io("raw", &raw, &[&writes[0], &writes[1]]);
            qemu_img(&[
                "convert",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                raw.to_str().unwrap(),
                p.to_str().unwrap(),
            ]);
        } else {
            qemu_create(&p, "vmdk", "", &size);
            if k % 4 != 2 {
                qemu_io("vmdk", &p, &[&writes[0], &writes[1], "write -z 6k 1k"]);
            }
        }
        model.sparse.push(qemu_raw_bytes(&p, Some("vmdk")));
    }
    model
}

fn open_path(p: &Path) -> VmdkReader {
    let st = Arc::new(FileStorage::open(p).unwrap());
    vdisk_vmdk::open(st, Arc::new(HostFiles))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Reads the whole disk in `buf`-sized pieces, comparing with the model as it goes.
/// `pending` is the caller's, with room for two buffers, so that the test's own memory is not counted.
fn read_and_compare(
    r: &VmdkReader,
    model: &Model,
    l: Layout,
    buf: &mut [u8],
    pending: &mut Vec<u8>,
) {
    pending.clear();
    let mut off = 0u64;
    let size = r.virtual_size();
    let mut check = |want: &[u8], pending: &mut Vec<u8>, off: &mut u64| {
        pending.extend_from_slice(want);
        while pending.len() >= buf.len()
            || (*off + pending.len() as u64 == size && !pending.is_empty())
        {
            let k = buf.len().min(pending.len());
            r.read_at(&mut buf[..k], *off)
                .unwrap_or_else(|e| panic!("read at {off}: {e}"));
            if let Some(i) = buf[..k].iter().zip(&pending[..k]).position(|(a, b)| a != b) {
                panic!(
                    "byte {:#x}: vdisk {:#04x}, model {:#04x}",
                    *off + i as u64,
                    buf[i],
                    pending[i]
                );
            }
            pending.drain(..k);
            *off += k as u64;
        }
    };
    model.each_extent(l, |b| check(b, pending, &mut off));
    assert_eq!(off, size, "the model covers the whole disk");
}

/// Block status over the whole disk; returns the number of calls.
fn walk_status(r: &VmdkReader) -> usize {
    let (mut off, mut calls) = (0u64, 0usize);
    while off < r.virtual_size() {
        let e = r.block_status(off, r.virtual_size() - off).unwrap();
        assert_eq!(e.offset, off);
        off += e.length;
        calls += 1;
    }
    calls
}

/// Opens, reads and maps a descriptor; returns the bytes held by open, read + map, and info.
fn memory_of(l: Layout) -> (Held, Held, Held) {
    let s = Scratch::new("vmdk-mem");
    let model = fixtures(&s, l);
    let img = s.join("many.vmdk");
    std::fs::write(&img, descriptor(l)).unwrap();
    let (n, sparse) = (l.n, l.sparse);
    let mut buf = vec![0u8; 1 << 20];
    let mut pending = Vec::with_capacity(3 << 20);
    let (r, open) = measure(|| open_path(&img));
    let (calls, read) = measure(|| {
        read_and_compare(&r, &model, l, &mut buf, &mut pending);
        walk_status(&r)
    });
    assert!(calls >= n / 2, "{calls} block-status runs for {n} extents");
    let (info, info_peak) = measure(|| r.info().unwrap());
    let (_, data) = info.format_specific.unwrap();
    assert_eq!(data["extents"].as_array().unwrap().len(), n);
    eprintln!(
        "{n} extents ({sparse} sparse files): open {open:?} ({} B/extent kept), read+map {read:?}, \
         info {info_peak:?} ({} B/extent)",
        open.kept / n,
        info_peak.peak / n
    );
    (open, read, info_peak)
}

/// Bytes per extent that `info` may use: qemu's extent object (three or four keys and the file name)
/// and the child file entry, which are output and grow with the extent count.
fn info_bound(s: &Scratch) -> usize {
    600 + 2 * s.path().as_os_str().len()
}

#[test]
fn twenty_thousand_flat_and_zero_extents_use_little_memory() {
    let _g = serial();
    let n = 20_000;
    let (open, read, info) = memory_of(Layout {
        n,
        sparse: 0,
        sparse_sectors: 0,
        compressed: false,
        zero: true,
    });
    // Before: open 307 B per extent kept (one open file each), info 1148 B per extent at its peak.
    assert!(open.peak <= n * 160, "open: {open:?}");
    assert!(open.kept <= n * 112, "open: {open:?}");
    assert!(read.peak <= 64 << 10, "read and map: {read:?}");
    assert!(
        info.peak <= n * info_bound(&Scratch::new("len")),
        "info: {info:?}"
    );
}

#[test]
fn twenty_thousand_sparse_flat_and_zero_extents_use_bounded_memory() {
    if !qemu_available() {
        return;
    }
    let _g = serial();
    // 6667 sparse extents over 8 qemu-made files (two stream-optimized), with flat and zero ones.
    let n = 20_000;
    let l = Layout {
        n,
        sparse: 8,
        sparse_sectors: 16,
        compressed: true,
        zero: true,
    };
    let (open, read, info) = memory_of(l);
    assert!(open.peak <= n * 160, "open: {open:?}");
    // What reading keeps is bounded by the limits, not by the number of extents: before, 30 MB here.
    // 128 loaded extents with a 2 KiB grain table, a small directory and (for compressed ones) a
    // 64 KiB decompressed grain each.
    assert!(read.peak <= 10 << 20, "read and map: {read:?}");
    assert!(
        info.peak <= n * info_bound(&Scratch::new("len")),
        "info: {info:?}"
    );
    // Half as many extents: reading holds about as much (bounded), open and info scale.
    let (open2, read2, _) = memory_of(Layout { n: n / 2, ..l });
    assert!(read2.peak * 2 > read.peak, "{read2:?} vs {read:?}");
    assert!(open2.kept * 3 < open.kept * 2, "{open2:?} vs {open:?}");
}

/// The `format-specific` data of our info and qemu's for `img`.
fn format_specific(r: &VmdkReader, img: &Path) -> (serde_json::Value, serde_json::Value) {
    let (_, ours) = r.info().unwrap().format_specific.unwrap();
    (ours, qemu_info_json(img)["format-specific"]["data"].clone())
}

/// Bytes, map and info of a layout compared with qemu; reads from 4 threads at once too.
fn compare_with_qemu(l: Layout) {
    let s = Scratch::new("vmdk-many-qemu");
    fixtures(&s, l);
    let img = s.join("many.vmdk");
    std::fs::write(&img, descriptor(l)).unwrap();
    let r = open_path(&img);
    let oracle = qemu_raw_bytes(&img, Some("vmdk"));
    assert_same_bytes(&read_all(&r, 100_000), &oracle, "many extents");
    assert_eq!(vdisk_map_json(&r), qemu_map_json(&img, Some("vmdk")), "map");
    let (ours, theirs) = format_specific(&r, &img);
    assert_eq!(ours, theirs, "format-specific info");
    // Threads reading interleaved 40 KiB pieces (so sparse extents are loaded and evicted under
    // each other's feet) read what qemu reads.
    let chunk = 40 << 10;
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (r, oracle) = (&r, &oracle);
            sc.spawn(move || {
                let mut b = vec![0u8; chunk];
                for (i, want) in oracle.chunks(chunk).enumerate().skip(t).step_by(4) {
                    r.read_at(&mut b[..want.len()], (i * chunk) as u64).unwrap();
                    assert_same_bytes(&b[..want.len()], want, "threaded read");
                }
            });
        }
    });
}

#[test]
fn thousand_flat_extents_match_qemu() {
    if !qemu_available() {
        return;
    }
    let _g = serial();
    compare_with_qemu(Layout {
        n: 1000,
        sparse: 0,
        sparse_sectors: 0,
        compressed: false,
        zero: false,
    });
}

#[test]
fn thousand_extents_with_sparse_ones_loaded_on_use_match_qemu() {
    if !qemu_available() {
        return;
    }
    let _g = serial();
    // 334 sparse extents: beyond the 64 kept loaded, the others are loaded on use and evicted.
    compare_with_qemu(Layout {
        n: 1000,
        sparse: 8,
        sparse_sectors: 128,
        compressed: false,
        zero: false,
    });
}

/// Sets the soft limit on open files, returning the previous one.
fn set_open_files_limit(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid rlimit struct of this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn more_extent_files_than_the_open_file_limit_read_correctly() {
    let _g = serial();
    // 1500 flat extents, each in its own file, under a limit of 300 open files: before, opening
    // failed with "Too many open files" (one descriptor per extent).
    let s = Scratch::new("vmdk-many-files");
    let n = 1500;
    let mut desc = String::from(
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n",
    );
    let mut want = Vec::new();
    for i in 0..n {
        let data: Vec<u8> = (0..4096).map(|p| flat_byte(i, p)).collect();
        std::fs::write(s.join(&format!("d{i}.bin")), &data).unwrap();
        // Every third extent names an earlier file again, at an offset.
        let (file, offset) = if i % 3 == 2 { (i / 2, 2) } else { (i, 0) };
        desc += &format!("RW 4 FLAT \"d{file}.bin\" {offset}\n");
        want.extend((0..2048).map(|p| flat_byte(file, p + offset * 512)));
    }
    let img = s.join("files.vmdk");
    std::fs::write(&img, desc).unwrap();
    let before = open_fds();
    let old = set_open_files_limit(300);
    let got = std::panic::catch_unwind(|| {
        let r = open_path(&img);
        let fds = open_fds();
        let mut got = vec![0u8; want.len()];
        // Backwards, so that the files closed after opening are reopened.
        for (i, c) in got.chunks_mut(1 << 16).enumerate().rev() {
            r.read_at(c, (i << 16) as u64).unwrap();
        }
        (got, fds, open_fds())
    });
    set_open_files_limit(old);
    let (got, after_open, after_read) = got.unwrap();
    assert_same_bytes(&got, &want, "1500 extent files");
    for fds in [after_open, after_read] {
        assert!(
            fds <= before + 2 * 128 + 1,
            "{fds} descriptors open (before: {before})"
        );
    }
}
