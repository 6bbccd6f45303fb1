//! Writing VMDK images through `create` + `write` calls in guest order, checked with qemu-img (check,
//! compare, info) and with vdisk's own reader.

use std::path::Path;
use std::sync::Arc;
use vdisk_core::storage::HostFiles;
use vdisk_core::{CreateOptions, Encoded, FileStorage, ImageReader, ImageWriter, Payload};
use vdisk_testutil::*;

const SIZE: u64 = 5 * 1024 * 1024 + 512;

fn patterned_raw(s: &Scratch) -> std::path::PathBuf {
    let raw = s.join("src.raw");
    qemu_create(&raw, "raw", "", &SIZE.to_string());
    qemu_io(
        "raw",
        &raw,
        &[
            "write -P 0xaa 0 64k",
            "write -P 0xbb 200k 100k",
            "write -P 0xcc 3M 4k",
            "write -P 0xdd 5242880 512",
        ],
    );
    raw
}

/// Feeds `data` to `w` the way the conversion engine does: granularity-sized chunks in order, zero
/// chunks as `Payload::Zero`, and chunks run through the writer's encoder when it has one.
fn feed(mut w: Box<dyn ImageWriter>, data: &[u8]) {
    let caps = w.caps();
    let enc = w.encoder();
    let step = caps.granularity.max(65536) as usize;
    let mut off = 0usize;
    while off < data.len() {
        let n = step.min(data.len() - off);
        let chunk = &data[off..off + n];
        let payload = if vdisk_core::zero::is_zero(chunk) {
            Payload::Zero(n as u64)
        } else if let Some(e) = &enc {
            let mut parts = Vec::new();
            for (i, g) in chunk.chunks(caps.granularity as usize).enumerate() {
                let at = (off + i * caps.granularity as usize) as u64;
                parts.push((at, e.encode(at, g).unwrap().unwrap()));
            }
            for (at, p) in parts {
                w.write(at, Payload::Encoded(p)).unwrap();
            }
            off += n;
            continue;
        } else {
            Payload::data(chunk.to_vec())
        };
        w.write(off as u64, payload).unwrap();
        off += n;
    }
    w.finish().unwrap();
}

fn open_path(p: &Path) -> vdisk_vmdk::VmdkReader {
    vdisk_vmdk::open(Arc::new(FileStorage::open(p).unwrap()), Arc::new(HostFiles)).unwrap()
}

#[test]
fn every_subformat_passes_qemu_check_and_compare() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-write");
    let raw = patterned_raw(&s);
    let data = std::fs::read(&raw).unwrap();
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let img = s.join(&format!("out-{sub}.vmdk"));
        let opts = CreateOptions::parse(&[format!("subformat={sub}")]).unwrap();
        feed(vdisk_vmdk::create(&img, SIZE, &opts).unwrap(), &data);
        assert_qemu_check_clean(&img, "vmdk");
        assert_qemu_compare_equal(&raw, &img);
        let qi = qemu_info_json(&img);
        assert_eq!(qi["format-specific"]["data"]["create-type"], sub, "{sub}");
        assert_eq!(qi["virtual-size"].as_u64(), Some(SIZE));
        let r = open_path(&img);
        assert_same_bytes(&read_all(&r, 65536), &data, sub);
        assert_eq!(
            vdisk_map_json(&r),
            qemu_map_json(&img, Some("vmdk")),
            "{sub}: map"
        );
        assert_eq!(r.check().unwrap().exit_code(), 0);
        assert_eq!(
            r.info().unwrap().format_specific.unwrap().1,
            qi["format-specific"]["data"],
            "{sub}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(s.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{sub}: temporary files left");
    }
}

#[test]
fn stream_layout_has_footer_and_eos() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-stream");
    let raw = patterned_raw(&s);
    let data = std::fs::read(&raw).unwrap();
    let img = s.join("st.vmdk");
    feed(
        vdisk_vmdk::create(
            &img,
            SIZE,
            &CreateOptions::parse(&["subformat=streamOptimized"]).unwrap(),
        )
        .unwrap(),
        &data,
    );
    let bytes = std::fs::read(&img).unwrap();
    let h = vdisk_vmdk::header::SparseHeader::parse(bytes[..512].try_into().unwrap()).unwrap();
    assert_eq!(
        (h.version, h.gd_offset, h.compress_algorithm),
        (3, vdisk_vmdk::header::GD_AT_END, 1)
    );
    let n = bytes.len();
    assert!(bytes[n - 512..].iter().all(|b| *b == 0), "EOS marker");
    assert_eq!(&bytes[n - 1024..n - 1020], b"KDMV", "footer");
    assert_eq!(bytes[n - 1536 + 12], 3, "footer marker type");
    assert!(n < data.len() / 4, "compressed: {n} bytes");
    // The compressed grains come out as `compressed` in qemu's map.
    let m = qemu_map_json(&img, Some("vmdk"));
    assert_eq!(m[0]["compressed"], true);
}

#[test]
fn big_split_sparse_with_little_data() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-wbig");
    let img = s.join("big.vmdk");
    let size = 5u64 << 30;
    let mut w = vdisk_vmdk::create(
        &img,
        size,
        &CreateOptions::parse(&["subformat=twoGbMaxExtentSparse"]).unwrap(),
    )
    .unwrap();
    w.write(0, Payload::data(vec![0x11; 65536])).unwrap();
    // A chunk crossing the 2 GiB extent boundary.
    w.write((2 << 30) - 65536, Payload::data(vec![0x22; 131072]))
        .unwrap();
    w.write(size - 65536, Payload::data(vec![0x33; 65536]))
        .unwrap();
    w.finish().unwrap();
    assert_qemu_check_clean(&img, "vmdk");
    for n in 1..=3 {
        assert!(s.join(&format!("big-s{n:03}.vmdk")).exists());
    }
    let r = open_path(&img);
    assert_eq!(vdisk_map_json(&r), qemu_map_json(&img, Some("vmdk")));
    let mut b = vec![0u8; 131072];
    r.read_at(&mut b, (2 << 30) - 65536).unwrap();
    assert!(b.iter().all(|x| *x == 0x22));
    let out = qemu_img(&["info", "--output=json", img.to_str().unwrap()]);
    assert!(out.contains("twoGbMaxExtentSparse"));
}

#[test]
fn delta_over_backing_with_zeroed_grains() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-wdelta");
    let base = s.join("base.vmdk");
    qemu_create(&base, "vmdk", "", "1M");
    qemu_io("vmdk", &base, &["write -P 0x77 0 1M"]);
    for zg in ["on", "off"] {
        let top = s.join(&format!("top-{zg}.vmdk"));
        let opts = CreateOptions::parse(&[format!(
            "backing_file=base.vmdk,backing_fmt=vmdk,zeroed_grain={zg}"
        )])
        .unwrap();
        let mut w = vdisk_vmdk::create(&top, 0, &opts).unwrap();
        assert!(!w.caps().zero_initialized);
        w.write(65536, Payload::Zero(65536)).unwrap();
        w.write(196608, Payload::data(vec![0x99; 65536])).unwrap();
        w.finish().unwrap();
        assert_qemu_check_clean(&top, "vmdk");
        let got = qemu_raw_bytes(&top, None);
        let mut want = vec![0x77u8; 1 << 20];
        want[65536..131072].fill(0);
        want[196608..262144].fill(0x99);
        assert_same_bytes(&got, &want, "delta");
        let t = open_path(&top);
        assert_eq!(t.parent_cid(), open_path(&base).cid());
        assert_eq!(t.info().unwrap().backing.unwrap().filename, "base.vmdk");
        let kind = t.block_status(65536, 65536).unwrap().kind;
        let expect = if zg == "on" {
            vdisk_core::ExtentKind::Zero
        } else {
            vdisk_core::ExtentKind::Data
        };
        assert_eq!(kind, expect);
    }
    let flat = CreateOptions::parse(&["subformat=monolithicFlat,backing_file=base.vmdk"]).unwrap();
    assert!(vdisk_vmdk::create(&s.join("f.vmdk"), 0, &flat).is_err());
}

#[test]
fn options_like_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-opts");
    let img = s.join("o.vmdk");
    let opts =
        CreateOptions::parse(&["adapter_type=lsilogic,hwversion=6,toolsversion=123"]).unwrap();
    feed(vdisk_vmdk::create(&img, 1 << 20, &opts).unwrap(), &[]);
    let r = open_path(&img);
    let d = r.descriptor();
    assert_eq!(d.ddb_value("adapterType"), Some("lsilogic"));
    assert_eq!(d.ddb_value("virtualHWVersion"), Some("6"));
    assert_eq!(d.ddb_value("toolsVersion"), Some("123"));
    assert_eq!(d.ddb_value("geometry.heads"), Some("255"));
    assert_qemu_check_clean(&img, "vmdk");
    // qemu's own image of the same options has the same disk database.
    let q = s.join("q.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "adapter_type=lsilogic,hwversion=6,toolsversion=123",
        q.to_str().unwrap(),
        "1M",
    ]);
    assert_eq!(open_path(&q).descriptor().ddb, d.ddb);
    for bad in [
        "subformat=bogus",
        "adapter_type=scsi",
        "compat6=on,hwversion=7",
        "nosuch=1",
        "backing_fmt=qcow2",
    ] {
        assert!(
            vdisk_vmdk::create(
                &s.join("bad.vmdk"),
                1 << 20,
                &CreateOptions::parse(&[bad]).unwrap()
            )
            .is_err(),
            "{bad}"
        );
    }
    let help = vdisk_core::options::format_help("vmdk", vdisk_vmdk::CREATE_OPTIONS);
    assert!(help.contains("zeroed_grain=<bool (on/off)>"), "{help}");
}

#[test]
fn unfinished_write_leaves_nothing() {
    let s = Scratch::new("vmdk-drop");
    for sub in ["monolithicSparse", "twoGbMaxExtentFlat", "streamOptimized"] {
        let img = s.join("d.vmdk");
        let mut w = vdisk_vmdk::create(
            &img,
            3 << 20,
            &CreateOptions::parse(&[format!("subformat={sub}")]).unwrap(),
        )
        .unwrap();
        w.write(0, Payload::data(vec![1; 65536])).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 0, "{sub}");
    }
    // Out-of-order writes are refused by the stream writer.
    let img = s.join("o.vmdk");
    let mut w = vdisk_vmdk::create(
        &img,
        3 << 20,
        &CreateOptions::parse(&["subformat=streamOptimized"]).unwrap(),
    )
    .unwrap();
    assert!(!w.caps().out_of_order);
    w.write(
        131072,
        Payload::Encoded(Encoded {
            bytes: vec![0; 512],
            raw_len: 65536,
        }),
    )
    .unwrap();
    assert!(w.write(0, Payload::data(vec![1; 65536])).is_err());
}

#[test]
fn extent_files_are_named_like_qemu() {
    let s = Scratch::new("vmdk-names");
    for (name, sub, extent) in [
        ("foo.img", "twoGbMaxExtentSparse", "foo-s001.img"),
        ("bar", "monolithicFlat", "bar-flat"),
        ("a.b.c", "twoGbMaxExtentFlat", "a.b-f001.c"),
    ] {
        let opts = CreateOptions::parse(&[format!("subformat={sub}")]).unwrap();
        vdisk_vmdk::create(&s.join(name), 1 << 20, &opts)
            .unwrap()
            .finish()
            .unwrap();
        assert!(s.join(extent).exists(), "{name}: {extent}");
        let r = open_path(&s.join(name));
        let file = r.descriptor().extents[0].file.as_ref();
        assert_eq!(file.map(|f| f.to_lossy()).as_deref(), Some(extent));
    }
}

#[test]
fn several_grain_tables_round_trip() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("vmdk-multi-gt");
    let raw = s.join("m.raw");
    let size: u64 = 34 * 1024 * 1024 + 1536;
    qemu_create(&raw, "raw", "", &size.to_string());
    qemu_io(
        "raw",
        &raw,
        &[
            "write -P 0x41 0 64k",
            "write -P 0x42 33M 200k",
            "write -P 0x43 35651584 1536",
        ],
    );
    let data = std::fs::read(&raw).unwrap();
    for sub in ["monolithicSparse", "streamOptimized"] {
        // qemu's image, read by vdisk.
        let q = s.join(&format!("q-{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            raw.to_str().unwrap(),
            q.to_str().unwrap(),
        ]);
        let r = open_path(&q);
        assert_same_bytes(&read_all(&r, 1 << 20), &data, sub);
        assert_eq!(
            vdisk_map_json(&r),
            qemu_map_json(&q, Some("vmdk")),
            "{sub}: map"
        );
        // vdisk's image, read by qemu.
        let v = s.join(&format!("v-{sub}.vmdk"));
        feed(
            vdisk_vmdk::create(
                &v,
                size,
                &CreateOptions::parse(&[format!("subformat={sub}")]).unwrap(),
            )
            .unwrap(),
            &data,
        );
        assert_qemu_check_clean(&v, "vmdk");
        assert_qemu_compare_equal(&raw, &v);
        assert_eq!(
            vdisk_map_json(&open_path(&v)),
            qemu_map_json(&v, Some("vmdk")),
            "{sub}: our map"
        );
    }
}
