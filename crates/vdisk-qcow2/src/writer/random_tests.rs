//! Randomised write sequences (in order, or shuffled for writers that allow it) over random option
//! sets, checked through this crate's reader and check (fast) and, for some, through qemu-img check.

use super::tests::opts;
use super::*;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, read_all, Scratch, XorShift64};

/// Options for case `seed`: cluster size, refcount width, version, extended L2, preallocation,
/// compression (valid combinations only).
fn random_options(r: &mut XorShift64) -> (String, bool) {
    let bits = [9u32, 12, 14, 16][r.below(4) as usize];
    let v2 = r.below(5) == 0;
    let order = if v2 { 4 } else { r.below(7) };
    let mut o = format!(
        "cluster_size={},refcount_bits={}",
        1u64 << bits,
        1u64 << order
    );
    if v2 {
        o.push_str(",compat=0.10");
    } else if bits >= 14 && r.below(3) == 0 {
        o.push_str(",extended_l2=on");
    }
    let compress = r.below(3) == 0;
    if compress && !v2 && r.below(2) == 0 {
        o.push_str(",compression_type=zstd");
    }
    if !compress && r.below(4) == 0 {
        o.push_str(",preallocation=metadata");
    }
    (o, compress)
}

#[test]
fn random_write_sequences_read_back_and_check_clean() {
    let dir = Scratch::new("qcow2w-random");
    let qemu = qemu_available();
    for seed in 1..=40u64 {
        let mut r = XorShift64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (o, compress) = random_options(&mut r);
        let size = (1 + r.below(4 << 11)) * 512;
        let img = dir.join(&format!("r{seed}.qcow2"));
        let mut w = create_with(&img, size, &opts(&o), compress).unwrap();
        let g = w.caps().granularity;
        let enc = w.encoder();
        let mut want = vec![0u8; size as usize];
        // Some writers get their (whole-granule) writes shuffled, as `convert -W` may do.
        let shuffle = w.caps().out_of_order && r.below(2) == 0;
        let mut segments = Vec::new();
        let mut at = 0u64;
        while at < size {
            // Whole granules when compressing or shuffling (the engine's contract), any length
            // otherwise.
            let len = if compress || shuffle {
                g * (1 + r.below(4))
            } else {
                1 + r.below(3 * g)
            }
            .min(size - at);
            segments.push((at, len, r.below(4), r.next_u64() as u8));
            at += len;
        }
        if shuffle {
            for i in (1..segments.len()).rev() {
                segments.swap(i, r.below(i as u64 + 1) as usize);
            }
        }
        for (at, len, kind, fill) in segments {
            match kind {
                0 => {}
                1 => w.write(at, Payload::Zero(len)).unwrap(),
                _ => {
                    let d: Vec<u8> = (0..len).map(|j| fill ^ (j as u8 & 0x3f)).collect();
                    want[at as usize..(at + len) as usize].copy_from_slice(&d);
                    match &enc {
                        Some(e) => {
                            for (k, c) in d.chunks(g as usize).enumerate() {
                                let off = at + k as u64 * g;
                                let p = match e.encode(off, c).unwrap() {
                                    Some(x) => Payload::Encoded(x),
                                    None => Payload::data(c.to_vec()),
                                };
                                w.write(off, p).unwrap();
                            }
                        }
                        None => w.write(at, Payload::data(d)).unwrap(),
                    }
                }
            }
        }
        w.finish().unwrap();
        let storage = std::sync::Arc::new(vdisk_core::FileStorage::open(&img).unwrap());
        let files = std::sync::Arc::new(vdisk_core::storage::NoFiles);
        let reader = crate::open(storage, files, &crate::OpenOptions::default()).unwrap();
        assert!(
            read_all(&reader, 1 << 20) == want,
            "seed {seed} ({o}): bytes differ"
        );
        let report = vdisk_core::ImageReader::check(&reader).unwrap();
        assert_eq!(report.exit_code(), 0, "seed {seed} ({o}): {report:?}");
        if qemu && seed % 4 == 0 {
            assert_qemu_check_clean(&img, "qcow2");
        }
    }
}
