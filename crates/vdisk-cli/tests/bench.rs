//! `vdisk bench` against `qemu-img bench`: the same two lines (the time aside), exit codes and
//! errors; with -w, the same image afterwards in every writable format.

mod common;
use common::*;
use std::path::Path;
use vdisk_testutil::{assert_qemu_check_clean, qemu_available, Scratch};

fn timeless(s: &str) -> String {
    s.lines()
        .map(|l| match l.strip_prefix("Run completed in ") {
            Some(_) => "Run completed in T seconds.",
            None => l,
        })
        .map(unprefixed)
        .collect::<Vec<_>>()
        .join("\n")
}

fn fixtures(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "8M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 0x11 0 3M"]);
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_ok(d, &["convert", "-O", "raw", "base.qcow2", "r.raw"]);
    qemu_ok(d, &["convert", "-O", "vdi", "base.qcow2", "v.vdi"]);
    qemu_ok(d, &["convert", "-O", "vmdk", "base.qcow2", "k.vmdk"]);
    qemu_ok(d, &["convert", "-O", "vpc", "base.qcow2", "h.vhd"]);
    qemu_ok(d, &["convert", "-O", "vhdx", "base.qcow2", "x.vhdx"]);
}

#[test]
fn bench_prints_and_fails_as_qemu_does() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bench");
    let d = s.path();
    fixtures(d);
    for args in [
        &["bench", "-c", "100", "top.qcow2"][..],
        &[
            "bench", "-c", "10", "-d", "2", "-s", "64k", "-o", "1M", "-S", "8k", "r.raw",
        ],
        &[
            "bench",
            "-c",
            "0x20",
            "-d",
            "010",
            "-f",
            "qcow2",
            "-i",
            "threads",
            "top.qcow2",
        ],
        &["bench", "-c", "2", "-n", "-t", "none", "top.qcow2"],
        &["bench", "-c", "2", "-n", "-i", "threads", "top.qcow2"],
        &["bench", "-c", "2", "-i", "native", "top.qcow2"],
        &["bench", "-c", "1k", "r.raw"],
        &["bench", "-c", "0", "r.raw"],
        &["bench", "-s", "0", "r.raw"],
        &["bench", "--pattern=256", "-w", "r.raw"],
        &["bench", "-c", "3", "-o", "9M", "r.raw"],
        &["bench", "-c", "3", "--flush-interval=100", "r.raw"],
        &["bench", "-c", "3", "-w", "--flush-interval=10", "r.raw"],
        &[
            "bench",
            "-c",
            "3",
            "-w",
            "-d",
            "4",
            "--flush-interval=2",
            "r.raw",
        ],
        &["bench", "-c", "3", "-w", "--flush-interval=x", "r.raw"],
        &["bench", "-c", "3", "-w", "--flush-interval=-1", "r.raw"],
        &["bench", "-c", "-0", "r.raw"],
        &["bench", "-c", "-5", "r.raw"],
        &["bench", "-t", "bogus", "r.raw"],
        &["bench", "-i", "bogus", "r.raw"],
    ] {
        let (v, q) = (vdisk(d, args), qemu(d, args));
        assert_eq!(v.status.code(), q.status.code(), "{args:?}: {}", err(&v));
        assert_eq!(timeless(&out(&v)), timeless(&out(&q)), "{args:?}");
        assert_eq!(timeless(&err(&v)), timeless(&err(&q)), "{args:?}");
    }
}

/// Every format `bench -w` writes into, as qemu-img does.
const WRITABLE: [(&str, &str); 6] = [
    ("r.raw", "raw"),
    ("top.qcow2", "qcow2"),
    ("v.vdi", "vdi"),
    ("k.vmdk", "vmdk"),
    ("h.vhd", "vpc"),
    ("x.vhdx", "vhdx"),
];

#[test]
fn bench_writes_what_qemu_writes() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bench-w");
    let d = s.path();
    fixtures(d);
    for (f, fmt) in WRITABLE {
        let (ours, theirs) = (format!("ours-{f}"), format!("theirs-{f}"));
        std::fs::copy(d.join(f), d.join(&ours)).unwrap();
        std::fs::copy(d.join(f), d.join(&theirs)).unwrap();
        // Unaligned requests, over data and holes (and the backing file under top.qcow2).
        let args = [
            "bench", "-w", "-c", "40", "-s", "3000", "-S", "70000", "-o", "100",
        ];
        let args = |x: &str| -> Vec<String> {
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.extend(["--pattern=0x5a".to_string(), x.to_string()]);
            a
        };
        let va = args(&ours);
        let qa = args(&theirs);
        vdisk_ok(d, &va.iter().map(String::as_str).collect::<Vec<_>>());
        qemu_ok(d, &qa.iter().map(String::as_str).collect::<Vec<_>>());
        qemu_ok(d, &["compare", "-f", fmt, "-F", fmt, &ours, &theirs]);
        // qemu-img checks neither raw nor VHD images.
        if fmt != "raw" && fmt != "vpc" {
            assert_qemu_check_clean(&d.join(&ours), fmt);
        }
    }
}

/// Requests wrap before the end of the image, as qemu's bench_cb does since QEMU commit
/// ff2ab634 (qemu-img 10.0.2 fails with EIO at the first wrapped request instead).
#[test]
fn requests_wrap_within_the_image() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("cli-bench-wrap");
    let d = s.path();
    qemu_ok(d, &["create", "-q", "-f", "raw", "w.raw", "1M"]);
    // 1 MiB - 256 KiB = 768 KiB of offsets: 0, 512k, 256k (1M mod 768k), 768k? no: 0.
    let o = vdisk_ok(
        d,
        &[
            "bench",
            "-w",
            "-c",
            "3",
            "-s",
            "256k",
            "-S",
            "512k",
            "--pattern=1",
            "w.raw",
        ],
    );
    assert!(
        o.starts_with("Sending 3 write requests, 262144 bytes each"),
        "{o}"
    );
    let b = std::fs::read(d.join("w.raw")).unwrap();
    let k = 1024;
    // Requests at 0, 512k and (1024k mod 768k =) 256k: everything but the last 256 KiB.
    assert!(b[..768 * k].iter().all(|x| *x == 1));
    assert!(b[768 * k..].iter().all(|x| *x == 0));
}

/// How many fsync/fdatasync calls a vdisk command makes, counted by strace (which CI installs).
fn syncs(d: &Path, args: &[&str]) -> usize {
    let log = d.join("strace.log");
    let o = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_vdisk"))
        .args(args)
        .current_dir(d)
        .output()
        .expect("strace runs (apt-get install strace)");
    assert!(o.status.success(), "{args:?}: {}", err(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .count()
}

/// `--flush-interval N`: the lines qemu-img prints, the same image afterwards in every format, and
/// a commit (with its syncs) at each flush point: 20 requests with N = 5 flush after requests 5,
/// 10 and 15 before the final commit. `-t unsafe` flushes without syncing, as qemu's cache mode
/// ignores flushes.
#[test]
fn flush_interval_commits_where_qemu_flushes() {
    if !qemu_available() {
        return;
    }
    let strace = std::process::Command::new("strace").arg("-V").output();
    if strace.is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs strace");
        return;
    }
    let s = Scratch::new("cli-bench-flush");
    let d = s.path();
    fixtures(d);
    for (f, fmt) in WRITABLE {
        let (ours, theirs) = (format!("ours-{f}"), format!("theirs-{f}"));
        std::fs::copy(d.join(f), d.join(&ours)).unwrap();
        std::fs::copy(d.join(f), d.join(&theirs)).unwrap();
        let args = |x: &str, flush: &str| -> Vec<String> {
            [
                "bench", "-w", "-c", "20", "-s", "3000", "-S", "70000", "-o", "100", "-d", "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([flush.to_string(), "--pattern=0x3c".into(), x.to_string()])
            .collect()
        };
        let (va, qa) = (
            args(&ours, "--flush-interval=5"),
            args(&theirs, "--flush-interval=5"),
        );
        let va: Vec<&str> = va.iter().map(String::as_str).collect();
        let qa: Vec<&str> = qa.iter().map(String::as_str).collect();
        let (v, q) = (vdisk(d, &va), qemu(d, &qa));
        assert_eq!(v.status.code(), Some(0), "{fmt}: {}", err(&v));
        assert_eq!(timeless(&out(&v)), timeless(&out(&q)), "{fmt}");
        qemu_ok(d, &["compare", "-f", fmt, "-F", fmt, &ours, &theirs]);
        // qemu-img checks neither raw nor VHD images.
        if fmt != "raw" && fmt != "vpc" {
            assert_qemu_check_clean(&d.join(&ours), fmt);
        }
        // The syncs: with flushes, at least one per commit more than without.
        let plain = args(&ours, "--no-drain");
        let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
        let flushed = args(&ours, "--flush-interval=5");
        let flushed: Vec<&str> = flushed.iter().map(String::as_str).collect();
        let (n0, n5) = (syncs(d, &plain), syncs(d, &flushed));
        assert!(n0 >= 1, "{fmt}: the final commit syncs ({n0})");
        assert!(
            n5 >= n0 + 3,
            "{fmt}: {n5} syncs with 3 flushes, {n0} without"
        );
        let mut unsafe_args = flushed.clone();
        unsafe_args.splice(1..1, ["-t", "unsafe"]);
        assert_eq!(syncs(d, &unsafe_args), 0, "{fmt}: -t unsafe");
    }
}
