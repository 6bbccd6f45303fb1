//! Test support shared by vdisk's crates: scratch directories, fixtures built with qemu-img and qemu-io
//! at test time, and the oracle comparisons (`qemu-img convert -O raw`, `map`, `info`, `check`).
//!
//! Tests that need qemu call [`qemu_available`]: when qemu-img is missing it returns `false` so the
//! test can return early on a developer machine, but when the `CI` environment variable is set it
//! panics instead, so CI never passes by skipping.

mod dirty_vhdx;
pub mod tools;
pub use dirty_vhdx::{interrupted_vhdx_write, strace_available};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether qemu-img (and qemu-io) can be run. Panics under `CI` when they cannot.
pub fn qemu_available() -> bool {
    let ok = ["qemu-img", "qemu-io"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("qemu-img/qemu-io are required when CI is set (apt-get install qemu-utils)");
        }
        eprintln!(
            "note: qemu-img not found; skipping a qemu oracle test (set CI=1 to make this fail)"
        );
    }
    ok
}

/// A scratch directory removed when dropped.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A fresh directory under the system temp dir, named after `tag`.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vdisk-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command (any exit code), again when qemu's image locks refused it, a few times over
/// 100 ms. In a test process that writes images itself while other test threads start programs,
/// an image file the test has just closed stays open, locks and all, in a child between its fork
/// and its exec; a refusal that lasts is reported.
pub fn output_past_forks(cmd: &mut Command) -> Output {
    let mut tries = 0;
    loop {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let locked = String::from_utf8_lossy(&out.stderr).contains("Is another process using");
        if out.status.success() || !locked || tries == 10 {
            return out;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = output_past_forks(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `qemu-img ARGS...`, which must succeed; returns stdout.
pub fn qemu_img(args: &[&str]) -> String {
    String::from_utf8_lossy(&run(Command::new("qemu-img").args(args)).stdout).into_owned()
}

/// `qemu-img create -q -f FORMAT [-o OPTIONS] PATH SIZE`: a fixture made by the oracle. Empty
/// `options` leaves qemu-img's defaults; `size` is in qemu-img's syntax (`1M`, or bytes).
pub fn qemu_create(path: &Path, format: &str, options: &str, size: &str) {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", format]);
    if !options.is_empty() {
        c.args(["-o", options]);
    }
    c.arg(path).arg(size);
    run(&mut c);
}

/// `qemu-io -f FMT -c CMD... FILE`: writes patterns into a fixture.
pub fn qemu_io(format: &str, file: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg(format);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(file);
    run(&mut c);
}

/// The raw content of an image as qemu-img reads it (`qemu-img convert -O raw`), the oracle for every
/// reader.
pub fn qemu_raw_bytes(image: &Path, format: Option<&str>) -> Vec<u8> {
    // Unique per call: tests run in parallel threads of one process and may use the same image name.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let out = std::env::temp_dir().join(format!(
        "vdisk-oracle-{}-{}-{}.raw",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed),
        image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut args: Vec<&str> = vec!["convert"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    let img = image.to_string_lossy().into_owned();
    let out_s = out.to_string_lossy().into_owned();
    args.extend(["-O", "raw", &img, &out_s]);
    qemu_img(&args);
    let bytes = std::fs::read(&out).expect("read oracle output");
    let _ = std::fs::remove_file(&out);
    bytes
}

/// `qemu-img map --output=json` parsed.
pub fn qemu_map_json(image: &Path, format: Option<&str>) -> serde_json::Value {
    let img = image.to_string_lossy().into_owned();
    let mut args = vec!["map", "--output=json"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.push(&img);
    serde_json::from_str(&qemu_img(&args)).expect("qemu-img map json")
}

/// `qemu-img info --output=json` parsed.
pub fn qemu_info_json(image: &Path) -> serde_json::Value {
    let img = image.to_string_lossy().into_owned();
    serde_json::from_str(&qemu_img(&["info", "--output=json", &img])).expect("qemu-img info json")
}

/// `qemu-img info --output=json -f FORMAT` (for formats that are not probed as themselves, such
/// as a fixed VHD).
pub fn qemu_info_json_as(image: &Path, format: &str) -> serde_json::Value {
    let img = image.to_string_lossy().into_owned();
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", format, &img]))
        .expect("qemu-img info json")
}

/// `qemu-img map --output=json -f FORMAT` against vdisk's block status of `reader`.
pub fn assert_map_like_qemu_as(reader: &dyn vdisk_core::ImageReader, image: &Path, format: &str) {
    assert_eq!(
        vdisk_map_json(reader),
        qemu_map_json(image, Some(format)),
        "map of {}",
        image.display()
    );
}

/// For a format qemu-img shows no format-specific details of (vpc, vhdx): the format, virtual
/// size, cluster size, one child named `file` and no backing file, against `qemu-img info`.
pub fn assert_plain_info_like_qemu(
    reader: &dyn vdisk_core::ImageReader,
    image: &Path,
    format: &str,
) {
    let q = qemu_info_json_as(image, format);
    let info = reader.info().expect("vdisk info");
    assert_eq!(info.format, q["format"].as_str().expect("format"));
    assert_eq!(Some(info.virtual_size), q["virtual-size"].as_u64());
    assert_eq!(
        info.cluster_size,
        q["cluster-size"].as_u64(),
        "{}",
        image.display()
    );
    assert!(q.get("format-specific").is_none() && info.format_specific.is_none());
    assert_eq!(q["children"][0]["name"], "file");
    assert_eq!(info.children.len(), 1);
    assert_eq!(info.children[0].name, "file");
    assert!(info.backing.is_none() && q.get("backing-filename").is_none());
}

/// `qemu-img check` on an image vdisk wrote: panics with qemu's report unless it exits 0 (no errors,
/// no leaks).
pub fn assert_qemu_check_clean(image: &Path, format: &str) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", format])
        .arg(image)
        .output()
        .expect("run qemu-img check");
    assert!(
        out.status.success(),
        "qemu-img check {} failed ({}):\n{}{}",
        image.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img compare` of two images: panics unless identical.
pub fn assert_qemu_compare_equal(a: &Path, b: &Path) {
    assert_qemu_compare_equal_as(a, b, &[]);
}

/// [`assert_qemu_compare_equal`] with formats given (`["-f", "vpc", "-F", "vpc"]`), for images
/// that would not probe as what they are (a fixed VHD probes as raw).
pub fn assert_qemu_compare_equal_as(a: &Path, b: &Path, formats: &[&str]) {
    let out = Command::new("qemu-img")
        .arg("compare")
        .args(formats)
        .arg(a)
        .arg(b)
        .output()
        .expect("run qemu-img compare");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a whole image through a vdisk reader in `chunk`-sized pieces.
pub fn read_all(reader: &dyn vdisk_core::ImageReader, chunk: usize) -> Vec<u8> {
    let size = reader.virtual_size() as usize;
    let mut out = vec![0u8; size];
    let mut off = 0;
    while off < size {
        let n = chunk.min(size - off);
        reader
            .read_at(&mut out[off..off + n], off as u64)
            .unwrap_or_else(|e| panic!("read at {off}: {e}"));
        off += n;
    }
    out
}

/// Asserts two byte images are equal, reporting the first differing offset instead of dumping both.
pub fn assert_same_bytes(ours: &[u8], oracle: &[u8], what: &str) {
    assert_eq!(ours.len(), oracle.len(), "{what}: length differs");
    if let Some(i) = ours.iter().zip(oracle).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at offset {i:#x}: vdisk {:#04x}, qemu {:#04x}",
            ours[i], oracle[i]
        );
    }
}

/// The qemu-style map entries of a vdisk reader (merged extents) as JSON objects with qemu's fields,
/// for comparison with [`qemu_map_json`].
pub fn vdisk_map_json(reader: &dyn vdisk_core::ImageReader) -> serde_json::Value {
    let mut v = Vec::new();
    vdisk_core::reader::for_each_extent(reader, 0, reader.virtual_size(), |e| {
        v.push(map_entry_json(&e));
        Ok(())
    })
    .expect("block status");
    serde_json::Value::Array(v)
}

/// One extent in `qemu-img map --output=json` form.
pub fn map_entry_json(e: &vdisk_core::Extent) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("start".into(), e.offset.into());
    m.insert("length".into(), e.length.into());
    m.insert("depth".into(), e.depth.into());
    m.insert("present".into(), e.kind.is_present().into());
    m.insert("zero".into(), e.kind.reads_as_zero().into());
    m.insert("data".into(), e.kind.is_data().into());
    m.insert(
        "compressed".into(),
        (e.kind == vdisk_core::ExtentKind::Compressed).into(),
    );
    if let Some(h) = &e.host {
        m.insert("offset".into(), h.offset.into());
    }
    serde_json::Value::Object(m)
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17): a fixed, reproducible stream of test data (noise,
/// shuffles, which byte of a file to damage), the same on every machine. Not for anything secret.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A stream from `seed`, which must not be 0 (the stream would stay 0).
    pub fn new(seed: u64) -> Self {
        assert_ne!(seed, 0, "xorshift64 needs a non-zero seed");
        XorShift64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next value reduced to `0..n` (`n` > 0; slightly biased, which tests do not mind).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift64;

    #[test]
    fn xorshift64_is_marsaglias_stream() {
        // The first values from seed 1 of xorshift64 with shifts 13, 7, 17 (computed apart, with
        // Python's integers masked to 64 bits).
        let mut x = XorShift64::new(1);
        assert_eq!(x.next_u64(), 0x4082_2041);
        assert_eq!(x.next_u64(), 0x1000_4106_0c01_1441);
        assert_eq!(x.next_u64(), 0x9b1e_842f_6e86_2629);
        assert!((0..1000).all(|_| x.below(7) < 7));
    }
}
