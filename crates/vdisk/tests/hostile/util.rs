//! Shared machinery of the hostile-input suite: a watchdog that runs one attempt in its own thread
//! (catching panics, hangs and huge allocations), a bounded "use the image like a client" driver
//! through the facade, the qemu oracle comparison, the built CLI, and byte patching.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vdisk::core::reader::for_each_extent;
use vdisk::core::ExtentKind;
use vdisk::{open_image, ImageReader, OpenRequest};

/// The largest single allocation a reader may make while handling one small hostile image.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// How long one attempt on one hostile image may take before it counts as a hang.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Block-status calls and guest bytes read per attempt, at most.
const MAX_EXTENTS: usize = 100_000;
const MAX_READ: u64 = 64 << 20;

thread_local! {
    /// The largest allocation made by this thread since the last reset.
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, noting each thread's largest allocation.
pub struct Tracking;

fn note(size: usize) {
    let _ = BIGGEST.try_with(|b| {
        if size > b.get() {
            b.set(size);
        }
    });
}

// SAFETY: forwards every call to the system allocator; the thread-local only records sizes (a
// const-initialised Cell has no destructor and never allocates).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` in a thread of its own and returns its result, failing the test (naming `what`) if it
/// panics, runs longer than [`ATTEMPT_TIMEOUT`], or makes an allocation beyond [`MAX_ALLOCATION`].
pub fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("hostile: {what}"))
        .spawn(move || {
            BIGGEST.with(|b| b.set(0));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send((r, BIGGEST.with(|b| b.get())));
        })
        .expect("spawn attempt thread");
    match rx.recv_timeout(ATTEMPT_TIMEOUT) {
        Ok((Ok(v), biggest)) => {
            assert!(
                biggest <= MAX_ALLOCATION,
                "{what}: allocated {biggest} bytes at once (limit {MAX_ALLOCATION})"
            );
            v
        }
        Ok((Err(_), _)) => panic!("{what}: PANICKED on hostile input (see the message above)"),
        Err(_) => panic!("{what}: still running after {ATTEMPT_TIMEOUT:?} (hang)"),
    }
}

/// Uses `r` like a client, bounded: info, block status over the whole disk, reads of everything
/// that is not known to be zero (at most [`MAX_READ`] bytes), check. Returns the bytes read when
/// the whole disk was covered and read, else `None`; the first error ends the attempt.
pub fn use_reader(r: &dyn ImageReader) -> vdisk::Result<Option<Vec<u8>>> {
    r.info()?;
    let size = r.virtual_size();
    let mut whole = (size <= MAX_READ).then(|| vec![0u8; size as usize]);
    let mut budget = MAX_READ;
    let mut calls = 0;
    for_each_extent(r, 0, size, |e| {
        calls += 1;
        if calls > MAX_EXTENTS {
            return Err(vdisk::Error::Other("too many extents for the test".into()));
        }
        if matches!(e.kind, ExtentKind::Zero | ExtentKind::Unallocated) && e.depth == 0 {
            return Ok(());
        }
        let n = e.length.min(budget);
        budget -= n;
        let mut buf = vec![0u8; n.min(1 << 20) as usize];
        let mut off = e.offset;
        while off < e.offset + n {
            let k = (e.offset + n - off).min(buf.len() as u64) as usize;
            r.read_at(&mut buf[..k], off)?;
            if let Some(w) = whole.as_mut() {
                w[off as usize..off as usize + k].copy_from_slice(&buf[..k]);
            }
            off += k as u64;
        }
        Ok(())
    })?;
    let _ = r.check();
    Ok(whole)
}

/// Opens `path` through the facade (following backing files) and uses it with [`use_reader`], in a
/// guarded thread. `Err` carries the error message.
pub fn attempt(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let p = path.to_path_buf();
    guarded(&path.display().to_string(), move || {
        let req = OpenRequest {
            follow_backing: true,
            ..Default::default()
        };
        let img = open_image(&p, &req).map_err(|e| e.to_string())?;
        use_reader(img.image.as_ref()).map_err(|e| e.to_string())
    })
}

/// Asserts that `path` fails with an error through the facade (and, when the CLI is built, that
/// `vdisk convert` exits with code 1 and `vdisk map` does not panic). Returns the message.
pub fn assert_fails(path: &Path, dir: &Path) -> String {
    let msg = match attempt(path) {
        Ok(_) => panic!(
            "{}: hostile image was accepted and read without an error",
            path.display()
        ),
        Err(m) => m,
    };
    assert!(
        !msg.trim().is_empty(),
        "{}: empty error message",
        path.display()
    );
    // `map` reads no guest data: it may succeed (as qemu-img map does) but must not panic.
    if let Some((code, err)) = cli_run(path, dir, &["map", "--output=json"]) {
        assert!(
            !err.contains("panicked") && code <= 1,
            "vdisk map on {}: {code} {err}",
            path.display()
        );
    }
    let out = dir.join("cli-out.raw");
    cli_fails(
        path,
        dir,
        &[
            "convert",
            "-O",
            "raw",
            "<IMG>",
            out.to_str().unwrap_or("out"),
        ],
    );
    assert!(!out.exists(), "a failed convert left its output behind");
    msg
}

/// Asserts that whatever vdisk makes of `path` is not wrong: when vdisk reads the whole disk, qemu
/// must read it too and return the same bytes; when qemu fails, vdisk must fail too. Returns
/// vdisk's outcome.
pub fn assert_never_wrong(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let ours = attempt(path);
    let qemu = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(path)
        .arg(path.with_extension("oracle.raw"))
        .output()
        .expect("run qemu-img");
    let theirs = qemu
        .status
        .success()
        .then(|| std::fs::read(path.with_extension("oracle.raw")).expect("read oracle"));
    let _ = std::fs::remove_file(path.with_extension("oracle.raw"));
    match (&ours, &theirs) {
        (Ok(Some(a)), Some(b)) => {
            vdisk_testutil::assert_same_bytes(a, b, &path.display().to_string())
        }
        (Ok(_), None) => panic!(
            "{}: qemu-img refuses the image ({}) but vdisk reads it",
            path.display(),
            String::from_utf8_lossy(&qemu.stderr).trim()
        ),
        _ => {}
    }
    ours
}

/// The `vdisk` binary built next to this test (by `cargo test --workspace`, as CI runs it). `None`
/// on a developer machine that built only this crate; under `CI` it must exist.
pub fn cli() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("vdisk");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: build the workspace (cargo test --workspace) under CI",
        bin.display()
    );
    eprintln!("note: {} not built; CLI checks skipped", bin.display());
    None
}

/// Runs the CLI with `args` (`<IMG>` replaced by `img`) and a time limit; returns (exit code,
/// stderr). `None` when the CLI is not built.
pub fn cli_run(img: &Path, dir: &Path, args: &[&str]) -> Option<(i32, String)> {
    let bin = cli()?;
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !args.iter().any(|a| a == "<IMG>") {
        args.push("<IMG>".into());
    }
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "<IMG>" {
                img.display().to_string()
            } else {
                a
            }
        })
        .collect();
    let mut child = Command::new(bin)
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vdisk");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for vdisk") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if start.elapsed() > ATTEMPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vdisk {args:?}: still running after {ATTEMPT_TIMEOUT:?} (hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that the CLI (when built) fails on `img` with exit code 1, an error and no panic.
pub fn cli_fails(img: &Path, dir: &Path, args: &[&str]) {
    cli_fails_with(img, dir, args, 1);
}

/// Asserts that the CLI (when built) fails on `img` with exit code `want` (qemu-img's: 1 for most
/// commands, 2 for compare), an error and no panic.
pub fn cli_fails_with(img: &Path, dir: &Path, args: &[&str], want: i32) {
    let Some((code, err)) = cli_run(img, dir, args) else {
        return;
    };
    assert!(
        !err.contains("panicked"),
        "vdisk {args:?} on {}: panicked: {err}",
        img.display()
    );
    assert_eq!(
        code,
        want,
        "vdisk {args:?} on {}: exit code {code}, stderr: {err}",
        img.display()
    );
    assert!(
        !err.trim().is_empty(),
        "vdisk {args:?}: failed without a message"
    );
}

/// Runs qemu-img (asserting success) in `dir`.
pub fn qemu(dir: &Path, args: &[&str]) {
    let o = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Overwrites bytes of `path` at `offset`.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patching");
    f.write_all_at(bytes, offset).expect("patch");
}

/// A big-endian u64 of `data` at `at`.
pub fn be64(data: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// A little-endian u32 of `data` at `at`.
pub fn le32(data: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

/// A copy of `src` named `name` in the same directory.
pub fn copy(src: &Path, name: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    std::fs::copy(src, &dst).expect("copy fixture");
    dst
}

/// qcow2 layout facts read from a file: (cluster size, host offset of L1[0]'s L2 table).
pub fn qcow2_l2_of_first_entry(img: &Path) -> (u64, u64) {
    let d = std::fs::read(img).expect("read qcow2");
    let cluster = 1u64 << u32::from_be_bytes(d[20..24].try_into().expect("4 bytes"));
    let l1 = be64(&d, 40);
    (cluster, be64(&d, l1) & 0x00ff_ffff_ffff_fe00)
}

/// Content hashes and modification times of every file in `dir`.
pub fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    use std::hash::{Hash, Hasher};
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).expect("read file").hash(&mut h);
            let mtime = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime");
            (p, h.finish(), mtime)
        })
        .collect();
    v.sort();
    v
}

/// An in-memory image for the format crates directly (no facade, no other files).
pub fn open_mem(format: &str, data: Vec<u8>) -> vdisk::Result<Arc<dyn ImageReader>> {
    use vdisk::core::storage::NoFiles;
    use vdisk::core::MemStorage;
    let s = MemStorage::new(&format!("mem.{format}"), data).shared();
    Ok(match format {
        "qcow2" => Arc::new(vdisk::qcow2::open(
            s,
            Arc::new(NoFiles),
            &Default::default(),
        )?),
        "vmdk" => Arc::new(vdisk::vmdk::open(s, Arc::new(NoFiles))?),
        "vdi" => Arc::new(vdisk::vdi::open(s)?),
        "vpc" => Arc::new(vdisk::vhd::open(s)?),
        "vhdx" => Arc::new(vdisk::vhdx::open(s)?),
        _ => Arc::new(vdisk::raw::open(s)?),
    })
}

/// Opens `data` as `format` in memory and uses it, guarded; `Err` carries the message.
pub fn attempt_mem(format: &'static str, what: &str, data: Vec<u8>) -> Result<(), String> {
    guarded(what, move || {
        let r = open_mem(format, data).map_err(|e| e.to_string())?;
        use_reader(r.as_ref())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
