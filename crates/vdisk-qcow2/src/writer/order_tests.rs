//! Write order: in order by default, any order of whole clusters for writers that allow it
//! (`convert -W`), unaligned writes gathered into clusters, and refusals of what cannot be stored.

use super::tests::{opts, source, SIZE};
use super::*;
use vdisk_testutil::{
    assert_qemu_check_clean, assert_qemu_compare_equal, qemu_available, qemu_raw_bytes, Scratch,
};

/// Writes that do not start or end on cluster boundaries are gathered into whole clusters, the
/// rest of each cluster reading as zeros.
#[test]
fn unaligned_writes_are_gathered_into_clusters() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-unaligned");
    for o in ["cluster_size=4k", "", "compat=0.10,cluster_size=512"] {
        let img = dir.join("u.qcow2");
        let size = 1u64 << 20;
        let mut want = vec![0u8; size as usize];
        let mut w = create(&img, size, &opts(o)).unwrap();
        let mut at = 0u64;
        for (i, len) in [1000u64, 69000, 10000, 3, 4093, 200000, 7, 65536, 1]
            .into_iter()
            .enumerate()
        {
            if i % 3 == 2 {
                w.write(at, Payload::Zero(len)).unwrap();
            } else {
                let d: Vec<u8> = (0..len).map(|j| (j as u8) ^ (i as u8 + 1) | 1).collect();
                want[at as usize..(at + len) as usize].copy_from_slice(&d);
                w.write(at, Payload::data(d)).unwrap();
            }
            at += len + if i % 4 == 3 { 5000 } else { 0 };
        }
        w.finish().unwrap();
        assert_qemu_check_clean(&img, "qcow2");
        assert!(qemu_raw_bytes(&img, Some("qcow2")) == want, "{o}");
    }
}

/// With out-of-order writes (`convert -W`), chunks arriving shuffled across many L2 regions (more
/// than the tables kept in memory) make a correct image; a cluster written twice is refused.
#[test]
fn out_of_order_writes_make_a_correct_image() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-ooo");
    let src = source(SIZE, 5);
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &src).unwrap();
    for (name, o, compress) in [
        ("c512", "cluster_size=512", false),
        ("c64k", "", false),
        ("zlib4k", "cluster_size=4k", true),
        ("extl2", "extended_l2=on,cluster_size=16k", false),
    ] {
        let img = dir.join(&format!("{name}.qcow2"));
        let mut w = create_with(&img, SIZE, &opts(o), compress).unwrap();
        assert!(w.caps().out_of_order, "{o}");
        let g = w.caps().granularity as usize;
        let step = 65536usize.max(g);
        let mut order: Vec<usize> = (0..src.len().div_ceil(step)).collect();
        let mut x = vdisk_testutil::XorShift64::new(0x1234_5678_9abc_def1);
        for i in (1..order.len()).rev() {
            order.swap(i, x.below(i as u64 + 1) as usize);
        }
        let enc = w.encoder();
        for i in order {
            let off = i * step;
            let chunk = &src[off..(off + step).min(src.len())];
            if vdisk_core::zero::is_zero(chunk) {
                continue;
            }
            match &enc {
                None => w.write(off as u64, Payload::data(chunk.to_vec())).unwrap(),
                Some(e) => {
                    for (k, c) in chunk.chunks(g).enumerate() {
                        let at = (off + k * g) as u64;
                        let p = match e.encode(at, c).unwrap() {
                            Some(x) => Payload::Encoded(x),
                            None => Payload::data(c.to_vec()),
                        };
                        w.write(at, p).unwrap();
                    }
                }
            }
        }
        w.finish().unwrap();
        assert_qemu_check_clean(&img, "qcow2");
        assert_qemu_compare_equal(&raw, &img);
        let storage = std::sync::Arc::new(vdisk_core::FileStorage::open(&img).unwrap());
        let files = std::sync::Arc::new(vdisk_core::storage::NoFiles);
        let r = crate::open(storage, files, &crate::OpenOptions::default()).unwrap();
        assert!(vdisk_testutil::read_all(&r, 1 << 20) == src, "{o}");
    }
    let mut w = create(&dir.join("twice.qcow2"), SIZE, &opts("")).unwrap();
    w.write(65536, Payload::data(vec![1; 65536])).unwrap();
    w.write(0, Payload::data(vec![1; 65536])).unwrap();
    assert!(
        w.write(65536, Payload::data(vec![2; 65536])).is_err(),
        "written twice"
    );
    assert!(
        w.write(100, Payload::data(vec![2; 512])).is_err(),
        "partial cluster before the end"
    );
    let p = create(&dir.join("p.qcow2"), SIZE, &opts("preallocation=metadata")).unwrap();
    assert!(
        !p.caps().out_of_order,
        "preallocated images are written in order"
    );
}

#[test]
fn writes_must_come_in_order_and_inside_the_disk() {
    let dir = Scratch::new("qcow2w-order");
    // Preallocated images take writes in order only.
    let mut w = create(
        &dir.join("o.qcow2"),
        1 << 20,
        &opts("preallocation=metadata"),
    )
    .unwrap();
    w.write(65536, Payload::data(vec![1; 65536])).unwrap();
    assert!(w.write(0, Payload::data(vec![1; 65536])).is_err());
    assert!(w.write(1 << 20, Payload::data(vec![1; 512])).is_err());
    assert!(w.write(u64::MAX, Payload::Zero(2)).is_err());
    assert!(w.encoder().is_none());
    let enc = ClusterEncoder::new(65536, CompressionType::Zlib)
        .encode(0, &[1; 65536])
        .unwrap()
        .unwrap();
    assert!(
        w.write(1 << 19, Payload::Encoded(enc.clone())).is_err(),
        "not a compressing writer"
    );
    let mut c = create_with(&dir.join("c.qcow2"), 1 << 20, &opts(""), true).unwrap();
    let two = vdisk_core::Encoded {
        bytes: enc.bytes.clone(),
        raw_len: 2 << 16,
    };
    assert!(
        c.write((1 << 20) - (2 << 16), Payload::Encoded(two))
            .is_err(),
        "two clusters"
    );
    assert!(
        c.write(1000, Payload::Encoded(enc.clone())).is_err(),
        "unaligned"
    );
    let empty = vdisk_core::Encoded {
        bytes: Vec::new(),
        raw_len: 1 << 16,
    };
    assert!(c.write(0, Payload::Encoded(empty)).is_err(), "empty stream");
    c.write(1 << 16, Payload::Encoded(enc)).unwrap();
}
