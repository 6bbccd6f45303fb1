//! The conversion engine on in-memory images: correctness over extent layouts, what is read and
//! written, ordering, errors, memory bound, progress, backing images, encoders.

mod common;

use common::{caps, LayoutReader, MemWriter, RleEncoder};
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vdisk_convert::{convert, ConvertOptions};
use vdisk_core::ExtentKind::{self, Data, Unallocated, Zero};

const K: u64 = 1024;

fn pattern(off: u64) -> u8 {
    (off / 512 % 251) as u8 + 1
}

fn no_progress(_: u64, _: u64) {}

fn opts(workers: usize) -> ConvertOptions {
    ConvertOptions {
        workers,
        ..ConvertOptions::default()
    }
}

/// A layout with data, zeros inside data (short and long), known-zero and unallocated extents.
fn mixed() -> LayoutReader {
    let mut r = LayoutReader::new(
        &[
            (64 * K, Data),
            (128 * K, Zero),
            (3 * K, Data),
            (5 * K, Unallocated),
            (2048 * K, Data),
            (60 * K, Zero),
        ],
        pattern,
    );
    // Zero runs inside the data: 1 KiB (stays data), 16 KiB (becomes a gap), one at an odd place.
    let base = (64 + 128 + 3 + 5) * K as usize;
    r.data[base + 4096..base + 5120].fill(0);
    r.data[base + 65536..base + 65536 + 16384].fill(0);
    r.data[base + 200_000..base + 230_000].fill(0);
    r
}

#[test]
fn converts_bytes_exactly_and_skips_zeros_on_zero_initialized_targets() {
    let src = mixed();
    let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, true, true));
    let stats = convert(&src, Box::new(w), &opts(2), &no_progress).unwrap();
    let r = rec.lock().unwrap();
    assert!(r.finished);
    assert!(r.image == src.data, "content differs");
    assert!(
        r.writes.iter().all(|w| w.2 == "data"),
        "no zero payloads on a zero-initialised target"
    );
    assert!(
        src.reads_of_zero_extents().is_empty(),
        "zero extents were read"
    );
    assert_eq!(stats.bytes_read, (64 + 3 + 2048) * K);
    assert_eq!(
        stats.data_bytes_written + stats.zero_bytes,
        src.virtual_size_u64()
    );
    // The 16 KiB and 30 KB zero runs became gaps (the 1 KiB one stayed data).
    assert!(
        stats.zero_bytes >= (128 + 5 + 60 + 16 + 24) * K,
        "zero bytes {}",
        stats.zero_bytes
    );
    let written: u64 = r.writes.iter().map(|w| w.1).sum();
    assert_eq!(written, stats.data_bytes_written);
}

#[test]
fn zero_runs_become_zero_payloads_when_the_target_is_not_zero() {
    let src = mixed();
    let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, false));
    convert(&src, Box::new(w), &opts(2), &no_progress).unwrap();
    let r = rec.lock().unwrap();
    assert!(
        r.image == src.data,
        "content differs (writer starts as 0xEE)"
    );
    assert!(r.writes.iter().any(|w| w.2 == "zero"));
    // In order: offsets strictly increase and cover the disk.
    let mut pos = 0;
    for (off, len, _) in &r.writes {
        assert_eq!(*off, pos, "writes in order and contiguous");
        pos += len;
    }
    assert_eq!(pos, src.virtual_size_u64());
    drop(r);
    // --target-is-zero: the same writer gets no zero payloads.
    let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, false));
    let o = ConvertOptions {
        target_is_zero: true,
        ..opts(2)
    };
    convert(&src, Box::new(w), &o, &no_progress).unwrap();
    assert!(rec.lock().unwrap().writes.iter().all(|w| w.2 == "data"));
}

#[test]
fn min_sparse_zero_writes_everything_as_data() {
    let src = mixed();
    let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
    let o = ConvertOptions {
        min_sparse: 0,
        ..opts(2)
    };
    let stats = convert(&src, Box::new(w), &o, &no_progress).unwrap();
    let r = rec.lock().unwrap();
    assert!(r.image == src.data);
    assert!(r.writes.iter().all(|w| w.2 == "data"));
    assert_eq!(
        r.writes.iter().map(|w| w.1).sum::<u64>(),
        src.virtual_size_u64()
    );
    assert_eq!(stats.zero_bytes, 0);
    assert!(
        src.reads_of_zero_extents().is_empty(),
        "zeros are generated, not read"
    );
}

#[test]
fn workers_and_write_order_do_not_change_the_result() {
    let src = mixed();
    let mut images = Vec::new();
    for workers in [1, 2, 4] {
        for ooo in [false, true] {
            let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, true, false));
            let o = ConvertOptions {
                out_of_order: ooo,
                chunk_size: 64 * K,
                ..opts(workers)
            };
            convert(&src, Box::new(w), &o, &no_progress).unwrap();
            let r = rec.lock().unwrap();
            let mut writes = r.writes.clone();
            writes.sort();
            images.push((r.image.clone(), writes));
        }
    }
    for (img, writes) in &images[1..] {
        assert!(*img == images[0].0, "bytes differ");
        assert_eq!(*writes, images[0].1, "same writes in some order");
    }
}

#[test]
fn granularity_is_respected() {
    let src = mixed();
    let size = src.virtual_size_u64();
    let (w, rec) = MemWriter::new(size, caps(64 * K, false, false));
    convert(&src, Box::new(w), &opts(2), &no_progress).unwrap();
    let r = rec.lock().unwrap();
    assert!(r.image == src.data);
    for (off, len, _) in &r.writes {
        assert_eq!(off % (64 * K), 0, "write at {off}");
        assert!(
            (off + len) % (64 * K) == 0 || off + len == size,
            "write end {}",
            off + len
        );
    }
}

#[test]
fn failing_writer_stops_with_its_error() {
    let src = mixed();
    let (mut w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, false));
    w.fail_on_write = Some(3);
    let e = convert(
        &src,
        Box::new(w),
        &ConvertOptions {
            chunk_size: 64 * K,
            ..opts(2)
        },
        &no_progress,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("injected write error on write 3"),
        "{e}"
    );
    let r = rec.lock().unwrap();
    assert!(!r.finished, "writer must not be finished");
    assert_eq!(r.writes.len(), 2, "nothing written after the error");
}

#[test]
fn failing_reader_stops_promptly() {
    let mut src = LayoutReader::new(&[(64 << 20, Data)], pattern);
    src.fail_read_at = Some(3 << 20);
    let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
    let e = convert(
        &src,
        Box::new(w),
        &ConvertOptions {
            chunk_size: 256 * K,
            ..opts(2)
        },
        &no_progress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("injected read error"), "{e}");
    assert!(!rec.lock().unwrap().finished);
    let reads = src.reads.lock().unwrap().len();
    assert!(
        reads < 64,
        "{reads} reads of 256 KiB: the error did not stop the conversion"
    );
}

#[test]
fn memory_stays_bounded_with_a_slow_writer() {
    let chunk = 64 * K;
    let workers = 2;
    let mut src = LayoutReader::new(&[(16 << 20, Data)], pattern);
    let (mut w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
    w.delay = Some(Duration::from_millis(1));
    src.writer_pos = Some(Arc::clone(&w.pos));
    let o = ConvertOptions {
        chunk_size: chunk,
        ..opts(workers)
    };
    let stats = convert(&src, Box::new(w), &o, &no_progress).unwrap();
    assert!(rec.lock().unwrap().image == src.data);
    // One buffer per worker plus two finished chunks waiting for the writer.
    let bound = (workers as u64 + 2) * chunk;
    let ahead = src.max_ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= bound,
        "reads ran {ahead} bytes ahead of the writer (bound {bound})"
    );
    assert!(
        stats.peak_in_flight <= workers + 2,
        "{}",
        stats.peak_in_flight
    );
    assert!(stats.peak_in_flight > 1, "no parallelism at all");
}

#[test]
fn compressed_sources_keep_no_more_tasks_in_flight_than_one_worker_per_core() {
    // Decompressing is CPU work: once the source reports compressed data, the conversion runs as
    // with one worker per core, whatever `-m` asks for. Uncompressed data keeps every worker busy.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = 2 * cores + 2;
    for (kind, bound) in [(ExtentKind::Compressed, cores + 2), (Data, workers + 2)] {
        let src = LayoutReader::new(&[(16 << 20, kind)], pattern);
        let (mut w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
        // A slow writer, so that finished tasks pile up to whatever bound applies.
        w.delay = Some(Duration::from_millis(1));
        let o = ConvertOptions {
            chunk_size: 64 * K,
            ..opts(workers)
        };
        let stats = convert(&src, Box::new(w), &o, &no_progress).unwrap();
        assert!(
            rec.lock().unwrap().image == src.data,
            "{kind:?}: content differs"
        );
        let peak = stats.peak_in_flight;
        assert!(
            peak <= bound,
            "{kind:?}: {peak} tasks in flight, bound {bound}"
        );
        if kind == Data {
            assert!(peak > cores + 2, "uncompressed data: only {peak} in flight");
        }
    }
}

#[test]
fn progress_is_monotonic_and_reaches_total() {
    let src = mixed();
    let size = src.virtual_size_u64();
    let seen = Mutex::new(Vec::new());
    let (w, _rec) = MemWriter::new(size, caps(512, true, true));
    let o = ConvertOptions {
        out_of_order: true,
        chunk_size: 128 * K,
        ..opts(3)
    };
    convert(&src, Box::new(w), &o, &|d, t| {
        seen.lock().unwrap().push((d, t))
    })
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() > 3);
    assert!(seen.windows(2).all(|p| p[0].0 <= p[1].0 && p[1].1 == size));
    assert_eq!(*seen.last().unwrap(), (size, size));
}

#[test]
fn backing_image_gets_only_the_differences() {
    let g = 64 * K;
    // Source: 1 MiB data, 512 KiB zeros, 512 KiB data.
    let src = LayoutReader::new(
        &[(1 << 20, Data), (512 * K, Zero), (512 * K, Data)],
        pattern,
    );
    // Backing: same bytes in the first 512 KiB, different in the next 512 KiB, data under the source's
    // zeros in its first half only, shorter than the source.
    let mut bdata = src.data[..(1 << 20)].to_vec();
    for b in &mut bdata[(512 * K + 4096) as usize..(1 << 20)] {
        *b ^= 0x5a;
    }
    let bsize = (1 << 20) + 256 * K + 1000;
    let mut layout = vec![(1 << 20, Data), (256 * K, Data)];
    layout.push((bsize - (1 << 20) - 256 * K, Zero));
    let mut backing = LayoutReader::new(&layout, |o| (o % 7) as u8 + 1);
    backing.data[..(1 << 20)].copy_from_slice(&bdata);
    let backing: Arc<dyn vdisk_core::ImageReader> = Arc::new(backing);
    let size = src.virtual_size_u64();
    let (w, rec) = MemWriter::new(size, caps(g, false, true));
    let o = ConvertOptions {
        backing: Some(Arc::clone(&backing)),
        ..opts(2)
    };
    let stats = convert(&src, Box::new(w), &o, &no_progress).unwrap();
    let r = rec.lock().unwrap();
    // Overlay the writes on the backing image: must give the source.
    let mut view = vec![0u8; size as usize];
    backing.read_at(&mut view[..bsize as usize], 0).unwrap();
    for (off, len, _) in &r.writes {
        view[*off as usize..(off + len) as usize]
            .copy_from_slice(&r.image[*off as usize..(off + len) as usize]);
    }
    assert!(view == src.data, "overlay over backing differs from source");
    // Unchanged: the first 512 KiB (equal) and the source zeros past the backing's data.
    assert!(
        r.writes.iter().all(|(off, _, _)| *off >= 512 * K),
        "{:?}",
        r.writes
    );
    assert!(
        r.writes.iter().any(|w| w.2 == "zero"),
        "zeros over backing data must be written"
    );
    assert_eq!(stats.unchanged_bytes, 512 * K + 256 * K);
    for (off, len, _) in &r.writes {
        assert_eq!(off % g, 0);
        assert!((off + len) % g == 0 || off + len == size);
    }
}

#[test]
fn encoder_runs_on_data_granules() {
    let g = 4 * K;
    let src = LayoutReader::new(&[(256 * K, Data), (64 * K, Zero), (100 * K, Data)], |o| {
        (o / 1000) as u8 | 1
    });
    let (mut w, rec) = MemWriter::new(src.virtual_size_u64(), caps(g, false, true));
    w.encoder = Some(Arc::new(RleEncoder));
    convert(&src, Box::new(w), &opts(2), &no_progress).unwrap();
    let r = rec.lock().unwrap();
    assert!(r.image == src.data);
    assert!(
        r.writes.iter().all(|w| w.2 == "encoded"),
        "this pattern always compresses"
    );
    assert!(r
        .writes
        .iter()
        .all(|(off, len, _)| off % g == 0 && *len == g));
}

#[test]
fn bad_options_are_refused() {
    let src = mixed();
    for o in [
        ConvertOptions {
            min_sparse: 1000,
            ..opts(1)
        },
        ConvertOptions {
            min_sparse: 32 << 20,
            ..opts(1)
        },
        ConvertOptions {
            chunk_size: 0,
            ..opts(1)
        },
    ] {
        let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
        assert!(
            convert(&src, Box::new(w), &o, &no_progress).is_err(),
            "{o:?}"
        );
        assert!(!rec.lock().unwrap().finished);
    }
    // qemu-img's exact messages (qemu-img convert -S 1000 ...; convert -n --target-is-zero -B ...).
    let (w, _) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
    let e = convert(
        &src,
        Box::new(w),
        &ConvertOptions {
            min_sparse: 1000,
            ..opts(1)
        },
        &no_progress,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. \
         Select 0 to disable sparse detection (fully allocates output)."
    );
    let backing: Arc<dyn vdisk_core::ImageReader> = Arc::new(mixed());
    let (w, _) = MemWriter::new(src.virtual_size_u64(), caps(512, false, true));
    let o = ConvertOptions {
        target_is_zero: true,
        backing: Some(backing),
        ..opts(1)
    };
    let e = convert(&src, Box::new(w), &o, &no_progress).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cannot use --target-is-zero when the destination image has a backing file"
    );
    let (w, _) = MemWriter::new(src.virtual_size_u64(), caps(1000, false, true));
    assert!(
        convert(&src, Box::new(w), &opts(1), &no_progress).is_err(),
        "granularity not a power of two"
    );
}

#[test]
fn empty_image_finishes() {
    let src = LayoutReader::new(&[], pattern);
    let (w, rec) = MemWriter::new(0, caps(512, false, true));
    convert(&src, Box::new(w), &opts(1), &no_progress).unwrap();
    assert!(rec.lock().unwrap().finished);
}

trait Size {
    fn virtual_size_u64(&self) -> u64;
}

impl Size for LayoutReader {
    fn virtual_size_u64(&self) -> u64 {
        vdisk_core::ImageReader::virtual_size(self)
    }
}

fn kind_strategy() -> impl Strategy<Value = ExtentKind> {
    prop_oneof![
        Just(Data),
        Just(Zero),
        Just(Unallocated),
        Just(ExtentKind::ZeroData)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_layouts_convert_exactly(
        layout in proptest::collection::vec((1u64..40_000, kind_strategy()), 0..12),
        holes in proptest::collection::vec((0u64..400_000, 1u64..20_000), 0..6),
        gran_pow in 9u32..17,
        zero_init in any::<bool>(),
        ooo in any::<bool>(),
        workers in 1usize..4,
        sparse in prop_oneof![Just(0u64), Just(512u64), Just(4096u64), Just(65536u64)],
        chunk_kib in 1u64..300,
    ) {
        let mut src = LayoutReader::new(&layout, |o| (o % 253) as u8 + 1);
        let size = src.data.len() as u64;
        for (at, len) in holes {
            if size > 0 {
                let a = (at % size) as usize;
                let b = (a + len as usize).min(size as usize);
                src.data[a..b].fill(0);
            }
        }
        let g = 1u64 << gran_pow;
        let (w, rec) = MemWriter::new(size, caps(g, ooo, zero_init));
        let o = ConvertOptions { workers, out_of_order: ooo, min_sparse: sparse, chunk_size: chunk_kib * 1024, ..ConvertOptions::default() };
        convert(&src, Box::new(w), &o, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        prop_assert!(r.finished);
        prop_assert!(r.image == src.data, "content differs");
        let bad = src.reads_of_zero_granules(g);
        prop_assert!(bad.is_empty(), "whole granules of zero extents were read: {:?}", bad);
        for (off, len, _) in &r.writes {
            prop_assert!(off % g == 0 && ((off + len) % g == 0 || off + len == size), "unaligned write {off}+{len}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_layouts_over_a_backing_image_overlay_exactly(
        layout in proptest::collection::vec((1u64..40_000, kind_strategy()), 1..10),
        blayout in proptest::collection::vec((1u64..40_000, kind_strategy()), 0..10),
        same_from in 0u64..200_000,
        gran_pow in 9u32..17,
        sparse in prop_oneof![Just(0u64), Just(4096u64)],
        workers in 1usize..3,
    ) {
        let src = LayoutReader::new(&layout, |o| (o % 253) as u8 + 1);
        // The backing image shares the source's bytes from `same_from` on, where both have data.
        let mut backing = LayoutReader::new(&blayout, |o| (o % 241) as u8 + 2);
        let n = backing.data.len().min(src.data.len());
        for i in (same_from as usize).min(n)..n {
            if backing.data[i] != 0 {
                backing.data[i] = src.data[i];
            }
        }
        let backing: Arc<dyn vdisk_core::ImageReader> = Arc::new(backing);
        let size = src.data.len() as u64;
        let g = 1u64 << gran_pow;
        let (w, rec) = MemWriter::new(size, caps(g, false, true));
        let o = ConvertOptions { workers, min_sparse: sparse, backing: Some(Arc::clone(&backing)), ..ConvertOptions::default() };
        convert(&src, Box::new(w), &o, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        let bsize = backing.virtual_size().min(size) as usize;
        let mut view = vec![0u8; size as usize];
        backing.read_at(&mut view[..bsize], 0).unwrap();
        for (off, len, _) in &r.writes {
            view[*off as usize..(off + len) as usize].copy_from_slice(&r.image[*off as usize..(off + len) as usize]);
        }
        prop_assert!(view == src.data, "overlay over backing differs from source");
    }
}

/// A reader whose block status is broken in a chosen way, or whose reads panic.
struct Misbehaving {
    inner: LayoutReader,
    mode: u8,
}

impl vdisk_core::ImageReader for Misbehaving {
    fn format_name(&self) -> &'static str {
        "bad"
    }
    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size_u64()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<()> {
        if self.mode == 3 {
            panic!("reader bug");
        }
        self.inner.read_at(buf, offset)
    }
    fn block_status(&self, offset: u64, max_len: u64) -> vdisk_core::Result<vdisk_core::Extent> {
        let mut e = self.inner.block_status(offset, max_len)?;
        match self.mode {
            0 => e.length = 0,
            1 => e.offset += 512,
            2 => return Err(vdisk_core::Error::Other("status failed".into())),
            _ => {}
        }
        Ok(e)
    }
    fn info(&self) -> vdisk_core::Result<vdisk_core::ImageInfo> {
        self.inner.info()
    }
}

#[test]
fn broken_readers_give_errors_not_hangs_or_panics() {
    for mode in 0..4u8 {
        let r = Misbehaving {
            inner: LayoutReader::new(&[(256 * K, Data), (64 * K, Zero)], pattern),
            mode,
        };
        let (w, rec) = MemWriter::new(320 * K, caps(512, false, true));
        let e = convert(&r, Box::new(w), &opts(2), &no_progress).unwrap_err();
        assert!(!rec.lock().unwrap().finished, "mode {mode}");
        assert!(!e.to_string().is_empty());
        if mode < 3 {
            let c = vdisk_convert::compare(&r, &r.inner, false).unwrap();
            assert_eq!(c.exit_code(), 3, "mode {mode}: {c:?}");
            assert_eq!(
                c.error_message("a", "b").unwrap(),
                "Sector allocation test failed for a"
            );
        }
    }
}

/// The granules written as data, merged.
fn data_writes(writes: &[(u64, u64, &'static str)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len, kind) in writes {
        if kind != "data" {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == off => last.1 = off + len,
            _ => out.push((off, off + len)),
        }
    }
    out
}

/// qemu-img reads each extent of the source as buffers of its own (qemu-img.c
/// `convert_iteration_sectors`): an extent of explicit zeros after a hole starts a buffer with a
/// zero run, which is never written, whatever `-S`. With `-S 1M` and 64 KiB granules, reading
/// 0..192 KiB as one buffer would widen the data byte at 0 over every granule up to the hole.
#[test]
fn zero_extent_after_a_hole_stays_unwritten_with_large_min_sparse() {
    let mut src = LayoutReader::new(
        &[
            (4 * K, Data),
            (96 * K, Unallocated),
            (32 * K, Data),
            (380 * K, Unallocated),
        ],
        |_| 0,
    );
    src.data[0] = 0x42;
    for ooo in [false, true] {
        let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(64 * K, ooo, true));
        let o = ConvertOptions {
            min_sparse: 1 << 20,
            out_of_order: ooo,
            ..opts(2)
        };
        convert(&src, Box::new(w), &o, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        assert!(r.image == src.data);
        assert_eq!(data_writes(&r.writes), vec![(0, 64 * K)]);
    }
}

/// `compress` (qemu-img's `-c`) judges zeros per whole granule even when the writer has no encoder
/// (a monolithicSparse VMDK stores `-c` output uncompressed): the all-zero second granule is not
/// written, where `-S 1M` alone widens the data byte's run over the whole buffer.
#[test]
fn compress_option_judges_zeros_per_granule_without_an_encoder() {
    let mut src = LayoutReader::new(&[(128 * K, Data), (128 * K, Unallocated)], |_| 0);
    src.data[..4].fill(7);
    for (compress, want) in [(false, 128 * K), (true, 64 * K)] {
        let (w, rec) = MemWriter::new(src.virtual_size_u64(), caps(64 * K, false, true));
        let o = ConvertOptions {
            min_sparse: 1 << 20,
            compress,
            ..opts(1)
        };
        convert(&src, Box::new(w), &o, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        assert!(r.image == src.data);
        assert_eq!(
            data_writes(&r.writes),
            vec![(0, want)],
            "compress={compress}"
        );
    }
}

/// A raw image as a sparse file in `s` holding `image`'s bytes at `ranges` (holes elsewhere, where
/// `image` must be zero), opened from the file and, for comparison, from memory.
fn raw_sources(
    s: &vdisk_testutil::Scratch,
    image: &[u8],
    ranges: &[(u64, u64)],
) -> (vdisk_raw::RawReader, vdisk_raw::RawReader) {
    use std::os::unix::fs::FileExt;
    let path = s.join("src.raw");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(image.len() as u64).unwrap();
    for &(off, len) in ranges {
        f.write_all_at(&image[off as usize..(off + len) as usize], off)
            .unwrap();
    }
    drop(f);
    let file = vdisk_raw::open(Arc::new(vdisk_core::FileStorage::open(&path).unwrap())).unwrap();
    let mem = vdisk_raw::open(vdisk_core::MemStorage::new("m", image.to_vec()).shared()).unwrap();
    (file, mem)
}

/// `-C`: data a raw source stores in a host file reaches a writer that takes copies as copies of
/// file ranges (zero-filled data included: no zero detection), holes stay unwritten; a source in
/// memory, or a writer that takes no copies, gets the usual data payloads.
#[test]
fn copy_range_hands_host_file_ranges_to_writers_that_take_copies() {
    let s = vdisk_testutil::Scratch::new("engine-copy-range");
    let size = 8u64 << 20;
    let mut image = vec![0u8; size as usize];
    let ranges = [
        (0u64, 64 * K, 0x11u8),
        (1 << 20, 3 << 20, 0x22),
        (6 << 20, 4 * K, 0),
    ];
    for (off, len, byte) in ranges {
        image[off as usize..(off + len) as usize].fill(byte);
    }
    let (file_src, mem_src) = raw_sources(&s, &image, &ranges.map(|(o, l, _)| (o, l)));
    let copy_opts = ConvertOptions {
        copy_range: true,
        ..opts(2)
    };
    let with_copies = vdisk_core::WriterCaps {
        copy_range: true,
        ..caps(512, false, true)
    };
    for (name, src, writer_caps, copies) in [
        ("file source", &file_src, with_copies, true),
        ("memory source", &mem_src, with_copies, false),
        (
            "writer without copies",
            &file_src,
            caps(512, false, true),
            false,
        ),
    ] {
        let (w, rec) = MemWriter::new(size, writer_caps);
        let stats = convert(src, Box::new(w), &copy_opts, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        assert!(r.image == image, "{name}: content differs");
        let copied: u64 = r.writes.iter().filter(|w| w.2 == "copy").map(|w| w.1).sum();
        if copies {
            assert!(
                r.writes.iter().all(|w| w.2 == "copy"),
                "{name}: {:?}",
                r.writes
            );
            // The zero-filled 4 KiB at 6 MiB is data in the file: copied, not detected as zeros.
            assert_eq!(copied, 64 * K + (3 << 20) + 4 * K, "{name}: {:?}", r.writes);
            assert_eq!(stats.data_bytes_written, copied, "{name}");
        } else {
            assert_eq!(copied, 0, "{name}: {:?}", r.writes);
        }
    }
}

/// Reading data tasks through a map of the source file: the same bytes and the same writes as
/// reading them with `pread`, pieces around zero runs included; a source in memory is read.
#[test]
fn mapped_sources_give_the_writes_that_reading_gives() {
    let s = vdisk_testutil::Scratch::new("engine-map-source");
    let size = 8u64 << 20;
    let mut image = vec![0u8; size as usize];
    for off in (0..5 << 20).step_by(512) {
        image[off] = pattern(off as u64);
        image[off + 511] = 1;
    }
    // A 16 KiB zero run inside the data (a gap: the data around it becomes two pieces), a
    // 1 KiB one (stays data), and a hole from 5 MiB on.
    image[(1 << 20) + 8192..(1 << 20) + 8192 + 16384].fill(0);
    image[(3 << 20) + 512..(3 << 20) + 1536].fill(0);
    let (file_src, mem_src) = raw_sources(&s, &image, &[(0, 5 << 20)]);
    let run = |src: &dyn vdisk_core::ImageReader, map_source: bool| {
        let (w, rec) = MemWriter::new(size, caps(512, true, true));
        let o = ConvertOptions {
            map_source,
            ..opts(2)
        };
        let stats = convert(src, Box::new(w), &o, &no_progress).unwrap();
        let r = rec.lock().unwrap();
        assert!(r.image == image, "map_source {map_source}: content differs");
        (stats.mapped_bytes, r.writes.clone())
    };
    let (mapped, writes) = run(&file_src, true);
    let (read, read_writes) = run(&file_src, false);
    assert_eq!(mapped, 5 << 20, "every data task was mapped");
    assert_eq!(read, 0);
    assert_eq!(writes, read_writes, "the same writes either way");
    assert!(writes.len() > 3, "the zero run split the data: {writes:?}");
    assert_eq!(run(&mem_src, true).0, 0, "memory is read, not mapped");
}
