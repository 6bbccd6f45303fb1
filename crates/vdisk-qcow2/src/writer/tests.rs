//! The writer against the oracle: images written from patterned data with holes and zero runs, for
//! each option combination, must pass `qemu-img check`, compare equal to the source, read back the
//! same bytes through qemu, and show the requested options in `qemu-img info`.

use super::*;
use serde_json::Value;
use vdisk_testutil::{
    assert_qemu_check_clean, assert_qemu_compare_equal, qemu_available, qemu_create, qemu_img,
    qemu_info_json, qemu_io, qemu_map_json, qemu_raw_bytes, Scratch,
};

/// 3 MiB and an odd tail, so that the last cluster is partial for every cluster size above 512.
pub(super) const SIZE: u64 = (3 << 20) + 1536;

/// Patterned data in 4 KiB units: data, explicit zeros, half-filled units; `seed` varies it.
pub(super) fn source(size: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for (i, unit) in v.chunks_mut(4096).enumerate() {
        let i = i as u64;
        match (i * 7 + seed) % 6 {
            0 | 1 => {}
            2 => {
                let half = unit.len() / 2;
                unit[..half]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (j as u64 ^ i) as u8 | 1);
            }
            _ => unit
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = ((j as u64 / 3 + i * 31 + seed) % 251) as u8),
        }
    }
    // A long zero run spanning several clusters and L2 regions of the small cluster sizes.
    let (a, b) = (1 << 20, (1 << 20) + (320 << 10));
    v[a..b].fill(0);
    v
}

/// Feeds `src` to `w` in order like the conversion engine: granules of the writer's granularity,
/// zero runs either as `Zero` payloads or skipped (`skip_zero`), data compressed through the
/// writer's encoder when it has one. Returns which granules were skipped.
pub(super) fn drive(
    w: &mut dyn ImageWriter,
    src: &[u8],
    skip_zero: impl Fn(u64) -> bool,
) -> Vec<bool> {
    let g = w.caps().granularity as usize;
    let step = if w.encoder().is_some() {
        g
    } else {
        g.max(65536)
    };
    let enc = w.encoder();
    let mut skipped = Vec::new();
    for (i, chunk) in src.chunks(step).enumerate() {
        let off = (i * step) as u64;
        if vdisk_core::zero::is_zero(chunk) {
            let skip = skip_zero(i as u64);
            skipped.push(skip);
            if !skip {
                w.write(off, Payload::Zero(chunk.len() as u64)).unwrap();
            }
            continue;
        }
        skipped.push(false);
        match &enc {
            Some(e) => match e.encode(off, chunk).unwrap() {
                Some(c) => w.write(off, Payload::Encoded(c)).unwrap(),
                None => w.write(off, Payload::data(chunk.to_vec())).unwrap(),
            },
            None => w.write(off, Payload::data(chunk.to_vec())).unwrap(),
        }
    }
    skipped
}

pub(super) fn opts(o: &str) -> CreateOptions {
    CreateOptions::parse(&[o]).unwrap()
}

fn format_specific(info: &Value) -> &Value {
    &info["format-specific"]["data"]
}

/// Writes `src` as a qcow2 image with `o` and checks it with qemu; returns the image path.
pub(super) fn write_and_verify(
    dir: &Scratch,
    name: &str,
    o: &str,
    compress: bool,
) -> std::path::PathBuf {
    let src = source(SIZE, name.len() as u64);
    let raw = dir.join(&format!("{name}.raw"));
    std::fs::write(&raw, &src).unwrap();
    let img = dir.join(&format!("{name}.qcow2"));
    let mut w = create_with(&img, SIZE, &opts(o), compress).unwrap();
    drive(w.as_mut(), &src, |i| i % 2 == 0);
    w.finish().unwrap();
    assert_qemu_check_clean(&img, "qcow2");
    assert_qemu_compare_equal(&raw, &img);
    assert!(
        qemu_raw_bytes(&img, Some("qcow2")) == src,
        "{o}: bytes differ"
    );
    // This crate's reader and check agree.
    let storage = std::sync::Arc::new(vdisk_core::FileStorage::open(&img).unwrap());
    let files = std::sync::Arc::new(vdisk_core::storage::HostFiles);
    let r = crate::open(storage, files, &crate::OpenOptions::default()).unwrap();
    assert!(
        vdisk_testutil::read_all(&r, 1 << 20) == src,
        "{o}: vdisk reads other bytes"
    );
    let report = vdisk_core::ImageReader::check(&r).unwrap();
    assert_eq!(report.exit_code(), 0, "{o}: vdisk check: {report:?}");
    img
}

#[test]
fn option_combinations_pass_qemu_check_and_compare() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-opts");
    let cases: &[(&str, &str, u64, u64, &str)] = &[
        // (name, options, cluster size, refcount bits, compat)
        ("default", "", 65536, 16, "1.1"),
        ("v2", "compat=0.10", 65536, 16, "0.10"),
        ("c512", "cluster_size=512", 512, 16, "1.1"),
        ("c512v2", "cluster_size=512,compat=v2", 512, 16, "0.10"),
        ("c4k-r1", "cluster_size=4k,refcount_bits=1", 4096, 1, "1.1"),
        (
            "c2m-r64",
            "cluster_size=2M,refcount_bits=64",
            2 << 20,
            64,
            "1.1",
        ),
        ("c4k-r8", "cluster_size=4k,refcount_bits=8", 4096, 8, "1.1"),
        ("lazy", "lazy_refcounts=on", 65536, 16, "1.1"),
        ("extl2", "extended_l2=on", 65536, 16, "1.1"),
        (
            "extl2-16k",
            "extended_l2=on,cluster_size=16k",
            16384,
            16,
            "1.1",
        ),
        ("zstd", "compression_type=zstd", 65536, 16, "1.1"),
    ];
    for (name, o, cs, rb, compat) in cases {
        let img = write_and_verify(&dir, name, o, false);
        let info = qemu_info_json(&img);
        assert_eq!(info["cluster-size"], *cs, "{o}");
        assert_eq!(info["virtual-size"], SIZE, "{o}");
        let fs = format_specific(&info);
        assert_eq!(fs["compat"], *compat, "{o}");
        if *compat == "1.1" {
            assert_eq!(fs["refcount-bits"], *rb, "{o}");
            assert_eq!(fs["lazy-refcounts"], o.contains("lazy"), "{o}");
            assert_eq!(fs["extended-l2"], o.contains("extended_l2"), "{o}");
            assert_eq!(
                fs["compression-type"],
                if o.contains("zstd") { "zstd" } else { "zlib" },
                "{o}"
            );
        }
        // qemu keeps writing into the image cleanly (its allocator trusts our refcounts).
        qemu_io(
            "qcow2",
            &img,
            &["write -P 0x77 1M 192k", "write -P 0x78 64k 4k"],
        );
        assert_qemu_check_clean(&img, "qcow2");
        // Skipped zero runs stay unallocated (the 2 MiB clusters all hold some data).
        if *cs >= 2 << 20 {
            continue;
        }
        let map = qemu_map_json(&img, Some("qcow2"));
        assert!(
            map.as_array()
                .unwrap()
                .iter()
                .any(|e| e["present"] == false),
            "{o}: {map}"
        );
    }
}

#[test]
fn preallocation_modes_match_qemu_semantics() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-prealloc");
    for (name, o) in [
        ("meta", "preallocation=metadata"),
        ("meta4k", "preallocation=metadata,cluster_size=4k"),
        ("falloc", "preallocation=falloc,cluster_size=512"),
        ("full", "preallocation=full"),
        (
            "meta-extl2",
            "preallocation=metadata,extended_l2=on,cluster_size=32k",
        ),
    ] {
        let img = write_and_verify(&dir, name, o, false);
        let check = qemu_img(&["check", "--output=json", &img.to_string_lossy()]);
        let check: Value = serde_json::from_str(&check).unwrap();
        assert_eq!(
            check["allocated-clusters"], check["total-clusters"],
            "{o}: every cluster allocated"
        );
        let map = qemu_map_json(&img, Some("qcow2"));
        let present_all = map.as_array().unwrap().iter().all(|e| e["present"] == true);
        assert_eq!(present_all, !o.contains("extended_l2"), "{o}: {map}");
        let file_len = std::fs::metadata(&img).unwrap().len();
        assert!(
            file_len >= SIZE,
            "{o}: preallocated file is {file_len} bytes"
        );
    }
}

#[test]
fn data_file_holds_the_guest_data() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-datafile");
    for (name, raw) in [("df", false), ("dfraw", true)] {
        // qemu-img takes a relative data file name from the current directory: use absolute ones.
        let data_path = dir
            .join(&format!("{name}.data"))
            .to_string_lossy()
            .into_owned();
        let o = &format!(
            "data_file={data_path}{}",
            if raw { ",data_file_raw=on" } else { "" }
        );
        let img = write_and_verify(&dir, name, o, false);
        let fs = format_specific(&qemu_info_json(&img)).clone();
        assert_eq!(fs["data-file"], data_path.as_str(), "{o}");
        assert_eq!(fs["data-file-raw"], raw, "{o}");
        // The guest data sits at guest offsets in the data file; with data_file_raw it is the disk.
        let data = std::fs::read(dir.join(&format!("{name}.data"))).unwrap();
        assert_eq!(data.len() as u64, SIZE);
        assert!(
            data == source(SIZE, name.len() as u64),
            "{o}: data file is not the raw disk"
        );
        let qcow2_len = std::fs::metadata(&img).unwrap().len();
        assert!(qcow2_len < 1 << 20, "{o}: metadata only, got {qcow2_len}");
    }
}

#[test]
fn backing_file_shows_through_skipped_clusters_and_zeros_hide_it() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-backing");
    let base = dir.join("base.qcow2");
    qemu_create(&base, "qcow2", "", &SIZE.to_string());
    qemu_io(
        "qcow2",
        &base,
        &["write -P 0x5a 0 3M", "write -P 0x6b 3M 1536"],
    );
    let base_bytes = qemu_raw_bytes(&base, Some("qcow2"));
    for (name, o) in [
        ("v3", "backing_file=base.qcow2,backing_fmt=qcow2"),
        (
            "v2",
            "backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10",
        ),
        (
            "x",
            "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on",
        ),
        (
            "xp",
            "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata",
        ),
        (
            "c",
            "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=4k",
        ),
        (
            "df",
            "backing_file=base.qcow2,backing_fmt=qcow2,data_file=DIR/df.data",
        ),
        (
            "dfx",
            "backing_file=base.qcow2,backing_fmt=qcow2,data_file=DIR/dfx.data,extended_l2=on",
        ),
    ] {
        let o = &o.replace("DIR", &dir.path().to_string_lossy());
        let src = source(SIZE, 3);
        let img = dir.join(&format!("{name}.qcow2"));
        let mut w = create(&img, SIZE, &opts(o)).unwrap();
        assert!(!w.caps().zero_initialized, "a backing file shows through");
        let step = 65536usize.max(w.caps().granularity as usize);
        let skipped = drive(w.as_mut(), &src, |i| i % 3 == 0);
        w.finish().unwrap();
        let mut want = src.clone();
        for (i, s) in skipped.iter().enumerate() {
            if *s {
                let (a, b) = (i * step, ((i + 1) * step).min(want.len()));
                want[a..b].copy_from_slice(&base_bytes[a..b]);
            }
        }
        assert!(skipped.iter().any(|s| *s) && skipped.iter().any(|s| !*s));
        assert_qemu_check_clean(&img, "qcow2");
        assert!(
            qemu_raw_bytes(&img, Some("qcow2")) == want,
            "{o}: bytes differ"
        );
        let raw = dir.join(&format!("{name}.want"));
        std::fs::write(&raw, &want).unwrap();
        assert_qemu_compare_equal(&raw, &img);
        let info = qemu_info_json(&img);
        assert_eq!(info["backing-filename"], "base.qcow2", "{o}");
        assert_eq!(info["backing-filename-format"], "qcow2", "{o}");
    }
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = Scratch::new("qcow2w-drop");
    let img = dir.join("x.qcow2");
    let mut w = create(&img, SIZE, &opts("")).unwrap();
    w.write(0, Payload::data(vec![7u8; 1 << 20])).unwrap();
    // While being written the image has no header: nothing would take it for qcow2.
    let temps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(temps.len(), 1, "{temps:?}");
    // (The data itself may still be on its way through the I/O threads.)
    let head = std::fs::read(&temps[0]).unwrap();
    assert!(
        head.iter().take(4).all(|b| *b == 0),
        "header must come last"
    );
    assert!(!img.exists());
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file removed"
    );
    let data = dir.join("d.raw");
    let mut w = create(&img, SIZE, &opts(&format!("data_file={}", data.display()))).unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 2 && !data.exists());
    w.write(0, Payload::data(vec![7u8; 65536])).unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "data file removed too"
    );
}

#[test]
fn sparse_terabyte_image_costs_only_its_data() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2w-tera");
    let img = dir.join("t.qcow2");
    let size = 1u64 << 40;
    let mut w = Qcow2Writer::create(&img, size, &opts(""), false).unwrap();
    let mib = vec![0xa5u8; 1 << 20];
    for off in [0u64, 3 << 20, 512 << 30, size - (2 << 20)] {
        w.write(off, Payload::data(mib.clone())).unwrap();
        w.write(off + (1 << 20), Payload::Zero(1 << 20)).unwrap();
        // What the writer holds: one L2 table, and one L1 entry per region written so far.
        assert!(w.l1.len() <= 3 && w.l2.is_some() && w.partial.is_none());
    }
    Box::new(w).finish().unwrap();
    let len = std::fs::metadata(&img).unwrap().len();
    assert!(
        len < 5 << 20,
        "a 1 TiB image with 4 MiB of data takes {len} bytes"
    );
    assert_qemu_check_clean(&img, "qcow2");
    qemu_io(
        "qcow2",
        &img,
        &[
            "read -P 0xa5 0 1M",
            "read -P 0 1M 2M",
            "read -P 0xa5 3M 1M",
            "read -P 0xa5 512G 1M",
            "read -P 0 1023G 1M",
            "read -P 0xa5 1048574M 1M",
        ],
    );
    assert_eq!(qemu_info_json(&img)["virtual-size"], size);
}
