//! Image locks: an image that QEMU (here qemu-nbd, as a running VM would) holds open read-write is
//! refused by vdisk as qemu-img refuses it, in the same words and with the same exit code, and
//! read with `-U`; its backing file may be read, not changed. And the other way round: an image a
//! running vdisk command holds is refused to qemu-img.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vdisk_testutil::{qemu_available, Scratch};

/// Whether qemu-nbd can be run; under `CI` its absence is a failure.
fn qemu_nbd_available() -> bool {
    let ok = Command::new("qemu-nbd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("qemu-nbd is required when CI is set (apt-get install qemu-utils)");
    }
    ok
}

/// The inode of `path` as `/proc/locks` names it (`major:minor:inode`, device in hex).
fn lock_key(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    let dev = m.dev();
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    format!("{major:02x}:{minor:02x}:{}", m.ino())
}

/// The bytes locked on `path`, from `/proc/locks` (every holder's, each byte once).
fn locked_bytes(path: &Path) -> Vec<u64> {
    let key = lock_key(path);
    let text = std::fs::read_to_string("/proc/locks").unwrap();
    let mut bytes: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("OFDLCK") && l.contains(&key))
        .flat_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = (f[f.len() - 2], f[f.len() - 1]);
            a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()
        })
        .collect();
    // Several descriptors (of one process or several) may lock the same byte.
    bytes.sort_unstable();
    bytes.dedup();
    bytes
}

/// Waits until the bytes locked on `path` are `bytes` (the holder has opened it; a command may
/// open an image more than once on its way, read-only before read-write).
fn wait_for_locks(path: &Path, holder: &mut Child, bytes: &[u64]) {
    let start = Instant::now();
    while locked_bytes(path) != bytes {
        if let Some(status) = holder.try_wait().unwrap() {
            panic!("the lock holder exited first: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "locked: {:?}, not {bytes:?}",
            locked_bytes(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the holder when dropped, so that a failing assertion leaves no process behind.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixtures(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 0x5a 0 1M"]);
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 0xa5 4M 1M"]);
}

/// What each command line may leave behind, removed after every run.
const OUTPUTS: [&str; 3] = ["x.raw", "y.raw", "o.qcow2"];

#[test]
fn an_image_a_vm_uses_is_refused_as_qemu_img_refuses_it() {
    if !qemu_available() || !qemu_nbd_available() {
        return;
    }
    let s = Scratch::new("locks-vm");
    let d = s.path();
    fixtures(d);
    let top = std::fs::read(d.join("top.qcow2")).unwrap();
    let base = std::fs::read(d.join("base.qcow2")).unwrap();
    // qemu-nbd serving top.qcow2 read-write holds what a running VM holds.
    let mut holder = Holder(
        Command::new("qemu-nbd")
            .current_dir(d)
            .args(["-f", "qcow2", "-k"])
            .arg(d.join("nbd.sock"))
            .arg("top.qcow2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read, write, resize held on top; write and resize refused to others on both files.
    wait_for_locks(
        &d.join("top.qcow2"),
        &mut holder.0,
        &[100, 101, 103, 201, 203],
    );
    wait_for_locks(&d.join("base.qcow2"), &mut holder.0, &[100, 201, 203]);
    let lines: &[&[&str]] = &[
        // Refused: reading the image in use as a whole, changing it or its backing file.
        &["info", "top.qcow2"],
        &["info", "--backing-chain", "top.qcow2"],
        &["map", "top.qcow2"],
        &["check", "top.qcow2"],
        &["compare", "top.qcow2", "base.qcow2"],
        &["measure", "-O", "qcow2", "top.qcow2"],
        &["snapshot", "-l", "top.qcow2"],
        &["convert", "-O", "raw", "top.qcow2", "x.raw"],
        &["bench", "-c", "1", "top.qcow2"],
        &["resize", "top.qcow2", "32M"],
        &["resize", "base.qcow2", "32M"],
        &["commit", "top.qcow2"],
        &["snapshot", "-c", "s1", "top.qcow2"],
        &[
            "rebase",
            "-u",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
        &["amend", "-o", "compat=1.1", "top.qcow2"],
        &["check", "-r", "all", "top.qcow2"],
        &["check", "-r", "all", "base.qcow2"],
        &["bitmap", "--add", "top.qcow2", "b0"],
        &["create", "-f", "raw", "top.qcow2", "1M"],
        &["create", "-f", "qcow2", "base.qcow2", "1M"],
        &["convert", "-O", "qcow2", "base.qcow2", "top.qcow2"],
        &["convert", "-n", "-O", "qcow2", "base.qcow2", "top.qcow2"],
        &["dd", "-O", "raw", "if=base.qcow2", "of=top.qcow2"],
        &[
            "convert",
            "-O",
            "qcow2",
            "-B",
            "top.qcow2",
            "-F",
            "qcow2",
            "base.qcow2",
            "o.qcow2",
        ],
        // -U is only for reading.
        &["check", "-U", "-r", "all", "top.qcow2"],
        &["snapshot", "-U", "-c", "s2", "top.qcow2"],
        // Allowed: the backing file read, -U, a new overlay on the image in use.
        &["info", "base.qcow2"],
        &["map", "base.qcow2"],
        &["convert", "-O", "raw", "base.qcow2", "x.raw"],
        &["info", "-U", "top.qcow2"],
        &["map", "-U", "top.qcow2"],
        &["compare", "-U", "top.qcow2", "base.qcow2"],
        &["snapshot", "-l", "-U", "top.qcow2"],
        &["convert", "-U", "-O", "raw", "top.qcow2", "y.raw"],
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "top.qcow2",
            "-F",
            "qcow2",
            "o.qcow2",
        ],
    ];
    let clean = || {
        for f in OUTPUTS {
            let _ = std::fs::remove_file(d.join(f));
        }
    };
    for args in lines {
        let q = qemu(d, args);
        clean();
        let v = vdisk(d, args);
        clean();
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
        assert_eq!(without_details(&out(&v)), out(&q), "{args:?}");
        assert_eq!(
            unprefixed_lines(&err(&v)),
            unprefixed_lines(&err(&q)),
            "{args:?}"
        );
        // Nothing vdisk refused or read changed either file.
        assert!(
            std::fs::read(d.join("top.qcow2")).unwrap() == top,
            "{args:?}"
        );
        assert!(
            std::fs::read(d.join("base.qcow2")).unwrap() == base,
            "{args:?}"
        );
    }
    // The refusals were the locks': the same commands go through once the VM is gone.
    drop(holder);
    assert!(locked_bytes(&d.join("top.qcow2")).is_empty());
    vdisk_ok(d, &["info", "top.qcow2"]);
    vdisk_ok(d, &["resize", "base.qcow2", "32M"]);
    vdisk_ok(d, &["snapshot", "-c", "s1", "top.qcow2"]);
}

#[test]
fn an_image_vdisk_is_using_is_refused_to_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("locks-vdisk");
    let d = s.path();
    fixtures(d);
    // A long benchmark holds the image: reading (top read-only, its backing file under it), then
    // writing (top read-write).
    for (write, top_bytes, info_refused) in [
        (false, vec![100, 201, 203], false),
        (true, vec![100, 101, 103, 201, 203], true),
    ] {
        let mut args = vec!["bench", "-c", "100000000", "-s", "512", "-d", "1"];
        if write {
            args.push("-w");
        }
        args.push("top.qcow2");
        let mut holder = Holder(
            Command::new(env!("CARGO_BIN_EXE_vdisk"))
                .current_dir(d)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_locks(&d.join("top.qcow2"), &mut holder.0, &top_bytes);
        wait_for_locks(&d.join("base.qcow2"), &mut holder.0, &[100, 201, 203]);
        let resize = qemu(d, &["resize", "top.qcow2", "32M"]);
        assert_eq!(resize.status.code(), Some(1));
        assert_eq!(
            unprefixed_lines(&err(&resize)),
            "Could not open 'top.qcow2': Failed to get \"write\" lock\n\
             Is another process using the image [top.qcow2]?"
        );
        let base_resize = qemu(d, &["resize", "base.qcow2", "32M"]);
        assert_eq!(base_resize.status.code(), Some(1), "{}", err(&base_resize));
        let info = qemu(d, &["info", "top.qcow2"]);
        assert_eq!(info.status.success(), !info_refused, "{}", err(&info));
        if info_refused {
            assert_eq!(
                unprefixed_lines(&err(&info)),
                "Could not open 'top.qcow2': Failed to get shared \"write\" lock\n\
                 Is another process using the image [top.qcow2]?"
            );
            qemu_ok(d, &["info", "-U", "top.qcow2"]);
        }
        assert!(
            holder.0.try_wait().unwrap().is_none(),
            "the benchmark ended"
        );
    }
    assert!(locked_bytes(&d.join("top.qcow2")).is_empty());
    // The writing benchmark was killed: leaked clusters (exit 3) are what a crash may leave,
    // corruption (exit 2) is not.
    let check = qemu(d, &["check", "top.qcow2"]);
    assert!(
        matches!(check.status.code(), Some(0 | 3)),
        "{}",
        out(&check)
    );
}
