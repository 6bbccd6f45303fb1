//! Batched compressed reads: hand-built 512-byte-cluster images with runs of compressed streams
//! (packed, reversed, shared, with holes, running past the end of the file, broken in the middle)
//! read in runs and one cluster at a time must give the same bytes or the same error; images made
//! by `qemu-img convert -c` (zlib and zstd, 512 bytes to 2 MiB clusters) read as qemu reads them.

use super::*;
use crate::reader::{open, OpenOptions};
use crate::tables::{OFLAG_COMPRESSED, OFLAG_COPIED};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vdisk_core::storage::{HostFiles, NoFiles};
use vdisk_core::{FileStorage, ImageReader, MemStorage, Storage};

const CS: usize = 512;
/// Clusters one L2 table of 512-byte clusters maps; the disk is twice as large (its second half
/// is unallocated unless a test points the second L1 entry somewhere).
const CLUSTERS: usize = 64;
/// Compressed streams start at cluster 5 (0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2).
const DATA: usize = 5 * CS;

/// Guest cluster `i` of the hand-built images: runs of a byte that changes with `i`.
fn cluster(i: usize) -> Vec<u8> {
    (0..CS).map(|j| (j / (i % 7 + 3) + i * 31) as u8).collect()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A compressed L2 entry for a stream of `len` bytes at host `offset` (512-byte clusters: one bit
/// of sector count above 61 bits of offset), with qemu's sector count.
fn entry(offset: usize, len: usize) -> u64 {
    let sectors = (offset + len - 1) / 512 - offset / 512 + 1;
    assert!(sectors <= 2, "stream too long for a 512-byte cluster");
    OFLAG_COMPRESSED | (((sectors - 1) as u64) << 61) | offset as u64
}

/// An image whose L2 table holds `l2` and whose file is the metadata followed by `data` (no
/// padding: a last stream's sector count may run past the end of the file, as in qemu's images).
fn image(l2: &[u64], data: &[u8]) -> Vec<u8> {
    let h = crate::reader::tests::tiny_header((2 * CLUSTERS * CS) as u64, 2);
    let mut b = vec![0u8; DATA];
    let hb = h.serialize();
    b[..hb.len()].copy_from_slice(&hb);
    b[CS..CS + 8].copy_from_slice(&(2 * CS as u64).to_be_bytes());
    b[3 * CS..3 * CS + 8].copy_from_slice(&(OFLAG_COPIED | (4 * CS) as u64).to_be_bytes());
    for (i, e) in l2.iter().enumerate() {
        b[4 * CS + 8 * i..4 * CS + 8 * i + 8].copy_from_slice(&e.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Streams of clusters `0..n`, laid out in `order` with `gap(k)` bytes before the k-th one placed:
/// returns the L2 entries and the data area.
fn layout(n: usize, order: &[usize], gap: impl Fn(usize) -> usize) -> (Vec<u64>, Vec<u8>) {
    let mut l2 = vec![0u64; n];
    let mut data = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        data.resize(data.len() + gap(k), 0x77);
        let z = deflate(&cluster(i));
        l2[i] = entry(DATA + data.len(), z.len());
        data.extend_from_slice(&z);
    }
    (l2, data)
}

fn expected(n: usize) -> Vec<u8> {
    (0..n).flat_map(cluster).collect()
}

/// Counts the reads of the data area (host offsets from `DATA` on).
struct Counting(MemStorage, AtomicUsize);

impl Storage for Counting {
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn len(&self) -> vdisk_core::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk_core::Result<usize> {
        if offset >= DATA as u64 {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        self.0.read_at(buf, offset)
    }
}

fn open_counting(b: Vec<u8>) -> (Qcow2Reader, Arc<Counting>) {
    let s = Arc::new(Counting(
        MemStorage::new("mem.qcow2", b),
        AtomicUsize::new(0),
    ));
    let r = open(s.clone(), Arc::new(NoFiles), &OpenOptions::default()).unwrap();
    (r, s)
}

/// Reads guest `[from, to)` in pieces of `step` bytes with runs of at most `run_bytes`.
fn read(r: &Qcow2Reader, from: usize, to: usize, step: usize, run_bytes: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; to - from];
    let mut at = 0;
    while at < out.len() {
        let n = step.min(out.len() - at);
        r.read_at_batched(&mut out[at..at + n], (from + at) as u64, run_bytes)?;
        at += n;
    }
    Ok(out)
}

/// Every way of reading `[0, n clusters)` (whole, unaligned ends, odd steps; runs of any bound or
/// none) gives what one-cluster-at-a-time reading gives; returns that.
fn same_as_single_reads(b: Vec<u8>, n: usize) -> std::result::Result<Vec<u8>, String> {
    same_up_to(b, n * CS)
}

/// [`same_as_single_reads`] of guest `[0, end)`.
fn same_up_to(b: Vec<u8>, end: usize) -> std::result::Result<Vec<u8>, String> {
    let (r, _) = open_counting(b);
    let single = read(&r, 0, end, end, 0).map_err(|e| e.to_string());
    for (from, to, step) in [
        (0, end, end),
        (100, end - 77, end),
        (0, end, 1000),
        (3, end, 4096),
    ] {
        for run in [0, 700, 2048, RUN_BUFFER_BYTES] {
            let got = read(&r, from, to, step, run).map_err(|e| e.to_string());
            let want = single.as_ref().map(|v| v[from..to].to_vec());
            assert_eq!(
                got,
                want.map_err(Clone::clone),
                "[{from}, {to}) by {step}, runs of {run}"
            );
        }
    }
    single
}

#[test]
fn packed_streams_read_in_one_go() {
    let n = 40;
    let order: Vec<usize> = (0..n).collect();
    let (l2, data) = layout(n, &order, |_| 0);
    let b = image(&l2, &data);
    assert!(same_as_single_reads(b.clone(), n).unwrap() == expected(n));
    // With the file padded (the last stream's sector count runs past its end otherwise, which
    // costs a second read to find the end) ...
    let mut padded = data.clone();
    padded.resize(data.len() + CS, 0);
    let (r, count) = open_counting(image(&l2, &padded));
    let mut buf = vec![0u8; n * CS];
    r.read_at(&mut buf, 0).unwrap();
    assert!(buf == expected(n));
    // ... the 40 streams cost one read of the data area, or one each without runs.
    assert_eq!(count.1.swap(0, Ordering::Relaxed), 1);
    r.read_at_batched(&mut buf, 0, 0).unwrap();
    assert_eq!(count.1.load(Ordering::Relaxed), n);
}

#[test]
fn last_stream_running_past_the_end_of_the_file_is_zero_padded() {
    let n = 12;
    let order: Vec<usize> = (0..n).collect();
    let (l2, data) = layout(n, &order, |_| 0);
    let b = image(&l2, &data);
    // The last entry's sectors reach past the end of the file (its stream ends inside a sector).
    let (off, sectors) = crate::tables::Geometry {
        cluster_bits: 9,
        extended: false,
        data_file: false,
    }
    .compressed(l2[n - 1]);
    assert!(off + sectors > b.len() as u64);
    assert!(same_as_single_reads(b, n).unwrap() == expected(n));
}

#[test]
fn reversed_shared_and_sparse_streams_read_right() {
    let n = 30;
    let rev: Vec<usize> = (0..n).rev().collect();
    let (l2, data) = layout(n, &rev, |_| 0);
    assert_eq!(
        same_as_single_reads(image(&l2, &data), n).unwrap(),
        expected(n)
    );
    // Holes below, at and above RUN_GAP_BYTES between streams, and holes of one or two sectors.
    let order: Vec<usize> = (0..n).collect();
    for gap in [1usize, 511, 4096, 4097, 9000] {
        let (l2, data) = layout(n, &order, |k| if k % 3 == 1 { gap } else { 0 });
        assert_eq!(
            same_as_single_reads(image(&l2, &data), n).unwrap(),
            expected(n)
        );
    }
    // Clusters sharing (or overlapping) one stream, and a stream reused far back.
    let (mut l2, data) = layout(n, &order, |_| 0);
    let mut want = expected(n);
    for (i, from) in [(5usize, 4usize), (6, 4), (20, 2), (21, 29)] {
        l2[i] = l2[from];
        want[i * CS..(i + 1) * CS].copy_from_slice(&cluster(from));
    }
    assert!(same_as_single_reads(image(&l2, &data), n).unwrap() == want);
}

/// The error of a read that must fail (without printing the bytes when it did not).
fn fails(r: std::result::Result<Vec<u8>, String>) -> String {
    match r {
        Ok(v) => panic!("read {} bytes where an error was expected", v.len()),
        Err(e) => e,
    }
}

#[test]
fn a_broken_cluster_inside_a_run_fails_as_it_does_alone() {
    let n = 20;
    let order: Vec<usize> = (0..n).collect();
    let (l2, data) = layout(n, &order, |_| 0);
    let file_end = DATA + data.len();
    // A stream past the end of the file in the middle of a run.
    let mut bad = l2.clone();
    bad[9] = entry(file_end + 700, 100);
    let e = fails(same_as_single_reads(image(&bad, &data), n));
    assert!(e.contains("past the end of the file"), "{e}");
    // A stream that does not inflate, in the middle of a run.
    let mut d = data.clone();
    let (off, _) = crate::tables::Geometry {
        cluster_bits: 9,
        extended: false,
        data_file: false,
    }
    .compressed(l2[11]);
    let at = off as usize - DATA;
    d[at..at + 40].fill(0xff);
    let e = fails(same_as_single_reads(image(&l2, &d), n));
    assert!(e.contains(&format!("guest offset {:#x}", 11 * CS)), "{e}");
    // A plain cluster past the end of the file after a few compressed clusters.
    let mut bad = l2.clone();
    bad[7] = OFLAG_COPIED | (1 << 30);
    let e = fails(same_as_single_reads(image(&bad, &data), n));
    assert!(e.contains("L2 entry points past the end"), "{e}");
    // A run up to the end of the first L2 table, then an L2 table past the end of the file.
    let all: Vec<usize> = (0..CLUSTERS).collect();
    let (l2, data) = layout(CLUSTERS, &all, |_| 0);
    let mut b = image(&l2, &data);
    b[3 * CS + 8..3 * CS + 16].copy_from_slice(&(OFLAG_COPIED | (1 << 30)).to_be_bytes());
    let e = fails(same_up_to(b, (CLUSTERS + 1) * CS));
    assert!(e.contains("L2 table is past the end"), "{e}");
    // A stream starting at the file's last byte is inside the file: it reads zero padding and
    // fails to inflate.
    let mut short = l2.clone();
    short[n - 1] = entry(file_end - 1, 2);
    let e = fails(same_as_single_reads(image(&short, &data), n));
    assert!(e.contains("decompress"), "{e}");
}

/// `n` bytes of text, runs, zeros and noise in 16 KiB blocks.
fn mixed(n: usize) -> Vec<u8> {
    let words = [
        "qcow2", "cluster", "the", "zstd", "deflate", "of", "image", "/usr/lib",
    ];
    let mut x = vdisk_testutil::XorShift64::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || x.next_u64();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let block = v.len() / 16384;
        let end = (v.len() + 16384).min(n);
        match block % 6 {
            2 => v.resize(end, 0),
            4 => v.extend((v.len()..end).map(|_| next() as u8)),
            5 => v.extend((v.len()..end).map(|j| (j / 13 % 251) as u8)),
            _ => {
                while v.len() < end {
                    v.extend_from_slice(words[(next() % 8) as usize].as_bytes());
                    v.push(b' ');
                }
                v.truncate(end);
            }
        }
    }
    v
}

#[test]
fn qemu_compressed_images_read_as_qemu_reads_them() {
    if !vdisk_testutil::qemu_available() {
        return;
    }
    let s = vdisk_testutil::Scratch::new("qcow2-comp-runs");
    // Read steps cutting clusters (each cut cluster is inflated whole once per step).
    for (cs, size, step) in [
        ("512", (512 << 10) - 1536, 100_000),
        ("4k", (2 << 20) - 1536, 100_000),
        ("64k", (4 << 20) - 1536, 100_000),
        ("2M", (7 << 20) - 1536, (3 << 20) + 512),
    ] {
        let raw = s.join(&format!("src-{cs}.raw"));
        std::fs::write(&raw, mixed(size)).unwrap();
        for ct in ["zlib", "zstd"] {
            let img = s.join(&format!("{ct}-{cs}.qcow2"));
            let o = format!("compression_type={ct},cluster_size={cs}");
            let (raw_s, img_s) = (raw.to_str().unwrap(), img.to_str().unwrap());
            vdisk_testutil::qemu_img(&[
                "convert", "-f", "raw", "-c", "-O", "qcow2", "-o", &o, raw_s, img_s,
            ]);
            let oracle = vdisk_testutil::qemu_raw_bytes(&img, Some("qcow2"));
            let r = open(
                Arc::new(FileStorage::open(&img).unwrap()),
                Arc::new(HostFiles),
                &OpenOptions::default(),
            )
            .unwrap();
            let what = format!("{ct} {cs}");
            for step in [size, step] {
                for run in [0, RUN_BUFFER_BYTES] {
                    let got = read(&r, 0, size, step, run).unwrap();
                    if got != oracle {
                        vdisk_testutil::assert_same_bytes(&got, &oracle, &what);
                    }
                }
            }
        }
    }
}
