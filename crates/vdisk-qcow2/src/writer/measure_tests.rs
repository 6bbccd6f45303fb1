//! `measure` against `qemu-img measure -O qcow2`, for new images of several sizes and options and
//! for sources of several formats (their block status taken from `qemu-img map`).

use super::*;
use serde_json::Value;
use vdisk_core::{Extent, ImageInfo};
use vdisk_testutil::{qemu_available, qemu_img, qemu_io, qemu_map_json, Scratch};

/// A source whose block status is what `qemu-img map` reports (the oracle's own view).
struct MapReader {
    format: &'static str,
    size: u64,
    extents: Vec<Extent>,
    v3: bool,
}

impl MapReader {
    fn new(path: &std::path::Path, format: &'static str, size: u64) -> Self {
        let map = qemu_map_json(path, Some(format));
        let extents = map
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let kind = match (e["present"] == true, e["data"] == true, e["zero"] == true) {
                    (_, true, _) if e["compressed"] == true => ExtentKind::Compressed,
                    (false, _, _) => ExtentKind::Unallocated,
                    (true, true, true) => ExtentKind::ZeroData,
                    (true, true, false) => ExtentKind::Data,
                    (true, false, _) => ExtentKind::Zero,
                };
                Extent::new(
                    e["start"].as_u64().unwrap(),
                    e["length"].as_u64().unwrap(),
                    kind,
                )
            })
            .collect();
        MapReader {
            format,
            size,
            extents,
            v3: true,
        }
    }
}

impl ImageReader for MapReader {
    fn format_name(&self) -> &'static str {
        self.format
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<()> {
        Err(Error::Other("not needed".into()))
    }
    fn block_status(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let e = self
            .extents
            .iter()
            .find(|e| e.offset <= offset && offset < e.end())
            .unwrap();
        let mut out = Extent::new(offset, (e.end() - offset).min(max_len), e.kind);
        out.depth = 0;
        Ok(out)
    }
    fn info(&self) -> Result<ImageInfo> {
        let mut i = ImageInfo::new(self.format, self.size);
        if self.format == "qcow2" {
            let compat = if self.v3 { "1.1" } else { "0.10" };
            i.format_specific = Some(("qcow2".into(), serde_json::json!({ "compat": compat })));
        }
        Ok(i)
    }
}

/// `qemu-img measure`'s JSON, or its error message.
fn qemu_measure(args: &[&str]) -> std::result::Result<Value, String> {
    let out = std::process::Command::new("qemu-img")
        .args(["measure", "--output=json", "-O", "qcow2"])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap())
}

fn assert_same(ours: Result<Measure>, qemu: std::result::Result<Value, String>, what: &str) {
    let (ours, qemu) = match (ours, qemu) {
        (Ok(o), Ok(q)) => (o, q),
        (Err(o), Err(q)) => {
            assert!(
                q.contains(&o.to_string()),
                "{what}: vdisk says {o}, qemu says {q}"
            );
            return;
        }
        (o, q) => panic!("{what}: vdisk {o:?}, qemu {q:?}"),
    };
    assert_eq!(
        ours.required,
        qemu["required"].as_u64().unwrap(),
        "{what}: required"
    );
    assert_eq!(
        ours.fully_allocated,
        qemu["fully-allocated"].as_u64().unwrap(),
        "{what}: fully allocated"
    );
    assert_eq!(
        ours.bitmaps,
        qemu.get("bitmaps").and_then(|b| b.as_u64()),
        "{what}: bitmaps"
    );
}

#[test]
fn known_answer_for_ten_gib() {
    let m = measure(10 << 30, &CreateOptions::new(), None).unwrap();
    assert_eq!(
        (m.required, m.fully_allocated, m.bitmaps),
        (1900544, 10739318784, None)
    );
}

#[test]
fn sizes_and_options_match_qemu() {
    if !qemu_available() {
        return;
    }
    for size in ["0", "1M", "10G", "1T", "123456789"] {
        for o in [
            "",
            "cluster_size=512",
            "cluster_size=4k,refcount_bits=1",
            "cluster_size=2M,refcount_bits=64",
            "extended_l2=on",
            "extended_l2=on,cluster_size=16k",
            "compat=0.10",
            "preallocation=full",
            "preallocation=falloc,cluster_size=8k",
            "preallocation=metadata",
        ] {
            let bytes = vdisk_core::size::parse_size(size).unwrap();
            let ours = measure(bytes, &CreateOptions::parse(&[o]).unwrap(), None);
            let mut args = vec!["--size", size];
            if !o.is_empty() {
                args.extend(["-o", o]);
            }
            assert_same(ours, qemu_measure(&args), &format!("--size {size} -o {o}"));
        }
    }
}

#[test]
fn sources_match_qemu() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2-measure");
    let raw = dir.join("s.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len((5 << 20) + 3 * 512).unwrap();
    drop(f);
    qemu_io(
        "raw",
        &raw,
        &[
            "write -P 1 0 4k",
            "write -P 2 100k 200k",
            "write -P 3 4M 1536",
            "write -z 2M 64k",
        ],
    );
    let q2 = dir.join("s.qcow2");
    let q2s = q2.to_string_lossy().into_owned();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        &q2s,
        "7M",
    ]);
    qemu_io(
        "qcow2",
        &q2,
        &[
            "write -P 1 0 8k",
            "write -z 1M 1M",
            "write -c -P 2 3M 64k",
            "write -P 3 6M 5k",
        ],
    );
    let v2 = dir.join("v2.qcow2");
    let v2s = v2.to_string_lossy().into_owned();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        &v2s,
        "3M",
    ]);
    qemu_io("qcow2", &v2, &["write -P 9 1M 100k"]);
    let raws = raw.to_string_lossy().into_owned();
    for (path, s, fmt) in [
        (&raw, &raws, "raw"),
        (&q2, &q2s, "qcow2"),
        (&v2, &v2s, "qcow2"),
    ] {
        let size: u64 = serde_json::from_str::<Value>(&qemu_img(&["info", "--output=json", s]))
            .unwrap()["virtual-size"]
            .as_u64()
            .unwrap();
        let mut src = MapReader::new(path, fmt, size);
        src.v3 = !s.ends_with("v2.qcow2");
        for o in [
            "",
            "cluster_size=512",
            "cluster_size=2M",
            "compat=0.10",
            "backing_file=x.img",
            "preallocation=full",
        ] {
            let ours = measure(0, &CreateOptions::parse(&[o]).unwrap(), Some(&src));
            let mut args = vec!["-f", fmt];
            if !o.is_empty() {
                args.extend(["-o", o]);
            }
            args.push(s);
            assert_same(ours, qemu_measure(&args), &format!("{s} -o {o}"));
        }
    }
}

/// A qcow2 source opened with this crate's reader, with persistent bitmaps: qemu counts their
/// clusters, tables and directory entries in `bitmaps size`.
#[test]
fn qcow2_source_with_bitmaps_matches_qemu() {
    if !qemu_available() {
        return;
    }
    let dir = Scratch::new("qcow2-measure-bitmaps");
    let img = dir.join("b.qcow2");
    let s = img.to_string_lossy().into_owned();
    qemu_img(&["create", "-q", "-f", "qcow2", &s, "300M"]);
    qemu_io(
        "qcow2",
        &img,
        &[
            "write -P 1 0 1M",
            "write -P 2 100M 64k",
            "write -c -P 3 200M 128k",
        ],
    );
    qemu_img(&["bitmap", "--add", &s, "first"]);
    qemu_img(&[
        "bitmap",
        "--add",
        "-g",
        "512",
        &s,
        "a-much-longer-bitmap-name",
    ]);
    let storage = std::sync::Arc::new(vdisk_core::FileStorage::open(&img).unwrap());
    let files = std::sync::Arc::new(vdisk_core::storage::NoFiles);
    let reader = crate::open(storage, files, &crate::OpenOptions::default()).unwrap();
    for o in ["", "cluster_size=4k", "compat=0.10", "extended_l2=on"] {
        let ours = measure(0, &CreateOptions::parse(&[o]).unwrap(), Some(&reader));
        let mut args = vec!["-f", "qcow2"];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        args.push(&s);
        let q = qemu_measure(&args);
        assert!(q.as_ref().unwrap()["bitmaps"].as_u64().unwrap_or(0) > 0 || o.contains("0.10"));
        assert_same(ours, q, &format!("bitmaps -o {o}"));
    }
}
