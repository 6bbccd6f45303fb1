//! Decompression of one compressed cluster (qcow2.txt "Compressed Clusters Descriptor" and header
//! byte 104 "compression_type"): a raw deflate stream (zlib, as QEMU writes it with window bits -12)
//! or a zstd frame, inflated into exactly one cluster; the output buffer bounds the work, so a
//! stream that would produce more is cut off (and one producing less is an error).

use crate::header::{COMPRESSION_ZLIB, COMPRESSION_ZSTD};
use std::cell::Cell;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Inflates `input` into `out` (one cluster). Trailing input (sector padding) is ignored, as QEMU
/// does; the stream must fill `out` completely.
pub fn decompress(kind: u8, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        COMPRESSION_ZLIB => inflate(input, out),
        COMPRESSION_ZSTD => unzstd(input, out),
        other => Err(format!("unknown compression type {other}")),
    }
}

thread_local! {
    /// One inflate state per thread, reset between clusters (allocating and initialising a fresh
    /// one per cluster costs about as much as inflating a well-compressed cluster).
    static INFLATE: Cell<Option<flate2::Decompress>> = const { Cell::new(None) };
    /// One zstd decompression context per thread (a fresh `ZSTD_DCtx` is ~100 KiB to set up).
    static UNZSTD: Cell<Option<Decoder<'static>>> = const { Cell::new(None) };
}

/// Runs `f` on this thread's cached state from `slot` (made by `make` when there is none), and
/// keeps the state for the next call only when `f` succeeded, so a stream that failed halfway
/// never leaks its state into the next cluster. Shared with the writer's compression.
pub(crate) fn with_cached<T, R, E>(
    slot: &'static std::thread::LocalKey<Cell<Option<T>>>,
    make: impl FnOnce() -> Result<T, E>,
    f: impl FnOnce(&mut T) -> Result<R, E>,
) -> Result<R, E> {
    let mut state = match slot.with(Cell::take) {
        Some(s) => s,
        None => make()?,
    };
    let r = f(&mut state)?;
    slot.with(|c| c.set(Some(state)));
    Ok(r)
}

fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    with_cached(
        &INFLATE,
        || Ok(flate2::Decompress::new(false)),
        |d| {
            d.reset(false);
            match d.decompress(input, out, flate2::FlushDecompress::Finish) {
                Ok(_) if d.total_out() == out.len() as u64 => Ok(()),
                Ok(_) => Err(format!(
                    "deflate stream ended after {} of {} bytes",
                    d.total_out(),
                    out.len()
                )),
                Err(e) => Err(format!("bad deflate stream: {e}")),
            }
        },
    )
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    with_cached(
        &UNZSTD,
        || Decoder::new().map_err(|e| format!("zstd: {e}")),
        |dec| {
            dec.reinit().map_err(|e| format!("zstd: {e}"))?;
            unzstd_with(dec, input, out)
        },
    )
}

fn unzstd_with(dec: &mut Decoder<'static>, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    // What zstd still has to do for the frame: 0 once it is complete and flushed.
    let mut remaining = 1;
    while outb.pos() < outb.capacity() {
        let (ip, op) = (inb.pos, outb.pos());
        remaining = dec
            .run(&mut inb, &mut outb)
            .map_err(|e| format!("bad zstd stream: {e}"))?;
        if inb.pos == ip && outb.pos() == op {
            return Err(format!("zstd stream ended after {op} bytes"));
        }
    }
    // As qemu (qcow2_zstd_decompress): a frame that is not finished once the cluster is full
    // decodes to more than a cluster, which only a damaged or hostile image holds.
    if remaining > 0 {
        return Err("zstd frame decodes to more than one cluster".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zstd_frame_longer_than_the_cluster_is_an_error() {
        let z = zstd::bulk::compress(&vec![0x5au8; 1 << 20], 19).unwrap();
        let mut out = vec![0u8; 4096];
        let e = decompress(COMPRESSION_ZSTD, &z, &mut out).unwrap_err();
        assert!(e.contains("more than one cluster"), "{e}");
        let exact = zstd::bulk::compress(&vec![0x5au8; 4096], 19).unwrap();
        decompress(COMPRESSION_ZSTD, &exact, &mut out).unwrap();
        assert!(out.iter().all(|b| *b == 0x5a));
    }

    #[test]
    fn inflates_exactly_one_cluster() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        let mut c = deflate_raw(&data);
        c.extend_from_slice(&[0u8; 300]);
        let mut out = vec![0u8; 4096];
        decompress(COMPRESSION_ZLIB, &c, &mut out).unwrap();
        assert_eq!(out, data);
        let z = zstd::bulk::compress(&data, 3).unwrap();
        let mut out2 = vec![0u8; 4096];
        decompress(COMPRESSION_ZSTD, &z, &mut out2).unwrap();
        assert_eq!(out2, data);
    }

    #[test]
    fn short_bomb_and_garbage_are_errors_or_bounded() {
        let mut out = vec![0u8; 4096];
        let small = deflate_raw(&[1u8; 100]);
        assert!(decompress(COMPRESSION_ZLIB, &small, &mut out).is_err());
        // A deflate stream of 1 MiB only fills the cluster, as qemu's inflate does (Z_BUF_ERROR with
        // the output full counts as success): the output never grows past it.
        let bomb = deflate_raw(&vec![0u8; 1 << 20]);
        decompress(COMPRESSION_ZLIB, &bomb, &mut out).unwrap();
        // A zstd frame of 1 MiB is an error, as in qemu: the frame must end within the cluster.
        let zbomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        assert!(decompress(COMPRESSION_ZSTD, &zbomb, &mut out).is_err());
        assert!(decompress(COMPRESSION_ZLIB, &[0xff; 64], &mut out).is_err());
        assert!(decompress(COMPRESSION_ZSTD, &[0xff; 64], &mut out).is_err());
        assert!(decompress(COMPRESSION_ZSTD, &[], &mut out).is_err());
        assert!(decompress(7, &small, &mut out).is_err());
    }

    #[test]
    fn a_failed_stream_does_not_spoil_the_next_cluster() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let z = deflate_raw(&data);
        let zs = zstd::bulk::compress(&data, 3).unwrap();
        for (kind, good) in [(COMPRESSION_ZLIB, &z), (COMPRESSION_ZSTD, &zs)] {
            let mut out = vec![0u8; 65536];
            decompress(kind, good, &mut out).unwrap();
            assert_eq!(out, data);
            // Half a stream fails (ends early) ...
            let half = &good[..good.len() / 2];
            assert!(decompress(kind, half, &mut out).is_err());
            // ... and the thread's cached state still decodes the next cluster exactly.
            out.fill(0xee);
            decompress(kind, good, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
