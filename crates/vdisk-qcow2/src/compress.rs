//! Decompression of one compressed cluster (qcow2.txt "Compressed Clusters Descriptor" and header
//! byte 104 "compression_type"): a raw deflate stream (zlib, as QEMU writes it with window bits -12)
//! or a zstd frame, inflated into exactly one cluster; the output buffer bounds the work, so a
//! stream that would produce more is cut off (and one producing less is an error).

use crate::header::{COMPRESSION_ZLIB, COMPRESSION_ZSTD};

/// Inflates `input` into `out` (one cluster). Trailing input (sector padding) is ignored, as QEMU
/// does; the stream must fill `out` completely.
pub fn decompress(kind: u8, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        COMPRESSION_ZLIB => inflate(input, out),
        COMPRESSION_ZSTD => unzstd(input, out),
        other => Err(format!("unknown compression type {other}")),
    }
}

fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut d = flate2::Decompress::new(false);
    match d.decompress(input, out, flate2::FlushDecompress::Finish) {
        Ok(_) if d.total_out() == out.len() as u64 => Ok(()),
        Ok(_) => Err(format!(
            "deflate stream ended after {} of {} bytes",
            d.total_out(),
            out.len()
        )),
        Err(e) => Err(format!("bad deflate stream: {e}")),
    }
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut dec = Decoder::new().map_err(|e| format!("zstd: {e}"))?;
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
}
