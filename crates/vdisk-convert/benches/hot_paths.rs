//! Criterion micro-benchmarks of conversion hot paths: zero detection (`vdisk_core::zero::is_zero`
//! and the engine's `-S` scan), qcow2 L2 lookups through the reader's public table pieces, and
//! compressing / decompressing one 64 KiB cluster the way qcow2 does (raw deflate with a 4 KiB
//! window at level 6 on the zlib-rs backend, zstd level 3), each with a fresh compressor per
//! cluster (what the qcow2 writer does) and with one reused.
//!
//! `cargo bench -p vdisk-convert --bench hot_paths` (CARGO_TARGET_DIR=/work/target/bench).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::hint::black_box;
use std::sync::Arc;
use vdisk_convert::sparse;
use vdisk_core::zero::is_zero;
use vdisk_qcow2::header::{COMPRESSION_ZLIB, COMPRESSION_ZSTD};
use vdisk_qcow2::tables::{Geometry, L2Cache, L2Table};

const CLUSTER: usize = 64 << 10;
const CHUNK: usize = 2 << 20;

/// Real, moderately compressible bytes: this benchmark's own executable, repeated to `len`.
fn sample(len: usize) -> Vec<u8> {
    let exe = std::fs::read(std::env::current_exe().expect("exe path")).expect("read exe");
    let start = exe.len() / 3;
    exe[start..]
        .iter()
        .chain(exe.iter())
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn zero_detection(c: &mut Criterion) {
    let mut g = c.benchmark_group("is_zero");
    for &len in &[512usize, 4096, CLUSTER, CHUNK] {
        let zeros = vec![0u8; len];
        let mut late = vec![0u8; len];
        late[len - 1] = 1;
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("all_zero", len), &zeros, |b, z| {
            b.iter(|| is_zero(black_box(z)))
        });
        g.bench_with_input(BenchmarkId::new("last_byte_set", len), &late, |b, z| {
            b.iter(|| is_zero(black_box(z)))
        });
    }
    g.finish();

    // The -S scan over one 2 MiB chunk: all data, all zeros, and a mixed chunk (64 KiB data runs
    // separated by 64 KiB zero runs, like a freshly written file system).
    let mut g = c.benchmark_group("sparse_split_2MiB");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let data = sample(CHUNK);
    let zeros = vec![0u8; CHUNK];
    let mut mixed = sample(CHUNK);
    for run in mixed.chunks_mut(CLUSTER).skip(1).step_by(2) {
        run.fill(0);
    }
    for (name, buf) in [("data", &data), ("zeros", &zeros), ("mixed", &mixed)] {
        g.bench_with_input(BenchmarkId::new("S4k", name), buf, |b, buf| {
            b.iter(|| sparse::split(black_box(buf), 0, 4096, 8))
        });
    }
    g.finish();
}

/// What the qcow2 reader does per cluster: find the L2 table in the shared cache, pick the entry,
/// classify it. (The reader's own lookup function is private; these are its public pieces.)
fn l2_lookup(c: &mut Criterion) {
    let geo = Geometry {
        cluster_bits: 16,
        extended: false,
        data_file: false,
    };
    let entries = geo.l2_entries() as usize;
    let cache = L2Cache::new(CLUSTER as u64);
    let tables = 16u64;
    for t in 0..tables {
        let table: L2Table = (0..entries as u64)
            .map(|i| (1u64 << 63) | ((t * entries as u64 + i + 16) << 16))
            .collect::<Vec<u64>>()
            .into();
        cache.insert((t + 1) << 16, Arc::clone(&table));
    }
    let mut g = c.benchmark_group("qcow2_l2_lookup");
    g.throughput(Throughput::Elements(1));
    let clusters = tables * entries as u64;
    let mut cluster = 0u64;
    g.bench_function("cached_table_classify", |b| {
        b.iter(|| {
            // A stride that visits every table in turn, as a scan over several tables would.
            cluster = (cluster + 4099) % clusters;
            let table = cache
                .get((cluster / entries as u64 + 1) << 16)
                .expect("cached");
            let entry = table[(cluster % entries as u64) as usize];
            geo.classify(black_box(entry), 0, 0)
        })
    });
    g.finish();
}

fn deflate(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut z = Compress::new_with_window_bits(Compression::new(6), false, 12);
    z.compress_vec(input, out, FlushCompress::Finish)
        .expect("deflate");
}

fn inflate(input: &[u8], out: &mut [u8]) {
    let mut d = Decompress::new(false);
    d.decompress(input, out, FlushDecompress::Finish)
        .expect("inflate");
}

fn compression(c: &mut Criterion) {
    let cluster = sample(CLUSTER);
    let mut g = c.benchmark_group("cluster_64KiB");
    g.throughput(Throughput::Bytes(CLUSTER as u64));
    let mut out = Vec::with_capacity(CLUSTER);
    g.bench_function("deflate_compress", |b| {
        b.iter(|| deflate(black_box(&cluster), &mut out))
    });
    // The same with one compressor reset between clusters (no per-cluster state allocation).
    let mut z = Compress::new_with_window_bits(Compression::new(6), false, 12);
    g.bench_function("deflate_compress_reused_state", |b| {
        b.iter(|| {
            out.clear();
            z.reset();
            z.compress_vec(black_box(&cluster), &mut out, FlushCompress::Finish)
                .expect("deflate")
        })
    });
    deflate(&cluster, &mut out);
    let deflated = out.clone();
    let mut plain = vec![0u8; CLUSTER];
    g.bench_function("deflate_decompress", |b| {
        b.iter(|| inflate(black_box(&deflated), &mut plain))
    });
    g.bench_function("deflate_decompress_vdisk_qcow2", |b| {
        b.iter(|| {
            vdisk_qcow2::compress::decompress(COMPRESSION_ZLIB, black_box(&deflated), &mut plain)
        })
    });
    let mut zout = vec![0u8; CLUSTER];
    g.bench_function("zstd_compress", |b| {
        b.iter(|| zstd::bulk::compress_to_buffer(black_box(&cluster), &mut zout, 3).expect("zstd"))
    });
    let mut cctx = zstd::bulk::Compressor::new(3).expect("zstd context");
    g.bench_function("zstd_compress_reused_ctx", |b| {
        b.iter(|| {
            cctx.compress_to_buffer(black_box(&cluster), &mut zout)
                .expect("zstd")
        })
    });
    let zstd = zstd::bulk::compress(&cluster, 3).expect("zstd");
    g.bench_function("zstd_decompress", |b| {
        b.iter(|| zstd::bulk::decompress_to_buffer(black_box(&zstd), &mut plain).expect("unzstd"))
    });
    g.bench_function("zstd_decompress_vdisk_qcow2", |b| {
        b.iter(|| vdisk_qcow2::compress::decompress(COMPRESSION_ZSTD, black_box(&zstd), &mut plain))
    });
    g.finish();
    eprintln!(
        "64 KiB sample cluster: deflate -> {} bytes, zstd -> {} bytes",
        deflated.len(),
        zstd.len()
    );
}

criterion_group!(benches, zero_detection, l2_lookup, compression);
criterion_main!(benches);
