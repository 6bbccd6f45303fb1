//! The engine and `compare` against qemu-img on the same raw files: bytes, allocation (SEEK_DATA map
//! and st_blocks) of `convert -O raw [-S N]`, and `compare [-s]` verdicts and exit codes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vdisk_convert::{compare, convert, ConvertOptions};
use vdisk_core::{CreateOptions, FileStorage, ImageReader, Storage};
use vdisk_testutil::{qemu_available, qemu_create, qemu_img, qemu_io, Scratch};

fn open(p: &Path) -> vdisk_raw::RawReader {
    vdisk_raw::open(Arc::new(FileStorage::open(p).unwrap())).unwrap()
}

fn data_runs(p: &Path) -> Vec<(u64, u64)> {
    let s = FileStorage::open(p).unwrap();
    let len = s.len().unwrap();
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < len {
        let (data, end) = s.data_run(pos, len).unwrap().expect("SEEK_DATA supported");
        if data {
            v.push((pos, end));
        }
        pos = end;
    }
    v
}

/// A raw source with data, holes, and zero runs of many sizes and alignments inside the data.
fn source(s: &Scratch) -> PathBuf {
    let p = s.join("src.raw");
    qemu_create(&p, "raw", "", "8M");
    qemu_io(
        "raw",
        &p,
        &[
            "write -P 0xaa 0 64k",
            "write -P 0 16k 1k",
            "write -P 0 32k 8k",
            "write -P 0xbb 1M 100k",
            "write -P 0 1058576 6000",
            "write -P 0 1089536 12800",
            "write -P 0 1110016 3584",
            "write -P 0xcc 3M 2052k",
            "write -P 0 3149824 4096",
            "write -P 0 5240832 8192",
            "write -P 0 4194816 3072",
            "write -z 6M 64k",
            "write -P 0 7M 128k",
            "write -P 0xdd 8384512 4096",
        ],
    );
    p
}

fn ours(src: &Path, out: &Path, opts: &ConvertOptions) {
    let r = open(src);
    let w = vdisk_raw::create(out, r.virtual_size(), &CreateOptions::new()).unwrap();
    let stats = convert(&r, w, opts, &|_, _| {}).unwrap();
    assert!(stats.bytes_read <= r.virtual_size());
}

fn theirs(src: &Path, out: &Path, sparse: Option<&str>) {
    let mut args = vec!["convert", "-f", "raw", "-O", "raw"];
    if let Some(s) = sparse {
        args.extend(["-S", s]);
    }
    let (a, b) = (
        src.to_str().unwrap().to_string(),
        out.to_str().unwrap().to_string(),
    );
    args.extend([a.as_str(), b.as_str()]);
    qemu_img(&args);
}

#[test]
fn raw_to_raw_allocation_matches_qemu_for_each_sparse_size() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-sparse");
    let src = source(&s);
    for (arg, bytes) in [
        (None, 4096u64),
        (Some("4k"), 4096),
        (Some("0"), 0),
        (Some("64k"), 65536),
        (Some("512"), 512),
        (Some("3k"), 3072),
        (Some("1M"), 1 << 20),
    ] {
        let name = arg.unwrap_or("default");
        let (o, t) = (
            s.join(&format!("ours-{name}.raw")),
            s.join(&format!("theirs-{name}.raw")),
        );
        let opts = ConvertOptions {
            min_sparse: bytes,
            workers: 2,
            ..ConvertOptions::default()
        };
        ours(&src, &o, &opts);
        theirs(&src, &t, arg);
        assert!(
            std::fs::read(&o).unwrap() == std::fs::read(&t).unwrap(),
            "-S {name}: bytes differ"
        );
        assert_eq!(
            data_runs(&o),
            data_runs(&t),
            "-S {name}: allocation map differs from qemu's"
        );
        // st_blocks also counts ext4 extent-tree blocks, which depend on physical fragmentation (and
        // on whether delayed allocation happened yet): after syncing, both files must allocate their
        // data runs plus at most two metadata blocks.
        std::fs::File::open(&t).unwrap().sync_all().unwrap();
        let data: u64 = data_runs(&o).iter().map(|(a, b)| b - a).sum();
        for f in [&o, &t] {
            let allocated = std::fs::metadata(f).unwrap().blocks() * 512;
            assert!(
                (data..=data + 8192).contains(&allocated),
                "-S {name}: {} allocates {allocated} bytes for {data} bytes of data",
                f.display()
            );
        }
        if bytes == 0 {
            assert_eq!(data, 8 << 20, "-S 0 allocates everything");
        }
    }
}

#[test]
fn workers_and_out_of_order_writes_give_the_same_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-workers");
    let src = source(&s);
    let reference = s.join("ref.raw");
    theirs(&src, &reference, None);
    for workers in [1, 2, 4] {
        for ooo in [false, true] {
            let o = s.join(&format!("w{workers}-{ooo}.raw"));
            let opts = ConvertOptions {
                workers,
                out_of_order: ooo,
                chunk_size: 256 << 10,
                ..ConvertOptions::default()
            };
            ours(&src, &o, &opts);
            assert!(
                std::fs::read(&o).unwrap() == std::fs::read(&reference).unwrap(),
                "w{workers} ooo={ooo}"
            );
            assert_eq!(data_runs(&o), data_runs(&reference), "w{workers} ooo={ooo}");
        }
    }
}

/// Delegates to a real writer and fails on the Nth write.
struct FailOn {
    inner: Box<dyn vdisk_core::ImageWriter>,
    n: usize,
    seen: usize,
}

impl vdisk_core::ImageWriter for FailOn {
    fn caps(&self) -> vdisk_core::WriterCaps {
        self.inner.caps()
    }

    fn write(&mut self, offset: u64, payload: vdisk_core::Payload) -> vdisk_core::Result<()> {
        self.seen += 1;
        if self.seen == self.n {
            return Err(vdisk_core::Error::Other("disk on fire".into()));
        }
        self.inner.write(offset, payload)
    }

    fn finish(self: Box<Self>) -> vdisk_core::Result<()> {
        self.inner.finish()
    }
}

#[test]
fn failed_conversion_leaves_no_output() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-fail");
    let src = source(&s);
    let out_dir = s.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x.raw");
    let r = open(&src);
    let inner = vdisk_raw::create(&out, r.virtual_size(), &CreateOptions::new()).unwrap();
    let w = Box::new(FailOn {
        inner,
        n: 3,
        seen: 0,
    });
    let e = convert(&r, w, &ConvertOptions::default(), &|_, _| {}).unwrap_err();
    assert_eq!(e.to_string(), "disk on fire");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "output or temporary file left behind"
    );
}

/// Runs qemu-img compare; returns (stdout lines, exit code).
fn qemu_compare(a: &Path, b: &Path, strict: bool) -> (Vec<String>, i32) {
    let mut c = std::process::Command::new("qemu-img");
    c.args(["compare", "-f", "raw", "-F", "raw"]);
    if strict {
        c.arg("-s");
    }
    let out = c.arg(a).arg(b).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (lines, out.status.code().unwrap_or(-1))
}

fn check_compare(a: &Path, b: &Path) {
    for strict in [false, true] {
        for (x, y) in [(a, b), (b, a)] {
            let ours = compare(&open(x), &open(y), strict).unwrap();
            let (lines, code) = qemu_compare(x, y, strict);
            assert_eq!(
                (ours.stdout_lines(), ours.exit_code()),
                (lines, code),
                "compare{} {} {}",
                if strict { " -s" } else { "" },
                x.display(),
                y.display()
            );
        }
    }
}

#[test]
fn compare_verdicts_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cmp");
    let src = source(&s);
    let path = |n: &str| s.join(n);
    let copy = |n: &str| {
        let p = path(n);
        std::fs::copy(&src, &p).unwrap();
        p
    };
    // Identical copy, and one converted by qemu (different allocation, same content).
    let same = copy("same.raw");
    check_compare(&src, &same);
    let conv = path("conv.raw");
    theirs(&src, &conv, Some("0"));
    check_compare(&src, &conv);
    // One byte differs early, one deep inside a chunk, one inside a hole of the other.
    let early = copy("early.raw");
    qemu_io("raw", &early, &["write -P 0x02 1000 1"]);
    check_compare(&src, &early);
    let deep = copy("deep.raw");
    qemu_io("raw", &deep, &["write -P 0x03 4194900 1"]);
    check_compare(&src, &deep);
    let in_hole = copy("hole.raw");
    qemu_io("raw", &in_hole, &["write -P 0x04 6333333 1"]);
    check_compare(&src, &in_hole);
    // Explicit zeros written over a hole: same content, different block status.
    let zeros = copy("zeros.raw");
    qemu_io("raw", &zeros, &["write -P 0 6M 64k"]);
    check_compare(&src, &zeros);
    // Sizes differ: zero tail, then non-zero tail.
    let longer = copy("longer.raw");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&longer)
        .unwrap()
        .set_len(12 << 20)
        .unwrap();
    check_compare(&src, &longer);
    qemu_io("raw", &longer, &["write -P 0x05 10485800 1"]);
    check_compare(&src, &longer);
    let shorter = path("short.raw");
    std::fs::write(&shorter, &std::fs::read(&src).unwrap()[..(5 << 20) + 1000]).unwrap();
    check_compare(&src, &shorter);
}

#[test]
fn compare_reports_read_errors_with_exit_code_4() {
    struct Broken(vdisk_raw::RawReader);
    impl ImageReader for Broken {
        fn format_name(&self) -> &'static str {
            "raw"
        }
        fn virtual_size(&self) -> u64 {
            self.0.virtual_size()
        }
        fn read_at(&self, _: &mut [u8], offset: u64) -> vdisk_core::Result<()> {
            Err(vdisk_core::Error::io(
                Path::new("b"),
                offset,
                std::io::Error::from_raw_os_error(5),
            ))
        }
        fn block_status(&self, o: u64, l: u64) -> vdisk_core::Result<vdisk_core::Extent> {
            self.0.block_status(o, l)
        }
        fn info(&self) -> vdisk_core::Result<vdisk_core::ImageInfo> {
            self.0.info()
        }
    }
    let m = vdisk_core::MemStorage::new("m", vec![1u8; 4096]).shared();
    let a = vdisk_raw::open(Arc::clone(&m)).unwrap();
    let b = Broken(vdisk_raw::open(m).unwrap());
    let o = compare(&a, &b, false).unwrap();
    assert_eq!(o.exit_code(), 4);
    let msg = o.error_message("a.raw", "b.raw").unwrap();
    assert!(
        msg.starts_with("Error while reading offset 0 of b.raw: "),
        "{msg}"
    );
    assert!(o.stdout_lines().is_empty());
}

#[test]
fn convert_into_existing_file_matches_qemu_n() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-n");
    let src = source(&s);
    let (o, t) = (s.join("ours.raw"), s.join("theirs.raw"));
    for p in [&o, &t] {
        std::fs::write(p, vec![0xffu8; 8 << 20]).unwrap();
    }
    let r = open(&src);
    let w = vdisk_raw::open_writer(&o).unwrap();
    assert!(!w.caps().zero_initialized);
    convert(&r, w, &ConvertOptions::default(), &|_, _| {}).unwrap();
    let (a, b) = (src.to_str().unwrap(), t.to_str().unwrap());
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", a, b]);
    assert!(
        std::fs::read(&o).unwrap() == std::fs::read(&t).unwrap(),
        "bytes differ from qemu's -n"
    );
    assert_eq!(
        data_runs(&o),
        data_runs(&t),
        "holes punched differ from qemu's -n"
    );
}

#[test]
fn huge_sparse_image_converts_without_reading_holes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-huge");
    let src = s.join("big.raw");
    qemu_create(&src, "raw", "", "22G");
    qemu_io(
        "raw",
        &src,
        &["write -P 0x11 5G 1M", "write -P 0x22 21G 64k"],
    );
    let (o, t) = (s.join("ours.raw"), s.join("theirs.raw"));
    let r = open(&src);
    let w = vdisk_raw::create(&o, r.virtual_size(), &CreateOptions::new()).unwrap();
    let stats = convert(&r, w, &ConvertOptions::default(), &|_, _| {}).unwrap();
    assert_eq!(
        stats.bytes_read,
        4096 + (1 << 20) + 65536,
        "only the data extents are read"
    );
    theirs(&src, &t, None);
    assert_eq!(std::fs::metadata(&o).unwrap().len(), 22 << 30);
    assert_eq!(data_runs(&o), data_runs(&t));
    let c = compare(&open(&o), &open(&src), false).unwrap();
    assert_eq!(c.exit_code(), 0, "{c:?}");
}

/// Merges adjacent ranges.
fn merged(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// Which sectors qemu writes as data for each `-S`, seen exactly (not through the file system's 4 KiB
/// blocks): qemu converting into a qcow2 with 512-byte clusters allocates exactly the clusters it
/// writes (a new qcow2 is zero-initialised, so gaps are skipped, as for our zero-initialised writer).
#[test]
fn sector_exact_sparse_decisions_match_qemu() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("conv-sectors");
    let src = source(&s);
    for (arg, bytes) in [
        ("512", 512u64),
        ("1k", 1024),
        ("3k", 3072),
        ("4k", 4096),
        ("8k", 8192),
        ("64k", 65536),
    ] {
        let q = s.join(&format!("q-{arg}.qcow2"));
        let (a, b) = (src.to_str().unwrap(), q.to_str().unwrap());
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=512",
            "-S",
            arg,
            a,
            b,
        ]);
        let map = vdisk_testutil::qemu_map_json(&q, Some("qcow2"));
        let theirs: Vec<(u64, u64)> = map
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"].as_bool() == Some(true))
            .map(|e| {
                let start = e["start"].as_u64().unwrap();
                (start, start + e["length"].as_u64().unwrap())
            })
            .collect();
        struct Rec(Arc<std::sync::Mutex<Vec<(u64, u64)>>>);
        impl vdisk_core::ImageWriter for Rec {
            fn caps(&self) -> vdisk_core::WriterCaps {
                vdisk_core::WriterCaps {
                    granularity: 512,
                    out_of_order: false,
                    zero_initialized: true,
                    copy_range: false,
                }
            }
            fn write(&mut self, off: u64, p: vdisk_core::Payload) -> vdisk_core::Result<()> {
                assert!(
                    matches!(p, vdisk_core::Payload::Data(_)),
                    "zero payload on a zero-initialised target"
                );
                self.0.lock().unwrap().push((off, off + p.len()));
                Ok(())
            }
            fn finish(self: Box<Self>) -> vdisk_core::Result<()> {
                Ok(())
            }
        }
        let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let opts = ConvertOptions {
            min_sparse: bytes,
            ..ConvertOptions::default()
        };
        convert(
            &open(&src),
            Box::new(Rec(Arc::clone(&writes))),
            &opts,
            &|_, _| {},
        )
        .unwrap();
        let ours = writes.lock().unwrap().clone();
        assert_eq!(
            merged(ours),
            merged(theirs),
            "-S {arg}: sectors written as data differ from qemu's"
        );
    }
}
