//! Writing: images made by `vdisk_vdi::create` + `write` in order pass `qemu-img check` and
//! `qemu-img compare` against their source.

use crate::fixtures::*;
use std::path::Path;
use vdisk_core::{CreateOptions, ImageReader, Payload};
use vdisk_testutil::*;

/// Feeds `data` to a new image in `chunk`-sized pieces, sending all-zero pieces as `Payload::Zero`
/// (or skipping them, as the engine may for a zero-initialized writer).
fn write_image(dest: &Path, data: &[u8], opts: &[&str], chunk: usize, skip_zeros: bool) {
    let opts = CreateOptions::parse(opts).unwrap();
    let mut w = vdisk_vdi::create(dest, data.len() as u64, &opts).unwrap();
    let caps = w.caps();
    assert_eq!(caps.granularity, 1 << 20);
    assert!(caps.zero_initialized && !caps.out_of_order);
    for (i, piece) in data.chunks(chunk).enumerate() {
        let off = (i * chunk) as u64;
        if piece.iter().all(|b| *b == 0) {
            if !skip_zeros {
                w.write(off, Payload::Zero(piece.len() as u64)).unwrap();
            }
        } else {
            w.write(off, Payload::data(piece.to_vec())).unwrap();
        }
    }
    assert!(!dest.exists(), "the image must appear only on finish");
    w.finish().unwrap();
}

/// Blocks that `write_image` hands data for (pieces not all zeros): the writer allocates each,
/// even where the piece's part in it is zeros, as qemu's VDI driver does.
fn data_blocks(data: &[u8], chunk: usize) -> usize {
    let mut blocks = std::collections::BTreeSet::new();
    for (i, piece) in data.chunks(chunk).enumerate() {
        if piece.iter().any(|b| *b != 0) {
            let start = i * chunk;
            blocks.extend(start >> 20..=(start + piece.len() - 1) >> 20);
        }
    }
    blocks.len()
}

#[test]
fn dynamic_images_pass_qemu_check_and_compare() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-write-dyn");
    let src = raw(&s);
    let data = std::fs::read(&src).unwrap();
    for (i, (chunk, skip)) in [
        (1 << 20, false),
        (65536, true),
        (4096 + 512, false),
        (7 << 20, false),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = s.join(&format!("w{i}.vdi"));
        write_image(&dest, &data, &[], chunk, skip);
        assert_qemu_check_clean(&dest, "vdi");
        assert_qemu_compare_equal(&src, &dest);
        let r = open(&dest);
        assert_same_bytes(&read_all(&r, 1 << 20), &data, "vdisk reads its own image");
        assert_eq!(
            r.header().blocks_allocated as usize,
            data_blocks(&data, chunk),
            "the blocks given data are allocated"
        );
        assert_eq!(r.check().unwrap().corruptions, 0);
        assert_eq!(vdisk_map_json(&r), qemu_map_json(&dest, Some("vdi")));
    }
}

#[test]
fn static_images_allocate_every_block() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-write-static");
    let src = raw(&s);
    let data = std::fs::read(&src).unwrap();
    let dest = s.join("st.vdi");
    write_image(&dest, &data, &["static=on"], 65536, true);
    assert_qemu_check_clean(&dest, "vdi");
    assert_qemu_compare_equal(&src, &dest);
    let r = open(&dest);
    assert_eq!(r.header().blocks_allocated, r.header().blocks_in_image);
    assert_eq!(r.header().blocks_in_image, 7);
    assert!(r
        .block_map()
        .iter()
        .enumerate()
        .all(|(i, e)| *e == i as u32));
    assert_eq!(
        r.info()
            .unwrap()
            .details
            .iter()
            .find(|(k, _)| k == "image-type")
            .unwrap()
            .1,
        "static"
    );
    assert_eq!(vdisk_map_json(&r), qemu_map_json(&dest, Some("vdi")));
}

#[test]
fn odd_sizes_and_empty_images() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-write-odd");
    for size in [0usize, 1000, 512, (1 << 20) + 1] {
        let dest = s.join(&format!("o{size}.vdi"));
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        write_image(&dest, &data, &[], 4096, false);
        assert_qemu_check_clean(&dest, "vdi");
        let q = qemu_raw_bytes(&dest, Some("vdi"));
        assert_eq!(
            q.len() as u64,
            (size as u64).div_ceil(512) * 512,
            "size rounded up to a sector as qemu does"
        );
        assert_eq!(&q[..size], &data[..]);
        assert!(q[size..].iter().all(|b| *b == 0));
    }
}

#[test]
fn bad_options_and_writes_are_refused() {
    let s = Scratch::new("vdi-write-bad");
    let dest = s.join("x.vdi");
    let bad = CreateOptions::parse(&["cluster_size=64k"]).unwrap();
    let e = vdisk_vdi::create(&dest, 1 << 20, &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Invalid parameter 'cluster_size'"), "{e}");
    let bad = CreateOptions::parse(&["static=maybe"]).unwrap();
    assert!(vdisk_vdi::create(&dest, 1 << 20, &bad).is_err());
    assert!(
        vdisk_vdi::create(&dest, 1 << 62, &CreateOptions::new()).is_err(),
        "too many blocks"
    );
    let mut w = vdisk_vdi::create(&dest, 2 << 20, &CreateOptions::new()).unwrap();
    w.write(4096, Payload::data(vec![1; 512])).unwrap();
    assert!(
        w.write(0, Payload::data(vec![1; 512])).is_err(),
        "out of order"
    );
    assert!(
        w.write(2 << 20, Payload::data(vec![1; 512])).is_err(),
        "past the end"
    );
    drop(w);
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(s.path()).unwrap().count(),
        0,
        "temporary file removed"
    );
    let help = vdisk_core::options::format_help("vdi", vdisk_vdi::CREATE_OPTIONS);
    assert!(help.contains("static=<bool (on/off)>") && help.contains("size=<size>"));
}

#[test]
fn allocation_matches_qemu_convert_and_qemu_can_keep_writing() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vdi-write-parity");
    let src = raw(&s);
    let data = std::fs::read(&src).unwrap();
    let ours = s.join("ours.vdi");
    write_image(&ours, &data, &[], 1 << 20, true);
    let theirs = converted(&s, &src, "theirs.vdi", &[]);
    let (a, b) = (open(&ours), open(&theirs));
    assert_eq!(
        a.header().blocks_allocated,
        b.header().blocks_allocated,
        "same blocks allocated as qemu-img convert"
    );
    assert_eq!(
        a.block_map(),
        b.block_map(),
        "same block map as qemu-img convert"
    );
    assert_eq!(a.virtual_size(), b.virtual_size());
    let allocated = a.header().blocks_allocated;
    drop((a, b)); // the readers' locks refuse writers
                  // qemu allocates its next block at slot blocks_allocated: our image must leave that slot free.
    qemu_io("vdi", &ours, &["write -P 0x99 5M 4k", "write -P 0x9a 0 4k"]);
    assert_qemu_check_clean(&ours, "vdi");
    let r = open(&ours);
    assert_eq!(r.header().blocks_allocated, allocated + 1);
    let mut buf = vec![0u8; 4096];
    r.read_at(&mut buf, 5 << 20).unwrap();
    assert!(buf.iter().all(|b| *b == 0x99));
    assert_same_bytes(
        &read_all(&r, 1 << 20),
        &qemu_raw_bytes(&ours, Some("vdi")),
        "after qemu writes",
    );
}
